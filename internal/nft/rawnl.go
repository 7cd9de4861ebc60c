package nft

import (
	"encoding/binary"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// rawConn is an nf_tables netlink socket written and read with raw
// non-blocking system calls into buffers the caller keeps: the batches,
// dumps and counter reads of this package (mdlayher/netlink's Receive
// peeks and allocates a buffer per datagram and a message per answer).
type rawConn struct {
	conn *netlink.Conn
	raw  syscall.RawConn
}

// openRaw opens a netlink socket in the runner's namespace with large
// buffers and the batch timeout as its read deadline.
func (r *NetlinkRunner) openRaw() (*rawConn, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: r.opts.NetNSFd})
	if err != nil {
		return nil, kernelErr("open", err)
	}
	if err := bigBuffers(conn); err != nil {
		conn.Close()
		return nil, err
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(batchTimeout))
	// Errors with the kernel's explanation (batches).
	_ = conn.SetOption(netlink.ExtendedAcknowledge, true)
	_ = conn.SetOption(netlink.CapAcknowledge, true)
	return &rawConn{conn: conn, raw: raw}, nil
}

func (c *rawConn) Close() error { return c.conn.Close() }

// Sockets are kept between requests. Closing an nf_tables netlink socket
// makes the kernel (nft_rcv_nl_event, on NETLINK_URELEASE) take the
// commit mutex and wait for the release of everything the namespace's
// last transactions deleted: an RCU grace period and the freeing, some
// 6 ms after an apply that deleted one chain, more after a large one. An
// apply that opened and closed a socket per transaction (and one more to
// read the table's handle) waited for that at every close; a kept socket
// lets the kernel release the old objects in the background.
//
// getRaw takes the idle socket (or opens one); putRaw gives it back after
// a request whose answers were all read, or closes it. One socket is kept
// at a time, and closed after idleClose without use (a socket holds its
// namespace).
const idleClose = 10 * time.Second

type rawPool struct {
	mu   sync.Mutex
	idle *rawConn
	gen  uint64 // counts putRaw, so that a timer closes only its own socket
}

func (r *NetlinkRunner) getRaw() (*rawConn, error) {
	r.pool.mu.Lock()
	c := r.pool.idle
	r.pool.idle = nil
	r.pool.mu.Unlock()
	if c == nil {
		return r.openRaw()
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(batchTimeout))
	return c, nil
}

// putRaw keeps c when ok (every answer to its requests was read), else
// closes it: a socket with answers left unread is not used again.
func (r *NetlinkRunner) putRaw(c *rawConn, ok bool) {
	if !ok {
		c.Close()
		return
	}
	r.pool.mu.Lock()
	if r.pool.idle != nil {
		r.pool.mu.Unlock()
		c.Close()
		return
	}
	r.pool.idle = c
	r.pool.gen++
	gen := r.pool.gen
	r.pool.mu.Unlock()
	time.AfterFunc(idleClose, func() {
		r.pool.mu.Lock()
		if r.pool.gen != gen || r.pool.idle != c {
			r.pool.mu.Unlock()
			return
		}
		r.pool.idle = nil
		r.pool.mu.Unlock()
		c.Close()
	})
}

// CloseIdle closes the socket the runner keeps, if any (it is closed
// after idleClose without use anyway).
func (r *NetlinkRunner) CloseIdle() {
	r.pool.mu.Lock()
	c := r.pool.idle
	r.pool.idle = nil
	r.pool.gen++
	r.pool.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// send writes one datagram.
func (c *rawConn) send(b []byte) error {
	var serr error
	if err := c.raw.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	return serr
}

// recv reads one datagram into buf and returns it.
func (c *rawConn) recv(buf []byte) ([]byte, error) {
	var (
		n    int
		rerr error
	)
	if err := c.raw.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		return rerr != unix.EAGAIN
	}); err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	return buf[:n], nil
}

// nlMsg is one netlink message of a datagram: its header's type, flags
// and sequence number, and its payload.
type nlMsg struct {
	typ, flags uint16
	seq        uint32
	data       []byte
}

// errno is the error an NLMSG_ERROR message carries (0 for an
// acknowledgement).
func (m nlMsg) errno() syscall.Errno {
	if len(m.data) < 4 {
		return 0
	}
	return syscall.Errno(-int32(binary.NativeEndian.Uint32(m.data[:4])))
}

// attributes returns a decoder of an nf_tables message's attributes
// (after its nfgenmsg header), or nil when it has none.
func (m nlMsg) attributes() (*netlink.AttributeDecoder, error) {
	if len(m.data) < 4 {
		return nil, nil
	}
	ad, err := netlink.NewAttributeDecoder(m.data[4:])
	if err != nil {
		return nil, err
	}
	ad.ByteOrder = binary.BigEndian
	return ad, nil
}

// eachMsg calls fn with every message of datagram b until fn says done.
func eachMsg(b []byte, fn func(m nlMsg) (done bool, err error)) (bool, error) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return false, fmt.Errorf("netlink: bad message length %d", l)
		}
		m := nlMsg{
			typ:   binary.NativeEndian.Uint16(b[4:6]),
			flags: binary.NativeEndian.Uint16(b[6:8]),
			seq:   binary.NativeEndian.Uint32(b[8:12]),
			data:  b[unix.NLMSG_HDRLEN:l],
		}
		b = b[min(nlAlign(l), len(b)):]
		if done, err := fn(m); done || err != nil {
			return done, err
		}
	}
	return false, nil
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

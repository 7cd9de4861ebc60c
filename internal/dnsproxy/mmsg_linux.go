package dnsproxy

import (
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpBatcher moves batches of datagrams on one non-blocking UDP socket
// with recvmmsg/sendmmsg issued as raw system calls inside the socket's
// syscall.RawConn Read/Write callbacks: the runtime's poller still does the
// waiting (a callback returns false on EAGAIN), but a call that does not
// block skips the runtime's entersyscall/exitsyscall. That matters more than
// the few nanoseconds it saves: entersyscall wakes the runtime's sysmon
// thread whenever it sleeps because all Ps were idle, and sysmon then polls
// every 20 µs for a while — a third of the DNS server's context switches on
// a small machine (golang.org/x/net's ipv4.PacketConn ReadBatch/WriteBatch
// use syscall.Syscall6, hence entersyscall).
//
// Messages are read into fixed buffers; the sender's raw socket address is
// kept so that the reply goes back to exactly that address (IPv4, IPv6,
// v4-mapped IPv6 and the IPv6 scope alike).
type udpBatcher struct {
	rc syscall.RawConn

	inHdr   []mmsghdr
	inIov   []unix.Iovec
	inName  []unix.RawSockaddrInet6 // large enough for sockaddr_in too
	inBuf   [][]byte
	outHdr  []mmsghdr
	outIov  []unix.Iovec
	outName []unix.RawSockaddrInet6

	// retries is how many more times a read callback tries recvmmsg after
	// EAGAIN before it lets the poller park the goroutine.
	retries int

	// Results of the callbacks (fields rather than closure variables so
	// the callbacks are allocated once).
	n     int
	errno syscall.Errno
	from  int
	to    int
	read  func(fd uintptr) bool
	write func(fd uintptr) bool

	// zone caches the name of the last IPv6 scope seen.
	zoneID   uint32
	zoneName string
}

// mmsghdr is struct mmsghdr: Go's layout of {Msghdr; uint32} matches C's on
// 32- and 64-bit Linux.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
}

func newUDPBatcher(c *net.UDPConn, batch, bufSize int) (*udpBatcher, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &udpBatcher{
		rc:      rc,
		inHdr:   make([]mmsghdr, batch),
		inIov:   make([]unix.Iovec, batch),
		inName:  make([]unix.RawSockaddrInet6, batch),
		inBuf:   make([][]byte, batch),
		outHdr:  make([]mmsghdr, batch),
		outIov:  make([]unix.Iovec, batch),
		outName: make([]unix.RawSockaddrInet6, batch),
	}
	for i := range batch {
		b.inBuf[i] = make([]byte, bufSize)
		b.inIov[i].Base = &b.inBuf[i][0]
		b.inIov[i].SetLen(bufSize)
		h := &b.inHdr[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&b.inName[i]))
		h.Iov = &b.inIov[i]
		h.SetIovlen(1)
		o := &b.outHdr[i].hdr
		o.Name = (*byte)(unsafe.Pointer(&b.outName[i]))
		o.Iov = &b.outIov[i]
		o.SetIovlen(1)
	}
	b.read = func(fd uintptr) bool {
		for try := 0; ; try++ {
			n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.inHdr[0])), uintptr(len(b.inHdr)), 0, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				if try < b.retries {
					continue
				}
				return false
			}
			b.n, b.errno = int(n), e
			return true
		}
	}
	b.write = func(fd uintptr) bool {
		for {
			n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.outHdr[b.from])), uintptr(b.to-b.from), 0, 0, 0)
			switch e {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			b.n, b.errno = int(n), e
			return true
		}
	}
	return b, nil
}

// readBatch waits for datagrams and reads up to the batch size of them; it
// returns how many. net.ErrClosed once the socket is closed.
func (b *udpBatcher) readBatch() (int, error) {
	for i := range b.inHdr {
		b.inHdr[i].hdr.Namelen = unix.SizeofSockaddrInet6
		b.inHdr[i].hdr.Flags = 0
		b.inHdr[i].len = 0
	}
	if err := b.rc.Read(b.read); err != nil {
		return 0, err
	}
	if b.errno != 0 {
		return 0, b.errno
	}
	return b.n, nil
}

// message returns the i-th datagram read: its bytes, its sender and ok =
// false when it must be ignored (truncated, or an unknown address family).
func (b *udpBatcher) message(i int) (wire []byte, src netip.AddrPort, ok bool) {
	h := &b.inHdr[i]
	if h.hdr.Flags&unix.MSG_TRUNC != 0 {
		return nil, src, false
	}
	src, ok = b.sockaddr(&b.inName[i], h.hdr.Namelen)
	if !ok {
		return nil, src, false
	}
	return b.inBuf[i][:h.len], src, true
}

// sockaddr decodes a raw socket address; v4-mapped IPv6 addresses come back
// as IPv4 and an IPv6 scope as the interface's name (as the net package
// does), so that WriteToUDPAddrPort can answer the address later.
func (b *udpBatcher) sockaddr(rsa *unix.RawSockaddrInet6, n uint32) (netip.AddrPort, bool) {
	switch rsa.Family {
	case unix.AF_INET:
		if n < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, false
		}
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port)), true
	case unix.AF_INET6:
		if n < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, false
		}
		a := netip.AddrFrom16(rsa.Addr)
		if a.Is4In6() {
			a = a.Unmap()
		} else if rsa.Scope_id != 0 {
			a = a.WithZone(b.zone(rsa.Scope_id))
		}
		return netip.AddrPortFrom(a, ntohs(rsa.Port)), true
	}
	return netip.AddrPort{}, false
}

func (b *udpBatcher) zone(id uint32) string {
	if id != b.zoneID || b.zoneName == "" {
		b.zoneID, b.zoneName = id, strconv.FormatUint(uint64(id), 10)
		if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
			b.zoneName = ifi.Name
		}
	}
	return b.zoneName
}

// ntohs reads a port as stored in a sockaddr (network byte order).
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// setReply makes the k-th outgoing message resp, addressed to the sender
// of the i-th message read. resp must stay untouched until writeBatch.
func (b *udpBatcher) setReply(k, i int, resp []byte) {
	b.outName[k] = b.inName[i]
	o := &b.outHdr[k]
	o.hdr.Namelen = b.inHdr[i].hdr.Namelen
	o.hdr.Flags = 0
	o.len = 0
	b.outIov[k].Base = unsafe.SliceData(resp)
	b.outIov[k].SetLen(len(resp))
}

// writeBatch sends the replies from..to-1 (sendmmsg); it returns how many
// went, and an error only when the first one failed.
func (b *udpBatcher) writeBatch(from, to int) (int, error) {
	b.from, b.to = from, to
	if err := b.rc.Write(b.write); err != nil {
		return 0, err
	}
	if b.errno != 0 {
		return 0, b.errno
	}
	return b.n, nil
}

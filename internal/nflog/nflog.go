// Package nflog reads the kernel's packet log (nfnetlink_log, the target of
// nftables' `log group N`) over netlink with github.com/mdlayher/netlink,
// and parses each logged packet's headers into a Packet. The daemon turns
// packets into decision log lines.
package nflog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
)

// Netfilter netlink constants (linux/netfilter/nfnetlink_log.h).
const (
	netlinkNetfilter = 12
	subsysULOG       = 4
	msgPacket        = 0
	msgConfig        = 1

	attrCfgCmd      = 1
	attrCfgMode     = 2
	attrCfgNLBufSiz = 3 // NFULA_CFG_NLBUFSIZ, u32: bytes of one batch
	attrCfgTimeout  = 4 // NFULA_CFG_TIMEOUT, u32 in 1/100 s
	attrCfgQThresh  = 5 // NFULA_CFG_QTHRESH, u32: messages of one batch
	attrCfgFlags    = 6

	cfgCmdBind   = 1
	cfgCmdUnbind = 2
	copyPacket   = 2

	attrPacketHdr = 1
	attrTimestamp = 3
	attrIfIn      = 4
	attrIfOut     = 5
	attrPayload   = 9
	attrPrefix    = 10
)

// Packet is one logged packet.
type Packet struct {
	Prefix  string
	Family  uint8 // 2 (IPv4) or 10 (IPv6)
	InIf    uint32
	OutIf   uint32
	Time    time.Time
	Src     netip.Addr
	Dst     netip.Addr
	Proto   uint8 // IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6)
	SrcPort uint16
	DstPort uint16 // for ICMP: type<<8 | code
}

// Reader receives packets of one NFLOG group.
//
// The kernel gathers logged packets into batches of up to BatchBytes (one
// netlink datagram) and sends a batch when it is full, holds BatchPackets
// packets, or is FlushTimeout old. Receive reads one batch with one
// recvfrom(2) into a buffer the Reader keeps, and parses it in place:
// in the steady state it allocates nothing (prefixes are interned), so a
// flood of logged flows costs the daemon a system call per batch and a
// few hundred nanoseconds per packet.
type Reader struct {
	conn  *netlink.Conn
	rc    syscall.RawConn
	group uint16

	buf      []byte
	pkts     []Packet
	prefixes map[string]string // interned log prefixes
	overruns atomic.Uint64
}

// Batching of the kernel's log messages (nfnetlink_log).
const (
	// BatchBytes is the size the kernel allocates for a batch
	// (NFULA_CFG_NLBUFSIZ; its default is a page, its maximum 128 KiB):
	// several hundred packet messages. The kernel's allocator rounds it up
	// (64 KiB and its bookkeeping become 128 KiB of room), so a datagram
	// can be up to twice as long.
	BatchBytes = 64 << 10
	// BatchPackets is the number of packets after which the kernel sends a
	// batch (NFULA_CFG_QTHRESH; default 100). It is above what a batch
	// holds, so a batch goes out when it is full or FlushTimeout old.
	BatchPackets = 4096
	// readBuffer is the socket's receive buffer: 32 full batches.
	readBuffer = 32 * 2 * BatchBytes
	// recvBuffer is the size of the Reader's buffer for one datagram; it
	// grows if the kernel ever sends a longer one.
	recvBuffer = 4 * BatchBytes
)

// Open binds NFLOG group in the network namespace netnsFD (0 for the
// current one). copyRange bytes of each packet are copied (128 covers the
// IPv6 + TCP headers).
func Open(group uint16, netnsFD int) (*Reader, error) {
	c, err := netlink.Dial(netlinkNetfilter, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return nil, fmt.Errorf("nflog: dial: %w", err)
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: %w", err)
	}
	r := &Reader{conn: c, rc: rc, group: group, buf: make([]byte, recvBuffer), prefixes: map[string]string{}}
	// Unbind first: a previous (crashed) daemon may still hold the group in
	// another socket; the kernel refuses a second binder. Acknowledged, so
	// that its error (ENODEV when nobody holds the group) is read here and
	// not taken for the answer to the bind.
	_ = r.config(netlink.Acknowledge, netlink.Attribute{Type: attrCfgCmd, Data: []byte{cfgCmdUnbind}})
	if err := r.config(netlink.Acknowledge, netlink.Attribute{Type: attrCfgCmd, Data: []byte{cfgCmdBind}}); err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: bind group %d: %w", group, err)
	}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode[0:4], 128)
	mode[4] = copyPacket
	if err := r.config(netlink.Acknowledge, netlink.Attribute{Type: attrCfgMode, Data: mode}); err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: set copy mode: %w", err)
	}
	// The kernel batches log messages and sends a batch when it is full or
	// when the flush timeout fires (default 1 s: a line could be a second
	// late). FlushTimeout keeps lines prompt.
	timeout := make([]byte, 4)
	binary.BigEndian.PutUint32(timeout, uint32(FlushTimeout/(10*time.Millisecond)))
	if err := r.config(netlink.Acknowledge, netlink.Attribute{Type: attrCfgTimeout, Data: timeout}); err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: set flush timeout: %w", err)
	}
	for _, a := range []struct {
		typ  uint16
		v    uint32
		what string
	}{{attrCfgNLBufSiz, BatchBytes, "batch size"}, {attrCfgQThresh, BatchPackets, "batch threshold"}} {
		v := make([]byte, 4)
		binary.BigEndian.PutUint32(v, a.v)
		if err := r.config(netlink.Acknowledge, netlink.Attribute{Type: a.typ, Data: v}); err != nil {
			c.Close()
			return nil, fmt.Errorf("nflog: set %s: %w", a.what, err)
		}
	}
	// SO_RCVBUFFORCE (root) beyond net.core.rmem_max, else SO_RCVBUF.
	if err := c.SetReadBuffer(readBuffer); err != nil {
		c.Close()
		return nil, fmt.Errorf("nflog: receive buffer: %w", err)
	}
	forceReadBuffer(rc, readBuffer)
	return r, nil
}

// FlushTimeout is how long the kernel holds logged packets before sending
// a partial batch (NFULA_CFG_TIMEOUT; its unit is 10 ms; the kernel's
// default is 1 s). 50 ms keeps lines prompt while a stream of flows wakes
// the daemon 20 times a second: against 20 ms, a third less daemon CPU per
// flow in the data-plane benchmark (docs/benchmarks.md).
const FlushTimeout = 50 * time.Millisecond

func (r *Reader) config(flags netlink.HeaderFlags, attrs ...netlink.Attribute) error {
	ad, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	hdr := []byte{0 /* AF_UNSPEC */, 0 /* version */, 0, 0}
	binary.BigEndian.PutUint16(hdr[2:], r.group)
	m := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(subsysULOG<<8 | msgConfig), Flags: netlink.Request | flags},
		Data:   append(hdr, ad...),
	}
	if flags&netlink.Acknowledge == 0 {
		_, err = r.conn.Send(m)
		return err
	}
	_, err = r.conn.Execute(m)
	return err
}

// Close unbinds and closes the socket; Receive then returns an error.
func (r *Reader) Close() error {
	_ = r.config(0, netlink.Attribute{Type: attrCfgCmd, Data: []byte{cfgCmdUnbind}})
	return r.conn.Close()
}

// SetDeadline makes a blocked Receive return at t.
func (r *Reader) SetDeadline(t time.Time) error { return r.conn.SetReadDeadline(t) }

// Receive blocks for the next batch of packets and returns them. The slice
// is the Reader's: it is valid until the next Receive. Messages that
// cannot be parsed are skipped; their count is returned. When the kernel
// could not deliver messages because the socket's buffer was full, Receive
// counts an overrun (Overruns) and goes on.
func (r *Reader) Receive() ([]Packet, int, error) {
	n, full, err := r.recv()
	if err != nil {
		return nil, 0, err
	}
	pkts, bad := r.parseBatch(r.buf[:n])
	if full > len(r.buf) {
		// A datagram longer than the buffer (MSG_TRUNC gave its length):
		// the messages that fit were read, the rest is lost (an overrun);
		// the next datagram gets a buffer of that length.
		r.overruns.Add(1)
		r.buf = make([]byte, full)
	}
	return pkts, bad, nil
}

// Overruns is how many times the kernel dropped log messages because the
// daemon did not read them fast enough (ENOBUFS on the socket), or a
// datagram did not fit the buffer.
func (r *Reader) Overruns() uint64 { return r.overruns.Load() }

// netlink message header (host byte order) and attribute layout.
const (
	nlmsgHdrLen  = 16
	nlaHdrLen    = 4
	nlaTypeMask  = 0x3fff
	nlmsgTypeLog = subsysULOG<<8 | msgPacket
)

func align4(n int) int { return (n + 3) &^ 3 }

// parseBatch parses the netlink messages of one datagram.
func (r *Reader) parseBatch(b []byte) ([]Packet, int) {
	r.pkts = r.pkts[:0]
	bad := 0
	for len(b) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < nlmsgHdrLen || l > len(b) {
			bad++
			break
		}
		if binary.NativeEndian.Uint16(b[4:6]) == nlmsgTypeLog {
			r.pkts = append(r.pkts, Packet{})
			if err := parseMessage(b[nlmsgHdrLen:l], &r.pkts[len(r.pkts)-1], r.intern); err != nil {
				r.pkts = r.pkts[:len(r.pkts)-1]
				bad++
			}
		}
		if align4(l) >= len(b) {
			break
		}
		b = b[align4(l):]
	}
	if len(r.prefixes) > 1<<14 {
		clear(r.prefixes) // prefixes of old rulesets
	}
	return r.pkts, bad
}

// intern returns the string of a prefix, allocating only for a prefix not
// seen before.
func (r *Reader) intern(b []byte) string {
	if s, ok := r.prefixes[string(b)]; ok {
		return s
	}
	s := string(b)
	r.prefixes[s] = s
	return s
}

// ParseMessage parses the body of an NFULNL_MSG_PACKET message (nfgenmsg
// followed by attributes). It never panics on malformed input.
func ParseMessage(b []byte) (Packet, error) {
	var p Packet
	err := parseMessage(b, &p, func(b []byte) string { return string(b) })
	return p, err
}

func parseMessage(b []byte, p *Packet, str func([]byte) string) error {
	if len(b) < 4 {
		return errors.New("nflog: short message")
	}
	p.Family = b[0]
	var payload []byte
	for a := b[4:]; len(a) > 0; {
		if len(a) < nlaHdrLen {
			return errors.New("nflog: short attribute")
		}
		l := int(binary.NativeEndian.Uint16(a[0:2]))
		if l < nlaHdrLen || l > len(a) {
			return errors.New("nflog: bad attribute length")
		}
		data := a[nlaHdrLen:l]
		switch binary.NativeEndian.Uint16(a[2:4]) & nlaTypeMask {
		case attrPrefix:
			if i := bytes.IndexByte(data, 0); i >= 0 {
				data = data[:i]
			}
			p.Prefix = str(data)
		case attrIfIn:
			p.InIf = binary.BigEndian.Uint32(pad4(data))
		case attrIfOut:
			p.OutIf = binary.BigEndian.Uint32(pad4(data))
		case attrTimestamp:
			if len(data) >= 16 {
				p.Time = time.Unix(int64(binary.BigEndian.Uint64(data[0:8])), int64(binary.BigEndian.Uint64(data[8:16]))*1000)
			}
		case attrPayload:
			payload = data
		}
		if align4(l) >= len(a) {
			break
		}
		a = a[align4(l):]
	}
	if p.Time.IsZero() {
		p.Time = time.Now()
	}
	return ParsePayload(payload, p)
}

func pad4(b []byte) []byte {
	if len(b) >= 4 {
		return b[:4]
	}
	return make([]byte, 4)
}

// ParsePayload fills addresses, protocol and ports from an IP packet's
// first bytes. It never panics on malformed input.
func ParsePayload(b []byte, p *Packet) error {
	if len(b) < 1 {
		return errors.New("nflog: no payload")
	}
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if len(b) < 20 || ihl < 20 || len(b) < ihl {
			return errors.New("nflog: short IPv4 header")
		}
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		p.Proto = b[9]
		if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			return nil // a non-first fragment: no L4 header
		}
		l4 = b[ihl:]
	case 6:
		if len(b) < 40 {
			return errors.New("nflog: short IPv6 header")
		}
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		next := b[6]
		rest := b[40:]
		// Skip the common extension headers to reach the L4 header.
		for i := 0; i < 8; i++ {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(rest) < 8 {
					return errors.New("nflog: short IPv6 extension header")
				}
				n := (int(rest[1]) + 1) * 8
				if len(rest) < n {
					return errors.New("nflog: short IPv6 extension header")
				}
				next, rest = rest[0], rest[n:]
				continue
			case 44: // fragment
				if len(rest) < 8 {
					return errors.New("nflog: short IPv6 fragment header")
				}
				if binary.BigEndian.Uint16(rest[2:4])&0xfff8 != 0 {
					p.Proto = rest[0]
					return nil
				}
				next, rest = rest[0], rest[8:]
				continue
			}
			break
		}
		p.Proto = next
		l4 = rest
	default:
		return fmt.Errorf("nflog: not an IP packet (version %d)", b[0]>>4)
	}
	switch p.Proto {
	case 6, 17, 132:
		if len(l4) >= 4 {
			p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
			p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		}
	case 1, 58:
		if len(l4) >= 2 {
			p.DstPort = uint16(l4[0])<<8 | uint16(l4[1])
		}
	}
	return nil
}

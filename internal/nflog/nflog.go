// Package nflog reads the kernel's packet log (nfnetlink_log, the target of
// nftables' `log group N`) over netlink with github.com/mdlayher/netlink,
// and parses each logged packet's headers into a Packet. The daemon turns
// packets into decision log lines.
package nflog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
)

// Netfilter netlink constants (linux/netfilter/nfnetlink_log.h).
const (
	netlinkNetfilter = 12
	subsysULOG       = 4
	msgPacket        = 0
	msgConfig        = 1

	attrCfgCmd     = 1
	attrCfgMode    = 2
	attrCfgTimeout = 4 // NFULA_CFG_TIMEOUT, u32 in 1/100 s
	attrCfgFlags   = 6

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
type Reader struct {
	conn  *netlink.Conn
	group uint16
}

// Open binds NFLOG group in the network namespace netnsFD (0 for the
// current one). copyRange bytes of each packet are copied (128 covers the
// IPv6 + TCP headers).
func Open(group uint16, netnsFD int) (*Reader, error) {
	c, err := netlink.Dial(netlinkNetfilter, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return nil, fmt.Errorf("nflog: dial: %w", err)
	}
	r := &Reader{conn: c, group: group}
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
	_ = c.SetReadBuffer(4 << 20)
	return r, nil
}

// FlushTimeout is how long the kernel holds logged packets before sending
// a partial batch (NFULA_CFG_TIMEOUT; its unit is 10 ms).
const FlushTimeout = 20 * time.Millisecond

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

// Receive blocks for the next batch of packets. Packets that cannot be
// parsed are skipped; the count of skipped messages is returned.
func (r *Reader) Receive() ([]Packet, int, error) {
	msgs, err := r.conn.Receive()
	if err != nil {
		return nil, 0, err
	}
	var out []Packet
	bad := 0
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(subsysULOG<<8|msgPacket) {
			continue
		}
		p, err := ParseMessage(m.Data)
		if err != nil {
			bad++
			continue
		}
		out = append(out, p)
	}
	return out, bad, nil
}

// ParseMessage parses the body of an NFULNL_MSG_PACKET message (nfgenmsg
// followed by attributes). It never panics on malformed input.
func ParseMessage(b []byte) (Packet, error) {
	var p Packet
	if len(b) < 4 {
		return p, errors.New("nflog: short message")
	}
	p.Family = b[0]
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return p, err
	}
	var payload []byte
	for ad.Next() {
		switch ad.Type() {
		case attrPrefix:
			p.Prefix = ad.String()
		case attrIfIn:
			p.InIf = binary.BigEndian.Uint32(pad4(ad.Bytes()))
		case attrIfOut:
			p.OutIf = binary.BigEndian.Uint32(pad4(ad.Bytes()))
		case attrTimestamp:
			if t := ad.Bytes(); len(t) >= 16 {
				p.Time = time.Unix(int64(binary.BigEndian.Uint64(t[0:8])), int64(binary.BigEndian.Uint64(t[8:16]))*1000)
			}
		case attrPayload:
			payload = ad.Bytes()
		}
	}
	if err := ad.Err(); err != nil {
		return p, err
	}
	if p.Time.IsZero() {
		p.Time = time.Now()
	}
	if err := ParsePayload(payload, &p); err != nil {
		return p, err
	}
	return p, nil
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

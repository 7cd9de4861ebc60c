package nflog

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
)

func ipv4TCP(src, dst string, sport, dport uint16) []byte {
	b := make([]byte, 40)
	b[0] = 0x45
	b[9] = 6
	copy(b[12:16], netip.MustParseAddr(src).AsSlice())
	copy(b[16:20], netip.MustParseAddr(dst).AsSlice())
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	return b
}

func ipv6UDP(src, dst string, sport, dport uint16) []byte {
	b := make([]byte, 48)
	b[0] = 0x60
	b[6] = 17
	copy(b[8:24], netip.MustParseAddr(src).AsSlice())
	copy(b[24:40], netip.MustParseAddr(dst).AsSlice())
	binary.BigEndian.PutUint16(b[40:], sport)
	binary.BigEndian.PutUint16(b[42:], dport)
	return b
}

func message(family byte, prefix string, payload []byte) []byte {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: attrPrefix, Data: append([]byte(prefix), 0)},
		{Type: attrIfIn, Data: []byte{0, 0, 0, 7}},
		{Type: attrPayload, Data: payload},
	})
	if err != nil {
		panic(err)
	}
	return append([]byte{family, 0, 0, 100}, attrs...)
}

func TestParseMessage(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want Packet
	}{
		{"ipv4 tcp", message(2, "cw:A:3", ipv4TCP("10.42.1.10", "192.0.2.10", 40000, 443)),
			Packet{Prefix: "cw:A:3", Family: 2, InIf: 7, Src: netip.MustParseAddr("10.42.1.10"), Dst: netip.MustParseAddr("192.0.2.10"), Proto: 6, SrcPort: 40000, DstPort: 443}},
		{"ipv6 udp", message(10, "cw:D:default", ipv6UDP("2001:db8:42:1::10", "2001:db8:192::13", 5000, 123)),
			Packet{Prefix: "cw:D:default", Family: 10, InIf: 7, Src: netip.MustParseAddr("2001:db8:42:1::10"), Dst: netip.MustParseAddr("2001:db8:192::13"), Proto: 17, SrcPort: 5000, DstPort: 123}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMessage(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			got.Time = tt.want.Time
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	for _, bad := range [][]byte{nil, {2, 0}, message(2, "x", []byte{0x45, 0}), message(2, "x", []byte{0x70})} {
		if _, err := ParseMessage(bad); err == nil {
			t.Errorf("%x: no error", bad)
		}
	}
}

// FuzzParseMessage: packet bytes come from the network; the parser must
// never panic.
func FuzzParseMessage(f *testing.F) {
	f.Add(message(2, "cw:A:3", ipv4TCP("10.42.1.10", "192.0.2.10", 40000, 443)))
	f.Add(message(10, "cw:D:default", ipv6UDP("2001:db8::1", "2001:db8::2", 1, 2)))
	f.Add([]byte{2, 0, 0, 0, 8, 0, 9, 0, 0x45, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseMessage(b)
		if err == nil && !p.Src.IsValid() {
			t.Fatal("parsed without a source address")
		}
	})
}

package nft

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Raw packets for the kernel tests: the first packet of a flow (a TCP SYN,
// a UDP datagram, an ICMP or ICMPv6 echo request) with any source address,
// written as an Ethernet frame onto a veth in a test namespace, so that
// the firewall namespace on the other end receives it as if a host with
// that address had sent it. Checksums are computed: conntrack checks them.

// rawFlow is the first packet of a flow.
type rawFlow struct {
	proto    uint8 // protoTCP, protoUDP, protoICMP (ICMPv6 for IPv6)
	src, dst netip.Addr
	sport    uint16 // TCP/UDP; the echo identifier for ICMP
	dport    uint16
}

func csumAdd(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func csumFold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// l4Packet returns the transport header (and a little payload) of f with
// its checksum; l4proto is the IP protocol number.
func l4Packet(f rawFlow) (l4 []byte, l4proto uint8) {
	payload := []byte("clusterwall")
	switch f.proto {
	case protoTCP:
		l4 = make([]byte, 20)
		binary.BigEndian.PutUint16(l4[0:], f.sport)
		binary.BigEndian.PutUint16(l4[2:], f.dport)
		binary.BigEndian.PutUint32(l4[4:], uint32(f.sport)<<16|uint32(f.dport)) // seq
		l4[12] = 5 << 4
		l4[13] = 0x02 // SYN
		binary.BigEndian.PutUint16(l4[14:], 64240)
		l4proto = protoTCP
	case protoUDP:
		l4 = make([]byte, 8, 8+len(payload))
		l4 = append(l4, payload...)
		binary.BigEndian.PutUint16(l4[0:], f.sport)
		binary.BigEndian.PutUint16(l4[2:], f.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		l4proto = protoUDP
	default:
		l4 = make([]byte, 8, 8+len(payload))
		l4 = append(l4, payload...)
		l4[0], l4proto = 8, protoICMP // echo request
		if f.src.Is6() {
			l4[0], l4proto = 128, protoICMPv6
		}
		binary.BigEndian.PutUint16(l4[4:], f.sport)
		binary.BigEndian.PutUint16(l4[6:], 1)
	}
	var sum uint32
	if l4proto != protoICMP { // ICMPv4 has no pseudo-header
		sum = csumAdd(sum, f.src.AsSlice())
		sum = csumAdd(sum, f.dst.AsSlice())
		sum += uint32(l4proto) + uint32(len(l4))
	}
	sum = csumAdd(sum, l4)
	off := map[uint8]int{protoTCP: 16, protoUDP: 6, protoICMP: 2, protoICMPv6: 2}[l4proto]
	c := csumFold(sum)
	if l4proto == protoUDP && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[off:], c)
	return l4, l4proto
}

// frame returns f's first packet as an Ethernet frame from srcMAC to dstMAC.
func frame(dstMAC, srcMAC net.HardwareAddr, f rawFlow, id uint16) []byte {
	l4, l4proto := l4Packet(f)
	b := make([]byte, 0, 14+40+len(l4))
	b = append(b, dstMAC...)
	b = append(b, srcMAC...)
	if f.src.Is4() {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IP)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(ip[4:], id)
		ip[8], ip[9] = 64, l4proto
		copy(ip[12:16], f.src.AsSlice())
		copy(ip[16:20], f.dst.AsSlice())
		binary.BigEndian.PutUint16(ip[10:], csumFold(csumAdd(0, ip)))
		b = append(b, ip...)
	} else {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IPV6)
		ip := make([]byte, 40)
		binary.BigEndian.PutUint32(ip[0:], 6<<28|uint32(id))
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6], ip[7] = l4proto, 64
		copy(ip[8:24], f.src.AsSlice())
		copy(ip[24:40], f.dst.AsSlice())
		b = append(b, ip...)
	}
	return append(b, l4...)
}

// injector writes frames onto one interface of a namespace, addressed to
// the MAC address of its peer.
type injector struct {
	fd      int
	ifindex int
	src     net.HardwareAddr
	dst     net.HardwareAddr
	id      uint16
}

// newInjector opens a packet socket on dev in ns; peerMAC is the address
// of the other end (the firewall's interface).
func newInjector(t testing.TB, ns, dev string, peerMAC net.HardwareAddr) *injector {
	t.Helper()
	in := &injector{dst: peerMAC}
	var err error
	inNS(t, ns, func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName(dev); err != nil {
			return
		}
		in.ifindex, in.src = ifi.Index, ifi.HardwareAddr
		in.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0) // send only
	})
	if err != nil {
		t.Fatalf("packet socket on %s in %s: %v", dev, ns, err)
	}
	t.Cleanup(func() { unix.Close(in.fd) })
	return in
}

func (in *injector) send(f rawFlow) error {
	in.id++
	b := frame(in.dst, in.src, f, in.id)
	sa := &unix.SockaddrLinklayer{Ifindex: in.ifindex, Halen: 6}
	copy(sa.Addr[:], in.dst)
	return unix.Sendto(in.fd, b, 0, sa)
}

// macOf returns the MAC address of dev in ns.
func macOf(t testing.TB, ns, dev string) net.HardwareAddr {
	t.Helper()
	out := run(t, "ip", "-n", ns, "-o", "link", "show", "dev", dev)
	i := strings.Index(out, "link/ether ")
	if i < 0 {
		t.Fatalf("no MAC address for %s in %s: %s", dev, ns, out)
	}
	mac, err := net.ParseMAC(strings.Fields(out[i+len("link/ether "):])[0])
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// TestRawPacketChecksums: the frames' checksums are those the kernel
// verifies (the IPv4 header sums to 0xffff, and so do the transport
// headers with their pseudo-headers).
func TestRawPacketChecksums(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	for _, f := range []rawFlow{
		{protoTCP, netip.MustParseAddr("10.42.1.10"), netip.MustParseAddr("198.18.10.5"), 40000, 443},
		{protoUDP, netip.MustParseAddr("2001:db8:42:1::10"), netip.MustParseAddr("2001:db8:ac:10::5"), 40001, 53},
		{protoICMP, netip.MustParseAddr("10.42.1.10"), netip.MustParseAddr("198.18.10.5"), 7, 0},
		{protoICMP, netip.MustParseAddr("2001:db8:42:1::10"), netip.MustParseAddr("2001:db8:ac:10::5"), 7, 0},
	} {
		b := frame(mac, mac, f, 1)[14:]
		l4, l4proto := l4Packet(f)
		if f.src.Is4() {
			if got := csumFold(csumAdd(0, b[:20])); got != 0 {
				t.Errorf("%v: IPv4 header checksum does not verify (%#x)", f, got)
			}
		}
		var sum uint32
		if l4proto != protoICMP {
			sum = csumAdd(csumAdd(0, f.src.AsSlice()), f.dst.AsSlice()) + uint32(l4proto) + uint32(len(l4))
		}
		if got := csumFold(csumAdd(sum, l4)); got != 0 {
			t.Errorf("%v: transport checksum does not verify (%#x)", f, got)
		}
	}
}

func (f rawFlow) String() string {
	p := protoName(f.proto)
	if f.proto == protoICMP && f.src.Is6() {
		p = "icmpv6"
	}
	if f.proto == protoICMP {
		return fmt.Sprintf("%s %s -> %s", p, f.src, f.dst)
	}
	return fmt.Sprintf("%s %s -> %s", p, netip.AddrPortFrom(f.src, f.sport), netip.AddrPortFrom(f.dst, f.dport))
}

package daemon

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

const cutPolicy = `name: cut
ruleCollectionGroups:
  - name: publish
    priority: 100
    ruleCollections:
      - name: dnat
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - name: web
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [203.0.113.32]
            destinationPorts: ['80']
            translatedAddress: 10.42.1.100
            translatedPort: '80'
  - name: net
    priority: 200
    ruleCollections:
      - name: egress
        kind: Network
        priority: 200
        action: Allow
        rules:
          - name: web
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.10]
            destinationPorts: ['443']
  - name: apps
    priority: 300
    ruleCollections:
      - name: web
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: named
            protocols: ['Https:443']
            sourceAddresses: ['*']
            targetFqdns: [example.org]
`

// TestCutFilter: the conntrack cut deletes exactly the forwarded flows the
// matcher denies. It keeps what network and DNAT rules allow, never
// touches flows the kernel redirected to the L7 proxy (decided by name:
// the proxy re-decides them; their entry holds the NAT the proxy's packets
// need), nor flows from or to the firewall itself.
func TestCutFilter(t *testing.T) {
	p, err := policy.Load("cut.yaml", []byte(cutPolicy), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := match.Compile(p, match.Options{})
	if err != nil {
		t.Fatal(err)
	}
	public := netip.MustParseAddr("203.0.113.32")
	local := map[netip.Addr]bool{public: true, netip.MustParseAddr("10.42.1.1"): true, netip.MustParseAddr("10.42.2.4"): true,
		netip.MustParseAddr("2001:db8:42:1::1"): true}
	f := &denyFilter{m: m, local: func(a netip.Addr) bool { return local[a] }, public: []netip.Addr{public}}
	tcp := func(src, dst, replySrc, replyDst string) *netlink.ConntrackFlow {
		s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
		rs, rd := netip.MustParseAddrPort(replySrc), netip.MustParseAddrPort(replyDst)
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{Protocol: 6, SrcIP: net.IP(s.Addr().AsSlice()), SrcPort: s.Port(), DstIP: net.IP(d.Addr().AsSlice()), DstPort: d.Port()},
			Reverse: netlink.IPTuple{Protocol: 6, SrcIP: net.IP(rs.Addr().AsSlice()), SrcPort: rs.Port(), DstIP: net.IP(rd.Addr().AsSlice()), DstPort: rd.Port()},
		}
	}
	for _, c := range []struct {
		name string
		ct   *netlink.ConntrackFlow
		cut  bool
	}{
		{"network rule allows", tcp("10.42.1.10:40000", "192.0.2.10:443", "192.0.2.10:443", "203.0.113.32:40000"), false},
		{"no rule allows", tcp("10.42.1.10:40001", "192.0.2.11:443", "192.0.2.11:443", "203.0.113.32:40001"), true},
		{"DNAT rule", tcp("198.51.100.7:50000", "203.0.113.32:80", "10.42.1.100:80", "198.51.100.7:50000"), false},
		{"DNAT port without a rule", tcp("198.51.100.7:50001", "203.0.113.32:81", "10.42.1.100:81", "198.51.100.7:50001"), true},
		// The matcher alone would deny these (no name): the proxy decides them.
		{"redirected to the L7 proxy", tcp("10.42.1.10:40002", "192.0.2.14:443", "10.42.1.1:15001", "10.42.1.10:40002"), false},
		{"redirected to the L7 proxy, v6", tcp("[2001:db8:42:1::10]:40003", "[2001:db8:192::14]:443", "[2001:db8:42:1::1]:15001", "[2001:db8:42:1::10]:40003"), false},
		{"the L7 proxy's upstream side", tcp("203.0.113.32:40004", "192.0.2.14:443", "192.0.2.14:443", "203.0.113.32:40004"), false},
		{"to the DNS proxy", tcp("10.42.1.10:40005", "10.42.2.4:53", "10.42.2.4:53", "10.42.1.10:40005"), false},
		{"a service of the firewall on its public IP", tcp("198.51.100.7:50002", "203.0.113.32:8443", "203.0.113.32:8443", "198.51.100.7:50002"), false},
	} {
		if got := f.MatchConntrackFlow(c.ct); got != c.cut {
			t.Errorf("%s: cut = %v, want %v", c.name, got, c.cut)
		}
	}
}

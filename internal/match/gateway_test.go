package match

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// listResolver answers Resolved and Addrs (AddrLister) from a table.
type listResolver map[string][]netip.Addr

func (r listResolver) Resolved(name string, a netip.Addr) bool {
	for _, x := range r[name] {
		if x == a {
			return true
		}
	}
	return false
}

func (r listResolver) Addrs(name string) []netip.Addr { return r[name] }

const sidesPolicy = `
ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - name: dnat
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - {name: web, protocols: [Any], sourceAddresses: ['*'], destinationAddresses: [203.0.113.32], destinationPorts: ['8080'], translatedAddress: 10.42.1.10, translatedPort: '80'}
          - {name: byname, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [203.0.113.32, '2001:db8:cafe::32'], destinationPorts: ['8082'], translatedFqdn: Web.Lab.Example., translatedPort: '80'}
      - name: net
        kind: Network
        priority: 200
        action: Allow
        rules:
          - {name: anything, protocols: [Any], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['*']}
      - name: app
        kind: Application
        priority: 300
        action: Allow
        rules:
          - {name: registry, protocols: ['Https:8443'], sourceAddresses: ['*'], targetFqdns: [registry.example.org]}
`

func sidesGateway(proxy bool) *Gateway {
	c := GatewayConfig{
		PublicIPs:       []netip.Addr{ip("203.0.113.32"), ip("2001:db8:cafe::32")},
		PrivateIPs:      []netip.Addr{ip("10.42.1.1")},
		OutsideTCPPorts: []uint16{443}, InsideTCPPorts: []uint16{22},
	}
	if proxy {
		c.ProxyPort = 15001
	}
	return c.Gateway()
}

// TestSides: the gateway's semantics around the rules — DNAT only from the
// outside, the L7 proxy's ports from the inside, the firewall's services
// for flows to its addresses — with the linear reference agreeing.
func TestSides(t *testing.T) {
	p := mustLoad(t, sidesPolicy)
	res := listResolver{"web.lab.example": {ip("10.42.1.12"), ip("10.42.1.11"), ip("2001:db8:42:1::11")}}
	m, err := Compile(p, Options{Resolver: res, Gateway: sidesGateway(true)})
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		action  policy.Action
		rule    string
		path    Path
		service string
		taddr   string
	}
	allow, deny, dnat := policy.ActionAllow, policy.ActionDeny, policy.ActionDNAT
	for _, tc := range []struct {
		name string
		f    Flow
		w    want
	}{
		{"DNAT from the outside", Flow{Src: ip("198.51.100.9"), Dst: ip("203.0.113.32"), Proto: udp, Port: 8080, From: FromOutside},
			want{dnat, "g/dnat/web", PathForward, "", "10.42.1.10"}},
		{"no DNAT from the inside: the firewall drops it", Flow{Src: ip("10.42.1.11"), Dst: ip("203.0.113.32"), Proto: udp, Port: 8080, From: FromInside},
			want{deny, "", PathFirewall, "", ""}},
		{"DNAT from an unknown side (the conntrack cut)", Flow{Src: ip("10.42.1.11"), Dst: ip("203.0.113.32"), Proto: udp, Port: 8080},
			want{dnat, "g/dnat/web", PathForward, "", "10.42.1.10"}},
		{"translatedFqdn: the lowest IPv4 address", Flow{Src: ip("198.51.100.9"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 8082, From: FromOutside},
			want{dnat, "g/dnat/byname", PathForward, "", "10.42.1.11"}},
		{"translatedFqdn: IPv6", Flow{Src: ip("2001:db8:ac::9"), Dst: ip("2001:db8:cafe::32"), Proto: tcp, Port: 8082, From: FromOutside},
			want{dnat, "g/dnat/byname", PathForward, "", "2001:db8:42:1::11"}},
		{"the firewall's DNS from the inside", Flow{Src: ip("10.42.1.11"), Dst: ip("10.42.1.1"), Proto: udp, Port: 53, From: FromInside},
			want{allow, "", PathFirewall, "DNS", ""}},
		{"the firewall's DNS from the outside", Flow{Src: ip("198.51.100.9"), Dst: ip("10.42.1.1"), Proto: udp, Port: 53, From: FromOutside},
			want{deny, "", PathFirewall, "", ""}},
		{"SSH to the firewall from the inside (any of its addresses)", Flow{Src: ip("10.42.1.11"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 22, From: FromInside},
			want{allow, "", PathFirewall, "TCP services to the inside", ""}},
		{"the WAF from the outside", Flow{Src: ip("2001:db8:ac::9"), Dst: ip("2001:db8:cafe::32"), Proto: tcp, Port: 443, From: FromOutside},
			want{allow, "", PathFirewall, "TCP services to the internet (ingress WAF)", ""}},
		{"the WAF from the inside", Flow{Src: ip("10.42.1.11"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 443, From: FromInside},
			want{deny, "", PathFirewall, "", ""}},
		{"the WAF's port from the inside, UDP", Flow{Src: ip("10.42.1.11"), Dst: ip("203.0.113.32"), Proto: udp, Port: 443, From: FromInside},
			want{deny, "", PathFirewall, "", ""}},
		{"the WAF from the outside, IPv4", Flow{Src: ip("198.51.100.9"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 443, From: FromOutside},
			want{allow, "", PathFirewall, "TCP services to the internet (ingress WAF)", ""}},
		{"a network rule does not open the firewall", Flow{Src: ip("10.42.1.11"), Dst: ip("10.42.1.1"), Proto: tcp, Port: 3306, From: FromInside},
			want{deny, "", PathFirewall, "", ""}},
		{"ping the firewall", Flow{Src: ip("198.51.100.9"), Dst: ip("::ffff:203.0.113.32"), Proto: icmp, From: FromOutside},
			want{allow, "", PathFirewall, "ICMP", ""}},
		{"an application rule's port from the inside: the proxy", Flow{Src: ip("10.42.1.11"), Dst: ip("192.0.2.5"), Proto: tcp, Port: 8443, From: FromInside, Name: "registry.example.org", Scheme: policy.SchemeHTTPS},
			want{allow, "g/net/anything", PathProxy, "", ""}},
		{"to the firewall on an application rule's port: the proxy too", Flow{Src: ip("10.42.1.11"), Dst: ip("10.42.1.1"), Proto: tcp, Port: 8443, From: FromInside},
			want{allow, "g/net/anything", PathProxy, "", ""}},
		{"an application rule's port from the outside: forwarded", Flow{Src: ip("198.51.100.9"), Dst: ip("10.42.1.11"), Proto: tcp, Port: 8443, From: FromOutside},
			want{allow, "g/net/anything", PathForward, "", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := m.Decide(tc.f)
			if d.Action != tc.w.action || path(d.Rule) != map[bool]string{true: "<nil>", false: tc.w.rule}[tc.w.rule == ""] ||
				d.Path != tc.w.path || d.Service != tc.w.service {
				t.Errorf("Decide = %+v, want %+v", d, tc.w)
			}
			if tc.w.taddr != "" && d.TranslatedAddr != ip(tc.w.taddr) {
				t.Errorf("translated to %v, want %s", d.TranslatedAddr, tc.w.taddr)
			}
			if lin := m.DecideLinear(tc.f); lin != d {
				t.Errorf("linear reference disagrees: %+v", lin)
			}
			if n := testing.AllocsPerRun(100, func() { m.Decide(tc.f) }); n != 0 && d.TranslatedFQDN == "" {
				t.Errorf("Decide allocates %.1f times", n)
			}
		})
	}

	// Without the proxy, application rules never match (and nothing is
	// redirected); without an address for the name, the DNAT rule does not
	// match.
	m2, err := Compile(p, Options{Gateway: sidesGateway(false)})
	if err != nil {
		t.Fatal(err)
	}
	if len(m2.SteeredPorts()) != 0 || len(m.SteeredPorts()) != 1 || m.SteeredPorts()[0] != (policy.PortRange{Lo: 8443, Hi: 8443}) {
		t.Errorf("steered ports: with the proxy %v, without %v", m.SteeredPorts(), m2.SteeredPorts())
	}
	f := Flow{Src: ip("10.42.1.11"), Dst: ip("192.0.2.5"), Proto: tcp, Port: 8443, From: FromInside, Name: "registry.example.org", Scheme: policy.SchemeHTTPS}
	if d := m2.Decide(f); d.Path != PathForward || d.Kind != policy.KindNetwork {
		t.Errorf("no proxy: %+v", d)
	}
	f = Flow{Src: ip("198.51.100.9"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 8082, From: FromOutside}
	if d := m2.Decide(f); d.Action != policy.ActionDeny || d.Path != PathFirewall {
		t.Errorf("translatedFqdn without a resolver: %+v", d)
	}
	if got := m.FQDNs(); len(got) != 1 || got[0] != "web.lab.example" {
		t.Errorf("FQDNs = %q", got)
	}
}

// TestGatewayChecks: DNAT rules must name public IPs of the gateway; bad
// gateways are refused.
func TestGatewayChecks(t *testing.T) {
	p := mustLoad(t, sidesPolicy)
	gw := sidesGateway(true)
	gw.PublicIPs = gw.PublicIPs[1:]
	if _, err := Compile(p, Options{Gateway: gw}); err == nil || !strings.Contains(err.Error(), "destination 203.0.113.32 is not a public IP of the firewall (2001:db8:cafe::32)") {
		t.Errorf("DNAT to a non-public address: %v", err)
	}
	for _, g := range []*Gateway{
		{PublicIPs: []netip.Addr{{}}},
		{Services: []Service{{Name: "x", Proto: policy.ProtoTCP}}},
		{Services: []Service{{Name: "x", Proto: 0}}},
		{Services: []Service{{Name: "x", Proto: policy.ProtoICMP, From: 9}}},
	} {
		if _, err := Compile(p, Options{Gateway: g}); err == nil {
			t.Errorf("gateway %+v accepted", g)
		}
	}
	a, b := sidesGateway(true), sidesGateway(true)
	if !a.Equal(b) || a.Equal(sidesGateway(false)) || a.Equal(nil) || !(*Gateway)(nil).Equal(nil) {
		t.Error("Gateway.Equal")
	}
	if s, ok := ParseSide("outside"); !ok || s != FromOutside || s.String() != "outside" {
		t.Error("ParseSide")
	}
	if _, ok := ParseSide("up"); ok {
		t.Error("ParseSide(up)")
	}
}

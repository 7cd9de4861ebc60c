package nft

import (
	"net/netip"
	"strings"
	"testing"
)

// TestOutsideTCPPorts: the input chain accepts new TCP connections from the
// internet to OutsideTCPPorts on the public IPs only, and keeps dropping
// other ports, other local addresses and the inside interface; the seed's
// DNAT rules still translate what they match (prerouting runs first).
func TestOutsideTCPPorts(t *testing.T) {
	cfg := labConfig()
	cfg.OutsideTCPPorts = []uint16{8443, 443}
	rs, err := compilePolicy(loadPolicy(t, "../../examples/aks-egress.yaml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rs.String(), "ingress WAF") {
		t.Fatalf("no outside services rule in\n%s", rs)
	}
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name     string
		fam      family
		src, dst string
		port     uint16
		iif      string
		want     string
	}{
		{"443 on the public IPv4", ipv4, "198.51.100.8", "203.0.113.32", 443, "outside", "accept"},
		{"8443 on the public IPv4", ipv4, "198.51.100.8", "203.0.113.32", 8443, "outside", "accept"},
		{"443 on the public IPv6", ipv6, "2001:db8:c11e::7", "2001:db8:cafe::32", 443, "outside", "accept"},
		{"another port", ipv4, "198.51.100.8", "203.0.113.32", 444, "outside", "drop"},
		{"another local address", ipv4, "198.51.100.8", "10.42.1.1", 443, "outside", "drop"},
		{"from the inside", ipv4, "10.42.1.10", "203.0.113.32", 443, "inside", "drop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := packet{fam: tc.fam, proto: protoTCP, src: a(tc.src), dst: a(tc.dst), dport: tc.port, iif: tc.iif, ctState: CtStateNew}
			res, err := evalChain(rs, "input", p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.verdict != tc.want {
				t.Fatalf("%s: %s, want %s", p, res.verdict, tc.want)
			}
		})
	}
	// The authorized source's 443 is still translated to the API server.
	p := packet{fam: ipv4, proto: protoTCP, src: a("198.51.100.7"), dst: a("203.0.113.32"), dport: 443, iif: "outside", ctState: CtStateNew}
	res, err := evalChain(rs, "prerouting", p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.verdict != "dnat 10.42.1.200:443" {
		t.Fatalf("authorized 443: prerouting %s, want dnat 10.42.1.200:443", res.verdict)
	}

	// Without public IPs the port is accepted on the outside interface.
	cfg.PublicIPs = nil
	rs, err = compilePolicy(loadPolicy(t, "testdata/kinds.yaml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	p = packet{fam: ipv4, proto: protoTCP, src: a("198.51.100.8"), dst: a("10.42.1.1"), dport: 443, iif: "outside", ctState: CtStateNew}
	if res, err := evalChain(rs, "input", p, nil); err != nil || res.verdict != "accept" {
		t.Fatalf("no public IPs: %v %v", res.verdict, err)
	}
}

func TestOutsideTCPPortZero(t *testing.T) {
	cfg := labConfig()
	cfg.OutsideTCPPorts = []uint16{0}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "outside TCP port 0") {
		t.Fatalf("Validate: %v", err)
	}
}

// TestOutsideTCPAddrs: with OutsideTCPAddrs (the ingress WAF's own public
// IP, as in the lab) the ports are accepted only there; the other public
// IP drops them, and its DNAT rules are unchanged.
func TestOutsideTCPAddrs(t *testing.T) {
	a := netip.MustParseAddr
	cfg := labConfig()
	cfg.PublicIPs = append(cfg.PublicIPs, a("203.0.113.33"), a("2001:db8:cafe::33"))
	cfg.OutsideTCPPorts = []uint16{443}
	cfg.OutsideTCPAddrs = []netip.Addr{a("203.0.113.33"), a("2001:db8:cafe::33")}
	rs, err := compilePolicy(loadPolicy(t, "../../examples/aks-egress.yaml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fam      family
		src, dst string
		chain    string
		want     string
	}{
		{ipv4, "198.51.100.8", "203.0.113.33", "input", "accept"},
		{ipv6, "2001:db8:c11e::8", "2001:db8:cafe::33", "input", "accept"},
		{ipv4, "198.51.100.8", "203.0.113.32", "input", "drop"},
		{ipv6, "2001:db8:c11e::8", "2001:db8:cafe::32", "input", "drop"},
		{ipv4, "198.51.100.7", "203.0.113.32", "prerouting", "dnat 10.42.1.200:443"},
		{ipv4, "198.51.100.7", "203.0.113.33", "prerouting", "accept"},
	} {
		p := packet{fam: tc.fam, proto: protoTCP, src: a(tc.src), dst: a(tc.dst), dport: 443, iif: "outside", ctState: CtStateNew}
		res, err := evalChain(rs, tc.chain, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.verdict != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.chain, p, res.verdict, tc.want)
		}
	}
	cfg.OutsideTCPAddrs = []netip.Addr{a("203.0.113.34")}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "203.0.113.34 is not a public IP") {
		t.Fatalf("Validate: %v", err)
	}
}

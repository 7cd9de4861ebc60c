package nft

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

func addrRange(from, to string) policy.AddrRange {
	return policy.AddrRange{From: netip.MustParseAddr(from), To: netip.MustParseAddr(to)}
}

// labThreats lists an allowed destination (198.18.10.5), the authorized
// DNAT source (198.51.100.7) and an IPv6 destination.
func labThreats(deny bool) *ThreatIntel {
	return &ThreatIntel{Deny: deny,
		V4: []policy.AddrRange{addrRange("198.18.10.5", "198.18.10.5"), addrRange("198.51.100.0", "198.51.100.7")},
		V6: []policy.AddrRange{addrRange("2001:db8:ac:10::5", "2001:db8:ac:10::5")},
	}
}

func TestCompileThreatIntel(t *testing.T) {
	p := loadPolicy(t, "testdata/kinds.yaml")
	ip := netip.MustParseAddr
	node4, node6, inet := ip("10.42.1.10"), ip("2001:db8:42:1::10"), ip("198.51.100.7")
	type flow struct {
		name  string
		chain string
		pkt   packet
		deny  string   // verdict in mode Deny
		alert string   // verdict in mode Alert
		logs  []string // log prefixes in mode Deny
		alogs []string // in mode Alert
	}
	fwdNew := func(src, dst netip.Addr, proto uint8, port uint16) packet {
		fam := ipv4
		if dst.Is6() {
			fam = ipv6
		}
		return packet{fam: fam, proto: proto, src: src, dst: dst, dport: port, iif: "inside", oif: "outside", ctState: CtStateNew}
	}
	for _, f := range []flow{
		{"listed dst, allowed by a rule", "forward", fwdNew(node4, ip("198.18.10.5"), protoTCP, 80),
			"drop", "accept", []string{"cw:D:threat"}, []string{"cw:A:threat", "cw:A:2"}},
		{"unlisted dst", "forward", fwdNew(node4, ip("198.18.10.6"), protoTCP, 80),
			"accept", "accept", []string{"cw:A:2"}, []string{"cw:A:2"}},
		{"listed IPv6 dst", "forward", fwdNew(node6, ip("2001:db8:ac:10::5"), protoTCP, 443),
			"drop", "accept", []string{"cw:D:threat"}, []string{"cw:A:threat", "cw:A:2"}},
		{"established flow to a listed dst", "forward", func() packet {
			p := fwdNew(node4, ip("198.18.10.5"), protoTCP, 80)
			p.ctState = CtStateEstablished
			return p
		}(), "accept", "accept", nil, nil},
		{"listed source before DNAT", "prerouting",
			packet{fam: ipv4, proto: protoTCP, src: inet, dst: ip("203.0.113.32"), dport: 6443, iif: "outside", ctState: CtStateNew},
			"drop", "accept", []string{"cw:D:threat"}, []string{"cw:A:threat", "cw:N:2"}},
		{"unlisted source DNAT", "prerouting",
			packet{fam: ipv4, proto: protoTCP, src: ip("198.51.100.9"), dst: ip("203.0.113.32"), dport: 6443, iif: "outside", ctState: CtStateNew},
			"accept", "accept", []string{"cw:N:2"}, []string{"cw:N:2"}},
		{"listed source to the firewall itself (DNS)", "input",
			packet{fam: ipv4, proto: protoUDP, src: ip("198.51.100.3"), dst: ip("10.42.1.1"), dport: 53, iif: "inside", ctState: CtStateNew},
			"drop", "accept", []string{"cw:D:threat"}, []string{"cw:A:threat"}},
	} {
		for _, deny := range []bool{true, false} {
			cfg := labConfig()
			cfg.ThreatIntel = labThreats(deny)
			rs, err := compilePolicy(p, cfg)
			if err != nil {
				t.Fatal(err)
			}
			pk := f.pkt
			var got evalResult
			if pk.ctState == CtStateNew {
				got, _, err = evalFlow(rs, append(cfg.PublicIPs, cfg.PrivateIPs...), pk, nil)
			} else {
				got, err = evalChain(rs, f.chain, pk, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			want, logs := f.deny, f.logs
			if !deny {
				want, logs = f.alert, f.alogs
			}
			if got.verdict != want || !slices.Equal(got.logs, logs) {
				t.Errorf("%s (deny %v): %s %v, want %s %v", f.name, deny, got.verdict, got.logs, want, logs)
			}
		}
	}
}

func TestCompileThreatIntelShape(t *testing.T) {
	p := loadPolicy(t, "testdata/kinds.yaml")
	for _, deny := range []bool{true, false} {
		cfg := labConfig()
		cfg.ProxyPort = 15001
		cfg.ThreatIntel = labThreats(deny)
		rs, err := compilePolicy(p, cfg)
		if err != nil {
			t.Fatal(err)
		}
		// Deny: first in prerouting, before the L7 proxy's redirect. Alert:
		// right after it (the proxy reports what it decides). Nowhere else.
		pre := rs.Chain("prerouting")
		jump := "jump " + ThreatChain + "_"
		at := 1
		if deny {
			at = 0
		}
		if !strings.HasPrefix(pre.Rules[at].String(), jump) || !strings.Contains(pre.Rules[1-at].String(), "redirect") {
			t.Errorf("deny %v: prerouting starts with %q, %q", deny, pre.Rules[0], pre.Rules[1])
		}
		for _, c := range rs.Chains {
			for i, r := range c.Rules {
				if strings.HasPrefix(r.String(), jump) && (c.Name != "prerouting" || i != at) {
					t.Errorf("deny %v: %s jumps to %s at rule %d", deny, c.Name, ThreatChain, i)
				}
			}
		}
		if s := setNamed(rs, ThreatSetV4); s == nil || len(s.Elems) != 2 || setNamed(rs, ThreatSetV6) == nil || rs.ThreatRanges() != 3 {
			t.Errorf("deny %v: sets %v %v, %d ranges", deny, setNamed(rs, ThreatSetV4), setNamed(rs, ThreatSetV6), rs.ThreatRanges())
		}
		tag := "cw:A:threat"
		if deny {
			tag = "cw:D:threat"
		}
		text := rs.String()
		// The listed flows go to a decision chain: counter, limited log,
		// then the verdict in a rule of its own (a limit that is over ends
		// its rule: the verdict must not be in it).
		var dec *Chain
		for _, c := range rs.Chains {
			if strings.HasPrefix(c.Name, ThreatChain+"_decision_") {
				dec = c
			}
		}
		end := "return"
		if deny {
			end = "drop"
		}
		if dec == nil || len(dec.Rules) != 2 || !strings.HasPrefix(dec.Rules[0].String(), "counter name \""+tag+"\" limit name \"cw_log_200_400\" log prefix") ||
			!strings.HasPrefix(dec.Rules[1].String(), end) {
			t.Fatalf("deny %v: threat decision chain %v", deny, dec)
		}
		for _, want := range []string{
			"ip daddr @" + setNamed(rs, ThreatSetV4).Name + " goto " + dec.Name,
			"ip6 saddr @" + setNamed(rs, ThreatSetV6).Name,
			"elements = { 198.18.10.5, 198.51.100.0/29 }",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("deny %v: ruleset lacks %q", deny, want)
			}
		}
	}
	// Without threat intelligence nothing changes.
	rs, err := compilePolicy(p, labConfig())
	if err != nil {
		t.Fatal(err)
	}
	if rs.Chain(ThreatChain) != nil || rs.Set(ThreatSetV4) != nil {
		t.Error("threat-intel chain without threat intel")
	}
}

func TestCompileThreatIntelBadRanges(t *testing.T) {
	p := loadPolicy(t, "testdata/kinds.yaml")
	for _, ti := range []*ThreatIntel{
		{V4: []policy.AddrRange{addrRange("2001:db8::1", "2001:db8::1")}},
		{V4: []policy.AddrRange{addrRange("192.0.2.9", "192.0.2.1")}},
		{V4: []policy.AddrRange{addrRange("192.0.2.1", "192.0.2.9"), addrRange("192.0.2.9", "192.0.2.10")}},
		{V6: []policy.AddrRange{{}}},
	} {
		cfg := labConfig()
		cfg.ThreatIntel = ti
		if _, err := compilePolicy(p, cfg); err == nil || !strings.Contains(err.Error(), "threat intel") {
			t.Errorf("%+v: err %v", ti, err)
		}
	}
}

func TestThreatLogTags(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		kind   LogKind
	}{{"cw:D:threat", LogThreatDeny}, {"cw:A:threat", LogThreatAlert}} {
		got, err := ParseLogTag(tc.prefix)
		if err != nil || got.Kind != tc.kind || got.String() != tc.prefix {
			t.Errorf("%s: %+v %v", tc.prefix, got, err)
		}
	}
	if _, err := ParseLogTag("cw:N:threat"); err == nil {
		t.Error("cw:N:threat accepted")
	}
}

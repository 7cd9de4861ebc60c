package proxy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// decidePolicy: network rules deny 192.0.2.66 and allow 192.0.2.77 on
// 443; an application rule allows *.ok.test, 192.0.2.10 (an IP literal)
// and cdn.test over HTTPS 443.
const decidePolicy = `
name: decide
ruleCollectionGroups:
  - name: net
    priority: 100
    ruleCollections:
      - name: netdeny
        kind: Network
        priority: 100
        action: Deny
        rules:
          - name: blocked
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.66]
            destinationPorts: ['443']
      - name: netallow
        kind: Network
        priority: 200
        action: Allow
        rules:
          - name: direct
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.77]
            destinationPorts: ['443']
  - name: app
    priority: 200
    ruleCollections:
      - name: apps
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: web
            protocols: ['Https:443']
            sourceAddresses: ['*']
            targetFqdns: ['*.ok.test', 192.0.2.10, cdn.test, blocked.test]
`

func TestDecideTransparent(t *testing.T) {
	m := compile(t, decidePolicy)
	a := netip.MustParseAddr
	ap := func(s string) netip.AddrPort { return netip.AddrPortFrom(a(s), 443) }
	known := StaticResolver{
		"www.ok.test":  {a("192.0.2.1"), a("2001:db8::1")},
		"blocked.test": {a("192.0.2.2")},
	}
	fresh := StaticResolver{
		"www.ok.test":  {a("192.0.2.1")},
		"cdn.test":     {a("192.0.2.20"), a("2001:db8::20"), a("192.0.2.21")},
		"blocked.test": {a("192.0.2.66")},
	}
	tests := []struct {
		name    string
		dst     string
		sni     string
		spoof   SpoofPolicy
		noRes   bool
		allow   bool
		dial    string
		reason  string
		rule    string
		lookups int64
	}{
		{name: "known answer", dst: "192.0.2.1", sni: "www.ok.test", allow: true, dial: "192.0.2.1:443", rule: "web"},
		{name: "known IPv6 answer", dst: "2001:db8::1", sni: "www.ok.test", allow: true, dial: "[2001:db8::1]:443", rule: "web"},
		{name: "fresh answer (CDN rotation)", dst: "192.0.2.21", sni: "cdn.test", allow: true, dial: "192.0.2.21:443", rule: "web", lookups: 1},
		{name: "spoofed", dst: "192.0.2.99", sni: "www.ok.test", reason: "destination 192.0.2.99 is not an address of www.ok.test (spoofed SNI/Host?)", rule: "web", lookups: 1},
		{name: "spoofed, rerouted to the same family", dst: "2001:db8::99", sni: "cdn.test", spoof: SpoofReroute, allow: true, dial: "[2001:db8::20]:443",
			reason: "destination 2001:db8::99 is not an address of cdn.test (spoofed SNI/Host?); rerouted to 2001:db8::20", rule: "web", lookups: 1},
		{name: "spoofed, reroute target denied by a network rule", dst: "192.0.2.99", sni: "blocked.test", spoof: SpoofReroute,
			reason: "destination 192.0.2.99 is not an address of blocked.test (spoofed SNI/Host?); the resolved address 192.0.2.66 is denied: rule matched", rule: "blocked", lookups: 1},
		{name: "unknown name", dst: "192.0.2.99", sni: "nx.ok.test", reason: "cannot verify destination 192.0.2.99 for nx.ok.test: lookup nx.ok.test: no such host", rule: "web", lookups: 1},
		{name: "no resolver", dst: "192.0.2.1", sni: "www.ok.test", noRes: true, reason: "cannot verify destination 192.0.2.1 for www.ok.test: no resolver configured", rule: "web"},
		{name: "IP literal equal to the destination", dst: "192.0.2.10", sni: "192.0.2.10", allow: true, dial: "192.0.2.10:443", rule: "web"},
		{name: "IP literal for another destination", dst: "192.0.2.11", sni: "192.0.2.10", reason: "SNI is the IP literal 192.0.2.10 but the destination is 192.0.2.11 (spoofed SNI/Host?)", rule: "web"},
		{name: "IP literal no rule lists", dst: "192.0.2.12", sni: "192.0.2.12", reason: "no rule matched"},
		{name: "network allow needs no name", dst: "192.0.2.77", sni: "", allow: true, dial: "192.0.2.77:443", rule: "direct"},
		{name: "network allow wins over a spoofed name", dst: "192.0.2.77", sni: "www.ok.test", allow: true, dial: "192.0.2.77:443", rule: "direct"},
		{name: "network deny ends evaluation", dst: "192.0.2.66", sni: "www.ok.test", reason: "rule matched", rule: "blocked"},
		{name: "no SNI", dst: "192.0.2.1", sni: "", reason: ReasonNoSNI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := &countingResolver{known: known, fresh: fresh}
			cfg := Config{Resolver: res, Spoof: tt.spoof}
			if tt.noRes {
				cfg.Resolver = nil
			}
			p := New(cfg)
			defer p.Close()
			req := &request{src: ap("10.0.0.5"), dst: ap(tt.dst), port: 443, name: tt.sni, scheme: policy.SchemeHTTPS, what: "SNI", missing: ReasonNoSNI}
			v := p.decideTransparent(m, req, true)
			if v.allow != tt.allow {
				t.Fatalf("allow = %v (%q), want %v", v.allow, v.reason, tt.allow)
			}
			dial := ""
			if len(v.dial) > 0 {
				dial = v.dial[0].String()
			}
			if dial != tt.dial {
				t.Errorf("dial %q, want %q", dial, tt.dial)
			}
			if tt.reason != "" && v.reason != tt.reason {
				t.Errorf("reason %q, want %q", v.reason, tt.reason)
			}
			rule := ""
			if v.d.Rule != nil {
				rule = v.d.Rule.Name
			}
			if rule != tt.rule {
				t.Errorf("rule %q, want %q", rule, tt.rule)
			}
			if res.lookups.Load() != tt.lookups {
				t.Errorf("%d lookups, want %d", res.lookups.Load(), tt.lookups)
			}
		})
	}
	t.Run("no policy", func(t *testing.T) {
		p := New(Config{})
		defer p.Close()
		v := p.decideTransparent(nil, &request{src: ap("10.0.0.5"), dst: ap("192.0.2.1"), port: 443, name: "www.ok.test", scheme: policy.SchemeHTTPS}, true)
		if v.allow || v.reason != ReasonNoPolicy {
			t.Errorf("%+v", v)
		}
	})
}

func TestDecideExplicit(t *testing.T) {
	m := compile(t, decidePolicy)
	a := netip.MustParseAddr
	res := StaticResolver{
		"www.ok.test":  {a("192.0.2.1")},
		"cdn.test":     {a("192.0.2.66"), a("192.0.2.20")}, // the first is denied by a network rule
		"blocked.test": {a("192.0.2.66")},
	}
	tests := []struct {
		name, host string
		allow      bool
		dial       string
		reason     string
		status     int
	}{
		{"name resolved", "www.ok.test", true, "192.0.2.1:443", "rule matched", 0},
		{"denied addresses are skipped", "cdn.test", true, "192.0.2.20:443", "rule matched", 0},
		{"every address denied", "blocked.test", false, "", "every address of blocked.test is denied: rule matched", 403},
		{"unresolvable", "nx.ok.test", false, "", "cannot resolve nx.ok.test", 502},
		{"not allowed", "other.test", false, "", "no rule matched", 403},
		{"IP literal", "192.0.2.10", true, "192.0.2.10:443", "rule matched", 0},
		{"IP literal allowed by a network rule", "192.0.2.77", true, "192.0.2.77:443", "rule matched", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{Resolver: res})
			defer p.Close()
			v := p.decideExplicit(m, &request{src: netip.MustParseAddrPort("10.0.0.5:1234"), port: 443, name: tt.host, scheme: policy.SchemeHTTPS})
			dial := ""
			if len(v.dial) > 0 {
				dial = v.dial[0].String()
			}
			if v.allow != tt.allow || dial != tt.dial || !strings.HasPrefix(v.reason, tt.reason) || (!v.allow && v.status != tt.status) {
				t.Errorf("got allow %v dial %q reason %q status %d", v.allow, dial, v.reason, v.status)
			}
		})
	}
}

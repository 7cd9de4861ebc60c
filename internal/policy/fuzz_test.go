package policy

import (
	"net/netip"
	"os"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the YAML loader: it must return a policy
// or an error, never panic, and every error must carry a position or path.
func FuzzLoad(f *testing.F) {
	if data, err := os.ReadFile("../../examples/aks-egress.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("ruleCollectionGroups: [{name: g, priority: 100, ruleCollections: [{name: c, kind: DNAT, priority: 100, action: DNAT, rules: [{name: r, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [1.2.3.4], destinationPorts: ['80'], translatedAddress: 10.0.0.1, translatedPort: '80'}]}]}]"))
	f.Add([]byte("a: &x [*x]"))
	f.Add([]byte("name: c\nbasePolicy:\n  name: b\n  threatIntel: {mode: Deny}\n  basePolicy: {name: a}\nthreatIntel: {mode: Alert}\n"))
	f.Add([]byte("basePolicy: f.yaml\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Load("f.yaml", data, Options{ServiceTags: ServiceTags{}})
		if err == nil && p == nil {
			t.Fatal("nil policy without error")
		}
		if err != nil {
			for _, e := range err.(ErrorList) {
				if e.Pos.File == "" && e.Path == "" {
					t.Fatalf("error without position: %v", e)
				}
			}
		}
	})
}

func FuzzParseFQDNPattern(f *testing.F) {
	for _, s := range []string{"*", "*.contoso.com", "*contoso.com", "ghcr.io.", "a..b", "foo.*"} {
		f.Add(s, "a.contoso.com")
	}
	f.Fuzz(func(t *testing.T, pat, name string) {
		p, err := ParseFQDNPattern(pat)
		if err != nil {
			return
		}
		// Round trip: the printed pattern parses to the same pattern.
		q, err := ParseFQDNPattern(p.String())
		if err != nil || q != p {
			t.Fatalf("%q -> %q -> %v, %v", pat, p.String(), q, err)
		}
		_ = p.Match(name)
	})
}

func FuzzParseAddrToken(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "10.0.0.0/8", "10.0.0.1-10.0.0.9", "*", "2001:db8::/32", "AzureCloud.eastus", "1.2.3.4-::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b AddrSetBuilder
		tok, err := ParseAddrToken(s, &b)
		if err != nil {
			return
		}
		set := b.Build()
		switch tok {
		case TokenIP, TokenCIDR, TokenRange:
			if len(set.Ranges) != 1 {
				t.Fatalf("%q: %d ranges", s, len(set.Ranges))
			}
			r := set.Ranges[0]
			if !set.Contains(r.From) || !set.Contains(r.To) {
				t.Fatalf("%q: set does not contain its ends", s)
			}
			// The prefix decomposition covers exactly the range.
			var rb AddrSetBuilder
			for _, p := range set.Prefixes() {
				rb.AddPrefix(p)
			}
			back := rb.Build()
			if len(back.Ranges) != 1 || back.Ranges[0] != r {
				t.Fatalf("%q: prefixes %v do not rebuild %v", s, set.Prefixes(), r)
			}
			if n := r.To.Next(); n.IsValid() && set.Contains(n) {
				t.Fatalf("%q: contains %s past its end", s, n)
			}
		case TokenAny:
			if !set.Contains(netip.IPv6Unspecified()) {
				t.Fatal("* must contain ::")
			}
		}
	})
}

func FuzzParsePortRange(f *testing.F) {
	for _, s := range []string{"80", "1-65535", "*", "0", "70000", "5-4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParsePortRange(s)
		if err == nil && (r.Lo == 0 || r.Lo > r.Hi) {
			t.Fatalf("%q -> invalid range %v", s, r)
		}
	})
}

package daemon

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
)

func twoRulePolicy(t *testing.T, name, first, second string) *policy.Policy {
	t.Helper()
	rule := func(n, port string) string {
		return fmt.Sprintf(`          - name: %s
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.10]
            destinationPorts: ['%s']
`, n, port)
	}
	ports := map[string]string{"one": "7001", "two": "7002"}
	y := `name: ` + name + `
ruleCollectionGroups:
  - name: g
    priority: 200
    ruleCollections:
      - name: c
        kind: Network
        priority: 100
        action: Deny
        rules:
` + rule(first, ports[first]) + rule(second, ports[second])
	p, err := policy.Load(name+".yaml", []byte(y), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// logPrefixes returns the log prefixes of the applied ruleset, each with
// the rule path its rule comment names ("" for default deny and input).
func logPrefixes(rs *nft.Ruleset) map[string]string {
	out := map[string]string{}
	for _, ch := range rs.Chains {
		for _, r := range ch.Rules {
			for _, st := range r.Stmts {
				if l, ok := st.(nft.Log); ok {
					path := ""
					if f := strings.Fields(r.Comment); len(f) > 1 && strings.Count(f[1], "/") == 2 {
						path = f[1]
					}
					out[l.Prefix] = path
				}
			}
		}
	}
	return out
}

// TestLogIndexGenerations: a line logged by one apply maps to that apply's
// rule and policy even after a reload that reorders the rules; unknown
// generations name no rule; failed applies leave no generation behind.
func TestLogIndexGenerations(t *testing.T) {
	rec := &nft.Recorder{}
	dp := &NFTDataplane{Runner: rec, Config: nft.Config{Inside: "cw-in", Outside: "cw-out"}}
	pa := twoRulePolicy(t, "a", "one", "two")
	xa, err := dp.Apply(compiled(t, dp, pa))
	if err != nil {
		t.Fatal(err)
	}
	prefA := logPrefixes(rec.Current)
	pb := twoRulePolicy(t, "b", "two", "one")
	xb, err := dp.Apply(compiled(t, dp, pb))
	if err != nil {
		t.Fatal(err)
	}
	prefB := logPrefixes(rec.Current)
	rec.FailApply = errors.New("kernel says no")
	if _, err := dp.Apply(twoRulePolicy(t, "c", "one", "two"), nil); err == nil {
		t.Fatal("failed apply reported success")
	}
	rec.FailApply = nil

	check := func(x LogIndex, prefixes map[string]string, want *policy.Policy) {
		t.Helper()
		n := 0
		for prefix, path := range prefixes {
			ld, ok := x.Lookup(prefix)
			if !ok || ld.UnknownRuleset || ld.Policy != want {
				t.Errorf("%s: %+v %v, want a decision of policy %s", prefix, ld, ok, want.Name)
				continue
			}
			got := ""
			if ld.Rule != nil {
				got = ld.Rule.Path()
				n++
			}
			if got != path {
				t.Errorf("%s names %q, want %q", prefix, got, path)
			}
			if strings.HasPrefix(prefix, "cw:D:input") != ld.Input {
				t.Errorf("%s: Input = %v", prefix, ld.Input)
			}
		}
		if n != 2 {
			t.Errorf("%d rule prefixes, want 2", n)
		}
	}
	// The current index (b) answers for both generations.
	check(xb, prefA, pa)
	check(xb, prefB, pb)
	check(xa, prefB, pb)
	for p := range prefA {
		if _, isB := prefB[p]; isB {
			t.Errorf("prefix %s in both generations", p)
		}
	}

	// The failed apply's generation (b's + 1) is unknown.
	tag, _ := nft.ParseLogTag("cw:D:0")
	for p := range prefB {
		if t2, err := nft.ParseLogTag(p); err == nil {
			tag.Gen = t2.Gen + 1
		}
	}
	ld, ok := xb.Lookup(tag.String())
	if !ok || !ld.UnknownRuleset || ld.Rule != nil || ld.Action != policy.ActionDeny {
		t.Errorf("unknown generation: %+v %v", ld, ok)
	}
	// Old generations are forgotten after keepGenerations applies.
	for i := 0; i < keepGenerations; i++ {
		if _, err := dp.Apply(compiled(t, dp, pb)); err != nil {
			t.Fatal(err)
		}
	}
	for p := range prefA {
		if ld, ok := xb.Lookup(p); !ok || !ld.UnknownRuleset {
			t.Errorf("%s still maps after %d applies: %+v", p, keepGenerations, ld)
		}
	}
	if _, ok := xb.Lookup("not a tag"); ok {
		t.Error("garbage prefix accepted")
	}
}

// compiled returns p and its matcher for dp's gateway, Apply's arguments.
func compiled(t *testing.T, dp *NFTDataplane, p *policy.Policy) (*policy.Policy, *match.Matcher) {
	t.Helper()
	m, err := match.Compile(p, match.Options{Gateway: dp.Gateway()})
	if err != nil {
		t.Fatal(err)
	}
	return p, m
}

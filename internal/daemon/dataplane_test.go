package daemon

import (
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// prefixes returns the log prefixes of the network rules (by index) and
// of the default deny in rs.
func prefixes(rs *nft.Ruleset) map[string]string {
	out := map[string]string{}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, st := range r.Stmts {
				if l, ok := st.(nft.Log); ok {
					t, err := nft.ParseLogTag(l.Prefix)
					if err != nil {
						continue
					}
					gen := t.Gen
					t.Gen = 0
					out[t.String()] = nft.LogTag{Kind: t.Kind, Index: t.Index, Gen: gen}.String()
				}
			}
		}
	}
	return out
}

// TestLogGenerationsKept: a rule keeps its log generation across applies
// while its decision lines stay the same (so its kernel chains stay);
// a changed rule gets the new apply's, and every prefix the kernel may
// still log maps to the rule that logged it.
func TestLogGenerationsKept(t *testing.T) {
	two := testPolicy + `          - name: db
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.11]
            destinationPorts: ['5432']
`
	rec := &nft.Recorder{}
	cfg := nft.Config{Inside: "in", Outside: "out"}
	dp := &NFTDataplane{Runner: rec, Config: cfg}
	apply := func(text string) (*nftIndex, map[string]string) {
		t.Helper()
		p, err := policy.Load("p.yaml", []byte(text), policy.Options{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := match.Compile(p, match.Options{Gateway: dp.Gateway()})
		if err != nil {
			t.Fatal(err)
		}
		x, err := dp.Apply(p, m)
		if err != nil {
			t.Fatal(err)
		}
		return x.(*nftIndex), prefixes(rec.Current)
	}
	x1, p1 := apply(two)
	// Same policy: every prefix stays.
	_, p2 := apply(two)
	for tag, pre := range p1 {
		if p2[tag] != pre {
			t.Errorf("re-apply: %s logs %s, was %s", tag, p2[tag], pre)
		}
	}
	// Rule 1 (db) gets another port: same decision line, same prefix.
	_, p3 := apply(strings.Replace(two, "'5432'", "'5433'", 1))
	if p3["cw:A:1"] != p1["cw:A:1"] || p3["cw:A:0"] != p1["cw:A:0"] {
		t.Errorf("port change: prefixes %v, were %v", p3, p1)
	}
	// Rule 1 renamed: its line changes, so does its prefix; rule 0's stays.
	x4, p4 := apply(strings.Replace(two, "name: db", "name: pg", 1))
	if p4["cw:A:1"] == p1["cw:A:1"] || p4["cw:A:0"] != p1["cw:A:0"] || p4["cw:D:default"] != p1["cw:D:default"] {
		t.Errorf("rename: prefixes %v, were %v", p4, p1)
	}
	for prefix, want := range map[string]string{p4["cw:A:1"]: "pg", p1["cw:A:1"]: "db", p4["cw:A:0"]: "web"} {
		ld, ok := x4.Lookup(prefix)
		if !ok || ld.Rule == nil || ld.Rule.Name != want {
			t.Errorf("%s -> %+v %v, want rule %s", prefix, ld, ok, want)
		}
	}
	if ld, ok := x1.Lookup(p4["cw:A:1"]); !ok || ld.Rule == nil || ld.Rule.Name != "pg" {
		t.Errorf("the first index maps the newest prefix to %+v %v", ld, ok)
	}
	// A policy of another name: every prefix changes.
	_, p5 := apply(strings.Replace(two, "name: t", "name: t2", 1))
	for tag, pre := range p4 {
		if p5[tag] == pre {
			t.Errorf("renamed policy: %s still logs %s", tag, pre)
		}
	}
}

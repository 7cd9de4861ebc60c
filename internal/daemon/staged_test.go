package daemon

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// TestApplyWaitsForMatcher: the data plane compiles the kernel's ruleset
// while the matcher of match.CompileStaged builds its indexes, and waits
// for them before it programs the kernel: a matcher whose build fails
// fails the apply with nothing sent (the running ruleset stays), and one
// that builds is applied.
func TestApplyWaitsForMatcher(t *testing.T) {
	rec := &nft.Recorder{}
	dp := &NFTDataplane{Runner: rec, Config: nft.Config{Inside: "in", Outside: "out"}}
	var d Dataplane = dp
	if _, ok := d.(builtWaiter); !ok {
		t.Fatal("NFTDataplane does not wait for the matcher: the daemon would hand it an unbuilt one")
	}
	load := func() *policy.Policy {
		p, err := policy.Load("p.yaml", []byte(testPolicy), policy.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := load()
	m, err := match.CompileStaged(p, match.Options{Gateway: dp.Gateway()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dp.Apply(p, m); err != nil {
		t.Fatal(err)
	}
	if len(rec.Applied) != 1 {
		t.Fatalf("%d rulesets applied, want 1", len(rec.Applied))
	}
	// Not a policy of policy.Validate: a rule's sources out of order, which
	// only the matcher's index build finds.
	bad := load()
	var r *policy.Rule
	for _, g := range bad.Groups {
		for _, c := range g.Collections {
			if c.Kind == policy.KindNetwork && r == nil && len(c.Rules) > 0 {
				r = c.Rules[0]
			}
		}
	}
	r.Source = policy.AddrSet{Ranges: []policy.AddrRange{
		{From: netip.MustParseAddr("10.9.0.9"), To: netip.MustParseAddr("10.9.0.9")},
		{From: netip.MustParseAddr("10.9.0.1"), To: netip.MustParseAddr("10.9.0.1")},
	}}
	bm, err := match.CompileStaged(bad, match.Options{Gateway: dp.Gateway()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dp.Apply(bad, bm); err == nil || !strings.Contains(err.Error(), "not sorted") {
		t.Fatalf("apply of a matcher that failed to build: %v, want its error", err)
	}
	if len(rec.Applied) != 1 {
		t.Fatalf("%d rulesets applied after the failed build, want 1: the kernel was programmed", len(rec.Applied))
	}
}

package nft

import (
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// TestCompileParallelEqualsSequential: a compile that builds its
// classifier trees several at a time (buildTrees, each by a compiler of
// its own) gives the ruleset of one that builds them one after the other,
// byte for byte — chains and sets in the same order under the same names,
// statistics included — on the big test policies (with the limited rule
// logs and their fused leaves too), without a cache and with one: a first
// compile, then edits that build several trees again (one rule's ports, a
// rule made Any: its TCP, UDP and ICMP trees), recording their subtrees,
// then one that replays recorded subtrees. It fails when the trees'
// compilers join in the order they finish (tried).
func TestCompileParallelEqualsSequential(t *testing.T) {
	old := treeWorkers
	defer func() { treeWorkers = old }()
	for _, tc := range []struct {
		name    string
		p       func() *policy.Policy
		limited bool
		subs    bool // subtrees are replayed (the flat policy's tree has none to replay)
	}{
		{"big10000", func() *policy.Policy { return bigPolicy(10000, 1) }, false, true},
		{"big3000-limited", func() *policy.Policy { return bigPolicy(3000, 7) }, true, true},
		{"flat5000", func() *policy.Policy { return flatPolicy(5000, 0) }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := seedConfig()
			cfg.LimitRuleLogs = tc.limited
			compileWith := func(workers int) ([]string, *Cache) {
				treeWorkers = func() int { return workers }
				p := tc.p()
				var rules []*policy.Rule
				for _, g := range p.Groups {
					for _, c := range g.Collections {
						rules = append(rules, c.Rules...)
					}
				}
				// A rule of TCP only at or after i, made Any.
				anyAt := func(i int) {
					for rules[i].Protocols != policy.ProtoTCP {
						i++
					}
					rules[i].Protocols = policy.ProtoAny
				}
				var cache Cache
				var out []string
				for step := range 5 {
					switch step {
					case 2:
						rules[0].DestinationPorts = []policy.PortRange{{Lo: 7001, Hi: 7001}}
						anyAt(len(rules) / 2)
					case 3:
						rules[1].DestinationPorts = []policy.PortRange{{Lo: 7002, Hi: 7002}}
						anyAt(len(rules) / 3)
					case 4:
						rules[2].DestinationPorts = []policy.PortRange{{Lo: 7003, Hi: 7003}}
						anyAt(len(rules) / 4)
					}
					m, err := match.Compile(p, match.Options{Gateway: cfg.Gateway()})
					if err != nil {
						t.Fatal(err)
					}
					c := &cache
					if step == 0 {
						c = nil
					}
					built := cache.built
					rs, err := CompileCached(m, cfg, c)
					if err != nil {
						t.Fatal(err)
					}
					if step >= 2 && cache.built-built < 2 {
						t.Fatalf("compile %d built %d trees: the edits must build several", step, cache.built-built)
					}
					out = append(out, describe(rs))
				}
				return out, &cache
			}
			seq, _ := compileWith(1)
			for _, workers := range []int{2, 6} {
				par, cache := compileWith(workers)
				for i := range seq {
					if seq[i] != par[i] {
						t.Fatalf("%d workers, compile %d: the ruleset differs from the sequential compile's: %s", workers, i, firstDiff(seq[i], par[i]))
					}
				}
				if (tc.subs && cache.subHits == 0) || cache.leafHits == 0 {
					t.Fatalf("%d workers: %d subtrees and %d leaves replayed: the edits must replay some", workers, cache.subHits, cache.leafHits)
				}
				t.Logf("%d workers: %d trees reused, %d built, %d subtrees and %d leaves replayed", workers, cache.hits, cache.built, cache.subHits, cache.leafHits)
			}
			if n := len(seq[0]); n < 1<<19 {
				t.Fatalf("the ruleset is only %d bytes of text", n)
			}
			t.Logf("%d bytes of ruleset text equal", len(seq[0]))
		})
	}
}

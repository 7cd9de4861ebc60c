package nft

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// TestCompileCachedEqualsCompile: a sequence of random edits of a policy
// (ports, protocols, actions, sources, destinations, FQDNs, rules deleted
// and copied, nothing changed) and of the config (log generations, the
// limited rule logs), each compiled with one Cache kept across the
// sequence and without it: the whole ruleset (nft text in order,
// warnings, FQDN sets, statistics) must be the same, and the cache must
// have reused trees.
func TestCompileCachedEqualsCompile(t *testing.T) {
	// 40 steps even with -short (about 7 s): in 15, no partition was
	// reused, and the test requires every kind of reuse.
	steps := 40
	for _, seed := range []uint64{3, 11} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { compileCachedEdits(t, seed, steps, true) })
	}
}

// TestCompileCachedIDsDropped: the edits of TestCompileCachedEqualsCompile
// with the cache's interval ids dropped every few trees (ivIDsMax low):
// the entries a compile takes from the last (ruleRec) must not keep ids
// of a dropped map (entry.fidEpoch).
func TestCompileCachedIDsDropped(t *testing.T) {
	old := ivIDsMax
	ivIDsMax = func(int) int { return 500 }
	defer func() { ivIDsMax = old }()
	compileCachedEdits(t, 3, 15, false)
}

// compileCachedEdits runs steps random edits of a policy, each compiled
// with one Cache and without; with reuse, the cache must have reused
// trees, leaves, shapes, partitions and rules' entries.
func compileCachedEdits(t *testing.T, seed uint64, steps int, reuse bool) {
	r := rand.New(rand.NewPCG(seed, 99))
	p := bigPolicy(1000, seed)
	cfg := seedConfig()
	gens := map[int]uint32{}
	var cache Cache
	for step := range steps {
		what := editPolicy(r, p)
		switch r.IntN(8) {
		case 0:
			cfg.LimitRuleLogs = !cfg.LimitRuleLogs
			what += ", limited rule logs toggled"
		case 1:
			gens[r.IntN(1000)] = uint32(step)
			what += ", a rule's log generation"
		case 2:
			cfg.LogGeneration++
			what += ", the policy's log generation"
		}
		g := make(map[int]uint32, len(gens))
		for k, v := range gens {
			g[k] = v
		}
		base := cfg.LogGeneration
		cfg.LogGenerations = func(tag LogTag) uint32 {
			if v, ok := g[tag.Index]; ok && (tag.Kind == LogAllow || tag.Kind == LogDeny) {
				return v
			}
			return base
		}
		cachedSameAsFull(t, p, cfg, &cache, step, what)
	}
	if !reuse {
		return
	}
	if cache.hits == 0 || cache.leafHits == 0 || cache.shapeHits == 0 || cache.partHits == 0 || cache.ruleHits == 0 || cache.subHits == 0 {
		t.Fatalf("in %d steps, %d trees, %d leaves, %d shapes, %d partitions, %d rules' entries and %d subtrees reused", steps, cache.hits, cache.leafHits, cache.shapeHits, cache.partHits, cache.ruleHits, cache.subHits)
	}
	t.Logf("%d of %d trees reused, %d leaves, %d shapes, %d partitions, %d rules' entries, %d subtrees", cache.hits, cache.built+cache.hits, cache.leafHits, cache.shapeHits, cache.partHits, cache.ruleHits, cache.subHits)
}

// cachedSameAsFull compiles p with cache and without, fails t unless both
// rulesets are the same, and returns the cached one. The named counters,
// which findCounters takes from the chains' memos (Chain.cnts: a reused
// chain is not walked again), must be those of a walk of every rule of
// the cached ruleset, and the full compile's.
func cachedSameAsFull(t *testing.T, p *policy.Policy, cfg Config, cache *Cache, step int, what string) *Ruleset {
	t.Helper()
	m, err := match.Compile(p, match.Options{Gateway: cfg.Gateway()})
	if err != nil {
		t.Fatalf("step %d (%s): %v", step, what, err)
	}
	full, err := Compile(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cached, err := CompileCached(m, cfg, cache)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := describe(full), describe(cached); a != b {
		t.Fatalf("step %d (%s): the cached compile differs from the full one: %s", step, what, firstDiff(a, b))
	}
	if got, want := cached.Counters(), walkCounters(cached); !slices.Equal(got, want) {
		t.Fatalf("step %d (%s): the cached compile's counters (%d) are not its rules' (%d)", step, what, len(got), len(want))
	}
	if got, want := cached.Counters(), full.Counters(); !slices.Equal(got, want) {
		t.Fatalf("step %d (%s): the cached compile's counters (%d) differ from the full one's (%d)", step, what, len(got), len(want))
	}
	return cached
}

// walkCounters are the named counters of rs's rules in the order of their
// first use, read from every statement (no memo).
func walkCounters(rs *Ruleset) []string {
	out := []string{}
	seen := map[string]bool{}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, st := range r.Stmts {
				if cnt, ok := st.(Counter); ok && cnt.Name != "" && !seen[cnt.Name] {
					seen[cnt.Name] = true
					out = append(out, cnt.Name)
				}
			}
		}
	}
	return out
}

// editPolicy changes p in place at random and says how.
func editPolicy(r *rand.Rand, p *policy.Policy) string {
	var rules []*policy.Rule
	for _, g := range p.Groups {
		for _, c := range g.Collections {
			rules = append(rules, c.Rules...)
		}
	}
	ru := rules[r.IntN(len(rules))]
	switch r.IntN(13) {
	case 0:
		pt := uint16(1 + r.IntN(3))
		ru.DestinationPorts = []policy.PortRange{{Lo: 440 + pt, Hi: 443 + pt}}
		return "ports of " + ru.Name
	case 1:
		ru.Protocols = []policy.Proto{policy.ProtoTCP, policy.ProtoUDP, policy.ProtoAny, policy.ProtoICMP}[r.IntN(4)]
		return "protocols of " + ru.Name
	case 2:
		c := ru.Collection
		if c.Action == policy.ActionAllow {
			c.Action = policy.ActionDeny
		} else {
			c.Action = policy.ActionAllow
		}
		return "action of " + c.Name
	case 3:
		var b policy.AddrSetBuilder
		b.AddPrefix(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(8)), byte(r.IntN(16)) * 16, 0}), 24))
		if r.IntN(3) == 0 {
			b.AddPrefix(netip.MustParsePrefix("2001:db8:42::/64"))
		}
		ru.Source = b.Build()
		return "source of " + ru.Name
	case 4:
		ru.DestinationFQDNs = []string{fmt.Sprintf("x%d.example.com", r.IntN(4))}
		return "FQDNs of " + ru.Name
	case 5:
		var b policy.AddrSetBuilder
		b.AddPrefix(netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(r.IntN(4)), 0}), 28))
		ru.Destination = b.Build()
		ru.DestinationFQDNs = nil
		return "destination of " + ru.Name
	case 6:
		c := ru.Collection
		if len(c.Rules) > 1 {
			k := r.IntN(len(c.Rules))
			c.Rules = append(c.Rules[:k:k], c.Rules[k+1:]...)
			return "a rule of " + c.Name + " deleted"
		}
		return "nothing"
	case 7:
		c := ru.Collection
		cp := *ru
		cp.Name += "c"
		k := r.IntN(len(c.Rules) + 1)
		c.Rules = append(c.Rules[:k:k], append([]*policy.Rule{&cp}, c.Rules[k:]...)...)
		return "a copy of " + ru.Name + " inserted"
	case 8, 9:
		// Many intervals in every field: tested in the leaves through
		// interned sets.
		var b, d policy.AddrSetBuilder
		for k := range 7 + r.IntN(3) {
			b.AddPrefix(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(2 * k), byte(r.IntN(4)) * 32, 0}), 24))
		}
		ru.Source = b.Build()
		if r.IntN(2) == 0 {
			d.AddAny()
		} else {
			d.AddPrefix(netip.MustParsePrefix("198.18.0.0/16"))
		}
		ru.Destination, ru.DestinationFQDNs = d.Build(), nil
		ru.DestinationPorts = nil
		for k := range 7 {
			pt := uint16(1000 + 10*k + r.IntN(2))
			ru.DestinationPorts = append(ru.DestinationPorts, policy.PortRange{Lo: pt, Hi: pt})
		}
		return "wide sources and ports of " + ru.Name
	case 10:
		// Only the names of a rule with FQDNs: its entries are the
		// same, the content of its FQDN set is not.
		for _, x := range rules {
			if len(x.DestinationFQDNs) > 0 {
				x.DestinationFQDNs = []string{fmt.Sprintf("y%d.example.com", r.IntN(1000))}
				return "the FQDNs of " + x.Name + " renamed"
			}
		}
	case 11:
		// Only a name: the rules' comments change.
		switch r.IntN(3) {
		case 0:
			ru.Collection.Name += "n"
			return "collection " + ru.Collection.Name + " renamed"
		case 1:
			ru.Collection.Group.Name += "n"
			return "group " + ru.Collection.Group.Name + " renamed"
		}
		ru.Name += "n"
		return "rule " + ru.Name + " renamed"
	}
	return "nothing"
}

// BenchmarkCompileCached10k: the 10,000-rule policy compiled with a new
// Cache each time (what a first compile costs with the cache: compare
// BenchmarkCompile10k), and alternately with the ports of one TCP rule
// (one UDP rule) in the middle changed, with one Cache (what an apply that
// changes one rule compiles: the TCP rule's IPv4 tree holds about two
// thirds of the entries, the UDP one's a sixth).
func BenchmarkCompileCached10k(b *testing.B) {
	cfg := labConfig()
	compile := func(p *policy.Policy) *match.Matcher {
		m, err := match.Compile(p, match.Options{Gateway: cfg.Gateway()})
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	// Two matchers that differ in the ports of the first rule of proto
	// from the middle on.
	pair := func(proto policy.Proto) [2]*match.Matcher {
		p := bigPolicy(10000, 1)
		m0 := compile(p)
		var rules []*policy.Rule
		for _, g := range p.Groups {
			for _, c := range g.Collections {
				rules = append(rules, c.Rules...)
			}
		}
		for _, ru := range rules[len(rules)/2:] {
			if ru.Protocols == proto {
				ru.DestinationPorts = []policy.PortRange{{Lo: 7001, Hi: 7001}}
				break
			}
		}
		return [2]*match.Matcher{compile(p), m0}
	}
	run := func(b *testing.B, next func(i int) (*match.Matcher, *Cache)) {
		b.ResetTimer()
		u0, s0 := cpuTimes()
		for i := range b.N {
			m, c := next(i)
			if _, err := CompileCached(m, cfg, c); err != nil {
				b.Fatal(err)
			}
		}
		u1, s1 := cpuTimes()
		b.ReportMetric(float64((u1-u0+s1-s0).Milliseconds())/float64(b.N), "cpu-ms/op")
	}
	m := compile(bigPolicy(10000, 1))
	b.Run("new-cache", func(b *testing.B) {
		run(b, func(int) (*match.Matcher, *Cache) { return m, &Cache{} })
	})
	// The daemon's first compile: rules' logs limited (fused leaves).
	b.Run("new-cache-limited", func(b *testing.B) {
		saved := cfg
		cfg.LimitRuleLogs = true
		defer func() { cfg = saved }()
		run(b, func(int) (*match.Matcher, *Cache) { return m, &Cache{} })
	})
	for _, tc := range []struct {
		name  string
		proto policy.Proto
	}{{"one-tcp-rule", policy.ProtoTCP}, {"one-udp-rule", policy.ProtoUDP}} {
		ms := pair(tc.proto)
		b.Run(tc.name, func(b *testing.B) {
			var c Cache
			if _, err := CompileCached(ms[1], cfg, &c); err != nil {
				b.Fatal(err)
			}
			run(b, func(i int) (*match.Matcher, *Cache) { return ms[i%2], &c })
			b.Logf("trees reused %d, built %d; leaves reused %d", c.hits, c.built, c.leafHits)
		})
	}
}

// BenchmarkCompileCached100k: the flat 100,000-rule policy compiled with a
// cache that holds nothing (first: a starting daemon) and with one that
// holds another flat policy's trees (replace: every rule's port differs,
// nothing to reuse) — what the cache costs a compile that reuses nothing.
func BenchmarkCompileCached100k(b *testing.B) {
	cfg := labConfig()
	compile := func(p *policy.Policy) *match.Matcher {
		m, err := match.Compile(p, match.Options{Gateway: cfg.Gateway()})
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	ms := [2]*match.Matcher{compile(flatPolicy(100000, 0)), compile(flatPolicy(100000, 1))}
	run := func(b *testing.B, next func(i int) (*match.Matcher, *Cache)) {
		b.ResetTimer()
		u0, s0 := cpuTimes()
		for i := range b.N {
			m, c := next(i)
			if _, err := CompileCached(m, cfg, c); err != nil {
				b.Fatal(err)
			}
		}
		u1, s1 := cpuTimes()
		b.ReportMetric(float64((u1-u0+s1-s0).Milliseconds())/float64(b.N), "cpu-ms/op")
	}
	b.Run("no-cache", func(b *testing.B) {
		run(b, func(int) (*match.Matcher, *Cache) { return ms[0], nil })
	})
	b.Run("first", func(b *testing.B) {
		run(b, func(int) (*match.Matcher, *Cache) { return ms[0], &Cache{} })
	})
	// The daemon's first compile: rules' logs limited (every rule a
	// fused leaf).
	b.Run("first-limited", func(b *testing.B) {
		saved := cfg
		cfg.LimitRuleLogs = true
		defer func() { cfg = saved }()
		run(b, func(int) (*match.Matcher, *Cache) { return ms[0], &Cache{} })
	})
	b.Run("replace", func(b *testing.B) {
		var c Cache
		if _, err := CompileCached(ms[1], cfg, &c); err != nil {
			b.Fatal(err)
		}
		run(b, func(i int) (*match.Matcher, *Cache) { return ms[i%2], &c })
	})
}

// TestCompileCachedFoldedKeys: edits of a flat policy that keep its
// dispatch folded into concatenated keys (classifier.foldKey) — a rule's
// source moved to another /24, its port changed, a collection's action
// toggled, a rule's log generation — each compiled with one Cache and
// without: the same ruleset, every rule in the folded map.
func TestCompileCachedFoldedKeys(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 99))
	p := flatPolicy(2000, 0)
	var rules []*policy.Rule
	for _, g := range p.Groups {
		for _, c := range g.Collections {
			rules = append(rules, c.Rules...)
		}
	}
	cfg := seedConfig()
	cfg.LimitRuleLogs = true
	gens := map[int]uint32{}
	var cache Cache
	for step := range 12 {
		ru := rules[r.IntN(len(rules))]
		var what string
		switch r.IntN(4) {
		case 0:
			var b policy.AddrSetBuilder
			b.AddPrefix(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(r.IntN(256)), 0}), 24))
			ru.Source = b.Build()
			what = "source of " + ru.Name
		case 1:
			pt := uint16(1000 + r.IntN(1000))
			ru.DestinationPorts = []policy.PortRange{{Lo: pt, Hi: pt}}
			what = "port of " + ru.Name
		case 2:
			c := ru.Collection
			c.Action = map[policy.Action]policy.Action{policy.ActionAllow: policy.ActionDeny, policy.ActionDeny: policy.ActionAllow}[c.Action]
			what = "action of " + c.Name
		default:
			gens[r.IntN(len(rules))] = uint32(step + 1)
			what = "a rule's log generation"
		}
		g := maps.Clone(gens)
		cfg.LogGenerations = func(tag LogTag) uint32 { return g[tag.Index] }
		cached := cachedSameAsFull(t, p, cfg, &cache, step, what)
		folded := 0
		for _, s := range cached.Sets {
			if s.Cat.n > 0 {
				folded += len(s.Elems)
			}
		}
		if folded != len(rules) {
			t.Fatalf("step %d (%s): %d elements with concatenated keys, want %d", step, what, folded, len(rules))
		}
	}
	// (The fold is the tree's root, whose entries every edit changes: its
	// record is not replayed; the trees of the unchanged protocols are.)
	t.Logf("%d of %d trees reused, %d rules' entries, %d subtrees", cache.hits, cache.built+cache.hits, cache.ruleHits, cache.subHits)
}

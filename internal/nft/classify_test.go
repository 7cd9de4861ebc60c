package nft

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// genPolicy builds a random policy of n network rules over small address
// and port universes, so that rules overlap a lot: wildcards, prefixes,
// ranges, several families, FQDN destinations, Allow and Deny collections.
type gen struct {
	r     *rand.Rand
	names []string
}

func (g *gen) addr4() netip.Addr {
	return netip.AddrFrom4([4]byte{10, 0, byte(g.r.IntN(4)), byte(g.r.IntN(256))})
}

func (g *gen) addr6() netip.Addr {
	b := netip.MustParseAddr("2001:db8::").As16()
	b[13] = byte(g.r.IntN(3))
	b[14] = byte(g.r.IntN(4))
	b[15] = byte(g.r.IntN(256))
	return netip.AddrFrom16(b)
}

func (g *gen) addrSet(wildPct int) policy.AddrSet {
	var b policy.AddrSetBuilder
	if g.r.IntN(100) < wildPct {
		b.AddAny()
		return b.Build()
	}
	for range 1 + g.r.IntN(3) {
		var a netip.Addr
		bits := 0
		if g.r.IntN(4) == 0 {
			a = g.addr6()
			bits = 104 + g.r.IntN(25)
		} else {
			a = g.addr4()
			bits = 16 + g.r.IntN(17)
		}
		switch g.r.IntN(3) {
		case 0:
			b.AddRange(a, a)
		case 1:
			b.AddPrefix(netip.PrefixFrom(a, bits).Masked())
		default:
			to := a
			for range g.r.IntN(40) {
				if n := to.Next(); n.IsValid() {
					to = n
				}
			}
			b.AddRange(a, to)
		}
	}
	return b.Build()
}

func (g *gen) ports() []policy.PortRange {
	if g.r.IntN(6) == 0 {
		return []policy.PortRange{{Lo: 1, Hi: 65535}}
	}
	var out []policy.PortRange
	for range 1 + g.r.IntN(3) {
		lo := uint16(1 + g.r.IntN(60))
		hi := lo
		if g.r.IntN(3) == 0 {
			hi = lo + uint16(g.r.IntN(20))
		}
		out = append(out, policy.PortRange{Lo: lo, Hi: hi})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Lo < out[j].Lo })
	merged := out[:1]
	for _, p := range out[1:] {
		last := &merged[len(merged)-1]
		if p.Lo <= last.Hi+1 {
			last.Hi = max(last.Hi, p.Hi)
			continue
		}
		merged = append(merged, p)
	}
	return merged
}

func (g *gen) policy(n int, wildPct int) *policy.Policy {
	p := &policy.Policy{Name: "gen"}
	grp := &policy.Group{Name: "g", Priority: 100}
	p.Groups = []*policy.Group{grp}
	var coll *policy.Collection
	for i := range n {
		if coll == nil || g.r.IntN(8) == 0 {
			act := policy.ActionAllow
			if g.r.IntN(3) == 0 {
				act = policy.ActionDeny
			}
			coll = &policy.Collection{Name: fmt.Sprintf("c%d", len(grp.Collections)), Kind: policy.KindNetwork, Priority: 100 + len(grp.Collections), Action: act, Group: grp}
			grp.Collections = append(grp.Collections, coll)
		}
		r := &policy.Rule{Name: fmt.Sprintf("r%d", i), Collection: coll}
		r.Protocols = policy.Proto(1 + g.r.IntN(7))
		r.Source = g.addrSet(wildPct)
		r.Destination = g.addrSet(wildPct)
		if g.r.IntN(6) == 0 {
			r.DestinationFQDNs = []string{g.names[g.r.IntN(len(g.names))]}
			if g.r.IntN(2) == 0 {
				r.Destination = policy.AddrSet{}
			}
		}
		r.DestinationPorts = g.ports()
		coll.Rules = append(coll.Rules, r)
	}
	return p
}

// resolver answers FQDN lookups from a fixed table.
type resolver map[string][]netip.Addr

func (r resolver) Resolved(name string, a netip.Addr) bool {
	for _, x := range r[name] {
		if x == a {
			return true
		}
	}
	return false
}

// fqdnSets fills the compiled FQDN sets the way the DNS proxy would.
func (r resolver) fqdnSets(rs *Ruleset) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for name, addrs := range r {
		for _, set := range rs.FQDNSets(name) {
			out[set] = append(out[set], addrs...)
		}
	}
	return out
}

func (g *gen) flow() packet {
	p := packet{iif: "inside", oif: "outside", ctState: CtStateNew}
	if g.r.IntN(4) == 0 {
		p.fam, p.src, p.dst = ipv6, g.addr6(), g.addr6()
	} else {
		p.fam, p.src, p.dst = ipv4, g.addr4(), g.addr4()
	}
	switch g.r.IntN(3) {
	case 0:
		p.proto = protoTCP
	case 1:
		p.proto = protoUDP
	default:
		p.proto = protoICMP
		if p.fam == ipv6 {
			p.proto = protoICMPv6
		}
	}
	if p.proto == protoTCP || p.proto == protoUDP {
		p.dport = uint16(g.r.IntN(90))
	}
	return p
}

func matchFlow(p packet) match.Flow {
	f := match.Flow{Src: p.src, Dst: p.dst, Port: p.dport}
	switch p.proto {
	case protoTCP:
		f.Proto = policy.ProtoTCP
	case protoUDP:
		f.Proto = policy.ProtoUDP
	default:
		f.Proto = policy.ProtoICMP
	}
	return f
}

// expected is what the forward chain must do with a new flow: the verdict
// and the log prefix, from the reference matcher (m.DecideLinear).
func expected(m *match.Matcher, pk packet) (string, string) {
	f := matchFlow(pk)
	f.From = match.FromInside
	d := m.DecideLinear(f)
	if d.Kind != policy.KindNetwork {
		return "drop", LogTag{Kind: LogDefaultDeny}.String()
	}
	idx := -1
	for _, r := range m.Rules(policy.KindNetwork) {
		if r.Policy == d.Rule {
			idx = r.Index
		}
	}
	if d.Action == policy.ActionAllow {
		return "accept", LogTag{Kind: LogAllow, Index: idx}.String()
	}
	if pk.proto == protoTCP {
		return "reject", LogTag{Kind: LogDeny, Index: idx}.String()
	}
	return "drop", LogTag{Kind: LogDeny, Index: idx}.String()
}

// checkSets verifies that every interval set is sorted and disjoint, as
// the kernel requires.
func checkSets(t *testing.T, rs *Ruleset) {
	t.Helper()
	for _, s := range rs.Sets {
		for i := 1; i < len(s.Elems); i++ {
			if !s.Elems[i-1].iv.hi.less(s.Elems[i].iv.lo) {
				t.Fatalf("set %s: elements %d and %d overlap or are unsorted", s.Name, i-1, i)
			}
		}
		for i, e := range s.Elems {
			if e.iv.hi.less(e.iv.lo) {
				t.Fatalf("set %s: element %d is empty", s.Name, i)
			}
		}
	}
}

// TestClassifierMatchesReference compiles random policies and checks, for
// many random flows, that the forward chain reaches the same decision, by
// the same rule, as the reference matcher (Matcher.DecideLinear). The
// interpreter (eval_test.go) runs the classifier of policies far larger than
// the kernel differential test (diffkernel_test.go) can apply thousands of,
// in milliseconds.
func TestClassifierMatchesReference(t *testing.T) {
	names := []string{"a.example", "b.example", "c.example"}
	for _, tc := range []struct {
		name    string
		rules   int
		wildPct int
		flows   int
	}{
		{"tiny", 3, 20, 2000},
		{"small", 20, 20, 4000},
		{"medium", 200, 10, 6000},
		{"wildcard heavy", 300, 50, 6000},
		{"large", 2000, 5, 6000},
	} {
		for seed := uint64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprintf("%s/seed%d", tc.name, seed), func(t *testing.T) {
				g := &gen{r: rand.New(rand.NewPCG(seed, uint64(tc.rules))), names: names}
				p := g.policy(tc.rules, tc.wildPct)
				res := resolver{}
				for _, n := range names {
					res[n] = []netip.Addr{g.addr4(), g.addr4(), g.addr6()}
				}
				cfg := labConfig()
				m, err := match.Compile(p, match.Options{Resolver: res, Gateway: cfg.Gateway()})
				if err != nil {
					t.Fatal(err)
				}
				rs, err := Compile(m, cfg)
				if err != nil {
					t.Fatal(err)
				}
				checkSets(t, rs)
				if _, err := lower(rs, nil, timeZero); err != nil {
					t.Fatal(err)
				}
				sets := res.fqdnSets(rs)
				maxRules := 0
				for i := range tc.flows {
					pk := g.flow()
					if i%5 == 0 {
						// Aim at the resolved addresses too.
						all := res[names[i%len(names)]]
						a := all[i%len(all)]
						if famOf(a) == pk.fam {
							pk.dst = a
						}
					}
					got, err := evalChain(rs, "forward", pk, sets)
					if err != nil {
						t.Fatal(err)
					}
					wantV, wantLog := expected(m, pk)
					gotLog := ""
					if len(got.logs) > 0 {
						gotLog = got.logs[len(got.logs)-1]
					}
					if got.verdict != wantV || gotLog != wantLog || len(got.logs) != 1 {
						t.Fatalf("flow %s: got %s %v, want %s %s", pk, got.verdict, got.logs, wantV, wantLog)
					}
					maxRules = max(maxRules, got.rules)
				}
				t.Logf("%d rules: %d entries, %d leaf rules, %d maps (%d elements), max sequential %d, most rules evaluated by a flow %d",
					tc.rules, rs.Stats.Entries, rs.Stats.Leaves, rs.Stats.DispatchMaps, rs.Stats.MapElements, rs.Stats.MaxSequential, maxRules)
			})
		}
	}
}

// TestPortEvents: the counting sort of port events gives partition's
// comparison order (entries of one to three port intervals, wildcards,
// intervals ending at the last port).
func TestPortEvents(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	fmax := fieldMax(ipv4, fieldPort)
	for round := range 20 {
		var es []*entry
		for range 500 + r.IntN(3000) {
			e := &entry{}
			if r.IntN(20) > 0 {
				lo := uint64(0)
				for range 1 + r.IntN(3) {
					lo += uint64(r.IntN(3000))
					hi := min(lo+uint64(r.IntN(40)), 0xffff)
					if r.IntN(50) == 0 {
						hi = 0xffff
					}
					e.iv[fieldPort] = append(e.iv[fieldPort], ivl{u128{0, lo}, u128{0, hi}})
					lo = hi + 2
					if hi >= 0xfff0 {
						break
					}
				}
			}
			es = append(es, e)
		}
		want := sortedEvents(es, fieldPort, fmax)
		if got, _ := portEvents(es, fmax, len(want), nil, nil); !slices.Equal(got, want) {
			t.Fatalf("round %d: the counting sort differs from the comparison sort", round)
		}
	}
}

// sortedEvents is the tests' reference for partition's events of field
// f (whose last value is fmax): each entry's intervals (a wildcard is the
// whole range) as a start and, unless the interval ends at fmax, an end
// event after it, in the comparison order (eventCmp).
func sortedEvents(es []*entry, f field, fmax u128) []event {
	var want []event
	for k, e := range es {
		ivs := e.iv[f]
		if ivs == nil {
			ivs = []ivl{{u128{}, fmax}}
		}
		for _, iv := range ivs {
			want = append(want, event{iv.lo, true, k})
			if iv.hi != fmax {
				want = append(want, event{iv.hi.next(), false, k})
			}
		}
	}
	slices.SortFunc(want, eventCmp)
	return want
}

// TestRankedEvents: partition's integer sort of events (rankedEvents)
// gives the comparison order (eventCmp) on every field of both families,
// for a tree's entries and for subsets of them (a node's): one to three
// intervals per entry, wildcards, intervals ending at the field's last
// value, shared bounds.
func TestRankedEvents(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for round := range 24 {
		fam := []family{ipv4, ipv6}[round%2]
		f := []field{fieldSrc, fieldDst, fieldPort}[round/2%3]
		fmax := fieldMax(fam, f)
		var es []*entry
		for range 300 + r.IntN(2000) {
			e := &entry{}
			if r.IntN(20) > 0 {
				lo := u128{r.Uint64() & fmax.hi, uint64(r.IntN(5000))}
				if f != fieldPort && r.IntN(2) == 0 {
					lo.lo = r.Uint64() & fmax.lo &^ 0xffff
				}
				for range 1 + r.IntN(3) {
					hi := u128{lo.hi, min(lo.lo+uint64(r.IntN(40)), fmax.lo)}
					if r.IntN(50) == 0 {
						hi = fmax
					}
					e.iv[f] = append(e.iv[f], ivl{lo, hi})
					if hi.lo >= fmax.lo-100 {
						break
					}
					lo = u128{hi.hi, hi.lo + 1 + uint64(r.IntN(3))}
				}
			}
			es = append(es, e)
		}
		cl := newClassifier(nil, fam, protoTCP, len(es))
		for k, e := range es {
			e.id = k
		}
		cl.all = es
		for sub := range 3 {
			node := es
			if sub > 0 {
				node = nil
				for _, e := range es {
					if r.IntN(3) == 0 {
						node = append(node, e)
					}
				}
			}
			want := sortedEvents(node, f, fmax)
			n := 0
			for _, e := range node {
				n += 2 * max(1, len(e.iv[f]))
			}
			if got := cl.rankedEvents(node, f, n); !slices.Equal(got, want) {
				t.Fatalf("round %d (family %d field %d) subset %d: the integer sort differs from the comparison sort", round, fam, f, sub)
			}
		}
	}
}

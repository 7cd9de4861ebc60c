package nft

import (
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// objCount is what a compiled ruleset asks of the kernel: chains, rules,
// expressions by type, sets and their elements, named counters and set
// lookups (each a walk of the table's set list by name).
type objCount struct {
	chains, rules, exprs, sets, elems, counters, lookups int
	byType                                               map[string]int
	shapes                                               map[string]int // a rule's statement types, with counts
}

func countObjects(tb testing.TB, rs *Ruleset) objCount {
	tb.Helper()
	pl, err := lower(rs, nil, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	c := objCount{chains: len(rs.Chains), sets: len(rs.Sets), counters: len(rs.Counters()),
		byType: map[string]int{}, shapes: map[string]int{}}
	for _, s := range rs.Sets {
		c.elems += len(s.Elems)
	}
	for _, ch := range rs.Chains {
		c.rules += len(ch.Rules)
		for _, r := range ch.Rules {
			var shape []string
			n := 0
			for _, st := range r.Stmts {
				x, err := lowerStmt(st, pl.setMap, pl.chMap)
				if err != nil {
					tb.Fatal(err)
				}
				n += len(x)
				shape = append(shape, reflect.TypeOf(st).Name())
				for _, e := range x {
					c.byType[strings.TrimPrefix(reflect.TypeOf(e).String(), "*expr.")]++
					if _, ok := e.(*expr.Lookup); ok {
						c.lookups++
					}
				}
			}
			c.exprs += n
			c.shapes[fmt.Sprintf("%s (%d)", strings.Join(shape, " "), n)]++
		}
	}
	return c
}

func (c objCount) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chains %d, rules %d, expressions %d, sets %d, elements %d, named counters %d, lookups %d\n",
		c.chains, c.rules, c.exprs, c.sets, c.elems, c.counters, c.lookups)
	keys := make([]string, 0, len(c.byType))
	for k := range c.byType {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-10s %7d\n", k, c.byType[k])
	}
	shapes := make([]string, 0, len(c.shapes))
	for k := range c.shapes {
		shapes = append(shapes, k)
	}
	sort.Slice(shapes, func(i, j int) bool { return c.shapes[shapes[i]] > c.shapes[shapes[j]] })
	for _, k := range shapes {
		fmt.Fprintf(&b, "  %7d  %s\n", c.shapes[k], k)
	}
	return b.String()
}

// TestObjectCounts prints what the benchmarks' policies ask of the kernel
// (CW_OBJCOUNT=1; docs/benchmarks.md, branch k10k).
func TestObjectCounts(t *testing.T) {
	if os.Getenv("CW_OBJCOUNT") == "" {
		t.Skip("CW_OBJCOUNT not set")
	}
	cfg := labConfig()
	cfg.LimitRuleLogs = os.Getenv("CW_OBJCOUNT_UNLIMITED") == ""
	if f := os.Getenv("CW_OBJCOUNT_FILE"); f != "" {
		// A policy file (e.g. internal/daemon's policyYAML(10000, 1, false, 0)
		// written out): what BenchmarkDaemonApply applies.
		p, err := policy.LoadFile(f, policy.Options{})
		if err != nil {
			t.Fatal(err)
		}
		rs := mustCompileT(t, p, cfg)
		t.Logf("%s:\n%s", f, countObjects(t, rs))
		logSets(t, rs)
		if out := os.Getenv("CW_OBJCOUNT_TEXT"); out != "" {
			os.WriteFile(out, []byte(rs.String()), 0o644)
		}
		return
	}
	rs := mustCompileT(t, bigPolicy(10000, 1), cfg)
	t.Logf("bigPolicy(10000, 1):\n%s", countObjects(t, rs))
	logSets(t, rs)
}

// logSets logs the sets by kind, the lookups into them, the set-list walks
// of those lookups, and the hash dispatches' elements whose chain is a
// one-rule leaf (what a partial fold could take).
func logSets(t *testing.T, rs *Ruleset) {
	kinds := map[SetKind]int{}
	kindOf := map[string]SetKind{}
	for _, s := range rs.Sets {
		kinds[s.Kind]++
		kindOf[s.Name] = s.Kind
	}
	refs := setRefs(rs, false)
	byKind := map[SetKind]int{}
	hist := map[int]int{}
	for n, k := range refs {
		byKind[kindOf[n]] += k
		if kindOf[n] == SetFQDN {
			hist[k]++
		}
	}
	t.Logf("sets by kind %v, lookups by kind %v, referenced %d; FQDN sets by lookups %v", kinds, byKind, len(refs), hist)
	// The kernel's walks of the set list for the lookups: in the ruleset's
	// order and in the order a first apply creates them (orderNewSets).
	d := diff(mustLower(t, rs), &kernelTable{chains: map[string]*nftables.Chain{}, sets: map[string]bool{}})
	d.orderNewSets()
	walk := func(order []string) int {
		pos := map[string]int{}
		for i, n := range order {
			pos[n] = i + 1
		}
		w := 0
		for n, k := range refs {
			w += k * pos[n]
		}
		return w
	}
	var inRS, inApply []string
	for _, s := range rs.Sets {
		inRS = append(inRS, s.Name)
	}
	for _, sp := range d.newSets {
		inApply = append(inApply, sp.set.Name)
	}
	t.Logf("sets walked by the lookups: ruleset order %d, apply order %d", walk(inRS), walk(inApply))
	chains := map[string]*Chain{}
	for _, ch := range rs.Chains {
		chains[ch.Name] = ch
	}
	hashElems, oneRule, fused := 0, 0, 0
	for _, s := range rs.Sets {
		if s.Kind != SetVMapHash {
			continue
		}
		for _, e := range s.Elems {
			hashElems++
			if ch := chains[e.Chain]; ch != nil && strings.Contains(ch.Name, "leaf") {
				if len(ch.Rules) == 1 {
					oneRule++
				}
				if len(ch.Rules) == 3 {
					if _, ok := ch.Rules[0].Stmts[0].(MatchNotAll); ok {
						fused++
					}
				}
			}
		}
	}
	t.Logf("hash dispatch elements %d: to a one-rule leaf %d, to a fused leaf %d", hashElems, oneRule, fused)
	// Interval sets: the kernel elements the runner sends (a start and, but
	// for the largest value, an end per interval) and the end elements
	// that coincide with the next interval's start (which nft leaves out in
	// anonymous sets only).
	intervals, kernelElems, adjacent := 0, 0, 0
	for _, s := range rs.Sets {
		if s.Kind != SetVMap && s.Kind != SetPlain {
			continue
		}
		fmax := fieldMax(s.Family, s.Field)
		for i, e := range s.Elems {
			intervals++
			kernelElems++
			if e.iv.hi != fmax {
				kernelElems++
				if i+1 < len(s.Elems) && s.Elems[i+1].iv.lo == e.iv.hi.next() {
					adjacent++
				}
			}
		}
	}
	t.Logf("interval sets: %d intervals, %d kernel elements, %d end elements adjacent to the next start", intervals, kernelElems, adjacent)
	n := 0
	for _, ch := range rs.Chains {
		for _, r := range ch.Rules {
			if len(r.Stmts) == 3 {
				if _, ok := r.Stmts[1].(MatchSet); ok && n < 5 {
					t.Logf("%s: %s", ch.Name, r.Stmts)
					n++
				}
			}
		}
	}
}

func mustLower(tb testing.TB, rs *Ruleset) *plan {
	tb.Helper()
	pl, err := lower(rs, nil, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return pl
}

// TestOrderNewSets: a stage 1 creates every new set once, those the new
// chains look up most first, ties and unreferenced sets in the ruleset's
// order; the kernel then walks fewer sets for the lookups than in the
// ruleset's order (bigPolicy(3000) has FQDN sets that many leaves look up).
func TestOrderNewSets(t *testing.T) {
	rs := mustCompileT(t, bigPolicy(3000, 1), labConfig())
	d := diff(mustLower(t, rs), &kernelTable{chains: map[string]*nftables.Chain{}, sets: map[string]bool{}})
	d.orderNewSets()
	refs := setRefs(rs, true)
	pos := map[string]int{}
	for i, s := range rs.Sets {
		pos[s.Name] = i
	}
	if len(d.newSets) != len(rs.Sets) {
		t.Fatalf("%d new sets, want %d", len(d.newSets), len(rs.Sets))
	}
	seen := map[string]bool{}
	walkRS, walkNew := 0, 0
	for i, sp := range d.newSets {
		n := sp.set.Name
		if seen[n] {
			t.Fatalf("set %s created twice", n)
		}
		seen[n] = true
		walkRS += refs[n] * (pos[n] + 1)
		walkNew += refs[n] * (i + 1)
		if i == 0 {
			continue
		}
		p := d.newSets[i-1].set.Name
		if refs[p] < refs[n] || refs[p] == refs[n] && pos[p] > pos[n] {
			t.Errorf("set %d %s (%d lookups) after %s (%d lookups)", i, n, refs[n], p, refs[p])
		}
	}
	if walkNew >= walkRS {
		t.Errorf("lookups walk %d sets in the apply's order, %d in the ruleset's", walkNew, walkRS)
	}
	t.Logf("%d sets, lookups walk %d sets (ruleset order: %d)", len(d.newSets), walkNew, walkRS)
}

// BenchmarkOrderNewSets: what ordering the new sets adds to a first
// apply's diff (bigPolicy(10000, 1): 707 sets, 27,648 rules).
func BenchmarkOrderNewSets(b *testing.B) {
	rs := mustCompileT(b, bigPolicy(10000, 1), labConfig())
	pl := mustLower(b, rs)
	d := diff(pl, &kernelTable{chains: map[string]*nftables.Chain{}, sets: map[string]bool{}})
	sets := append([]setPlan(nil), d.newSets...)
	b.ResetTimer()
	for range b.N {
		copy(d.newSets, sets)
		d.orderNewSets()
	}
}

// BenchmarkApplySetOrder: bigPolicy(10000)'s applies (to an empty table,
// and replacing bigPolicy(10000, 2) by bigPolicy(10000, 1) and back) with
// the new sets created in orderNewSets' order and in the ruleset's, the two
// alternating in one process (on, off, off, on, ...: a replace's two
// directions as often in each mode); the process's kernel CPU per apply
// (sys-ms) and stage 1's wall time. docs/benchmarks.md (branch k10k).
func BenchmarkApplySetOrder(b *testing.B) {
	for _, c := range []struct {
		name  string
		empty bool
	}{{"10k-empty", true}, {"10k-replace", false}} {
		b.Run(c.name, func(b *testing.B) {
			requireRoot(b)
			rss := []*Ruleset{mustCompile(b, bigPolicy(10000, 1)), mustCompile(b, bigPolicy(10000, 2))}
			r := nsRunner(b, "order")
			if !c.empty {
				if err := r.Apply(rss[1]); err != nil {
					b.Fatal(err)
				}
			}
			var sys, stage1 [2]time.Duration
			b.ResetTimer()
			for i := range 2 * b.N {
				mode := []int{0, 1, 1, 0}[i%4]
				r.setOrderOff = mode == 1
				rs := rss[0]
				if c.empty {
					if err := r.Flush(); err != nil {
						b.Fatal(err)
					}
				} else {
					rs = rss[i%2]
				}
				_, s0 := cpuTimes()
				if err := r.Apply(rs); err != nil {
					b.Fatal(err)
				}
				_, s1 := cpuTimes()
				sys[mode] += s1 - s0
				stage1[mode] += r.LastApply().Stage1
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
			for mode, name := range []string{"ordered", "ruleset"} {
				b.ReportMetric(per(sys[mode]), name+"-sys-ms")
				b.ReportMetric(per(stage1[mode]), name+"-stage1-ms")
			}
		})
	}
}

// TestKernelSetOrder: an apply to an empty table leaves the sets in the
// kernel's list (which a dump returns in order) in orderNewSets' order.
func TestKernelSetOrder(t *testing.T) {
	requireRoot(t)
	rs := mustCompileT(t, bigPolicy(2000, 1), labConfig())
	d := diff(mustLower(t, rs), &kernelTable{chains: map[string]*nftables.Chain{}, sets: map[string]bool{}})
	d.orderNewSets()
	var want []string
	for _, sp := range d.newSets {
		want = append(want, sp.set.Name)
	}
	r := nsRunner(t, "setorder")
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	got, err := r.listSets(rs.Table)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("the kernel's sets in another order than orderNewSets':\n got %v\nwant %v", got, want)
	}
	if strings.Join(want, " ") == strings.Join(setNames(rs), " ") {
		t.Fatal("bigPolicy(2000)'s sets are in lookup order already: the test shows nothing")
	}
}

func setNames(rs *Ruleset) []string {
	var out []string
	for _, s := range rs.Sets {
		out = append(out, s.Name)
	}
	return out
}

// setRefs counts the rules of rs that look each set up (a set match or a
// verdict map), in the regular chains only when regular is set.
func setRefs(rs *Ruleset, regular bool) map[string]int {
	refs := map[string]int{}
	for _, c := range rs.Chains {
		if regular && c.Hook != HookNone {
			continue
		}
		for _, r := range c.Rules {
			for _, st := range r.Stmts {
				switch s := st.(type) {
				case MatchSet:
					refs[s.Set]++
				case VMap:
					refs[s.Map]++
				}
			}
		}
	}
	return refs
}

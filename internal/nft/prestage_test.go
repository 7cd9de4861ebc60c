package nft

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// compileMatcher compiles testdata policy path with cfg, returning the
// matcher too (PlannedRuleCounters reads it).
func compileMatcher(t *testing.T, path string, cfg Config) (*match.Matcher, *Ruleset) {
	t.Helper()
	m, err := match.Compile(loadPolicy(t, path), match.Options{Gateway: cfg.Gateway()})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Compile(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m, rs
}

// tableContent is what r's table holds, chain by chain in name order
// (the kernel's order of chains is that of their creation, which a
// prestage changes as every incremental apply does): each chain's rules
// as listed, the sets and the objects.
func tableContent(t *testing.T, r *NetlinkRunner) string {
	t.Helper()
	st, err := r.Show()
	if err != nil {
		t.Fatal(err)
	}
	chains := slices.Clone(st.Chains)
	slices.SortStableFunc(chains, func(a, b ChainState) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	for _, c := range chains {
		fmt.Fprintf(&b, "chain %s %s %s %d %s\n", c.Name, c.Hook, c.Type, c.Priority, c.Policy)
		for _, rl := range c.Rules {
			fmt.Fprintf(&b, "  %s # %s\n", rl.Text, rl.Comment)
		}
	}
	sets := slices.Clone(st.Sets)
	slices.SortFunc(sets, func(a, b SetState) int { return strings.Compare(a.Name, b.Name) })
	for _, x := range sets {
		fmt.Fprintf(&b, "set %+v\n", x)
	}
	objs, err := r.listObjects(st.Table, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range slices.Sorted(maps.Keys(objs)) {
		fmt.Fprintf(&b, "obj %s %v\n", n, objs[n].typ)
	}
	return b.String()
}

// TestPlannedDecisionChains: every decision chain of a compile with
// LimitRuleLogs is among the chains PlannedDecisionChains plans, under
// the same name with the same rules (the namer's name of the compiler's
// content); the likely ones are among all.
func TestPlannedDecisionChains(t *testing.T) {
	cfg := labConfig()
	cfg.LimitRuleLogs = true
	cfg.LogGeneration = 3
	cfg.LogGenerations = func(t LogTag) uint32 { return uint32(t.Index%3 + 1) }
	for _, path := range []string{"testdata/kinds.yaml", "../../examples/aks-egress.yaml"} {
		m, rs := compileMatcher(t, path, cfg)
		all := PlannedDecisionChains(m, cfg, nil, false)
		planned := map[string]string{}
		for _, c := range all {
			planned[c.Name] = chainText(c)
		}
		made := 0
		for _, c := range rs.Chains {
			if !strings.HasPrefix(c.Name, "rule_") {
				continue
			}
			made++
			if text, ok := planned[c.Name]; !ok || text != chainText(c) {
				t.Errorf("%s: the compile's chain %s is not planned (or has other rules):\n%s\nplanned:\n%s", path, c.Name, chainText(c), text)
			}
		}
		if made == 0 {
			t.Fatalf("%s: no decision chain compiled", path)
		}
		for _, c := range PlannedDecisionChains(m, cfg, nil, true) {
			if _, ok := planned[c.Name]; !ok {
				t.Errorf("%s: likely chain %s not among all", path, c.Name)
			}
		}
		t.Logf("%s: %d decision chains compiled, %d planned", path, made, len(all))
	}
}

// TestPrestageApply: counters and decision chains prestaged
// (prestage.go) before an apply, among them a counter and chains the
// ruleset does not have, leave the table a fresh apply of the ruleset
// leaves (every chain with its rules, set and object) once the old
// ruleset is deleted; the apply creates no counter or chain the prestage
// created, and counts the counters as fresh (none kept: their counts
// start at zero with the apply).
func TestPrestageApply(t *testing.T) {
	requireRoot(t)
	cfg := labConfig()
	cfg.LimitRuleLogs = true
	m, rs := compileMatcher(t, "testdata/kinds.yaml", cfg)
	ref := nsRunner(t, "preref")
	if err := ref.Apply(rs); err != nil {
		t.Fatal(err)
	}
	ref.Settle()
	want := tableContent(t, ref)
	refSt := ref.LastApply()

	r := nsRunner(t, "pre")
	p := PlanPrestage(m, cfg, nil, AllDecisionChains)
	if len(p.Counters) == 0 || len(p.Chains) == 0 {
		t.Fatalf("nothing planned: %+v", p)
	}
	// A chain of another generation (and its counter), which the
	// ruleset does not have: deleted with the old ruleset, the chain
	// before its counter.
	other := cfg
	other.LogGeneration = 9
	p.Chains = append(p.Chains, PlannedDecisionChains(m, other, func(i int) bool { return i == 0 }, false)...)
	p.Counters = append(p.Counters, PlannedRuleCounters(m, other, func(i int) bool { return i == 0 })...)
	unused := 0
	for _, c := range p.Chains {
		if rs.Chain(c.Name) == nil {
			unused++
		}
	}
	if unused == 0 {
		t.Fatal("every planned chain is compiled: the test needs one that is not")
	}
	const extra = "cw:A:99999"
	p.Counters = append(p.Counters, extra)
	if err := r.Prestage(p); err != nil {
		t.Fatal(err)
	}
	if got := tableNames(t, r); !strings.Contains(got, extra) || !strings.Contains(got, p.Counters[0]) || !strings.Contains(got, p.Chains[0].Name+"/2") {
		t.Fatalf("the prestaged counters and chains are not in the table: %s", got)
	}
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	st := r.LastApply()
	objs := len(p.Counters) + 1 // and the limit
	usedObjs := objs - 2        // not extra nor the other generation's
	if st.Prestaged != objs+len(p.Chains) || st.NewObjects != refSt.NewObjects-usedObjs ||
		st.NewChains != refSt.NewChains-(len(p.Chains)-unused) || st.OldChains != unused {
		t.Errorf("prestaged %d, new objects %d, new chains %d, old chains %d; want %d, %d, %d and %d (a fresh apply: %d objects, %d chains)",
			st.Prestaged, st.NewObjects, st.NewChains, st.OldChains, objs+len(p.Chains), refSt.NewObjects-usedObjs,
			refSt.NewChains-(len(p.Chains)-unused), unused, refSt.NewObjects, refSt.NewChains)
	}
	if kept := r.KeptCounters(); len(kept) != 0 {
		t.Errorf("prestaged counters taken for kept ones: %v", kept)
	}
	r.Settle()
	if got := tableContent(t, r); got != want {
		t.Fatalf("table after a prestaged apply:\n got %s\nwant %s", got, want)
	}
	// Applied again: nothing prestaged is pending, the table stays.
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if st := r.LastApply(); st.Prestaged != 0 || st.NewObjects != 0 || st.NewChains != 0 {
		t.Errorf("re-apply: %+v", st)
	}
}

// TestPrestageFailureCleans: counters and decision chains prestaged for
// an apply that the kernel then refuses (in stage 1, whole or split, or
// in stage 2), or for one that never comes (the compile failed:
// Unprestage), are removed again: the table is what it was; on a
// namespace without the table, the table the prestage created goes too.
func TestPrestageFailureCleans(t *testing.T) {
	requireRoot(t)
	r := nsRunner(t, "prefail")
	cfg := labConfig()
	cfg.LimitRuleLogs = true
	cfg.LogRate = 77 // the prestage creates the limit object too
	_, good := compileMatcher(t, "testdata/kinds.yaml", labConfig())
	if err := r.Apply(good); err != nil {
		t.Fatal(err)
	}
	r.Settle()
	before := tableContent(t, r)
	cfg.LogGeneration = 7 // every counter's name new
	m, bad := compileMatcher(t, "../../examples/aks-egress.yaml", cfg)
	refuseInNewChain(t, good, bad)
	p := PlanPrestage(m, cfg, nil, AllDecisionChains)
	if len(p.Chains) == 0 {
		t.Fatal("no chains planned")
	}
	for _, split := range []int{1 << 30, 1} { // stage 1 whole, then split (applysplit.go)
		r.splitMin = split
		if err := r.Prestage(p); err != nil {
			t.Fatal(err)
		}
		if got := tableNames(t, r); !strings.Contains(got, p.Chains[0].Name) || !strings.Contains(got, LimitSpec{Rate: 77, Burst: cfg.withDefaults().LogBurst}.Name()) {
			t.Fatalf("the prestage added no chain or limit: %s", got)
		}
		err := r.Apply(bad)
		if err == nil {
			t.Fatal("the kernel accepted a 300-byte log prefix")
		}
		t.Logf("rejected as expected: %v", err)
		if got := tableContent(t, r); got != before {
			t.Fatalf("split %d: the table changed after a failed prestaged apply:\n got %s\nwant %s", split, got, before)
		}
	}
	r.splitMin = 0
	// Stage 2 refused: a base chain's rule with a 300-byte log prefix
	// (stage 1, the new chains, goes through).
	_, bad2 := compileMatcher(t, "../../examples/aks-egress.yaml", cfg)
	for _, c := range bad2.Chains {
		if c.Hook == HookForward {
			c.Rules = append([]*Rule{{Stmts: []Stmt{Log{Prefix: strings.Repeat("x", 300)}, Verdict{Kind: VerdictAccept}}}}, c.Rules...)
		}
	}
	if err := r.Prestage(p); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(bad2); err == nil {
		t.Fatal("the kernel accepted a 300-byte log prefix in stage 2")
	} else if !strings.Contains(err.Error(), "apply ruleset") || strings.Contains(err.Error(), "stage 1") {
		t.Fatalf("not refused in stage 2: %v", err)
	}
	if got := tableContent(t, r); got != before {
		t.Fatalf("the table changed after a prestaged apply failed in stage 2:\n got %s\nwant %s", got, before)
	}
	// No apply: Unprestage.
	if err := r.Prestage(p); err != nil {
		t.Fatal(err)
	}
	r.Unprestage()
	if got := tableContent(t, r); got != before {
		t.Fatalf("the table changed after Unprestage:\n got %s\nwant %s", got, before)
	}
	// A prestage no apply consumed is replaced by the next one.
	if err := r.Prestage(Prestaging{Counters: p.Counters[:1], Chains: p.Chains[:1], Limit: p.Limit}); err != nil {
		t.Fatal(err)
	}
	if err := r.Prestage(Prestaging{Counters: p.Counters[1:2], Chains: p.Chains[1:2], Limit: p.Limit}); err != nil {
		t.Fatal(err)
	}
	r.Unprestage()
	if got := tableContent(t, r); got != before {
		t.Fatalf("the table changed after two prestages and Unprestage:\n got %s\nwant %s", got, before)
	}
	// On a namespace without the table the prestage creates it; it goes.
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := r.Prestage(p); err != nil {
		t.Fatal(err)
	}
	if exists, _, _, err := r.tableInfo(r.table()); err != nil || !exists {
		t.Fatalf("no table after a prestage on an empty namespace: %v", err)
	}
	if err := r.Apply(bad); err == nil {
		t.Fatal("the kernel accepted a 300-byte log prefix")
	}
	if exists, _, _, err := r.tableInfo(r.table()); err != nil || exists {
		t.Fatalf("the table a failed first apply's prestage created is left (exists %v, %v)", exists, err)
	}
}

// threadSys is the calling thread's system CPU time (the kernel's work in
// our sendmsg: the batches are handled in the sending thread).
func threadSys() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Stime.Nano())
}

// BenchmarkPrestage: the 10,000-rule policy (and the flat 100,000-rule
// one) applied to an emptied table with nothing prestaged (off), its rule
// counters prestaged (counters), its likely decision chains with their
// counters (likely: LikelyDecisionChains) and every rule's (all),
// alternately in one process: the kernel's work (the sending thread's
// system CPU) in the prestage's transaction and in the apply's, so that
// what the prestage takes off the apply's path (where the daemon runs it
// beside the compile) and whether the kernel's total grows show without
// the wall time, which the machine's other load moves more; and how many
// of the prestaged objects the ruleset used.
func BenchmarkPrestage(b *testing.B) {
	b.Run("10k", func(b *testing.B) { benchPrestage(b, bigPolicy(10000, 1)) })
	b.Run("100k", func(b *testing.B) {
		if testing.Short() {
			b.Skip("-short")
		}
		benchPrestage(b, flatPolicy(100000, 0))
	})
}

func benchPrestage(b *testing.B, p *policy.Policy) {
	requireRoot(b)
	cfg := labConfig()
	cfg.LimitRuleLogs = true // the daemon's
	m, err := match.Compile(p, match.Options{Gateway: cfg.Gateway()})
	if err != nil {
		b.Fatal(err)
	}
	rs, err := Compile(m, cfg)
	if err != nil {
		b.Fatal(err)
	}
	modes := []string{"off", "counters", "likely", "all"}
	plans := []Prestaging{{}, PlanPrestage(m, cfg, nil, NoDecisionChains),
		PlanPrestage(m, cfg, nil, LikelyDecisionChains), PlanPrestage(m, cfg, nil, AllDecisionChains)}
	r := nsRunner(b, "prebench")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var pre, apply, wall [4]time.Duration
	var used [4]int
	b.ResetTimer()
	for i := range 4 * b.N {
		mode := []int{0, 1, 2, 3, 3, 2, 1, 0}[i%8]
		if err := r.Flush(); err != nil {
			b.Fatal(err)
		}
		if mode > 0 {
			s0 := threadSys()
			if err := r.Prestage(plans[mode]); err != nil {
				b.Fatal(err)
			}
			pre[mode] += threadSys() - s0
		}
		s0, t0 := threadSys(), time.Now()
		if err := r.Apply(rs); err != nil {
			b.Fatal(err)
		}
		apply[mode] += threadSys() - s0
		wall[mode] += time.Since(t0)
		st := r.LastApply()
		if (st.Prestaged > 0) != (mode > 0) {
			b.Fatalf("mode %d: %d prestaged", mode, st.Prestaged)
		}
		used[mode] += st.Prestaged - st.OldChains - st.OldObjects
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	for mode, name := range modes {
		b.ReportMetric(per(apply[mode]), name+"-apply-sys-ms")
		b.ReportMetric(per(wall[mode]), name+"-apply-ms")
		if mode > 0 {
			b.ReportMetric(per(pre[mode]), name+"-prestage-sys-ms")
			b.ReportMetric(float64(len(plans[mode].Counters)+len(plans[mode].Chains)), name+"-planned")
			b.ReportMetric(float64(used[mode])/float64(b.N), name+"-used")
		}
	}
}

package nft

import (
	"runtime"
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

// TestPrestageApply: counters prestaged (prestage.go) before an apply,
// one of them a name the ruleset does not have, leave the table a fresh
// apply of the ruleset leaves once the old ruleset is deleted; the apply
// creates no counter the prestage created, and counts them all as fresh
// (none kept: their counts start at zero with the apply).
func TestPrestageApply(t *testing.T) {
	requireRoot(t)
	cfg := labConfig()
	m, rs := compileMatcher(t, "testdata/kinds.yaml", cfg)
	ref := nsRunner(t, "preref")
	if err := ref.Apply(rs); err != nil {
		t.Fatal(err)
	}
	ref.Settle()
	want := tableNames(t, ref)
	refSt := ref.LastApply()

	r := nsRunner(t, "pre")
	names := PlannedRuleCounters(m, cfg, nil)
	if len(names) == 0 {
		t.Fatal("no counters planned")
	}
	const extra = "cw:A:99999"
	if err := r.Prestage(append(names, extra)); err != nil {
		t.Fatal(err)
	}
	if got := tableNames(t, r); !strings.Contains(got, extra) || !strings.Contains(got, names[0]) {
		t.Fatalf("the prestaged counters are not in the table: %s", got)
	}
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	st := r.LastApply()
	if st.Prestaged != len(names)+1 || st.NewObjects != refSt.NewObjects-len(names) {
		t.Errorf("prestaged %d, new objects %d; want %d and %d (a fresh apply: %d)",
			st.Prestaged, st.NewObjects, len(names)+1, refSt.NewObjects-len(names), refSt.NewObjects)
	}
	if kept := r.KeptCounters(); len(kept) != 0 {
		t.Errorf("prestaged counters taken for kept ones: %v", kept)
	}
	r.Settle()
	if got := tableNames(t, r); got != want {
		t.Fatalf("table after a prestaged apply:\n got %s\nwant %s", got, want)
	}
	// Applied again: nothing prestaged is pending, the table stays.
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if st := r.LastApply(); st.Prestaged != 0 || st.NewObjects != 0 {
		t.Errorf("re-apply: %+v", st)
	}
}

// TestPrestageFailureCleans: counters prestaged for an apply that the
// kernel then refuses, or for one that never comes (the compile failed:
// Unprestage), are removed again: the table is what it was; on a
// namespace without the table, the table the prestage created goes too.
func TestPrestageFailureCleans(t *testing.T) {
	requireRoot(t)
	r := nsRunner(t, "prefail")
	cfg := labConfig()
	_, good := compileMatcher(t, "testdata/kinds.yaml", cfg)
	if err := r.Apply(good); err != nil {
		t.Fatal(err)
	}
	r.Settle()
	before := tableNames(t, r)
	cfg.LogGeneration = 7 // every counter's name new
	m, bad := compileMatcher(t, "../../examples/aks-egress.yaml", cfg)
	refuseInNewChain(t, good, bad)
	names := PlannedRuleCounters(m, cfg, nil)
	for _, split := range []int{1 << 30, 1} { // stage 1 whole, then split (applysplit.go)
		r.splitMin = split
		if err := r.Prestage(names); err != nil {
			t.Fatal(err)
		}
		if got := tableNames(t, r); got == before {
			t.Fatal("the prestage added nothing")
		}
		err := r.Apply(bad)
		if err == nil {
			t.Fatal("the kernel accepted a 300-byte log prefix")
		}
		t.Logf("rejected as expected: %v", err)
		if got := tableNames(t, r); got != before {
			t.Fatalf("split %d: the table changed after a failed prestaged apply:\n got %s\nwant %s", split, got, before)
		}
	}
	// No apply: Unprestage.
	if err := r.Prestage(names); err != nil {
		t.Fatal(err)
	}
	r.Unprestage()
	if got := tableNames(t, r); got != before {
		t.Fatalf("the table changed after Unprestage:\n got %s\nwant %s", got, before)
	}
	// A prestage no apply consumed is replaced by the next one.
	if err := r.Prestage(names[:1]); err != nil {
		t.Fatal(err)
	}
	if err := r.Prestage(names[1:2]); err != nil {
		t.Fatal(err)
	}
	r.Unprestage()
	if got := tableNames(t, r); got != before {
		t.Fatalf("the table changed after two prestages and Unprestage:\n got %s\nwant %s", got, before)
	}
	// On a namespace without the table the prestage creates it; it goes.
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := r.Prestage(names); err != nil {
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

// BenchmarkPrestage: the 10,000-rule policy (and the flat 100,000-rule one) applied to an emptied
// table with its rule counters prestaged (on) and without (off),
// alternately in one process: the kernel's work (the sending thread's
// system CPU) in the prestage's transaction and in the apply's, so that
// what the prestage takes off the apply's path (where the daemon runs it
// beside the compile) and whether the kernel's total grows show without
// the wall time, which the machine's other load moves more.
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
	names := PlannedRuleCounters(m, cfg, nil)
	r := nsRunner(b, "prebench")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var pre, apply [2]time.Duration
	var wall [2]time.Duration
	b.ResetTimer()
	for i := range 2 * b.N {
		mode := []int{0, 1, 1, 0}[i%4]
		if err := r.Flush(); err != nil {
			b.Fatal(err)
		}
		if mode == 1 {
			s0 := threadSys()
			if err := r.Prestage(names); err != nil {
				b.Fatal(err)
			}
			pre[1] += threadSys() - s0
		}
		s0, t0 := threadSys(), time.Now()
		if err := r.Apply(rs); err != nil {
			b.Fatal(err)
		}
		apply[mode] += threadSys() - s0
		wall[mode] += time.Since(t0)
		if st := r.LastApply(); (st.Prestaged > 0) != (mode == 1) {
			b.Fatalf("mode %d: %d prestaged", mode, st.Prestaged)
		}
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(per(apply[0]), "off-apply-sys-ms")
	b.ReportMetric(per(pre[1]), "on-prestage-sys-ms")
	b.ReportMetric(per(apply[1]), "on-apply-sys-ms")
	b.ReportMetric(per(wall[0]), "off-apply-ms")
	b.ReportMetric(per(wall[1]), "on-apply-ms")
}

package nft

import (
	"reflect"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/match"
)

// TestKernelApply10k compiles and applies a 10,000-rule policy in a fresh
// namespace, twice (the second apply replaces a full table), and logs the
// times. Apply must stay under a second.
func TestKernelApply10k(t *testing.T) {
	requireRoot(t)
	r := nsRunner(t, "fw10k")
	p := bigPolicy(10000, 1)
	for i := range 2 {
		start := time.Now()
		rs, err := compilePolicy(p, labConfig())
		if err != nil {
			t.Fatal(err)
		}
		compiled := time.Now()
		if err := r.Apply(rs); err != nil {
			t.Fatal(err)
		}
		applied := time.Now()
		t.Logf("apply %d: 10000 rules (%d entries): compile %v, kernel apply %v, total %v; %d chains, %d sets, %d leaf rules, %d map elements, max sequential %d",
			i+1, rs.Stats.Entries, compiled.Sub(start), applied.Sub(compiled), applied.Sub(start), len(rs.Chains), len(rs.Sets),
			rs.Stats.Leaves, rs.Stats.MapElements, rs.Stats.MaxSequential)
		// The target is < 1s (see BenchmarkApply10k, docs/benchmarks.md);
		// the test only catches pathological regressions, as other load
		// on the machine (and -race) skews wall times several-fold.
		if d := applied.Sub(start); d > 30*time.Second {
			t.Errorf("compile and apply took %v", d)
		}
	}
	start := time.Now()
	st, err := r.Show()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("show: %d chains read back in %v", len(st.Chains), time.Since(start))
}

func cpuTimes() (user, sys time.Duration) {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// BenchmarkApply10k measures replacing the table with a 10,000-rule policy
// (compiled once) in a namespace. cpu-ms/op is the process's CPU time per
// apply (user and kernel), a figure less sensitive to other load on the
// machine than the wall time.
func BenchmarkApply10k(b *testing.B) {
	requireRoot(b)
	r := nsRunner(b, "bench")
	rs, err := compilePolicy(bigPolicy(10000, 1), labConfig())
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Apply(rs); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	u0, s0 := cpuTimes()
	for range b.N {
		if err := r.Apply(rs); err != nil {
			b.Fatal(err)
		}
	}
	u1, s1 := cpuTimes()
	b.ReportMetric(float64((u1-u0).Milliseconds())/float64(b.N), "user-ms/op")
	b.ReportMetric(float64((s1-s0).Milliseconds())/float64(b.N), "sys-ms/op")
}

// BenchmarkCompile10k measures compiling the ruleset of a 10,000-rule
// policy from its matcher (which the daemon compiles anyway, for the L7
// proxy and explain; BenchmarkMatchCompile10k measures that).
func BenchmarkCompile10k(b *testing.B) {
	cfg := labConfig()
	m, err := match.Compile(bigPolicy(10000, 1), match.Options{Gateway: cfg.Gateway()})
	if err != nil {
		b.Fatal(err)
	}
	compileBench(b, m, cfg)
}

// compileBench compiles m b.N times and reports the process's CPU time
// per compile (cpu-ms/op: user and kernel, the garbage collector's too),
// less sensitive to other load on the machine than the wall time.
func compileBench(b *testing.B, m *match.Matcher, cfg Config) {
	b.ResetTimer()
	u0, s0 := cpuTimes()
	for range b.N {
		if _, err := Compile(m, cfg); err != nil {
			b.Fatal(err)
		}
	}
	u1, s1 := cpuTimes()
	b.ReportMetric(float64((u1-u0+s1-s0).Milliseconds())/float64(b.N), "cpu-ms/op")
}

// BenchmarkMatchCompile10k measures compiling the matcher of the
// 10,000-rule policy.
func BenchmarkMatchCompile10k(b *testing.B) {
	cfg := labConfig()
	p := bigPolicy(10000, 1)
	for range b.N {
		if _, err := match.Compile(p, match.Options{Gateway: cfg.Gateway()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompile100k measures compiling the ruleset of the flat
// 100,000-rule policy (flatPolicy) from its matcher.
func BenchmarkCompile100k(b *testing.B) {
	cfg := labConfig()
	m, err := match.Compile(flatPolicy(100000, 0), match.Options{Gateway: cfg.Gateway()})
	if err != nil {
		b.Fatal(err)
	}
	compileBench(b, m, cfg)
}

// TestCountersAfterApply: right after an apply, the counters the apply
// created read as zero without asking the kernel, and those the table
// had already (here: one a previous process left, with counts) are read
// from it — the answer is the full dump's.
func TestCountersAfterApply(t *testing.T) {
	l := newLab(t)
	rs, err := compilePolicy(loadExample(t), labConfig())
	if err != nil {
		t.Fatal(err)
	}
	names := rs.Counters()
	if len(names) < 3 {
		t.Fatalf("the example has %d counters", len(names))
	}
	// A counter of the ruleset, left with counts by an earlier process.
	left := names[2]
	r := l.runner()
	applyOverLeftCounter(t, r, rs, left)
	got, err := r.CountersAfterApply()
	if err != nil {
		t.Fatal(err)
	}
	want, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after the apply:\n%v\nthe dump:\n%v", got, want)
	}
	lt, err := ParseLogTag(left)
	if err != nil {
		t.Fatal(err)
	}
	lt.Gen = 0
	found := false
	for _, rc := range got {
		if rc.Tag == lt.String() {
			found = true
			if rc.Packets != 7 || rc.Bytes != 700 {
				t.Errorf("%s: %d packets %d bytes, want the 7 and 700 it had", rc.Tag, rc.Packets, rc.Bytes)
			}
		} else if rc.Packets != 0 {
			t.Errorf("%s: %d packets in a new counter", rc.Tag, rc.Packets)
		}
	}
	if !found || len(got) < len(names) {
		t.Errorf("%d counters (%s found: %v), the ruleset has %d", len(got), lt, found, len(names))
	}
	// Applied again, every counter is kept and read.
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if got, err = r.CountersAfterApply(); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("re-applied: %v, %v; want %v", got, err, want)
	}
}

// TestApplyOverlappingReadsBeforeSwitch: ApplyOverlapping's during runs
// before the switch deletes anything — it reads, with the runner's lock
// held by the apply, a counter of the running ruleset that the apply
// deletes, with its count — and is told which counters the apply keeps;
// the apply then deletes the counter as Apply would.
func TestApplyOverlappingReadsBeforeSwitch(t *testing.T) {
	l := newLab(t)
	cfg := labConfig()
	cfg.LogGeneration = 5
	rs, err := compilePolicy(loadExample(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	names := rs.Counters()
	left := names[2]
	r := l.runner()
	applyOverLeftCounter(t, r, rs, left)
	lt, err := ParseLogTag(left)
	if err != nil {
		t.Fatal(err)
	}
	// The same policy at another generation: every counter is new.
	cfg.LogGeneration = 6
	next, err := compilePolicy(loadExample(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var (
		called bool
		kept   []string
		read   []RuleCounter
		rerr   error
	)
	err = r.ApplyOverlapping(next, func(k []string, rd func([]LogTag) ([]RuleCounter, error)) {
		called, kept = true, k
		// Late: an apply that did not wait for during would have
		// switched (and deleted the counter) by now.
		time.Sleep(100 * time.Millisecond)
		read, rerr = rd([]LogTag{lt})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !called || rerr != nil {
		t.Fatalf("during called %v, read error %v", called, rerr)
	}
	if len(kept) != 0 {
		t.Errorf("kept %v: every counter of the new generation is new", kept)
	}
	if len(read) != 1 || read[0].Packets != 7 || read[0].Bytes != 700 {
		t.Fatalf("during read %v: want the deleted counter %s with its 7 packets (read before the switch)", read, left)
	}
	if got, err := r.CountersOf([]LogTag{lt}); err != nil || len(got) != 0 {
		t.Fatalf("after the apply, %s: %v, %v; want it deleted", left, got, err)
	}
	if got := r.KeptCounters(); len(got) != 0 {
		t.Errorf("KeptCounters %v after an apply that kept none", got)
	}
	// Applied again: every counter kept, and during is told so.
	if err := r.ApplyOverlapping(next, func(k []string, _ func([]LogTag) ([]RuleCounter, error)) { kept = k }); err != nil {
		t.Fatal(err)
	}
	if len(kept) != len(next.Counters()) {
		t.Errorf("re-applied: during told %d kept, the ruleset has %d counters", len(kept), len(next.Counters()))
	}
}

// applyOverLeftCounter creates rs's table with only the named counter
// left, at 7 packets and 700 bytes (as an earlier process would leave
// it), then applies rs.
func applyOverLeftCounter(t *testing.T, r *NetlinkRunner, rs *Ruleset, left string) {
	t.Helper()
	c, err := r.conn()
	if err != nil {
		t.Fatal(err)
	}
	table := c.AddTable(&nftables.Table{Name: rs.Table, Family: nftables.TableFamilyINet})
	c.AddObj(&nftables.NamedObj{Table: table, Name: left, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{Packets: 7, Bytes: 700}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c.CloseLasting()
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
}

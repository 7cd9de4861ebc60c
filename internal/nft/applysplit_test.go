package nft

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkApplySplit applies the same rulesets with stage 1 in one
// transaction and in two (applysplit.go), alternately in one process, so
// that the machine's load weighs on both alike: per mode, the wall time
// per apply, stage 1 (its encoding, both transactions and the wait
// between them), the wait for the second transaction's encoding and the
// process's CPU (user, sys: the kernel's work on the batches).
func BenchmarkApplySplit(b *testing.B) {
	cases := []struct {
		name  string
		rs    func() []*Ruleset
		empty bool
	}{
		{"10k-empty", func() []*Ruleset { return []*Ruleset{mustCompile(b, bigPolicy(10000, 1))} }, true},
		{"10k-replace", func() []*Ruleset {
			return []*Ruleset{mustCompile(b, bigPolicy(10000, 1)), mustCompile(b, bigPolicy(10000, 2))}
		}, false},
		{"100k-empty", func() []*Ruleset { return []*Ruleset{mustCompile(b, flatPolicy(100000, 0))} }, true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if testing.Short() && c.name == "100k-empty" {
				b.Skip("-short")
			}
			requireRoot(b)
			rss := c.rs()
			r := nsRunner(b, "split")
			type sum struct{ wall, stage1, enc1, wait1, user, sys time.Duration }
			var s [2]sum
			if !c.empty {
				if err := r.Apply(rss[1]); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range 2 * b.N {
				// A replace alternates the two policies: the modes go
				// one, split, split, one, ..., so that each replaces
				// either policy by the other as often.
				mode := []int{0, 1, 1, 0}[i%4]
				r.splitMin = []int{1 << 30, 1}[mode]
				rs := rss[0]
				if c.empty {
					if err := r.Flush(); err != nil {
						b.Fatal(err)
					}
				} else {
					rs = rss[i%2]
				}
				u0, s0 := cpuTimes()
				t0 := time.Now()
				if err := r.Apply(rs); err != nil {
					b.Fatal(err)
				}
				wall := time.Since(t0)
				u1, s1 := cpuTimes()
				st := r.LastApply()
				if st.Split1 != (mode == 1) {
					b.Fatalf("mode %d: split %v", mode, st.Split1)
				}
				x := &s[mode]
				x.wall += wall
				x.stage1 += st.Stage1
				x.enc1 += st.Encode1
				x.wait1 += st.Wait1
				x.user += u1 - u0
				x.sys += s1 - s0
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
			for mode, name := range []string{"one", "split"} {
				x := s[mode]
				b.ReportMetric(per(x.wall), name+"-ms")
				b.ReportMetric(per(x.stage1), name+"-stage1-ms")
				b.ReportMetric(per(x.enc1), name+"-enc1-ms")
				b.ReportMetric(per(x.user), name+"-user-ms")
				b.ReportMetric(per(x.sys), name+"-sys-ms")
				if mode == 1 {
					b.ReportMetric(per(x.wait1), name+"-wait1-ms")
				}
			}
		})
	}
}

// TestApplySplitFailureUnstages: a stage 1 in two transactions
// (applysplit.go) applies the policy; when the kernel refuses the second
// (the rules), what the first added (chains, sets, counters) is removed,
// the table is what it was and the old policy decides traffic.
func TestApplySplitFailureUnstages(t *testing.T) {
	l := newLab(t)
	startServers(t, l)
	r := l.runner()
	r.splitMin = 1 // every stage 1 split
	good := applyKinds(t, l, r)
	if st := r.LastApply(); !st.Split1 || st.NewRules == 0 {
		t.Fatalf("the first apply was not split: %+v", st)
	}
	before := tableNames(t, r)
	bad, err := compilePolicy(loadPolicy(t, "../../examples/aks-egress.yaml"), labConfig())
	if err != nil {
		t.Fatal(err)
	}
	// A rule the kernel refuses (a log prefix over its 127 bytes) in a
	// regular chain the running ruleset does not have: its objects, chains
	// and sets go in the first transaction, the refused rule in the second.
	target := refuseInNewChain(t, good, bad)
	err = r.Apply(bad)
	if err == nil {
		t.Fatal("the kernel accepted a 300-byte log prefix")
	}
	if !strings.Contains(err.Error(), "stage 1") || !strings.Contains(err.Error(), "add rule") {
		t.Errorf("error does not name stage 1's rule: %v", err)
	}
	t.Logf("rejected as expected: %v", err)
	if got, want := tableNames(t, r), before; got != want {
		t.Fatalf("the table changed after a failed split apply:\n got %s\nwant %s", got, want)
	}
	if got, _ := dialTCP(t, l.node, ap("198.18.10.5:80"), blockWait); got != passed {
		t.Fatalf("allowed flow after a failed apply: %s", got)
	}
	if got, _ := dialTCP(t, l.node, ap("198.18.10.5:81"), blockWait); got != blocked {
		t.Fatalf("denied flow after a failed apply: %s", got)
	}
	// The next apply finds the table as it is.
	target.Rules = target.Rules[:len(target.Rules)-1]
	if err := r.Apply(bad); err != nil {
		t.Fatal(err)
	}
}

// tableNames lists the kernel table's chains (with their rule counts),
// sets and named objects.
func tableNames(t *testing.T, r *NetlinkRunner) string {
	t.Helper()
	st, err := r.Show()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, c := range st.Chains {
		fmt.Fprintf(&b, "%s/%d ", c.Name, len(c.Rules))
	}
	for _, s := range st.Sets {
		fmt.Fprintf(&b, "set:%s ", s.Name)
	}
	objs, err := r.listObjects(st.Table, 0)
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString(strings.Join(slices.Sorted(maps.Keys(objs)), " "))
	return b.String()
}

// TestApplySplitOverlapping: with stage 1 split, ApplyOverlapping's
// during (started once the second transaction's rules are encoded) still
// runs before the switch deletes anything: it reads, late, a counter the
// apply deletes, with its count.
func TestApplySplitOverlapping(t *testing.T) {
	l := newLab(t)
	cfg := labConfig()
	cfg.LogGeneration = 5
	rs, err := compilePolicy(loadExample(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	left := rs.Counters()[2]
	r := l.runner()
	r.splitMin = 1
	applyOverLeftCounter(t, r, rs, left)
	lt, err := ParseLogTag(left)
	if err != nil {
		t.Fatal(err)
	}
	cfg.LogGeneration = 6 // every counter new, the old ones deleted
	next, err := compilePolicy(loadExample(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var read []RuleCounter
	err = r.ApplyOverlapping(next, func(_ []string, rd func([]LogTag) ([]RuleCounter, error)) {
		time.Sleep(100 * time.Millisecond)
		read, _ = rd([]LogTag{lt})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !r.LastApply().Split1 {
		t.Fatal("stage 1 not split")
	}
	if len(read) != 1 || read[0].Packets != 7 {
		t.Fatalf("during read %v: want %s with its 7 packets (read before the switch)", read, left)
	}
	if got, err := r.CountersOf([]LogTag{lt}); err != nil || len(got) != 0 {
		t.Fatalf("after the apply, %s: %v, %v; want it deleted", left, got, err)
	}
}

// refuseInNewChain adds to bad a rule the kernel refuses (a log prefix
// over its 127 bytes) in a regular chain with rules that good does not
// have, and returns that chain.
func refuseInNewChain(t testing.TB, good, bad *Ruleset) *Chain {
	t.Helper()
	for _, c := range bad.Chains {
		if c.Hook == HookNone && good.Chain(c.Name) == nil && len(c.Rules) > 0 {
			c.Rules = append(c.Rules, &Rule{Stmts: []Stmt{Log{Prefix: strings.Repeat("x", 300)}, Verdict{Kind: VerdictAccept}}})
			return c
		}
	}
	t.Fatal("no new regular chain")
	return nil
}

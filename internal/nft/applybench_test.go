package nft

import (
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Apply benchmarks on the real kernel, in a namespace of their own. Each
// reports the wall time per apply (ns/op), the process's CPU per apply
// (user-ms/op, sys-ms/op: the kernel's work on the batch runs in the
// sending process) and the worst apply (max-ms). docs/benchmarks.md has
// the commands and results; they only use what every version of the
// package has (compilePolicy, NewNetlinkRunner, Apply, Flush), so that the
// same file measures the code before a change too.

// applyBench measures next(i)'s apply, after setup(i) (not timed).
func applyBench(b *testing.B, setup func(r *NetlinkRunner, i int), next func(i int) *Ruleset) {
	requireRoot(b)
	r := nsRunner(b, "bench")
	var worst, wall time.Duration
	var user, sys time.Duration
	b.ResetTimer()
	b.StopTimer()
	for i := range b.N {
		if setup != nil {
			setup(r, i)
		}
		rs := next(i)
		u0, s0 := cpuTimes()
		start := time.Now()
		b.StartTimer()
		if err := r.Apply(rs); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		d := time.Since(start)
		u1, s1 := cpuTimes()
		user, sys, wall = user+u1-u0, sys+s1-s0, wall+d
		worst = max(worst, d)
	}
	b.ReportMetric(float64(user.Milliseconds())/float64(b.N), "user-ms/op")
	b.ReportMetric(float64(sys.Milliseconds())/float64(b.N), "sys-ms/op")
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms")
}

func mustCompile(b *testing.B, p *policy.Policy) *Ruleset {
	rs, err := compilePolicy(p, labConfig())
	if err != nil {
		b.Fatal(err)
	}
	return rs
}

// BenchmarkApply10kReplace replaces a running 10,000-rule policy with
// another one (two different policies, applied in turn): nothing of the
// running ruleset can be kept.
func BenchmarkApply10kReplace(b *testing.B) {
	rs := []*Ruleset{mustCompile(b, bigPolicy(10000, 1)), mustCompile(b, bigPolicy(10000, 2))}
	applyBench(b, func(r *NetlinkRunner, i int) {
		if i == 0 {
			if err := r.Apply(rs[1]); err != nil {
				b.Fatal(err)
			}
		}
	}, func(i int) *Ruleset { return rs[i%2] })
}

// BenchmarkApply10kEmpty applies a 10,000-rule policy to a namespace
// without clusterwall's table (the first apply; removing the table is not
// timed).
func BenchmarkApply10kEmpty(b *testing.B) {
	rs := mustCompile(b, bigPolicy(10000, 1))
	applyBench(b, func(r *NetlinkRunner, i int) {
		if err := r.Flush(); err != nil {
			b.Fatal(err)
		}
	}, func(int) *Ruleset { return rs })
}

// BenchmarkApply10kSame applies the running 10,000-rule policy again
// (BenchmarkApply10k, which the daemon does on SIGHUP or a touched file).
func BenchmarkApply10kSame(b *testing.B) {
	rs := mustCompile(b, bigPolicy(10000, 1))
	applyBench(b, func(r *NetlinkRunner, i int) {
		if i == 0 {
			if err := r.Apply(rs); err != nil {
				b.Fatal(err)
			}
		}
	}, func(int) *Ruleset { return rs })
}

// oneRuleChanged is bigPolicy(10000, 1) with one rule in the middle
// changed: rule r05000 gets another destination port.
func oneRuleChanged() *policy.Policy {
	p := bigPolicy(10000, 1)
	for _, g := range p.Groups {
		for _, c := range g.Collections {
			for _, r := range c.Rules {
				if r.Name == "r05000" {
					r.DestinationPorts = []policy.PortRange{{Lo: 7000, Hi: 7000}}
				}
			}
		}
	}
	return p
}

// BenchmarkApply10kOneRule applies a 10,000-rule policy that differs from
// the running one in one rule (the two in turn).
func BenchmarkApply10kOneRule(b *testing.B) {
	rs := []*Ruleset{mustCompile(b, bigPolicy(10000, 1)), mustCompile(b, oneRuleChanged())}
	applyBench(b, func(r *NetlinkRunner, i int) {
		if i == 0 {
			if err := r.Apply(rs[1]); err != nil {
				b.Fatal(err)
			}
		}
	}, func(i int) *Ruleset { return rs[i%2] })
}

// BenchmarkApply100kReplace replaces a running 100,000-rule policy
// (flatPolicy: every rule distinct and reachable) with another one.
func BenchmarkApply100kReplace(b *testing.B) {
	rs := []*Ruleset{mustCompile(b, flatPolicy(100000, 0)), mustCompile(b, flatPolicy(100000, 1))}
	applyBench(b, func(r *NetlinkRunner, i int) {
		if i == 0 {
			if err := r.Apply(rs[1]); err != nil {
				b.Fatal(err)
			}
		}
	}, func(i int) *Ruleset { return rs[i%2] })
}

// BenchmarkApply100kEmpty applies a 100,000-rule policy to a namespace
// without clusterwall's table.
func BenchmarkApply100kEmpty(b *testing.B) {
	rs := mustCompile(b, flatPolicy(100000, 0))
	applyBench(b, func(r *NetlinkRunner, i int) {
		if err := r.Flush(); err != nil {
			b.Fatal(err)
		}
	}, func(int) *Ruleset { return rs })
}

// BenchmarkApply100kTo8 replaces a running 100,000-rule policy with the
// seed's 8-rule policy (examples/aks-egress.yaml); putting the 100,000
// rules back is not timed.
func BenchmarkApply100kTo8(b *testing.B) {
	big := mustCompile(b, flatPolicy(100000, 0))
	small := mustCompile(b, loadExample(b))
	applyBench(b, func(r *NetlinkRunner, i int) {
		if err := r.Apply(big); err != nil {
			b.Fatal(err)
		}
	}, func(int) *Ruleset { return small })
}

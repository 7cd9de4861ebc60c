package nft

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkKernelCostByKind: what the kernel's share of an apply costs
// per kind of object, to decide what to change in the ruleset's shape.
// Each sub-benchmark applies, to an empty table, n regular chains of one
// shape (each with one rule, or none) and reports the process's kernel CPU
// per chain (sys-us/chain), and then for removing them all (an apply of
// an empty ruleset: del-sys-us/chain, not in ns/op); the table is removed
// between rounds (not timed). Comparing the shapes gives the cost of an empty
// chain, of a rule, of an expression and of a named counter.
// docs/benchmarks.md ("Where the kernel's time goes") has the results.
func BenchmarkKernelCostByKind(b *testing.B) {
	const n = 20000
	lim := LimitSpec{Rate: 1000, Burst: 2000}
	net24 := func(i int) MatchRange {
		v := uint64(10<<24 | (i&0xffff)<<8)
		return MatchRange{Family: ipv4, Field: fieldSrc, iv: ivl{u128{0, v}, u128{0, v | 255}}}
	}
	port := MatchRange{Family: ipv4, Field: fieldPort, iv: ivl{u128{0, 443}, u128{0, 443}}}
	shapes := []struct {
		name  string
		rules func(i int) []*Rule
	}{
		{"empty-chain", func(int) []*Rule { return nil }},
		{"accept", func(int) []*Rule { return []*Rule{{Stmts: []Stmt{Verdict{Kind: VerdictAccept}}}} }},
		{"accept-comment", func(i int) []*Rule {
			return []*Rule{{Comment: fmt.Sprintf("cw:A:%d grp000/coll00/r%06d", i, i), Stmts: []Stmt{Verdict{Kind: VerdictAccept}}}}
		}},
		{"two-accepts", func(int) []*Rule {
			return []*Rule{{Stmts: []Stmt{Verdict{Kind: VerdictAccept}}}, {Stmts: []Stmt{Verdict{Kind: VerdictAccept}}}}
		}},
		{"prefix-port-accept", func(i int) []*Rule { return []*Rule{{Stmts: []Stmt{net24(i), port, Verdict{Kind: VerdictAccept}}}} }},
		{"counter-accept", func(int) []*Rule { return []*Rule{{Stmts: []Stmt{Counter{}, Verdict{Kind: VerdictAccept}}}} }},
		{"named-counter-accept", func(i int) []*Rule {
			return []*Rule{{Stmts: []Stmt{Counter{Name: fmt.Sprintf("cw:A:%d", i)}, Verdict{Kind: VerdictAccept}}}}
		}},
		{"decision", func(i int) []*Rule {
			tag := fmt.Sprintf("cw:A:%d", i)
			return []*Rule{{Stmts: []Stmt{Counter{Name: tag}, Log{Prefix: tag, Group: 100, Limit: lim.Name()}}}, {Stmts: []Stmt{Verdict{Kind: VerdictAccept}}}}
		}},
	}
	for _, sh := range shapes {
		b.Run(sh.name, func(b *testing.B) {
			requireRoot(b)
			r := nsRunner(b, "cost")
			rs := &Ruleset{Table: "cwcost", LogGroup: 100, LogLimit: lim}
			for i := range n {
				rs.Chains = append(rs.Chains, &Chain{Name: fmt.Sprintf("c%06d", i), Rules: sh.rules(i)})
			}
			var sys, user, del time.Duration
			empty := &Ruleset{Table: "cwcost", LogGroup: 100, LogLimit: lim}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				if err := r.Flush(); err != nil {
					b.Fatal(err)
				}
				u0, s0 := cpuTimes()
				b.StartTimer()
				if err := r.Apply(rs); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				u1, s1 := cpuTimes()
				user, sys = user+u1-u0, sys+s1-s0
				// Removing them all (stage 2 of an apply that keeps none).
				if err := r.Apply(empty); err != nil {
					b.Fatal(err)
				}
				_, s2 := cpuTimes()
				del += s2 - s1
			}
			b.ReportMetric(float64(sys.Microseconds())/float64(b.N*n), "sys-us/chain")
			b.ReportMetric(float64(user.Microseconds())/float64(b.N*n), "user-us/chain")
			b.ReportMetric(float64(del.Microseconds())/float64(b.N*n), "del-sys-us/chain")
			b.ReportMetric(float64(r.LastApply().Stage1.Milliseconds()), "stage1-ms")
		})
	}
}

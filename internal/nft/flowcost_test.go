package nft

import (
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	cwlab "github.com/clusterwall/clusterwall/internal/lab"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// benchShapePolicy is the policy of bench/dataplane (lab.BenchPolicy)
// with the lab's server, 198.18.10.5: n-1 network rules that do not match
// the benchmark flows and, last, the rule that allows them, so that a flow
// meets the whole classifier.
func benchShapePolicy(n int) []byte {
	return cwlab.BenchPolicy(n, "198.18.10.5", "2001:db8:ac:10::5")
}

// minimalRuleset is bench/dataplane's baseline: the minimal stateful
// ruleset (established/related accepted, the benchmark flows accepted,
// the rest dropped).
func minimalRuleset() *Ruleset {
	port := ivl{u128{lo: 5201}, u128{lo: 5202}}
	dst := addrVal(netip.MustParseAddr("198.18.10.5"))
	return &Ruleset{Table: DefaultTable, LogGroup: DefaultLogGroup, LogLimit: LimitSpec{Rate: 1000, Burst: 2000},
		Chains: []*Chain{{Name: "forward", Hook: HookForward, Type: "filter", Policy: "accept", Rules: []*Rule{
			{Stmts: []Stmt{MatchCtState{CtStateEstablished | CtStateRelated}, Verdict{Kind: VerdictAccept}}},
			{Stmts: []Stmt{MatchNFProto{ipv4}, MatchL4Proto{protoTCP}, MatchRange{Family: ipv4, Field: fieldDst, iv: ivl{dst, dst}},
				MatchRange{Field: fieldPort, iv: port}, Verdict{Kind: VerdictAccept}}},
			{Stmts: []Stmt{Verdict{Kind: VerdictDrop}}},
		}}}}
}

// asBefore is rs as the compiler emitted it before the new flow's path was
// made cheaper (docs/benchmarks.md, "The new flow's path in the kernel"):
// with maps, every dispatch map an interval map; with pre, an empty
// prerouting nat chain. Its names are rs's: apply it to an empty table
// only.
func asBefore(rs *Ruleset, maps, pre bool) *Ruleset {
	out := *rs
	out.Sets = nil
	for _, s := range rs.Sets {
		if maps && s.Kind == SetVMapHash {
			c := *s
			c.Kind = SetVMap
			s = &c
		}
		out.Sets = append(out.Sets, s)
	}
	out.Chains = slices.Clone(rs.Chains)
	if pre && rs.Chain("prerouting") == nil {
		out.Chains = append(out.Chains, &Chain{Name: "prerouting", Hook: HookPrerouting, Type: "nat", Priority: -100, Policy: "accept"})
	}
	return &out
}

// BenchmarkKernelNewFlowCost measures the kernel's CPU per new flow through
// the firewall with bench/dataplane's 10,000-rule policy against the
// minimal stateful ruleset, in one process, interleaved: TCP SYNs from
// node's address with a new source port each, written onto node's veth
// (the sending thread then runs the firewall's forwarding, its conntrack
// and nftables, and inet's answer, a RST, back through the firewall), the
// thread's CPU time over the flows. Set-ups: minimal, the 10,000-rule
// ruleset as compiled, the same as it was compiled before (asBefore), and
// with one of the two changes undone (10k-rbtree: interval maps; 10k-emptynat:
// an empty prerouting nat chain). It also logs each set-up's apply time
// into an empty table. Root only; run with -benchtime 1x:
//
//	go test -run '^$' -bench BenchmarkKernelNewFlowCost -benchtime 1x ./internal/nft/
func BenchmarkKernelNewFlowCost(b *testing.B) {
	l := newLab(b)
	r := l.runner()
	ct := l.fwHandle(b)
	p, err := loadPolicyBytes("bench.yaml", benchShapePolicy(10000))
	if err != nil {
		b.Fatal(err)
	}
	cfg := labConfig()
	cfg.SNAT = SNATOff // as bench/dataplane: the baseline does no NAT either
	cfg.LimitRuleLogs, cfg.LogRate, cfg.LogBurst = true, 1000, 2000
	rs, err := compilePolicy(p, cfg)
	if err != nil {
		b.Fatal(err)
	}
	setups := []struct {
		name string
		rs   *Ruleset
	}{{"minimal", minimalRuleset()}, {"10k", rs}, {"10k-before", asBefore(rs, true, true)},
		{"10k-rbtree", asBefore(rs, true, false)}, {"10k-emptynat", asBefore(rs, false, true)}}
	in := newInjector(b, l.node, "eth0", macOf(b, l.fw, "inside"))
	src, dst := netip.MustParseAddr("10.42.1.10"), netip.MustParseAddr("198.18.10.5")
	const flows, rounds = 20000, 7
	costs := make([][]float64, len(setups))
	applies := make([][]float64, len(setups)) // ms, into an empty table
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sport := 0
	for range b.N {
		for round := range rounds {
			for k := range setups {
				s := (k + round) % len(setups) // rotate the order
				if err := r.Flush(); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				if err := r.Apply(setups[s].rs); err != nil {
					b.Fatal(err)
				}
				applies[s] = append(applies[s], float64(time.Since(start).Microseconds())/1000)
				if err := ct.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
					b.Fatal(err)
				}
				var ts0, ts1 unix.Timespec
				unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts0)
				for range flows {
					sport = sport%60000 + 1
					if err := in.send(rawFlow{proto: protoTCP, src: src, dst: dst, sport: uint16(1024 + sport), dport: 5202}); err != nil {
						b.Fatal(err)
					}
				}
				unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts1)
				costs[s] = append(costs[s], float64(ts1.Nano()-ts0.Nano())/flows)
			}
		}
	}
	if err := r.Flush(); err != nil {
		b.Fatal(err)
	}
	med := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	for s, st := range setups {
		b.Logf("%-12s %6.0f ns per new flow (rounds: %.0f); apply to an empty table %.0f ms (%.0f)", st.name, med(costs[s]), costs[s],
			med(applies[s]), applies[s])
		b.ReportMetric(med(costs[s]), st.name+"-ns/flow")
	}
	for s := 1; s < len(setups); s++ {
		ratios := make([]float64, len(costs[0]))
		for i := range ratios {
			ratios[i] = costs[s][i] / costs[0][i]
		}
		b.Logf("%s / minimal: median %.3f (rounds: %.3f)", setups[s].name, med(ratios), ratios)
	}
}

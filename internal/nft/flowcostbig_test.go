package nft

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// bigPolicyFlows returns TCP/IPv4 flows shaped like bigPolicy(10000)'s
// rules (sources in its 64 subnets, destinations among its hosts in
// 198.18.0.0/16, which the lab routes out, its ports) with the number of
// rules rs's forward chain tests each against (the interpreter's count),
// sorted by that count.
func bigPolicyFlows(tb testing.TB, rs *Ruleset, n int) ([]rawFlow, []int) {
	r := rand.New(rand.NewPCG(7, 7))
	ports := []uint16{443, 80, 8080, 5432, 1433, 22, 3306, 6443, 9000, 53}
	type fl struct {
		f     rawFlow
		rules int
	}
	var out []fl
	for range n {
		i := r.IntN(64)
		f := rawFlow{proto: protoTCP, src: netip.AddrFrom4([4]byte{10, byte(i / 8), byte(i%8) * 16, byte(1 + r.IntN(250))}),
			dst: u32Addr(0xc6120000 + uint32(r.IntN(8192))*8), dport: ports[r.IntN(len(ports))]}
		if r.IntN(10) == 0 {
			f.dport = uint16(30000 + r.IntN(2768))
		}
		got, err := evalChain(rs, "forward", packet{iif: "inside", oif: "outside", ctState: CtStateNew, fam: ipv4,
			proto: protoTCP, src: f.src, dst: f.dst, dport: f.dport}, nil)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, fl{f, got.rules})
	}
	slices.SortStableFunc(out, func(a, b fl) int { return a.rules - b.rules })
	flows, rules := make([]rawFlow, len(out)), make([]int, len(out))
	for i, x := range out {
		flows[i], rules[i] = x.f, x.rules
	}
	return flows, rules
}

const flatFlowRules = 10000

// BenchmarkKernelBigPolicyFlowCost measures the kernel's CPU per new flow
// through bigPolicy(10000)'s classifier (Config.LimitRuleLogs, as the
// daemon runs it) against the minimal stateful ruleset, in one process,
// interleaved, as BenchmarkKernelNewFlowCost does for bench/dataplane's
// policy: TCP SYNs written onto node's veth, the thread's CPU time over the
// flows. Two sets of flows through the 10,000-rule ruleset: "typical", 64
// flows drawn at random from the policy's shape, and "long", the 64 of
// 4,000 such flows that the classifier tests against the most rules (the
// worst paths a flow of this shape meets). It is the flow's side of the
// classifier's tuning (dupFactor, docs/benchmarks.md, branch kobjects).
// Root only; run with -benchtime 1x:
//
//	go test -run '^$' -bench BenchmarkKernelBigPolicyFlowCost -benchtime 1x ./internal/nft/
//
// flat-folded and flat-leaf: flows to 64 rules of flatPolicy(flatFlowRules),
// whose dispatch folds every rule into its key (classifier.foldKey), and
// the same ruleset compiled without folding (noFold: a leaf per rule,
// `... != ... return`, decision): the flow's side of branch concatkey.
func BenchmarkKernelBigPolicyFlowCost(b *testing.B) {
	l := newLab(b)
	r := l.runner()
	ct := l.fwHandle(b)
	cfg := labConfig()
	cfg.SNAT = SNATOff
	cfg.LimitRuleLogs, cfg.LogRate, cfg.LogBurst = true, 1000, 2000
	rs, err := compilePolicy(bigPolicy(10000, 1), cfg)
	if err != nil {
		b.Fatal(err)
	}
	const sample = 64
	all, rules := bigPolicyFlows(b, rs, 4000)
	pick := rand.New(rand.NewPCG(3, 3)).Perm(len(all))[:sample]
	var typical []rawFlow
	typRules := 0
	for _, i := range pick {
		typical = append(typical, all[i])
		typRules += rules[i]
	}
	long := all[len(all)-sample:]
	longRules := 0
	for _, n := range rules[len(rules)-sample:] {
		longRules += n
	}
	b.Logf("rules tested per flow: typical mean %.1f, long mean %.1f (max %d); MaxSequential %d",
		float64(typRules)/sample, float64(longRules)/sample, rules[len(rules)-1], rs.Stats.MaxSequential)
	// The flat policy (every rule its own /24 to its own address on one
	// port), its dispatch's children folded into the key (the compiler's
	// way) and as leaves (noFold): flows to 64 of its rules.
	flat := flatPolicy(flatFlowRules, 0)
	flatRS, err := compilePolicy(flat, cfg)
	if err != nil {
		b.Fatal(err)
	}
	noFold = true
	leafRS, err := compilePolicy(flat, cfg)
	noFold = false
	if err != nil {
		b.Fatal(err)
	}
	var flatFlows []rawFlow
	for _, i := range rand.New(rand.NewPCG(4, 4)).Perm(flatFlowRules)[:sample] {
		port := uint16(443)
		if i%3 == 0 {
			port = 8443
		}
		flatFlows = append(flatFlows, rawFlow{proto: protoTCP, src: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(1 + i%200)}),
			dst: u32Addr(0xc6120000 + uint32(i)), dport: port})
	}
	minFlows := []rawFlow{{proto: protoTCP, src: netip.MustParseAddr("10.42.1.10"), dst: netip.MustParseAddr("198.18.10.5"), dport: 5202}}
	setups := []struct {
		name  string
		rs    *Ruleset
		flows []rawFlow
	}{{"minimal", minimalRuleset(), minFlows}, {"typical", rs, typical}, {"long", rs, long},
		{"flat-folded", flatRS, flatFlows}, {"flat-leaf", leafRS, flatFlows}}
	in := newInjector(b, l.node, "eth0", macOf(b, l.fw, "inside"))
	const flows, rounds = 20000, 7
	costs := make([][]float64, len(setups))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for range b.N {
		for round := range rounds {
			for k := range setups {
				s := (k + round) % len(setups) // rotate the order
				if err := r.Flush(); err != nil {
					b.Fatal(err)
				}
				if err := r.Apply(setups[s].rs); err != nil {
					b.Fatal(err)
				}
				if err := ct.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
					b.Fatal(err)
				}
				time.Sleep(10 * time.Millisecond)
				fs := setups[s].flows
				var ts0, ts1 unix.Timespec
				unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts0)
				for i := range flows {
					f := fs[i%len(fs)]
					f.sport = uint16(1024 + i)
					if err := in.send(f); err != nil {
						b.Fatal(err)
					}
				}
				unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts1)
				costs[s] = append(costs[s], float64(ts1.Nano()-ts0.Nano())/flows)
				if s > 0 && round < len(setups) {
					// The flows reached the classifier's decisions: each
					// counts in a network rule's counter (the lab forwards
					// what they carry).
					cs, err := r.Counters()
					if err != nil {
						b.Fatal(err)
					}
					var hits uint64
					for _, c := range cs {
						if strings.HasPrefix(c.Tag, "cw:A:") || strings.HasPrefix(c.Tag, "cw:D:") && c.Tag != "cw:D:default" && c.Tag != "cw:D:input" {
							hits += c.Packets
						}
					}
					if hits < flows/2 {
						b.Fatalf("%s: %d of %d flows counted by network rules", setups[s].name, hits, flows)
					}
				}
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
		b.Logf("%-8s %6.0f ns per new flow (rounds: %.0f)", st.name, med(costs[s]), costs[s])
		b.ReportMetric(med(costs[s]), st.name+"-ns/flow")
	}
	for s := 1; s < len(setups); s++ {
		ratios := make([]float64, len(costs[0]))
		for i := range ratios {
			ratios[i] = costs[s][i] / costs[0][i]
		}
		b.Logf("%s / minimal: median %.3f (rounds: %.3f)", setups[s].name, med(ratios), ratios)
		b.ReportMetric(med(ratios), setups[s].name+"/minimal")
	}
}

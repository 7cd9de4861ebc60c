package nft

import (
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	xipv4 "golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/nflog"
)

// TestKernelLimitedRuleLogs: with Config.LimitRuleLogs the kernel logs at
// most the shared limit's messages, and still applies every decision and
// counts every flow: many more flows than the limit lets through, allowed
// (all connect), denied by a rule (all reset) and dropped by threat
// intelligence (none connects), each counted once per flow by its rule's
// counter, which the daemon's rule hits and decision metric read. A
// counter after the limit, or a verdict in the limited rule, fails it.
func TestKernelLimitedRuleLogs(t *testing.T) {
	l := newLab(t)
	startServers(t, l)
	r := l.runner()
	nl := collectNFLOG(t, DefaultLogGroup, l.fwFD)
	cfg := labConfig()
	cfg.LimitRuleLogs = true
	cfg.LogRate, cfg.LogBurst = 1, 2
	cfg.LogGeneration = 3
	rs, err := compilePolicy(loadPolicy(t, "testdata/kinds.yaml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	// The leaves go to decision chains: counter and limited log, then the
	// verdict in a rule of its own.
	for _, c := range rs.Chains {
		for _, ru := range c.Rules {
			s := ru.String()
			if strings.Contains(s, "log prefix \"cw:A:") || strings.Contains(s, "log prefix \"cw:D:") {
				if !strings.HasPrefix(s, "counter name ") || !strings.Contains(s, " limit name \"cw_log_1_2\" log ") || strings.Contains(s, "accept") ||
					strings.Contains(s, "drop") || strings.Contains(s, "reject") {
					t.Errorf("chain %s: a limited decision rule %q", c.Name, s)
				}
			}
		}
	}

	const n = 24
	dial := func(dst string, timeout time.Duration) map[outcome]int {
		var mu sync.Mutex
		got := map[outcome]int{}
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				o, _ := dialTCP(t, l.node, ap(dst), timeout)
				mu.Lock()
				got[o]++
				mu.Unlock()
			})
		}
		wg.Wait()
		return got
	}
	read := func() map[string]uint64 {
		cs, err := r.Counters()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]uint64{}
		for _, c := range cs {
			tag, err := ParseLogTag(c.Tag)
			if err != nil {
				t.Fatalf("counter %q: %v", c.Tag, err)
			}
			tag.Gen = 0
			out[tag.String()] += c.Packets
		}
		return out
	}
	sum := func(m map[string]uint64, prefix string) (s uint64) {
		for k, v := range m {
			if strings.HasPrefix(k, prefix) && k != "cw:D:default" && k != "cw:D:input" && !strings.HasSuffix(k, ":threat") {
				s += v
			}
		}
		return s
	}

	start := time.Now()
	before := read()
	if got := dial("198.18.10.5:80", 3*time.Second); got[passed] != n {
		t.Errorf("allowed flows over the log limit: %v, want %d passed", got, n)
	}
	if got := dial("198.18.20.5:80", 3*time.Second); got[refused] != n {
		t.Errorf("denied flows over the log limit: %v, want %d refused (reset)", got, n)
	}
	after := read()
	if a := sum(after, "cw:A:") - sum(before, "cw:A:"); a != n {
		t.Errorf("allow counters grew by %d for %d flows (%v)", a, n, after)
	}
	if d := sum(after, "cw:D:") - sum(before, "cw:D:"); d != n {
		t.Errorf("deny counters grew by %d for %d flows (%v)", d, n, after)
	}
	// Logged: at most the burst and a message a second (and one for
	// rounding), not one per flow.
	time.Sleep(200 * time.Millisecond) // the kernel's batch flush (50 ms)
	pkts, _ := nl.take()
	logged := 0
	for _, p := range pkts {
		if strings.HasPrefix(p.Prefix, "cw:A:") || strings.HasPrefix(p.Prefix, "cw:D:") {
			logged++
		}
	}
	if limit := 2 + int(time.Since(start).Seconds()) + 1; logged == 0 || logged > limit {
		t.Errorf("%d flows logged %d messages, want 1..%d", 2*n, logged, limit)
	}
	t.Logf("%d flows in %v: %d log messages", 2*n, time.Since(start).Round(time.Millisecond), logged)

	// Threat intelligence (mode Deny) over the limit: every listed flow is
	// dropped, not only those the limit lets log.
	cfg.ThreatIntel = kernelThreats(t, true, "198.18.10.53\n")
	if rs, err = compilePolicy(loadPolicy(t, "testdata/kinds.yaml"), cfg); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	before = read()
	if got := dial("198.18.10.53:53", 700*time.Millisecond); got[blocked] != n {
		t.Errorf("listed flows over the log limit: %v, want %d blocked", got, n)
	}
	if d := read()["cw:D:threat"] - before["cw:D:threat"]; d < n {
		t.Errorf("threat counter grew by %d for %d flows", d, n)
	}
}

// BenchmarkKernelDecisionCost: what a new flow costs the kernel with the
// rules' logs behind the limit (Config.LimitRuleLogs: the leaf's goto to
// the decision chain, the counter, the limit, a log message only under
// the limit) and without (every flow logged), measured alternately in one
// lab so that both see the same load: the sending thread's CPU per ICMP
// echo request from node to 198.18.10.5, each with a new ICMP id (a new
// flow through the classifier to kinds.yaml's ping rule, and its reply),
// the log group bound and read as the daemon does. Run it with
// -benchtime 1x (each measurement sends 20,000 flows; 7 rounds).
func BenchmarkKernelDecisionCost(b *testing.B) {
	l := newLab(b)
	r := l.runner()
	nl, err := nflog.Open(DefaultLogGroup, l.fwFD)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nl.SetDeadline(time.Now().Add(time.Second))
			if _, _, err := nl.Receive(); err != nil && !strings.Contains(err.Error(), "timeout") {
				return
			}
		}
	}()
	defer func() { nl.Close(); <-done }()
	ct := l.fwHandle(b)
	p := loadPolicy(b, "testdata/kinds.yaml")
	rulesets := map[bool]*Ruleset{}
	for _, limited := range []bool{false, true} {
		cfg := labConfig()
		cfg.LimitRuleLogs = limited
		cfg.LogRate, cfg.LogBurst = 1000, 2000
		if rulesets[limited], err = compilePolicy(p, cfg); err != nil {
			b.Fatal(err)
		}
	}
	var c *icmp.PacketConn
	inNS(b, l.node, func() { c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0") })
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	dst := &net.IPAddr{IP: net.ParseIP("198.18.10.5")}
	const flows, rounds = 20000, 7
	costs := map[bool][]float64{}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for range b.N {
		for round := range rounds {
			for _, limited := range []bool{round%2 == 0, round%2 != 0} {
				if err := r.Apply(rulesets[limited]); err != nil {
					b.Fatal(err)
				}
				if err := ct.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
					b.Fatal(err)
				}
				var ts0, ts1 unix.Timespec
				unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts0)
				for id := range flows {
					m := icmp.Message{Type: xipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id + 1, Seq: 1, Data: []byte("clusterwall")}}
					pkt, _ := m.Marshal(nil)
					if _, err := c.WriteTo(pkt, dst); err != nil {
						b.Fatal(err)
					}
				}
				unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts1)
				costs[limited] = append(costs[limited], float64(ts1.Nano()-ts0.Nano())/flows)
			}
		}
	}
	med := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	ratios := make([]float64, len(costs[true]))
	for i := range ratios {
		ratios[i] = costs[true][i] / costs[false][i]
	}
	b.ReportMetric(med(costs[true]), "limited-cpu-ns/flow")
	b.ReportMetric(med(costs[false]), "every-flow-cpu-ns/flow")
	b.ReportMetric(med(ratios), "limited/every-flow")
	b.Logf("per round (ns/flow, limited / every flow): %.0f / %.0f", costs[true], costs[false])
}

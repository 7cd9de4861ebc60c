package daemon

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
)

// The daemon's applies on the real kernel (ApplyBytes: load, validate,
// compile, kernel), in a network namespace of their own: what apply_ms
// measures. docs/benchmarks.md has the commands and results.

// policyYAML generates a policy of n network rules as YAML text. Enterprise
// shape (flat false): groups of 10 collections of 25 rules, 15 % Deny
// collections; TCP mostly, some UDP and Any; sources a few of 64 /24s (10 %
// any, some IPv6); destinations per-rule hosts, /29s or lists of 8 /26s
// (3 % any); common service ports or the NodePort range. Flat: every rule
// distinct and reachable (its own /24 to its own address on 443 or 8443),
// as in internal/policy's budget tests. variant changes one rule (flat:
// every rule's port).
func policyYAML(n int, seed uint64, flat bool, variant int) string {
	r := rand.New(rand.NewPCG(seed, 10000))
	var b strings.Builder
	fmt.Fprintf(&b, "name: bench%d\nruleCollectionGroups:\n", n)
	ports := []string{"443", "80", "8080", "5432", "1433", "22", "3306", "6443", "9000", "53"}
	for i := 0; i < n; i++ {
		if i%250 == 0 {
			fmt.Fprintf(&b, "  - name: grp%03d\n    priority: %d\n    ruleCollections:\n", i/250, 100+i/250)
		}
		if i%25 == 0 {
			act := "Allow"
			if (!flat && r.IntN(100) < 15) || (flat && (i/25)%7 == 3) {
				act = "Deny"
			}
			fmt.Fprintf(&b, "      - name: coll%02d\n        kind: Network\n        priority: %d\n        action: %s\n        rules:\n", i%250/25, 100+i%250/25, act)
		}
		fmt.Fprintf(&b, "          - name: r%06d\n", i)
		if flat {
			port := "443"
			if (i+variant)%3 == 0 {
				port = "8443"
			}
			fmt.Fprintf(&b, "            protocols: [TCP]\n            sourceAddresses: [10.%d.%d.0/24]\n            destinationAddresses: [%d.%d.%d.%d]\n            destinationPorts: ['%s']\n",
				i>>16&255, i>>8&255, 198, 18+(i>>16&1), i>>8&255, i&255, port)
			continue
		}
		proto := "TCP"
		switch x := r.IntN(100); {
		case x >= 85:
			proto = "Any"
		case x >= 70:
			proto = "UDP"
		}
		var src []string
		if r.IntN(10) == 0 {
			src = []string{"'*'"}
		} else {
			for range 1 + r.IntN(2) {
				k := r.IntN(64)
				src = append(src, fmt.Sprintf("10.%d.%d.0/24", k/8, k%8*16))
			}
			if r.IntN(5) == 0 {
				src = append(src, fmt.Sprintf("'2001:db8:42:%x::/64'", r.IntN(64)))
			}
		}
		host := uint32(i)
		var dst []string
		switch x := r.IntN(100); {
		case x < 3:
			dst = []string{"'*'"}
		case x < 10:
			for k := range 8 {
				v := 0x64400000 + (host*8+uint32(k))*64
				dst = append(dst, fmt.Sprintf("%d.%d.%d.%d/26", v>>24, v>>16&255, v>>8&255, v&255))
			}
		case x < 30:
			v := 0xc6120000 + host*8
			dst = []string{fmt.Sprintf("%d.%d.%d.%d/29", v>>24, v>>16&255, v>>8&255, v&255)}
		default:
			v := 0xc6120000 + host*8
			dst = []string{fmt.Sprintf("%d.%d.%d.%d", v>>24, v>>16&255, v>>8&255, v&255)}
		}
		var dp []string
		for range 1 + r.IntN(2) {
			p := ports[r.IntN(len(ports))]
			if r.IntN(10) == 0 {
				p = "30000-32767"
			}
			if !strings.Contains(strings.Join(dp, ","), "'"+p+"'") {
				dp = append(dp, "'"+p+"'")
			}
		}
		if variant != 0 && i == n/2 {
			dp = []string{fmt.Sprintf("'%d'", 7000+variant)}
		}
		fmt.Fprintf(&b, "            protocols: [%s]\n            sourceAddresses: [%s]\n            destinationAddresses: [%s]\n            destinationPorts: [%s]\n",
			proto, strings.Join(src, ", "), strings.Join(dst, ", "), strings.Join(dp, ", "))
	}
	return b.String()
}

// benchDaemon is a daemon programming the kernel of a namespace of its own.
func benchDaemon(tb testing.TB) *Daemon {
	tb.Helper()
	lab.RequireLab(tb)
	ns := lab.UniqueName() + "ap"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add: %v: %s", err, out)
	}
	tb.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	f, err := nft.OpenNetNS(ns)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	dir := tb.TempDir()
	for _, name := range []string{"aks-egress.yaml", "service-tags.json"} {
		data, err := os.ReadFile(filepath.Join("../../examples", name))
		if err != nil {
			tb.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, name), data, 0o644)
	}
	conf := filepath.Join(dir, "config.yaml")
	os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(testPolicy), 0o644)
	os.WriteFile(conf, []byte("policy: policy.yaml\ninterfaces: {inside: in0, outside: out0}\npublicIPs: [203.0.113.32]\nprivateIP: 10.42.2.4\nsnat: off\n"), 0o644)
	cfg, err := LoadConfig(conf)
	if err != nil {
		tb.Fatal(err)
	}
	dp := &NFTDataplane{Runner: nft.NewNetlinkRunner(nft.NetlinkOptions{NetNSFd: int(f.Fd())}), Config: cfg.DataplaneConfig()}
	d := New(cfg, slog.New(slog.DiscardHandler), dp, nil, 100)
	d.cut = func(*match.Matcher) (uint, error) { return 0, nil }
	return d
}

// daemonApplyBench measures ApplyBytes(next(i)) after setup(i), and
// reports the mean of each stage, the median and the worst total
// (p50-ms, max-ms: the targets of issue 15 are a median and a worst),
// and the process's CPU time per apply (cpu-ms/op: user and kernel, the
// netlink transactions' kernel work and the garbage collector's included),
// which the other jobs of a shared machine inflate less than wall time.
func daemonApplyBench(b *testing.B, setup func(d *Daemon, i int), next func(i int) []byte) {
	d := benchDaemon(b)
	var sum ApplyTimes
	var totals []float64
	var cpu int64
	var ks nft.ApplyStats // the runner's part of the kernel stage, summed
	b.ResetTimer()
	b.StopTimer()
	for i := range b.N {
		if setup != nil {
			setup(d, i)
		}
		data := next(i)
		c0 := processCPU()
		b.StartTimer()
		if err := d.ApplyBytes("bench", data); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		d.hits.await() // the hit totals' bookkeeping after the return counts in cpu-ms/op
		cpu += processCPU() - c0
		t := *d.lastApply.Load()
		sum.LoadMs += t.LoadMs
		sum.ValidateMs += t.ValidateMs
		sum.CompileMs += t.CompileMs
		sum.KernelMs += t.KernelMs
		totals = append(totals, t.TotalMs)
		if r, ok := d.dp.(*NFTDataplane).Runner.(*nft.NetlinkRunner); ok {
			a := r.LastApply()
			ks.List += a.List
			ks.Lower += a.Lower
			ks.Encode1 += a.Encode1
			ks.Stage1 += a.Stage1
			ks.Wait2 += a.Wait2
			ks.Wait1 += a.Wait1
			ks.Stage2 += a.Stage2
			ks.After += a.After
			ks.Settle += a.Settle
			ks.Retire += a.Retire
			ks.Prestage += a.Prestage
			ks.Prestaged += a.Prestaged
		}
	}
	n := float64(b.N)
	slices.Sort(totals)
	b.ReportMetric(sum.LoadMs/n, "load-ms")
	b.ReportMetric(sum.ValidateMs/n, "validate-ms")
	b.ReportMetric(sum.CompileMs/n, "compile-ms")
	b.ReportMetric(sum.KernelMs/n, "kernel-ms")
	perOp := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / n }
	b.ReportMetric(perOp(ks.List), "k-list-ms")
	b.ReportMetric(perOp(ks.Lower), "k-lower-ms")
	b.ReportMetric(perOp(ks.Encode1), "k-enc1-ms")
	b.ReportMetric(perOp(ks.Stage1-ks.Encode1), "k-send1-ms")
	b.ReportMetric(perOp(ks.Wait2), "k-wait2-ms")
	b.ReportMetric(perOp(ks.Wait1), "k-wait1-ms") // split stage 1: between its transactions
	b.ReportMetric(perOp(ks.Stage2-ks.Wait2), "k-send2-ms")
	b.ReportMetric(perOp(ks.After), "k-after-ms")
	// The wait for the previous apply's deletion of its old ruleset (in
	// kernel_ms, before list), and how long that deletion took in the
	// background.
	b.ReportMetric(perOp(ks.Settle), "k-settle-ms")
	b.ReportMetric(perOp(ks.Prestage), "k-pre-ms") // beside the compile (nft/prestage.go)
	b.ReportMetric(float64(ks.Prestaged)/n, "k-preobjs")
	b.ReportMetric(perOp(ks.Retire), "k-del-ms")
	b.ReportMetric(sum.KernelMs/n-perOp(ks.Settle+ks.List+ks.Lower+ks.Stage1+ks.Stage2+ks.After), "k-rest-ms")
	b.ReportMetric(totals[len(totals)/2], "p50-ms")
	b.ReportMetric(totals[len(totals)-1], "max-ms")
	b.ReportMetric(float64(cpu)/1e6/n, "cpu-ms/op")
}

// restartOnEmptyTable makes d a daemon that has just started on a
// namespace without clusterwall's table: the table removed, no running
// policy, a new data plane on the same runner. (The first case, the
// table removed under a running daemon, reads the running policy's
// counters before the apply; a starting daemon has none.)
func restartOnEmptyTable(tb testing.TB, d *Daemon) {
	d.hits.await() // the last apply's bookkeeping reads d.dp
	dp := d.dp.(*NFTDataplane)
	if err := dp.Runner.Flush(); err != nil {
		tb.Fatal(err)
	}
	d.cur.Store(nil)
	d.dp = &NFTDataplane{Runner: dp.Runner, Config: dp.Config}
	d.loader.Reset() // nothing decoded before
}

func mustApply(tb testing.TB, d *Daemon, data []byte) {
	if err := d.ApplyBytes("bench setup", data); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkDaemonApply: the daemon applying a 10,000-rule policy to an
// empty table (first: nothing decoded before; start: as a daemon that has just started), the
// same text again (same), with one rule changed (one-rule), another
// 10,000-rule policy (replace: back to back; replace-settled: each once
// the last one's background deletion is done); a flat 100,000-rule policy to an empty
// table (first, start) and replacing another one, and the seed's 8-rule
// policy replacing it (100k-to-8).
//
// CW_BENCH_PRESTAGE_CHAINS=off (or likely, the default; or all) sets
// which decision chains a first apply prestages (prestageChains), and
// CW_BENCH_PRESTAGE_REPLACE=1 prestages them in a replace too
// (prestageChainsChanged), so that a test binary can be compared with
// itself and with another's in alternating runs.
func BenchmarkDaemonApply(b *testing.B) {
	if mode, ok := map[string]nft.DecisionChains{"off": nft.NoDecisionChains, "likely": nft.LikelyDecisionChains, "all": nft.AllDecisionChains}[os.Getenv("CW_BENCH_PRESTAGE_CHAINS")]; ok {
		saved := prestageChains
		prestageChains = mode
		defer func() { prestageChains = saved }()
	}
	if os.Getenv("CW_BENCH_PRESTAGE_REPLACE") == "1" {
		saved := prestageChainsChanged
		prestageChainsChanged = true
		defer func() { prestageChainsChanged = saved }()
	}
	p10 := []byte(policyYAML(10000, 1, false, 0))
	p10b := []byte(policyYAML(10000, 2, false, 0))
	p10one := []byte(policyYAML(10000, 1, false, 1))
	b.Run("10k/first", func(b *testing.B) {
		daemonApplyBench(b, func(d *Daemon, i int) {
			if err := d.dp.(*NFTDataplane).Runner.Flush(); err != nil {
				b.Fatal(err)
			}
			d.loader.Reset()                   // as a daemon starting: nothing decoded before
			d.dp.(*NFTDataplane).cache.Reset() // nor compiled
		}, func(int) []byte { return p10 })
	})
	b.Run("10k/start", func(b *testing.B) {
		daemonApplyBench(b, func(d *Daemon, i int) { restartOnEmptyTable(b, d) }, func(int) []byte { return p10 })
	})
	b.Run("10k/same", func(b *testing.B) {
		daemonApplyBench(b, func(d *Daemon, i int) {
			if i == 0 {
				mustApply(b, d, p10)
			}
		}, func(int) []byte { return p10 })
	})
	b.Run("10k/one-rule", func(b *testing.B) {
		daemonApplyBench(b, func(d *Daemon, i int) {
			if i == 0 {
				mustApply(b, d, p10)
			}
		}, func(i int) []byte { return [][]byte{p10one, p10}[i%2] })
	})
	b.Run("10k/replace", func(b *testing.B) {
		daemonApplyBench(b, func(d *Daemon, i int) {
			if i == 0 {
				mustApply(b, d, p10b)
			}
		}, func(i int) []byte { return [][]byte{p10, p10b}[i%2] })
	})
	// replace-settled: the same, each apply once the last one's deletion
	// of its replaced ruleset (in the background, after the return) is
	// done, as when policies are applied seconds apart (bench/dataplane's
	// applies); replace applies them back to back.
	b.Run("10k/replace-settled", func(b *testing.B) {
		daemonApplyBench(b, func(d *Daemon, i int) {
			if i == 0 {
				mustApply(b, d, p10b)
			}
			d.hits.await()
			if err := d.dp.(*NFTDataplane).Runner.(*nft.NetlinkRunner).Settle(); err != nil {
				b.Fatal(err)
			}
		}, func(i int) []byte { return [][]byte{p10, p10b}[i%2] })
	})
	if testing.Short() {
		return
	}
	p100 := []byte(policyYAML(100000, 1, true, 0))
	p100b := []byte(policyYAML(100000, 1, true, 1))
	small, err := os.ReadFile("../../examples/aks-egress.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("100k/first", func(b *testing.B) {
		daemonApplyBench(b, func(d *Daemon, i int) {
			if err := d.dp.(*NFTDataplane).Runner.Flush(); err != nil {
				b.Fatal(err)
			}
			d.loader.Reset()
			d.dp.(*NFTDataplane).cache.Reset()
		}, func(int) []byte { return p100 })
	})
	b.Run("100k/start", func(b *testing.B) {
		daemonApplyBench(b, func(d *Daemon, i int) { restartOnEmptyTable(b, d) }, func(int) []byte { return p100 })
	})
	b.Run("100k/replace", func(b *testing.B) {
		daemonApplyBench(b, func(d *Daemon, i int) {
			if i == 0 {
				mustApply(b, d, p100b)
			}
		}, func(i int) []byte { return [][]byte{p100, p100b}[i%2] })
	})
	b.Run("100k-to-8", func(b *testing.B) {
		daemonApplyBench(b, func(d *Daemon, i int) { mustApply(b, d, p100) }, func(int) []byte { return small })
	})
}

// BenchmarkDaemonPrestage: the 10,000-rule policy applied by the daemon
// to an emptied table (BenchmarkDaemonApply/10k/first, and its replace
// and one-rule cases: the one-rule apply prestages nothing; and the flat
// 100,000-rule policy's first apply) with nothing prestaged (off:
// prestageMin and prestageChainsMin out of reach), with the counters and
// the likely decision chains prestaged (likely: nft.LikelyDecisionChains,
// prestageChainsMin 4,096) and with the counters and every rule's
// decision chains (all), the modes alternating apply by apply in one
// process (off, likely, all, all, likely, off, ...) so that the machine's
// load weighs on all alike: per mode, the median and mean wall time, the
// mean compile and kernel stages, stage 1's send, the prestage's wall
// time and objects, and the process CPU per apply.
func BenchmarkDaemonPrestage(b *testing.B) {
	p10 := []byte(policyYAML(10000, 1, false, 0))
	p10b := []byte(policyYAML(10000, 2, false, 0))
	p10one := []byte(policyYAML(10000, 1, false, 1))
	for _, c := range []string{"10k-first", "10k-replace", "10k-one-rule", "100k-first"} {
		b.Run(c, func(b *testing.B) {
			first := p10
			if c == "100k-first" {
				if testing.Short() {
					b.Skip("-short")
				}
				first = []byte(policyYAML(100000, 1, true, 0))
			}
			d := benchDaemon(b)
			switch c {
			case "10k-replace":
				mustApply(b, d, p10b)
			case "10k-one-rule":
				mustApply(b, d, p10)
			}
			savedMin, savedCh, savedCMin, savedChg := prestageMin, prestageChains, prestageChainsMin, prestageChainsChanged
			defer func() {
				prestageMin, prestageChains, prestageChainsMin, prestageChainsChanged = savedMin, savedCh, savedCMin, savedChg
			}()
			prestageChainsChanged = true // a replace prestages too (not the default)
			type sum struct {
				walls                                  []float64
				compile, kernel, send1, pre, objs, cpu float64
			}
			modes := []string{"off", "likely", "all"}
			var s [3]sum
			b.ResetTimer()
			for i := range 3 * b.N {
				mode := []int{0, 1, 2, 2, 1, 0}[i%6]
				switch mode {
				case 0:
					prestageMin, prestageChainsMin, prestageChains = 1<<30, 1<<30, nft.NoDecisionChains
				case 1:
					prestageMin, prestageChainsMin, prestageChains = 1<<30, 4096, nft.LikelyDecisionChains
				case 2:
					prestageMin, prestageChainsMin, prestageChains = 1<<30, 4096, nft.AllDecisionChains
				}
				data := first
				if c == "10k-first" || c == "100k-first" {
					if err := d.dp.(*NFTDataplane).Runner.Flush(); err != nil {
						b.Fatal(err)
					}
					d.loader.Reset()
					d.dp.(*NFTDataplane).cache.Reset()
				} else if i%2 == 1 {
					data = p10b
					if c == "10k-one-rule" {
						data = p10one
					}
				}
				c0 := processCPU()
				if err := d.ApplyBytes("bench", data); err != nil {
					b.Fatal(err)
				}
				d.hits.await()
				x := &s[mode]
				x.cpu += float64(processCPU()-c0) / 1e6
				t := *d.lastApply.Load()
				x.walls = append(x.walls, t.TotalMs)
				x.compile += t.CompileMs
				x.kernel += t.KernelMs
				a := d.dp.(*NFTDataplane).Runner.(*nft.NetlinkRunner).LastApply()
				x.send1 += float64((a.Stage1 - a.Encode1).Microseconds()) / 1000
				x.pre += float64(a.Prestage.Microseconds()) / 1000
				x.objs += float64(a.Prestaged)
			}
			n := float64(b.N)
			for mode, name := range modes {
				x := s[mode]
				slices.Sort(x.walls)
				mean := 0.0
				for _, w := range x.walls {
					mean += w
				}
				b.ReportMetric(x.walls[len(x.walls)/2], name+"-p50-ms")
				b.ReportMetric(mean/n, name+"-mean-ms")
				b.ReportMetric(x.compile/n, name+"-compile-ms")
				b.ReportMetric(x.kernel/n, name+"-kernel-ms")
				b.ReportMetric(x.send1/n, name+"-send1-ms")
				b.ReportMetric(x.cpu/n, name+"-cpu-ms")
				if mode > 0 {
					b.ReportMetric(x.pre/n, name+"-pre-ms")
					b.ReportMetric(x.objs/n, name+"-preobjs")
				}
			}
		})
	}
}

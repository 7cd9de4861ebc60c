package match

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/threatintel"
)

// tiEngine returns a real threat-intel engine in mode with the given feed
// contents (plain format) and allowlist.
func tiEngine(tb testing.TB, mode policy.Action, feed string, allowAddrs, allowFQDNs []string) *threatintel.Engine {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "feed.txt")
	if err := os.WriteFile(path, []byte(feed), 0o644); err != nil {
		tb.Fatal(err)
	}
	ti := policy.ThreatIntel{Mode: mode, Feeds: []policy.Feed{{Name: "lab", Path: path, Format: "plain"}}}
	var b policy.AddrSetBuilder
	for _, a := range allowAddrs {
		if _, err := policy.ParseAddrToken(a, &b); err != nil {
			tb.Fatal(err)
		}
	}
	ti.AllowAddresses = b.Build()
	for _, f := range allowFQDNs {
		p, err := policy.ParseFQDNPattern(f)
		if err != nil {
			tb.Fatal(err)
		}
		ti.AllowFQDNs = append(ti.AllowFQDNs, p)
	}
	e := threatintel.New(threatintel.Options{})
	if err := e.Reload(ti); err != nil {
		tb.Fatal(err)
	}
	return e
}

const tiPolicy = `
apiVersion: clusterwall.io/v1alpha1
kind: FirewallPolicy
name: ti
ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - name: dnat
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - name: web
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [203.0.113.32]
            destinationPorts: ['80']
            translatedAddress: 10.42.1.100
            translatedPort: '80'
      - name: net
        kind: Network
        priority: 200
        action: Allow
        rules:
          - name: any443
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: ['*']
            destinationPorts: ['443']
      - name: app
        kind: Application
        priority: 300
        action: Allow
        rules:
          - name: all
            protocols: ['Https:8443']
            sourceAddresses: ['*']
            targetFqdns: ['*']
`

const tiFeed = `
192.0.2.66            # evil host
2001:db8:192::66
198.51.100.0/24       # bad network
evil.example.net      # evil name
`

func TestThreatIntelBeforeRules(t *testing.T) {
	p := mustLoad(t, tiPolicy)
	src := ip("10.42.1.10")
	in := ip("198.51.100.9")
	cases := []struct {
		name   string
		flow   Flow
		action policy.Action // the decision
		rule   string        // deciding rule path, "<nil>" for none
		ti     policy.Action // the threat-intel outcome
		desc   string
	}{
		{"listed dst beats an allow network rule", Flow{Src: src, Dst: ip("192.0.2.66"), Proto: tcp, Port: 443},
			policy.ActionDeny, "<nil>", policy.ActionDeny, "lab: 192.0.2.66 (evil host)"},
		{"listed IPv6 dst (4-in-6 forms too)", Flow{Src: ip("2001:db8:42:1::10"), Dst: ip("2001:db8:192::66"), Proto: tcp, Port: 443},
			policy.ActionDeny, "<nil>", policy.ActionDeny, "lab: 2001:db8:192::66"},
		{"listed name beats an application rule", Flow{Src: src, Dst: ip("192.0.2.10"), Proto: tcp, Port: 8443, Name: "www.evil.example.net", Scheme: policy.SchemeHTTPS},
			policy.ActionDeny, "<nil>", policy.ActionDeny, "lab: evil.example.net (evil name)"},
		{"listed source beats DNAT", Flow{Src: in, Dst: ip("203.0.113.32"), Proto: tcp, Port: 80},
			policy.ActionDeny, "<nil>", policy.ActionDeny, "lab: 198.51.100.0/24 (bad network)"},
		{"allowlisted dst", Flow{Src: src, Dst: ip("192.0.2.14"), Proto: tcp, Port: 443},
			policy.ActionAllow, "g/net/any443", policy.ActionInvalid, ""},
		{"unlisted DNAT", Flow{Src: ip("198.51.101.9"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 80},
			policy.ActionDNAT, "g/dnat/web", policy.ActionInvalid, ""},
		{"allowlisted name, listed dst: still denied (per indicator)", Flow{Src: src, Dst: ip("192.0.2.66"), Proto: tcp, Port: 8443, Name: "ok.example.org", Scheme: policy.SchemeHTTPS},
			policy.ActionDeny, "<nil>", policy.ActionDeny, "lab: 192.0.2.66 (evil host)"},
	}
	feed := tiFeed + "192.0.2.14\nok.example.org\n"
	for _, mode := range []policy.Action{policy.ActionDeny, policy.ActionAlert} {
		e := tiEngine(t, mode, feed, []string{"192.0.2.14"}, []string{"*.example.org"})
		m, err := Compile(p, Options{ThreatIntel: e})
		if err != nil {
			t.Fatal(err)
		}
		plain, err := Compile(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			t.Run(mode.String()+"/"+c.name, func(t *testing.T) {
				d := m.Decide(c.flow)
				want := plain.Decide(c.flow)
				if c.ti != policy.ActionInvalid {
					want.ThreatIntel, want.ThreatDescription = c.ti, c.desc
					if mode == policy.ActionDeny {
						want = Decision{Action: policy.ActionDeny, Reason: ReasonThreatIntel, ThreatIntel: policy.ActionDeny, ThreatDescription: c.desc, Path: want.Path}
					} else {
						want.ThreatIntel = policy.ActionAlert
					}
				}
				if d != want {
					t.Fatalf("Decide = %+v\nwant    %+v", d, want)
				}
				if mode == policy.ActionDeny {
					if d.Action != c.action || path(d.Rule) != c.rule {
						t.Fatalf("Deny mode: %v by %q, want %v by %q", d.Action, path(d.Rule), c.action, c.rule)
					}
				}
			})
		}
	}
}

func TestThreatIntelOff(t *testing.T) {
	p := mustLoad(t, tiPolicy)
	e := tiEngine(t, policy.ActionInvalid, tiFeed, nil, nil)
	m, err := Compile(p, Options{ThreatIntel: e})
	if err != nil {
		t.Fatal(err)
	}
	d := m.Decide(Flow{Src: ip("10.42.1.10"), Dst: ip("192.0.2.66"), Proto: tcp, Port: 443})
	if d.Action != policy.ActionAllow || d.ThreatIntel != policy.ActionInvalid {
		t.Fatalf("mode Off: %+v", d)
	}
}

func TestThreatIntelDecideAllocs(t *testing.T) {
	p := mustLoad(t, tiPolicy)
	for _, mode := range []policy.Action{policy.ActionDeny, policy.ActionAlert} {
		m, err := Compile(p, Options{ThreatIntel: tiEngine(t, mode, tiFeed, nil, nil)})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []Flow{
			{Src: ip("10.42.1.10"), Dst: ip("192.0.2.66"), Proto: tcp, Port: 443},
			{Src: ip("10.42.1.10"), Dst: ip("192.0.2.67"), Proto: tcp, Port: 443},
			{Src: ip("10.42.1.10"), Dst: ip("192.0.2.10"), Proto: tcp, Port: 8443, Name: "A.Evil.Example.Net.", Scheme: policy.SchemeHTTPS},
			{Src: ip("10.42.1.10"), Dst: ip("192.0.2.10"), Proto: tcp, Port: 8443, Name: "good.example.com", Scheme: policy.SchemeHTTPS},
		} {
			if n := testing.AllocsPerRun(200, func() { sink = m.Decide(f) }); n != 0 {
				t.Errorf("%s %+v: %v allocs", mode, f, n)
			}
		}
	}
}

// genTIFeed returns a plain feed of n addresses/networks and n domains.
func genTIFeed(n int) string {
	r := rand.New(rand.NewPCG(uint64(n), 11))
	var b strings.Builder
	for i := 0; i < n; i++ {
		switch x := r.IntN(10); {
		case x < 7:
			fmt.Fprintf(&b, "%d.%d.%d.%d\n", 1+r.IntN(222), r.IntN(256), r.IntN(256), r.IntN(256))
		case x < 9:
			fmt.Fprintf(&b, "%d.%d.%d.0/%d # net\n", 1+r.IntN(222), r.IntN(256), r.IntN(256), 20+r.IntN(11))
		default:
			fmt.Fprintf(&b, "2001:db8:%x:%x::/%d\n", r.IntN(65536), r.IntN(65536), 48+r.IntN(17))
		}
	}
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	for i := 0; i < n; i++ {
		for k := 1 + r.IntN(3); k > 0; k-- {
			for j := 3 + r.IntN(10); j > 0; j-- {
				b.WriteByte(letters[r.IntN(len(letters))])
			}
			b.WriteByte('.')
		}
		b.WriteString([]string{"com", "net", "org", "io", "xyz"}[r.IntN(5)])
		b.WriteByte('\n')
	}
	return b.String()
}

// BenchmarkDecideThreatIntel measures Decide on the 10,000-rule benchmark
// policy without threat intelligence and with 100,000 feed addresses and
// 100,000 feed domains in mode Alert (every flow pays for the lookups and
// for the rules). Run with -count and compare the two in one run.
func BenchmarkDecideThreatIntel(b *testing.B) {
	p, flows := benchPolicy(b, 10000)
	plain, err := Compile(p, Options{})
	if err != nil {
		b.Fatal(err)
	}
	e := tiEngine(b, policy.ActionAlert, genTIFeed(100000), nil, nil)
	if a, n := e.Set().Len(); a != 100000 || n < 99000 {
		b.Fatalf("feed has %d addresses and %d names", a, n)
	}
	withTI, err := Compile(p, Options{ThreatIntel: e})
	if err != nil {
		b.Fatal(err)
	}
	// interleaved runs both matchers in alternating blocks of 1024
	// decisions and reports each one's thread CPU per decision, so that
	// both see the same load; ti-cost is their ratio.
	b.Run("rules=10000/interleaved", func(b *testing.B) {
		runtime.GC()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var cpu [2]int64
		n := 0
		for b.Loop() {
			for k, m := range []*Matcher{plain, withTI} {
				t0 := threadCPU()
				for i := range 1024 {
					sink = m.Decide(flows[i&(len(flows)-1)])
				}
				cpu[k] += threadCPU() - t0
			}
			n += 1024
		}
		b.ReportMetric(float64(cpu[0])/float64(n), "none-cpu-ns/op")
		b.ReportMetric(float64(cpu[1])/float64(n), "ti-cpu-ns/op")
		b.ReportMetric(float64(cpu[1])/float64(cpu[0]), "ti-cost")
	})
	b.Run("ti=100000/CheckThreat-only", func(b *testing.B) {
		runtime.GC()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		t0 := threadCPU()
		n := 0
		for i := 0; b.Loop(); i++ {
			f := &flows[i&(len(flows)-1)]
			sinkAction, sinkDesc = e.CheckThreat(f.Src, f.Dst, f.Name)
			n++
		}
		b.ReportMetric(float64(threadCPU()-t0)/float64(n), "cpu-ns/op")
	})
	for _, c := range []struct {
		name string
		m    *Matcher
	}{{"rules=10000/ti=none", plain}, {"rules=10000/ti=100000", withTI}} {
		b.Run(c.name, func(b *testing.B) {
			runtime.GC() // not the setup's garbage in the timed loop
			b.ReportAllocs()
			// cpu-ns/op is the thread's CPU time per Decide: on a loaded
			// machine it is steadier than the wall-clock ns/op.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			t0 := threadCPU()
			n := 0
			for i := 0; b.Loop(); i++ {
				sink = c.m.Decide(flows[i&(len(flows)-1)])
				n++
			}
			b.ReportMetric(float64(threadCPU()-t0)/float64(n), "cpu-ns/op")
		})
	}
}

var (
	sinkAction policy.Action
	sinkDesc   string
)

// threadCPU returns the calling thread's CPU time in nanoseconds.
func threadCPU() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return ts.Nano()
}

package daemon

import (
	"io"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/nflog"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// flowLogDaemon is a daemon with testPolicy applied through the real
// compiler (a recording runner, no kernel) and its decision log writing to
// io.Discard at rate lines per second (0: every line); it returns the
// log prefix of the policy's allow rule.
func flowLogDaemon(tb testing.TB, rate float64) (*Daemon, *telemetry.DecisionLog, string) {
	tb.Helper()
	dlog := telemetry.NewDecisionLog(io.Discard, telemetry.Options{Rate: rate}) // the caller closes it
	rec := &nft.Recorder{}
	dir := tb.TempDir()
	d := loadTestDaemon(tb, writeDaemonConfig(tb, dir, ""), &NFTDataplane{Runner: rec, Config: nft.Config{Inside: "in0", Outside: "out0"}}, nil, dlog)
	if err := d.Reload("start"); err != nil {
		tb.Fatal(err)
	}
	d.Hub() // the dashboard's observer, as the admin API registers it
	for prefix, path := range logPrefixes(rec.Current) {
		if path == "g/c/web" {
			return d, dlog, prefix
		}
	}
	tb.Fatal("no log prefix for g/c/web")
	return nil, nil, ""
}

// processCPU is the process's user + system CPU time in nanoseconds.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkLogPacket: the daemon's work for one kernel log message of an
// allowed flow (after the reader parsed it), with the decision log at the
// default 1,000 lines/s (nearly every line rate-limited) and unlimited.
func BenchmarkLogPacket(b *testing.B) {
	for _, bc := range []struct {
		name string
		rate float64
	}{{"rate=1000", 1000}, {"unlimited", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			d, dlog, prefix := flowLogDaemon(b, bc.rate)
			st := d.cur.Load()
			p := nflog.Packet{Prefix: prefix, Family: 2, Src: netip.MustParseAddr("10.42.1.10"), Dst: netip.MustParseAddr("192.0.2.10"),
				Proto: 6, SrcPort: 40000, DstPort: 443, Time: time.Now()}
			fl := newFlowLogger(d)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			for i := 0; i < b.N; i++ {
				p.SrcPort = uint16(i)
				p.Time = p.Time.Add(time.Microsecond)
				fl.log(st, &p)
				if bc.rate == 0 && i%256 == 255 {
					time.Sleep(time.Millisecond) // at most 256,000 lines/s: the writer keeps up
				}
			}
			dlog.Close() // the writer's work on the last lines
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
			if _, dropped, _ := dlog.Stats(); dropped > 0 {
				b.Logf("%d lines dropped (queue full)", dropped)
			}
		})
	}
}

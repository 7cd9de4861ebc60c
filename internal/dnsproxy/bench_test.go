package dnsproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
	"github.com/miekg/dns"
)

// BenchmarkCachedQuery measures cached answers per second over loopback
// UDP: N client goroutines, each with its own socket and one query in
// flight, ask for a name the proxy has cached. Reported as "answers/s".
// With log=json every answer also goes through a telemetry.DecisionLog
// (JSON to io.Discard), as in the daemon.
func BenchmarkCachedQuery(b *testing.B) {
	z := newZone(b)
	for _, logMode := range []string{"off", "json"} {
		for _, clients := range []int{1, 4, 16, 64} {
			b.Run(fmt.Sprintf("log=%s/clients=%d", logMode, clients), func(b *testing.B) {
				o := Options{Log: func(telemetry.Record) {}}
				if logMode == "json" {
					dl := telemetry.NewDecisionLog(io.Discard, telemetry.Options{Queue: 65536})
					defer dl.Close()
					o.Log = dl.Log
				}
				h := startProxy(b, Config{Upstreams: []string{z.addr}}, o)
				before := z.countAll("www.example.test.", dns.TypeA)
				m := new(dns.Msg)
				m.SetQuestion("www.example.test.", dns.TypeA)
				m.SetEdns0(1232, false)
				wire, _ := m.Pack()
				h.ask(b, "udp", "www.example.test.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, false) })

				conns := make([]net.Conn, clients)
				for i := range conns {
					c, err := net.Dial("udp", h.addr)
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					conns[i] = c
				}
				var left atomic.Int64
				left.Store(int64(b.N))
				var failed atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for _, c := range conns {
					wg.Go(func() {
						buf := make([]byte, 1500)
						for left.Add(-1) >= 0 {
							c.SetReadDeadline(time.Now().Add(time.Second))
							if _, err := c.Write(wire); err != nil {
								failed.Add(1)
								continue
							}
							if n, err := c.Read(buf); err != nil || n < headerLen {
								failed.Add(1)
							}
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				if f := failed.Load(); f > int64(b.N)/1000 {
					b.Fatalf("%d of %d queries failed", f, b.N)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "answers/s")
				b.ReportMetric(float64(failed.Load()), "timeouts")
				if n := z.countAll("www.example.test.", dns.TypeA) - before; n > 1 {
					b.Fatalf("upstream asked %d times: answers were not cached", n)
				}
			})
		}
	}
}

// BenchmarkServeWireCached is the proxy's own work for a cache hit, without
// sockets: parse, block/learn/cache handlers, render, log record.
func BenchmarkServeWireCached(b *testing.B) {
	z := newZone(b)
	p, err := New(Config{Upstreams: []string{z.addr}}, Options{Log: func(telemetry.Record) {}})
	if err != nil {
		b.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	m.SetEdns0(1232, false)
	wire, _ := m.Pack()
	src := netip.MustParseAddrPort("10.0.0.1:5353")
	var r request
	out := make([]byte, 0, 1232)
	ctx := context.Background()
	if resp, _ := p.serveWire(ctx, &r, wire, src, "udp", false, out); len(resp) < headerLen {
		b.Fatal("no answer")
	}
	b.ReportAllocs()
	for b.Loop() {
		resp, deferred := p.serveWire(ctx, &r, wire, src, "udp", true, out[:0])
		if deferred || resp == nil {
			b.Fatal("not answered from the cache")
		}
	}
}

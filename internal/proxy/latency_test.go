package proxy

import (
	"sync"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// TestLatencyObserver: Config.Latency sees one duration per decision,
// with its outcome, and an allowed one includes the upstream connect.
func TestLatencyObserver(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	var got []bool
	var durs []time.Duration
	cfg := f.config(t, f.web.addr)
	cfg.Latency = func(allowed bool, d time.Duration) {
		mu.Lock()
		got, durs = append(got, allowed), append(durs, d)
		mu.Unlock()
	}
	e := startProxy(t, cfg)
	if resp, _, err := rawHTTP(t, e.addr, "GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("allowed request: %v %v", resp, err)
	}
	if resp, _, err := rawHTTP(t, e.addr, "GET / HTTP/1.1\r\nHost: bad.test\r\n\r\n"); err != nil || resp.StatusCode != 403 {
		t.Fatalf("denied request: %v %v", resp, err)
	}
	e.sink.wait(t, "the deny", func(r telemetry.Record) bool { return r.Action == "Deny" })
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !got[0] || got[1] {
		t.Fatalf("observed %v, want [true false]", got)
	}
	for _, d := range durs {
		if d <= 0 || d > 5*time.Second {
			t.Errorf("duration %v", d)
		}
	}
}

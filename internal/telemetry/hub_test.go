package telemetry

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestHubRecentRingAndFilters(t *testing.T) {
	h := NewHub(HubOptions{Recent: 5})
	for i := 0; i < 8; i++ {
		act := "Allow"
		if i%2 == 1 {
			act = "Deny"
		}
		h.Observe(&Record{Category: CategoryNetworkRule, SourceIp: "10.42.1.10", DestinationIp: fmt.Sprintf("192.0.2.%d", i), DestinationPort: 443, Action: act})
	}
	h.Observe(&Record{Category: CategoryWAF, Action: "Blocked", Rule: "942100", SourceIp: "10.9.9.9"})

	all := h.Recent(100, Filter{})
	if len(all) != 5 {
		t.Fatalf("ring keeps %d, want 5", len(all))
	}
	if all[0].Category != CategoryWAF || all[1].DestinationIp != "192.0.2.7" || all[4].DestinationIp != "192.0.2.4" {
		t.Errorf("order: %+v", all)
	}
	tests := []struct {
		name string
		f    Filter
		want int
	}{
		{"action exact", Filter{Action: "deny"}, 2},
		{"denied group", Filter{Action: "denied"}, 3},
		{"allowed group", Filter{Action: "allowed"}, 2},
		{"category", Filter{Category: "waf"}, 1},
		{"text ip", Filter{Q: "192.0.2.6"}, 1},
		{"text rule", Filter{Q: "9421"}, 1},
		{"text port", Filter{Q: "443"}, 4},
		{"combined", Filter{Action: "Deny", Q: "192.0.2.5"}, 1},
		{"none", Filter{Q: "nowhere.example"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := h.Recent(100, tc.f); len(got) != tc.want {
				t.Errorf("%d records, want %d: %+v", len(got), tc.want, got)
			}
		})
	}
	if got := h.Recent(2, Filter{}); len(got) != 2 {
		t.Errorf("limit 2 gave %d", len(got))
	}
}

func TestHubSeriesAndTops(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 22, 10, 0, 5, 0, time.UTC)}
	h := NewHub(HubOptions{Now: clk.now, TopKeys: 4})
	obs := func(act, src, fqdn string) {
		h.Observe(&Record{Time: clk.now(), Category: CategoryApplicationRule, Action: act, SourceIp: src, Fqdn: fqdn})
	}
	obs("Allow", "10.42.1.10", "mcr.microsoft.com")
	obs("Deny", "10.42.1.10", "evil.example")
	obs("Deny", "10.42.1.11", "evil.example")
	clk.add(10 * time.Second)
	obs("Deny", "10.42.1.11", "other.example")
	h.Observe(&Record{Time: clk.now(), Category: CategoryDNSQuery, QueryName: "x.example.", SourceIp: "10.42.1.11"})

	ov := h.Overview(10)
	if len(ov.Series) != 360 || ov.BucketSeconds != 10 {
		t.Fatalf("series of %d buckets of %d s", len(ov.Series), ov.BucketSeconds)
	}
	last, prev := ov.Series[359], ov.Series[358]
	if last.Denied != 1 || last.Other != 1 || last.Allowed != 0 || prev.Allowed != 1 || prev.Denied != 2 {
		t.Errorf("last buckets %+v %+v", prev, last)
	}
	if ov.Allowed != 1 || ov.Denied != 3 || ov.Other != 1 || ov.Observed != 5 {
		t.Errorf("sums %+v", ov)
	}
	if len(ov.TopDenied) != 2 || ov.TopDenied[0] != (TopEntry{Key: "evil.example", Count: 2, Denied: 2}) {
		t.Errorf("top denied %+v", ov.TopDenied)
	}
	if len(ov.TopTalkers) != 2 || ov.TopTalkers[0] != (TopEntry{Key: "10.42.1.11", Count: 3, Denied: 2}) {
		t.Errorf("top talkers %+v", ov.TopTalkers)
	}

	// An hour later the old buckets are gone from the series.
	clk.add(time.Hour)
	obs("Allow", "10.42.1.12", "a.example")
	ov = h.Overview(10)
	if ov.Allowed != 1 || ov.Denied != 0 {
		t.Errorf("after an hour: %+v", ov)
	}
	// The tops rotated once (prev keeps the first half hour), a second
	// rotation forgets them.
	clk.add(31 * time.Minute)
	obs("Allow", "10.42.1.12", "a.example")
	ov = h.Overview(10)
	if len(ov.TopDenied) != 0 {
		t.Errorf("old denied destinations still listed: %+v", ov.TopDenied)
	}

	// Bounded keys: beyond TopKeys, keys seen once are forgotten, then
	// new keys count as (other).
	for i := 0; i < 20; i++ {
		obs("Deny", "10.42.1.12", fmt.Sprintf("n%d.example", i))
	}
	ov = h.Overview(100)
	if len(ov.TopDenied) > 4 {
		t.Errorf("top list grew beyond 4 keys: %+v", ov.TopDenied)
	}
}

func TestHubSubscribersNeverBlock(t *testing.T) {
	h := NewHub(HubOptions{})
	slow := h.Subscribe(4) // never read
	fast := h.Subscribe(1000)
	start := time.Now()
	for i := 0; i < 1000; i++ {
		h.Observe(&Record{Category: CategoryNetworkRule, Action: "Deny", SourcePort: i})
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Observe blocked %v behind a slow subscriber", d)
	}
	if slow.Dropped() != 996 {
		t.Errorf("slow subscriber dropped %d, want 996", slow.Dropped())
	}
	if fast.Dropped() != 0 || len(fast.C()) != 1000 {
		t.Errorf("fast subscriber dropped %d, has %d", fast.Dropped(), len(fast.C()))
	}
	if ov := h.Overview(1); ov.StreamsDropped != 996 {
		t.Errorf("streamsDropped = %d", ov.StreamsDropped)
	}
	slow.Close()
	slow.Close()
	if h.Subscribers() != 1 {
		t.Errorf("%d subscribers after close", h.Subscribers())
	}
	fast.Close()
	h.Observe(&Record{})
	if len(fast.C()) != 1000 {
		t.Error("closed subscriber still receives")
	}
}

func TestHubWithDecisionLogObserve(t *testing.T) {
	h := NewHub(HubOptions{})
	l := NewDecisionLog(blockingWriter{release: make(chan struct{})}, Options{Rate: 1, Burst: 1, Queue: 1})
	l.Observe(h.Observe)
	for i := 0; i < 50; i++ {
		l.Log(Record{Category: CategoryNetworkRule, Action: "Deny", DestinationIp: "192.0.2.1", DestinationPort: 1})
	}
	// Rate limited and a stuck sink, yet the hub saw every record.
	if got := len(h.Recent(1000, Filter{})); got != 50 {
		t.Errorf("hub saw %d of 50", got)
	}
	if ov := h.Overview(1); ov.TopDenied[0].Key != "192.0.2.1:1" || ov.TopDenied[0].Count != 50 {
		t.Errorf("top %+v", ov.TopDenied)
	}
}

func TestHubConcurrent(t *testing.T) {
	h := NewHub(HubOptions{Recent: 64, TopKeys: 16})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := h.Subscribe(8)
			defer s.Close()
			for i := 0; i < 2000; i++ {
				h.Observe(&Record{Action: "Deny", SourceIp: fmt.Sprint(g), DestinationIp: fmt.Sprint(i % 50), DestinationPort: 1})
				if i%100 == 0 {
					h.Recent(10, Filter{Q: "1"})
					h.Overview(5)
				}
			}
		}()
	}
	wg.Wait()
	if ov := h.Overview(5); ov.Observed != 8000 || ov.Denied != 8000 {
		t.Errorf("observed %d denied %d", ov.Observed, ov.Denied)
	}
}

func BenchmarkHubObserve(b *testing.B) {
	h := NewHub(HubOptions{})
	s := h.Subscribe(16)
	defer s.Close()
	r := &Record{Time: time.Now(), Category: CategoryNetworkRule, Action: "Deny", SourceIp: "10.42.1.10", DestinationIp: "192.0.2.1", DestinationPort: 443}
	b.ReportAllocs()
	for b.Loop() {
		h.Observe(r)
	}
}

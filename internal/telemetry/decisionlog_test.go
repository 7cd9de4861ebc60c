package telemetry

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestDecisionLogLines(t *testing.T) {
	var buf bytes.Buffer
	l := NewDecisionLog(&buf, Options{})
	l.Log(Record{Category: CategoryNetworkRule, SourceIp: "10.42.1.10", SourcePort: 5000, DestinationIp: "192.0.2.13", DestinationPort: 123, Protocol: "UDP", Action: "Allow", Policy: "p", RuleCollectionGroup: "g", RuleCollection: "c", Rule: "time"})
	l.Log(Record{Category: CategoryNatRule, Action: "DNAT", TranslatedIp: "10.42.1.100", TranslatedPort: 80})
	l.Close()
	sc := bufio.NewScanner(&buf)
	var lines []map[string]any
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("got %d lines", len(lines))
	}
	if lines[0]["Rule"] != "time" || lines[0]["DestinationPort"] != float64(123) || lines[0]["category"] != "AZFWNetworkRule" {
		t.Errorf("line 0 = %v", lines[0])
	}
	if _, ok := lines[0]["TranslatedIp"]; ok {
		t.Error("unused field not omitted")
	}
	if lines[1]["TranslatedIp"] != "10.42.1.100" {
		t.Errorf("line 1 = %v", lines[1])
	}
}

// blockingWriter never returns until released: a stuck log sink.
type blockingWriter struct{ release chan struct{} }

func (b blockingWriter) Write(p []byte) (int, error) { <-b.release; return len(p), nil }

func TestDecisionLogNeverBlocks(t *testing.T) {
	w := blockingWriter{release: make(chan struct{})}
	l := NewDecisionLog(w, Options{Queue: 8})
	start := time.Now()
	for i := 0; i < 10000; i++ {
		l.Log(Record{Category: CategoryNetworkRule, Action: "Deny"})
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Log blocked for %v with a stuck sink", d)
	}
	if waiting, bound := l.QueueFill(); waiting != bound || bound != 8 {
		t.Errorf("queue fill %d of %d, want full at 8", waiting, bound)
	}
	_, dropped, _ := l.Stats()
	// Not dropped: the queue (8) and what the writer batched before its
	// first (stuck) write — at most one 64 KiB batch, ~80 bytes a line.
	if dropped < 10000-8-(64<<10)/60 {
		t.Errorf("dropped = %d, want nearly all of 10000", dropped)
	}
	close(w.release)
	l.Close()
}

func TestDecisionLogRateLimit(t *testing.T) {
	l := NewDecisionLog(io.Discard, Options{Rate: 100, Burst: 50})
	now := time.Now()
	for i := 0; i < 1000; i++ {
		l.Log(Record{Time: now, Category: CategoryNetworkRule, Action: "Deny"})
	}
	l.Close()
	written, _, limited := l.Stats()
	if written != 50 || limited != 950 {
		t.Errorf("written=%d limited=%d, want 50 and 950 (burst 50 at one instant)", written, limited)
	}
}

// The bucket refills at the rate, never beyond the burst, and observers see
// every record, limited or not — also from concurrent callers.
func TestDecisionLogRateRefillAndObservers(t *testing.T) {
	l := NewDecisionLog(io.Discard, Options{Rate: 10, Burst: 5})
	var seen atomic.Int64
	l.Observe(func(r *Record) {
		if r.Category == CategoryDNSQuery {
			seen.Add(1)
		}
	})
	t0 := time.Unix(1_700_000_000, 0)
	logAt := func(at time.Time, n int) {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() { l.Log(Record{Time: at, Category: CategoryDNSQuery}) })
		}
		wg.Wait()
	}
	logAt(t0, 100)                          // burst: 5
	logAt(t0.Add(300*time.Millisecond), 10) // 3 tokens refilled
	logAt(t0.Add(time.Hour), 100)           // full again, but only 5
	l.Close()
	written, dropped, limited := l.Stats()
	if written != 13 || dropped != 0 || limited != 197 {
		t.Errorf("written=%d dropped=%d limited=%d, want 13, 0, 197", written, dropped, limited)
	}
	if seen.Load() != 210 {
		t.Errorf("observers saw %d records, want all 210", seen.Load())
	}
}

// BenchmarkLogRateLimited is the data path's cost of Log when the rate
// limit drops almost every line (the daemon's default of 1,000 lines/s
// against tens of thousands of queries per second), from one goroutine per
// CPU as the DNS proxy's readers call it.
func BenchmarkLogRateLimited(b *testing.B) {
	l := NewDecisionLog(io.Discard, Options{Rate: 1000})
	defer l.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Log(Record{Category: CategoryDNSQuery, Source: "dns", SourceIp: "10.42.1.10", SourcePort: 5353, Protocol: "udp", QueryName: "www.example.test.", QueryType: "A", QueryClass: "IN"})
		}
	})
}

// TestDecisionLogWriterNotWokenPerBatch: while records keep coming, the
// writer keeps gathering on its timer and never waits on the queue, so no
// producer has to wake it; a line still waits at most a batch delay. With
// a wait at the start of every gather (the writer before), waits equal
// gathers and this fails.
func TestDecisionLogWriterNotWokenPerBatch(t *testing.T) {
	var mu sync.Mutex
	var lines int
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		lines += bytes.Count(p, []byte("\n"))
		mu.Unlock()
		return len(p), nil
	})
	l := NewDecisionLog(w, Options{})
	sent := 0
	for start := time.Now(); time.Since(start) < 400*time.Millisecond; sent++ {
		l.Log(Record{Category: CategoryApplicationRule, Action: "Allow"})
		time.Sleep(time.Millisecond)
	}
	// A last record, then wait two batch delays: it is written without
	// waiting on Close.
	sent++
	l.Log(Record{Category: CategoryApplicationRule, Action: "Allow"})
	time.Sleep(2*batchDelay + 10*time.Millisecond)
	mu.Lock()
	got := lines
	mu.Unlock()
	waits, gathers := l.waits.Load(), l.gathers.Load()
	l.Close()
	if got != sent {
		t.Errorf("%d of %d lines written within two batch delays", got, sent)
	}
	if gathers < 8 || waits*2 > gathers {
		t.Errorf("writer waited on the queue %d times in %d gathers; want it woken by producers at most once per quiet spell", waits, gathers)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

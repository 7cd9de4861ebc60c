package dnsproxy

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterwall/clusterwall/internal/recovery"
)

// TestQueryPanicRecovered: a panic while answering one query (here in the
// threat-intel hook, on the UDP reader itself, and in the answer hook, on
// a query's goroutine, over UDP and TCP) gets that client SERVFAIL, a log
// line and a count, and the proxy goes on answering. Without the recovery
// the first of these queries killed the process (the test binary).
func TestQueryPanicRecovered(t *testing.T) {
	z := newZone(t)
	h := startProxy(t, Config{
		Upstreams: []string{z.addr},
		Block: func(name string) (bool, string) {
			if name == "boom.example.test" {
				var m map[string]int
				m[name]++ // a real runtime panic
			}
			return false, ""
		},
		Interesting: func(name string) bool { return name == "www.example.test" },
		OnAnswer: func(_ context.Context, name string, _ []netip.Addr, _ time.Duration) error {
			if name == "www.example.test" {
				panic("hook bug")
			}
			return nil
		},
	}, Options{})
	before := recovery.Count(recovery.DNS)
	for _, proto := range []string{"udp", "tcp"} {
		r := h.ask(t, proto, "boom.example.test.", dns.TypeA)
		if r.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s: rcode %s, want SERVFAIL", proto, dns.RcodeToString[r.Rcode])
		}
		r = h.ask(t, proto, "www.example.test.", dns.TypeA)
		if r.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s: hook panic: rcode %s, want SERVFAIL", proto, dns.RcodeToString[r.Rcode])
		}
		// Everyone else is still served.
		if r := h.ask(t, proto, "bad.example.test.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(aRecords(r)) != 1 {
			t.Errorf("%s: after the panics: %v", proto, r)
		}
	}
	if got := recovery.Count(recovery.DNS) - before; got != 4 || h.p.Panics() != 4 {
		t.Errorf("recovered %d panics (proxy %d), want 4", got, h.p.Panics())
	}
	last := h.logs.all()
	found := false
	for _, r := range last {
		found = found || (r.QueryName == "boom.example.test." && r.ErrorNumber == ErrInternal && strings.Contains(r.ErrorMessage, "panic"))
	}
	if !found {
		t.Errorf("no AZFWDnsQuery line with ErrorNumber %d for the panicked query", ErrInternal)
	}
}

// TestCorruptPanicStops: a panic while the cache or the learned-address
// table is being changed may leave it inconsistent — FQDN rules decide
// with that table — so the proxy does not go on: recovery.Fatal stops the
// process (fail closed).
func TestCorruptPanicStops(t *testing.T) {
	z := newZone(t)
	fatal := make(chan any, 1)
	old := recovery.Fatal
	recovery.Fatal = func(v any) { fatal <- v }
	defer func() { recovery.Fatal = old }()
	h := startProxy(t, Config{Upstreams: []string{z.addr}}, Options{})
	// A learn that panics halfway: a bad table (nil map) makes learn's own
	// write panic under its lock.
	h.p.table.mu.Lock()
	h.p.table.names = nil
	h.p.table.mu.Unlock()
	h.tryAsk("udp", "www.example.test.", dns.TypeA)
	select {
	case v := <-fatal:
		c, ok := v.(recovery.Corrupt)
		if !ok || !strings.Contains(c.What, "table") {
			t.Fatalf("fatal with %#v", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a panic in the table did not stop the proxy")
	}
}

// TestServeStale: while the upstreams fail (a flood that overwhelms them),
// a name whose answer expired less than the table's grace period ago is
// answered from the expired entry with a 30 s TTL (RFC 8767), without
// learning its addresses again; after the grace period, SERVFAIL.
func TestServeStale(t *testing.T) {
	z := newZone(t)
	clk := newFakeClock()
	h := startProxy(t, Config{Upstreams: []string{z.addr}, Timeout: 300 * time.Millisecond, MaxFails: 100}, Options{}, withClock(clk))
	if r := h.ask(t, "udp", "www.example.test.", dns.TypeA); len(aRecords(r)) != 2 {
		t.Fatalf("first answer %v", r)
	}
	z.rcode.Store(dns.RcodeServerFailure)
	clk.Advance(301 * time.Second) // the answer (TTL 300) expired
	r := h.ask(t, "udp", "www.example.test.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(aRecords(r)) != 2 || r.Answer[0].Header().Ttl != 30 || h.p.StaleServed() != 1 {
		t.Fatalf("stale answer: %v (served %d)", r, h.p.StaleServed())
	}
	clk.Advance(DefaultGrace)
	if r := h.ask(t, "udp", "www.example.test.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("after the grace period: %v, want SERVFAIL", r)
	}
}

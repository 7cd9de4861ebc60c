package dnsproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestForwardAndCache(t *testing.T) {
	z := newZone(t)
	clk := newFakeClock()
	h := startProxy(t, Config{Upstreams: []string{z.addr}}, Options{}, withClock(clk))

	r := h.ask(t, "udp", "www.example.test.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess {
		t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	if got, want := aRecords(r), []string{"192.0.2.1", "192.0.2.2"}; !slices.Equal(got, want) {
		t.Fatalf("answer %v, want all of %v", got, want)
	}
	if r.Authoritative || !r.RecursionAvailable {
		t.Errorf("flags: aa=%v ra=%v, want a non-authoritative, recursive answer", r.Authoritative, r.RecursionAvailable)
	}
	if n := z.countAll("www.example.test.", dns.TypeA); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1", n)
	}

	// Cached: the upstream is not asked again, the TTL goes down, and the
	// client's letter case is echoed.
	clk.Advance(10 * time.Second)
	r = h.ask(t, "udp", "WwW.ExAmple.TEST.", dns.TypeA)
	if n := z.countAll("www.example.test.", dns.TypeA); n != 1 {
		t.Errorf("after a cached answer the upstream saw %d queries, want 1", n)
	}
	if r.Question[0].Name != "WwW.ExAmple.TEST." {
		t.Errorf("question %q, want the client's case", r.Question[0].Name)
	}
	if len(r.Answer) != 2 || r.Answer[0].Header().Ttl != 290 {
		t.Errorf("cached answer %v, want 2 records with TTL 290", r.Answer)
	}
	if hits, _, _, _ := h.p.CacheStats(); hits != 1 {
		t.Errorf("cache hits %d, want 1", hits)
	}

	// Expired: asked again.
	clk.Advance(291 * time.Second)
	r = h.ask(t, "udp", "www.example.test.", dns.TypeA)
	if n := z.countAll("www.example.test.", dns.TypeA); n != 2 {
		t.Errorf("after expiry the upstream saw %d queries, want 2", n)
	}
	if r.Answer[0].Header().Ttl != 300 {
		t.Errorf("fresh TTL %d, want 300", r.Answer[0].Header().Ttl)
	}

	// The DO bit is part of the key: a DNSSEC-OK query is its own entry.
	h.ask(t, "udp", "www.example.test.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(1232, true) })
	if n := z.countAll("www.example.test.", dns.TypeA); n != 3 {
		t.Errorf("DO query: upstream saw %d queries, want 3", n)
	}
}

func TestTTLHandling(t *testing.T) {
	z := newZone(t)
	clk := newFakeClock()
	h := startProxy(t, Config{Upstreams: []string{z.addr}}, Options{}, withClock(clk))
	tests := []struct {
		name      string
		qname     string
		wantTTL   uint32
		wantCache bool
	}{
		{"capped at 1h", "long.example.test.", 3600, true},
		{"TTL 0 is not cached", "ttl0.example.test.", 0, false},
		{"CNAME chain by smallest TTL", "alias.example.test.", 600, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.ask(t, "udp", tc.qname, dns.TypeA)
			if r.Answer[0].Header().Ttl != tc.wantTTL {
				t.Errorf("TTL %d, want %d", r.Answer[0].Header().Ttl, tc.wantTTL)
			}
			h.ask(t, "udp", tc.qname, dns.TypeA)
			want := 1
			if !tc.wantCache {
				want = 2
			}
			if n := z.countAll(tc.qname, dns.TypeA); n != want {
				t.Errorf("upstream saw %d queries for two asks, want %d", n, want)
			}
		})
	}
	// The CNAME answer expires with its shortest record (300 s).
	clk.Advance(301 * time.Second)
	h.ask(t, "udp", "alias.example.test.", dns.TypeA)
	if n := z.countAll("alias.example.test.", dns.TypeA); n != 2 {
		t.Errorf("CNAME answer after 301 s: upstream saw %d queries, want 2", n)
	}
}

func TestNegativeCache(t *testing.T) {
	z := newZone(t)
	clk := newFakeClock()
	h := startProxy(t, Config{Upstreams: []string{z.addr}}, Options{}, withClock(clk))
	tests := []struct {
		name    string
		qname   string
		qtype   uint16
		rcode   int
		soaTTL  uint32 // TTL of the SOA the client sees
		expiry  time.Duration
		noCache bool
	}{
		{"NXDOMAIN by SOA minimum", "nx.example.test.", dns.TypeA, dns.RcodeNameError, soaMin, soaMin * time.Second, false},
		{"NODATA by SOA minimum", "nodata.example.test.", dns.TypeAAAA, dns.RcodeSuccess, soaMin, soaMin * time.Second, false},
		{"capped at 30 min", "longneg.example.test.", dns.TypeA, dns.RcodeNameError, 1800, 30 * time.Minute, false},
		{"no SOA: not cached", "nosoa.example.test.", dns.TypeA, dns.RcodeNameError, 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.ask(t, "udp", tc.qname, tc.qtype)
			if r.Rcode != tc.rcode || len(r.Answer) != 0 {
				t.Fatalf("rcode %s with %d answers, want %s and none", dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[tc.rcode])
			}
			if !tc.noCache {
				if len(r.Ns) != 1 || r.Ns[0].Header().Ttl != tc.soaTTL {
					t.Fatalf("authority %v, want the SOA with TTL %d", r.Ns, tc.soaTTL)
				}
			}
			h.ask(t, "udp", tc.qname, tc.qtype)
			want := 1
			if tc.noCache {
				want = 2
			}
			if n := z.countAll(tc.qname, tc.qtype); n != want {
				t.Fatalf("two asks: upstream saw %d, want %d", n, want)
			}
			if tc.noCache {
				return
			}
			clk.Advance(tc.expiry - time.Second)
			h.ask(t, "udp", tc.qname, tc.qtype)
			if n := z.countAll(tc.qname, tc.qtype); n != 1 {
				t.Errorf("just before expiry the upstream saw %d, want 1", n)
			}
			clk.Advance(2 * time.Second)
			h.ask(t, "udp", tc.qname, tc.qtype)
			if n := z.countAll(tc.qname, tc.qtype); n != 2 {
				t.Errorf("after expiry the upstream saw %d, want 2", n)
			}
		})
	}
}

func TestFailover(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(t *testing.T) string // returns the bad upstream's address
	}{
		{"dead (closed port)", func(t *testing.T) string { a, _ := deadPort(t); return a }},
		{"slow", func(t *testing.T) string {
			z := newZoneAt(t, "127.0.0.1:0", 9)
			z.delay.Store(int64(3 * time.Second))
			return z.addr
		}},
		{"SERVFAIL", func(t *testing.T) string {
			z := newZoneAt(t, "127.0.0.1:0", 9)
			z.rcode.Store(dns.RcodeServerFailure)
			return z.addr
		}},
		{"REFUSED", func(t *testing.T) string {
			z := newZoneAt(t, "127.0.0.1:0", 9)
			z.rcode.Store(dns.RcodeRefused)
			return z.addr
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good := newZoneAt(t, "127.0.0.1:0", 1)
			bad := tc.break_(t)
			h := startProxy(t, Config{
				Upstreams: []string{bad, good.addr}, Timeout: 300 * time.Millisecond,
				HealthInterval: time.Hour, MaxFails: 2,
			}, Options{})
			for i := range 24 {
				name := fmt.Sprintf("h%d.any.example.test.", i)
				start := time.Now()
				r := h.ask(t, "udp", name, dns.TypeA)
				if got := aRecords(r); len(got) != 1 || got[0] != "203.0.113.1" {
					t.Fatalf("%s: answer %v rcode %s (%s), want the good upstream's 203.0.113.1", name, got, dns.RcodeToString[r.Rcode], h.logs.last().ErrorMessage)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("%s took %v", name, d)
				}
			}
			// With random choice the bad upstream was tried at least twice
			// in 24 queries with near certainty (until marked down).
			st := h.p.Upstreams()
			if st[0].Healthy || st[0].Failures < 2 {
				t.Errorf("bad upstream status %+v, want down after 2 failures", st[0])
			}
			if !st[1].Healthy {
				t.Errorf("good upstream status %+v, want healthy", st[1])
			}
		})
	}
}

func TestHealthCheckBringsUpstreamBack(t *testing.T) {
	good := newZoneAt(t, "127.0.0.1:0", 1)
	dead, release := deadPort(t)
	h := startProxy(t, Config{
		Upstreams: []string{dead, good.addr}, Timeout: 300 * time.Millisecond,
		HealthInterval: 50 * time.Millisecond, MaxFails: 1,
	}, Options{})
	eventually(t, 3*time.Second, "the dead upstream marked down", func() bool { return !h.p.Upstreams()[0].Healthy })

	// Bring it back on the same port: the health check notices.
	release()
	revived := newZoneAt(t, dead, 2)
	eventually(t, 3*time.Second, "the revived upstream marked up", func() bool { return h.p.Upstreams()[0].Healthy })
	n := 0
	for i := range 40 {
		name := fmt.Sprintf("r%d.any.example.test.", i)
		h.ask(t, "udp", name, dns.TypeA)
		n += revived.countAll(name, dns.TypeA)
	}
	if n == 0 {
		t.Errorf("the revived upstream got no queries out of 40")
	}
}

func TestTCPAndTruncation(t *testing.T) {
	z := newZone(t)
	h := startProxy(t, Config{Upstreams: []string{z.addr}}, Options{})

	t.Run("TCP query", func(t *testing.T) {
		r := h.ask(t, "tcp", "www.example.test.", dns.TypeAAAA)
		if got := aRecords(r); !slices.Equal(got, []string{"2001:db8::1"}) {
			t.Errorf("answer %v", got)
		}
	})
	t.Run("large answer: TC over UDP without EDNS, complete over TCP and with EDNS", func(t *testing.T) {
		r := h.ask(t, "udp", "big.example.test.", dns.TypeA)
		if !r.Truncated || len(r.Answer) != 0 {
			t.Errorf("UDP/512: truncated=%v with %d answers, want TC and none", r.Truncated, len(r.Answer))
		}
		r = h.ask(t, "tcp", "big.example.test.", dns.TypeA)
		if r.Truncated || len(r.Answer) != 60 {
			t.Errorf("TCP: truncated=%v with %d answers, want all 60", r.Truncated, len(r.Answer))
		}
		r = h.ask(t, "udp", "big.example.test.", dns.TypeA, func(m *dns.Msg) { m.SetEdns0(4096, false) })
		if r.Truncated || len(r.Answer) != 60 {
			t.Errorf("UDP/EDNS 4096: truncated=%v with %d answers, want all 60", r.Truncated, len(r.Answer))
		}
		if o := r.IsEdns0(); o == nil || o.UDPSize() != ednsSize {
			t.Errorf("OPT %v, want the proxy's with size %d", o, ednsSize)
		}
	})
	t.Run("truncated upstream answer is retried over TCP", func(t *testing.T) {
		r := h.ask(t, "udp", "tc.example.test.", dns.TypeA)
		if got := aRecords(r); r.Truncated || !slices.Equal(got, []string{"192.0.2.5"}) {
			t.Errorf("answer %v truncated=%v, want 192.0.2.5", got, r.Truncated)
		}
		if u, tc := z.count("tc.example.test.", dns.TypeA, "udp"), z.count("tc.example.test.", dns.TypeA, "tcp"); u != 1 || tc != 1 {
			t.Errorf("upstream saw udp=%d tcp=%d, want 1 and 1", u, tc)
		}
	})
}

// rawUDP sends b and returns the reply, or nil after wait.
func rawUDP(t *testing.T, addr string, b []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func header(id, flags, qd, an, ns, ar uint16) []byte {
	b := make([]byte, 12)
	for i, v := range []uint16{id, flags, qd, an, ns, ar} {
		binary.BigEndian.PutUint16(b[2*i:], v)
	}
	return b
}

func TestMalformedQueries(t *testing.T) {
	z := newZone(t)
	h := startProxy(t, Config{Upstreams: []string{z.addr}}, Options{})
	question := []byte{3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1}
	tests := []struct {
		name  string
		msg   []byte
		rcode int // -1: no answer
	}{
		{"garbage", append(header(0x1234, 0, 1, 0, 0, 0), 0xff, 0xfe, 0x01), dns.RcodeFormatError},
		{"random bytes", []byte("\x42\x42\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fxyz\xc0"), dns.RcodeFormatError},
		{"two questions", append(append(header(7, 0x0100, 2, 0, 0, 0), question...), question...), dns.RcodeFormatError},
		{"answer section in a query", append(header(7, 0x0100, 1, 1, 0, 0), question...), dns.RcodeFormatError},
		{"truncated question", append(header(7, 0x0100, 1, 0, 0, 0), question[:10]...), dns.RcodeFormatError},
		{"compression pointer in question", append(header(7, 0x0100, 1, 0, 0, 0), 0xc0, 0x0c, 0, 1, 0, 1), dns.RcodeFormatError},
		{"OPT with bad options", append(append(header(7, 0x0100, 1, 0, 0, 1), question...), 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 3, 0, 8, 0), dns.RcodeFormatError},
		{"update opcode", append(header(7, 5<<11, 1, 0, 0, 0), question...), dns.RcodeNotImplemented},
		{"class CH", append(append(header(7, 0x0100, 1, 0, 0, 0), question[:len(question)-2]...), 0, 3), dns.RcodeRefused},
		{"AXFR", append(append(header(7, 0x0100, 1, 0, 0, 0), question[:len(question)-4]...), 0, 252, 0, 1), dns.RcodeRefused},
		{"too short for a header", []byte{1, 2, 3, 4, 5}, -1},
		{"a response", append(header(7, 0x8180, 1, 0, 0, 0), question...), -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wait := 2 * time.Second
			if tc.rcode < 0 {
				wait = 300 * time.Millisecond
			}
			got := rawUDP(t, h.addr, tc.msg, wait)
			if tc.rcode < 0 {
				if got != nil {
					t.Fatalf("got a %d-byte answer, want none", len(got))
				}
			} else {
				m := new(dns.Msg)
				if err := m.Unpack(got); err != nil {
					t.Fatalf("answer does not parse: %v (%x)", err, got)
				}
				if m.Id != binary.BigEndian.Uint16(tc.msg) || !m.Response || m.Rcode != tc.rcode {
					t.Errorf("answer id=%d qr=%v rcode=%s, want id=%d qr rcode=%s", m.Id, m.Response,
						dns.RcodeToString[m.Rcode], binary.BigEndian.Uint16(tc.msg), dns.RcodeToString[tc.rcode])
				}
				if rec := h.logs.last(); rec.ErrorNumber == 0 || rec.ErrorMessage == "" {
					t.Errorf("log line %+v, want an error number and message", rec)
				}
			}
			// The server keeps serving.
			if r := h.ask(t, "udp", "www.example.test.", dns.TypeA); len(r.Answer) != 2 {
				t.Fatalf("after %s the proxy answered %v", tc.name, r)
			}
		})
	}
}

func tcpFrame(b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

func readFrame(c net.Conn) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	_, err := io.ReadFull(c, b)
	return b, err
}

func TestMalformedTCP(t *testing.T) {
	z := newZone(t)
	h := startProxy(t, Config{Upstreams: []string{z.addr}, TCPIdle: 300 * time.Millisecond, MaxTCPConns: 4}, Options{})
	good := new(dns.Msg)
	good.SetQuestion("www.example.test.", dns.TypeA)
	goodWire, _ := good.Pack()
	// idle waits until the previous subtest's connections are released.
	idle := func(t *testing.T) {
		eventually(t, 2*time.Second, "no TCP connections", func() bool { return h.p.tcpConns.Load() == 0 })
	}

	t.Run("garbage frame gets FORMERR and the connection goes on", func(t *testing.T) {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		garbage := append(header(0x4242, 0, 1, 0, 0, 0), []byte("\xff\xff\xff garbage")...)
		c.Write(append(tcpFrame(garbage), tcpFrame(goodWire)...))
		b, err := readFrame(c)
		if err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil || m.Id != 0x4242 || m.Rcode != dns.RcodeFormatError {
			t.Fatalf("first answer %v (err %v), want FORMERR for id 0x4242", m, err)
		}
		b, err = readFrame(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Unpack(b); err != nil || len(m.Answer) != 2 {
			t.Fatalf("second answer %v (err %v), want the records", m, err)
		}
	})
	t.Run("frame too short for a header closes the connection", func(t *testing.T) {
		idle(t)
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write([]byte{0, 3, 1, 2, 3})
		if _, err := readFrame(c); err == nil {
			t.Fatal("got an answer, want the connection closed")
		}
	})
	t.Run("oversized promise then silence: closed after TCPIdle; others served", func(t *testing.T) {
		idle(t)
		var stalled []net.Conn
		for range 3 {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte{0xff, 0xff, 1, 2, 3}) // 65535 announced, 3 sent
			stalled = append(stalled, c)
		}
		// Others are served meanwhile, over UDP and TCP.
		h.ask(t, "udp", "www.example.test.", dns.TypeA)
		h.ask(t, "tcp", "www.example.test.", dns.TypeA)
		for _, c := range stalled {
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			start := time.Now()
			if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("stalled connection: err %v, want closed by the proxy", err)
			}
			if time.Since(start) > 2*time.Second {
				t.Errorf("stalled connection closed late")
			}
		}
	})
	t.Run("connection limit", func(t *testing.T) {
		idle(t)
		var conns []net.Conn
		for range 4 {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns = append(conns, c)
		}
		eventually(t, 2*time.Second, "4 connections held", func() bool { return h.p.tcpConns.Load() == 4 })
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write(tcpFrame(goodWire))
		if _, err := readFrame(c); err == nil {
			t.Errorf("a fifth connection was served, want it closed (limit 4)")
		}
		for _, c := range conns {
			c.Close()
		}
		eventually(t, 2*time.Second, "connections released", func() bool { return h.p.tcpConns.Load() == 0 })
		h.ask(t, "tcp", "www.example.test.", dns.TypeA)
	})
}

func TestOnAnswerBeforeReply(t *testing.T) {
	z := newZone(t)
	var (
		mu     sync.Mutex
		events []string
	)
	record := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	var hookCalls atomic.Int32
	cfg := Config{
		Upstreams:   []string{z.addr},
		Interesting: func(name string) bool { return name == "www.example.test" },
		OnAnswer: func(ctx context.Context, name string, addrs []netip.Addr, ttl time.Duration) error {
			hookCalls.Add(1)
			record(fmt.Sprintf("hook %s %v %v", name, addrs, ttl.Round(time.Second)))
			entered <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			record("hook done")
			return nil
		},
	}
	table := NewTable(TableOptions{Grace: time.Minute})
	h := startProxy(t, cfg, Options{Table: table})

	got := make(chan *dns.Msg, 1)
	go func() {
		r, err := h.tryAsk("udp", "www.example.test.", dns.TypeA)
		if err != nil {
			t.Error(err)
		}
		record("client got answer")
		got <- r
	}()
	<-entered
	select {
	case <-got:
		t.Fatal("the client got the answer while the hook was still running")
	case <-time.After(200 * time.Millisecond):
	}
	if table.Resolved("www.example.test", mustAddr("192.0.2.1")) {
		t.Error("table learned the addresses before the hook returned")
	}
	close(release)
	r := <-got
	if len(r.Answer) != 2 {
		t.Fatalf("answer %v", r)
	}
	mu.Lock()
	want := []string{"hook www.example.test [192.0.2.1 192.0.2.2] 5m0s", "hook done", "client got answer"}
	if !slices.Equal(events, want) {
		t.Errorf("events %q, want %q", events, want)
	}
	mu.Unlock()
	for _, a := range []string{"192.0.2.1", "192.0.2.2"} {
		if !table.Resolved("www.example.test", mustAddr(a)) {
			t.Errorf("table does not have %s", a)
		}
	}

	// A cached answer that brings nothing new does not call the hook again.
	h.ask(t, "udp", "www.example.test.", dns.TypeA)
	if n := hookCalls.Load(); n != 1 {
		t.Errorf("hook called %d times, want 1", n)
	}
	// A name no rule needs: learned, no hook.
	h.ask(t, "udp", "long.example.test.", dns.TypeA)
	if n := hookCalls.Load(); n != 1 {
		t.Errorf("hook called %d times for an uninteresting name, want still 1", n)
	}
	if !table.Resolved("long.example.test", mustAddr("192.0.2.3")) {
		t.Error("uninteresting name not learned")
	}
	// A CNAME chain through a name a rule needs: the hook runs for that
	// name (the answer extends its addresses' lifetime).
	h.ask(t, "udp", "alias.example.test.", dns.TypeA)
	if n := hookCalls.Load(); n != 2 {
		t.Errorf("hook called %d times after a CNAME to the interesting name, want 2", n)
	}
	if got := table.Lookup(mustAddr("192.0.2.1")); !slices.Equal(got, []string{"alias.example.test", "www.example.test"}) {
		t.Errorf("Lookup(192.0.2.1) = %v", got)
	}
}

func TestOnAnswerFailureIsServfail(t *testing.T) {
	z := newZone(t)
	var fail atomic.Bool
	fail.Store(true)
	cfg := Config{
		Upstreams:   []string{z.addr},
		Interesting: func(string) bool { return true },
		OnAnswer: func(ctx context.Context, name string, addrs []netip.Addr, ttl time.Duration) error {
			if fail.Load() {
				return errors.New("nft: set full")
			}
			return nil
		},
	}
	h := startProxy(t, cfg, Options{})
	r := h.ask(t, "udp", "www.example.test.", dns.TypeA)
	if r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Fatalf("rcode %s with %d answers, want SERVFAIL and none", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	rec := h.logs.last()
	if rec.ErrorNumber != ErrHook || rec.ResponseCode != "SERVFAIL" {
		t.Errorf("log %+v, want ErrorNumber %d and SERVFAIL", rec, ErrHook)
	}
	if h.p.Table().Resolved("www.example.test", mustAddr("192.0.2.1")) {
		t.Error("addresses learned although the hook failed")
	}
	// The hook recovers: the (cached) answer is now handed out.
	fail.Store(false)
	r = h.ask(t, "udp", "www.example.test.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Fatalf("after recovery: %v", r)
	}
	if n := z.countAll("www.example.test.", dns.TypeA); n != 1 {
		t.Errorf("upstream saw %d queries, want 1 (the answer stayed cached)", n)
	}
}

func TestTableExpiryThroughProxy(t *testing.T) {
	z := newZone(t)
	clk := newFakeClock()
	kept := map[netip.Addr]bool{mustAddr("192.0.2.2"): true}
	var expired []string
	table := NewTable(TableOptions{Grace: time.Minute, Now: clk.Now, OnExpire: func(name string, a netip.Addr) bool {
		expired = append(expired, name+" "+a.String())
		return kept[a]
	}})
	h := startProxy(t, Config{Upstreams: []string{z.addr}}, Options{Table: table}, withClock(clk))
	h.ask(t, "udp", "www.example.test.", dns.TypeA) // TTL 300

	clk.Advance(359 * time.Second) // TTL + grace - 1 s
	table.Sweep()
	if len(expired) != 0 || !table.Resolved("www.example.test", mustAddr("192.0.2.1")) {
		t.Fatalf("before TTL+grace: expired %v", expired)
	}
	clk.Advance(2 * time.Second)
	if table.Resolved("www.example.test", mustAddr("192.0.2.1")) {
		t.Error("Resolved true after TTL+grace")
	}
	table.Sweep()
	slices.Sort(expired)
	if want := []string{"www.example.test 192.0.2.1", "www.example.test 192.0.2.2"}; !slices.Equal(expired, want) {
		t.Errorf("OnExpire asked about %v, want %v", expired, want)
	}
	if got := table.Addrs("www.example.test"); !slices.Equal(got, []netip.Addr{mustAddr("192.0.2.2")}) {
		t.Errorf("Addrs after expiry = %v, want only the address still in use", got)
	}
	// Kept for one grace period, then asked again.
	clk.Advance(61 * time.Second)
	delete(kept, mustAddr("192.0.2.2"))
	table.Sweep()
	if table.Len() != 0 {
		t.Errorf("table has %d names, want 0", table.Len())
	}
}

func TestBlock(t *testing.T) {
	z := newZone(t)
	block := func(name string) (bool, string) {
		if name == "bad.example.test" {
			return true, "threat intel: test feed"
		}
		return false, ""
	}
	table := NewTable(TableOptions{})
	t.Run("NXDOMAIN", func(t *testing.T) {
		h := startProxy(t, Config{Upstreams: []string{z.addr}, Block: block}, Options{Table: table})
		r := h.ask(t, "udp", "bad.example.test.", dns.TypeA)
		if r.Rcode != dns.RcodeNameError {
			t.Errorf("rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
		}
		if n := z.countAll("bad.example.test.", dns.TypeA); n != 0 {
			t.Errorf("upstream asked %d times about a blocked name", n)
		}
		rec := h.logs.last()
		if rec.Action != "Deny" || rec.ActionReason != "threat intel: test feed" {
			t.Errorf("log %+v, want Deny with the reason", rec)
		}
		// Through a CNAME.
		r = h.ask(t, "udp", "tobad.example.test.", dns.TypeA)
		if r.Rcode != dns.RcodeNameError {
			t.Errorf("CNAME to a blocked name: rcode %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
		}
		if table.Resolved("tobad.example.test", mustAddr("192.0.2.66")) || table.Resolved("bad.example.test", mustAddr("192.0.2.66")) {
			t.Error("a blocked answer's address was learned")
		}
		if rec := h.logs.last(); rec.ActionReason != "threat intel: test feed (CNAME bad.example.test)" {
			t.Errorf("reason %q", rec.ActionReason)
		}
	})
	t.Run("sinkhole", func(t *testing.T) {
		h := startProxy(t, Config{Upstreams: []string{z.addr}, Block: block, Sinkhole4: mustAddr("192.0.2.250")}, Options{Table: table})
		r := h.ask(t, "udp", "bad.example.test.", dns.TypeA)
		if got := aRecords(r); r.Rcode != dns.RcodeSuccess || !slices.Equal(got, []string{"192.0.2.250"}) {
			t.Errorf("answer %v rcode %s, want the sinkhole", got, dns.RcodeToString[r.Rcode])
		}
		r = h.ask(t, "udp", "bad.example.test.", dns.TypeAAAA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("AAAA: %v, want NODATA", r)
		}
	})
}

func TestLogRecord(t *testing.T) {
	z := newZone(t)
	h := startProxy(t, Config{Upstreams: []string{z.addr}}, Options{})
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	m.SetEdns0(1400, true)
	wire, _ := m.Pack()
	c, err := net.Dial("udp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(wire)
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "a log line", func() bool { return len(h.logs.all()) == 1 })
	rec := h.logs.last()
	local := c.LocalAddr().(*net.UDPAddr)
	checks := []struct {
		field string
		got   any
		want  any
	}{
		{"category", rec.Category, "AZFWDnsQuery"},
		{"SourceIp", rec.SourceIp, "127.0.0.1"},
		{"SourcePort", rec.SourcePort, local.Port},
		{"QueryId", rec.QueryId, int(m.Id)},
		{"QueryType", rec.QueryType, "A"},
		{"QueryClass", rec.QueryClass, "IN"},
		{"QueryName", rec.QueryName, "www.example.test."},
		{"Protocol", rec.Protocol, "udp"},
		{"RequestSize", rec.RequestSize, len(wire)},
		{"DnssecOkBit", rec.DnssecOkBit, true},
		{"EDNS0BufferSize", rec.EDNS0BufferSize, 1400},
		{"ResponseCode", rec.ResponseCode, "NOERROR"},
		{"ResponseFlags", rec.ResponseFlags, "qr,rd,ra"},
		{"ResponseSize", rec.ResponseSize, n},
		{"ErrorNumber", rec.ErrorNumber, 0},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.field, ck.got, ck.want)
		}
	}
	if rec.RequestDurationSecs <= 0 || rec.RequestDurationSecs > 3 {
		t.Errorf("RequestDurationSecs = %v", rec.RequestDurationSecs)
	}
}

func TestRefresh(t *testing.T) {
	z := newZone(t)
	clk := newFakeClock()
	var mu sync.Mutex
	hooked := map[string][]netip.Addr{}
	cfg := Config{
		Upstreams:   []string{z.addr},
		Interesting: func(n string) bool { return n == "www.example.test" },
		OnAnswer: func(ctx context.Context, name string, addrs []netip.Addr, ttl time.Duration) error {
			mu.Lock()
			hooked[name] = append(hooked[name], addrs...)
			mu.Unlock()
			return nil
		},
	}
	h := startProxy(t, cfg, Options{}, withClock(clk))
	if err := h.p.Refresh(context.Background(), []string{"www.example.test"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if got := hooked["www.example.test"]; len(got) != 3 {
		t.Errorf("hook saw %v, want the 2 A and 1 AAAA addresses", got)
	}
	mu.Unlock()
	if !h.p.Table().Resolved("www.example.test", mustAddr("2001:db8::1")) {
		t.Error("refreshed AAAA not learned")
	}
	// Refresh goes upstream even when cached.
	if err := h.p.Refresh(context.Background(), []string{"www.example.test"}); err != nil {
		t.Fatal(err)
	}
	if n := z.countAll("www.example.test.", dns.TypeA); n != 2 {
		t.Errorf("upstream saw %d A queries after two refreshes, want 2", n)
	}
	// Due-based refresh: nothing is due while the answers live.
	if err := h.p.refreshDue(context.Background(), []string{"www.example.test"}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := z.countAll("www.example.test.", dns.TypeA); n != 2 {
		t.Errorf("refreshDue with fresh answers: upstream saw %d, want 2", n)
	}
	clk.Advance(295 * time.Second)
	if err := h.p.refreshDue(context.Background(), []string{"www.example.test"}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := z.countAll("www.example.test.", dns.TypeA); n != 3 {
		t.Errorf("refreshDue near expiry: upstream saw %d, want 3", n)
	}
	// Clients never see refresh queries in the log.
	if n := len(h.logs.all()); n != 0 {
		t.Errorf("%d log lines for internal queries", n)
	}
	if err := h.p.Refresh(context.Background(), []string{"bad name with spaces"}); err == nil {
		t.Error("Refresh of a bad name: no error")
	}
}

func TestSetConfigWhileServing(t *testing.T) {
	a := newZoneAt(t, "127.0.0.1:0", 1)
	b := newZoneAt(t, "127.0.0.1:0", 2)
	h := startProxy(t, Config{Upstreams: []string{a.addr}}, Options{})
	h.ask(t, "udp", "www.example.test.", dns.TypeA)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var failures atomic.Int32
	var served atomic.Int32
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				proto := []string{"udp", "tcp"}[i%2]
				r, err := h.tryAsk(proto, fmt.Sprintf("g%d-%d.any.example.test.", g, i), dns.TypeA)
				if err != nil || r.Rcode != dns.RcodeSuccess {
					failures.Add(1)
				}
				served.Add(1)
			}
		})
	}
	for i := range 20 {
		up := []string{a.addr, b.addr}[i%2]
		if err := h.p.SetConfig(Config{Upstreams: []string{up}, CacheSize: 100_000 + i}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := h.p.SetConfig(Config{Upstreams: []string{"not-an-ip:53"}}); err == nil {
		t.Error("SetConfig accepted a bad upstream")
	}
	if err := h.p.SetConfig(Config{Upstreams: []string{b.addr}}); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	if failures.Load() != 0 {
		t.Errorf("%d of %d queries failed during reloads", failures.Load(), served.Load())
	}
	// The cache survived: the first answer is still served without asking.
	h.ask(t, "udp", "www.example.test.", dns.TypeA)
	if n := a.countAll("www.example.test.", dns.TypeA) + b.countAll("www.example.test.", dns.TypeA); n != 1 {
		t.Errorf("upstreams saw %d queries for the cached name, want 1", n)
	}
	// The new upstream is used.
	h.ask(t, "udp", "after.any.example.test.", dns.TypeA)
	if b.countAll("after.any.example.test.", dns.TypeA) != 1 {
		t.Error("the new upstream was not asked")
	}
}

func TestConcurrentQueries(t *testing.T) {
	z := newZone(t)
	table := NewTable(TableOptions{})
	cfg := Config{
		Upstreams:   []string{z.addr},
		Interesting: func(n string) bool { return len(n)%2 == 0 },
		OnAnswer: func(ctx context.Context, name string, addrs []netip.Addr, ttl time.Duration) error {
			return nil
		},
	}
	h := startProxy(t, cfg, Options{Table: table})
	var wg sync.WaitGroup
	var bad atomic.Int32
	for g := range 8 {
		wg.Go(func() {
			for i := range 150 {
				proto := "udp"
				if i%5 == 0 {
					proto = "tcp"
				}
				name := fmt.Sprintf("c%d.any.example.test.", (g*7+i)%40)
				r, err := h.tryAsk(proto, name, dns.TypeA)
				if err != nil || len(r.Answer) != 1 {
					bad.Add(1)
					continue
				}
				if !table.Resolved(name, mustAddr("203.0.113.1")) {
					bad.Add(1)
				}
				table.Lookup(mustAddr("203.0.113.1"))
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			table.Sweep()
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d bad answers", bad.Load())
	}
	// 40 names, each asked upstream once (misses for one name coalesce).
	if n := z.total.Load(); n < 40 || n > 80 {
		t.Errorf("upstream saw %d queries for 40 names", n)
	}
}

func TestIPv6Listener(t *testing.T) {
	z := newZone(t)
	p, err := New(Config{Upstreams: []string{z.addr}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("[::1]:0", 2)
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, l); close(done) }()
	defer func() { cancel(); <-done }()
	h := &harness{p: p, addr: l.Addr().String()}
	for _, proto := range []string{"udp", "tcp"} {
		for range 2 { // a miss, then a hit
			r := h.ask(t, proto, "www.example.test.", dns.TypeAAAA)
			if got := aRecords(r); !slices.Equal(got, []string{"2001:db8::1"}) {
				t.Errorf("%s over IPv6: answer %v", proto, got)
			}
		}
	}
}

func TestOverloadAnswersServfailAtOnce(t *testing.T) {
	z := newZone(t)
	z.delay.Store(int64(500 * time.Millisecond))
	h := startProxy(t, Config{Upstreams: []string{z.addr}, MaxInflight: 2, Timeout: 2 * time.Second}, Options{})
	var wg sync.WaitGroup
	var ok, servfail atomic.Int32
	for i := range 8 {
		wg.Go(func() {
			r, err := h.tryAsk("udp", fmt.Sprintf("o%d.any.example.test.", i), dns.TypeA)
			switch {
			case err != nil:
			case r.Rcode == dns.RcodeSuccess:
				ok.Add(1)
			case r.Rcode == dns.RcodeServerFailure:
				servfail.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() < 1 || servfail.Load() < 1 || ok.Load()+servfail.Load() != 8 {
		t.Errorf("ok %d servfail %d of 8, want both and all answered", ok.Load(), servfail.Load())
	}
	n := 0
	for _, r := range h.logs.all() {
		if r.ErrorNumber == ErrOverloaded {
			n++
		}
	}
	if n != int(servfail.Load()) {
		t.Errorf("%d overload log lines for %d SERVFAILs", n, servfail.Load())
	}
}

package dnsproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
	"github.com/miekg/dns"
)

// zone is a real authoritative DNS server (miekg/dns) on loopback, UDP and
// TCP on one port, for the test zone example.test. It counts the queries
// it answers per "name type proto".
type zone struct {
	t      testing.TB
	addr   string
	udp    *dns.Server
	tcp    *dns.Server
	delay  atomic.Int64 // nanoseconds to wait before answering
	rcode  atomic.Int32 // if non-zero, answer every query with this rcode
	tag    byte         // last octet of the "any" zone's answers
	mu     sync.Mutex
	counts map[string]int
	total  atomic.Int64
}

const soaMin = 60

func newZone(t testing.TB) *zone { return newZoneAt(t, "127.0.0.1:0", 1) }

// newZoneAt starts a zone server on addr (port 0: any free port).
func newZoneAt(t testing.TB, addr string, tag byte) *zone {
	t.Helper()
	z := &zone{t: t, counts: map[string]int{}, tag: tag}
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		pc, err = net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatalf("zone: %v", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("zone tcp: %v", err)
	}
	z.addr = pc.LocalAddr().String()
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	z.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(z.serve("udp")), NotifyStartedFunc: notify}
	z.tcp = &dns.Server{Listener: ln, Handler: dns.HandlerFunc(z.serve("tcp")), NotifyStartedFunc: notify}
	go z.udp.ActivateAndServe()
	go z.tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(z.stop)
	return z
}

func (z *zone) stop() {
	z.udp.Shutdown()
	z.tcp.Shutdown()
}

func (z *zone) count(name string, qtype uint16, proto string) int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.counts[fmt.Sprintf("%s %s %s", strings.ToLower(name), dns.TypeToString[qtype], proto)]
}

// countAll counts queries for name and type over both protocols.
func (z *zone) countAll(name string, qtype uint16) int {
	return z.count(name, qtype, "udp") + z.count(name, qtype, "tcp")
}

func rr(s string) dns.RR {
	r, err := dns.NewRR(s)
	if err != nil {
		panic(err)
	}
	return r
}

func (z *zone) serve(proto string) func(w dns.ResponseWriter, req *dns.Msg) {
	return func(w dns.ResponseWriter, req *dns.Msg) {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		z.mu.Lock()
		z.counts[fmt.Sprintf("%s %s %s", name, dns.TypeToString[q.Qtype], proto)]++
		z.mu.Unlock()
		z.total.Add(1)
		if d := z.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		if o := req.IsEdns0(); o != nil {
			m.SetEdns0(4096, o.Do())
		}
		if rc := z.rcode.Load(); rc != 0 {
			m.Rcode = int(rc)
			w.WriteMsg(m)
			return
		}
		soa := rr(fmt.Sprintf("example.test. 3600 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 %d", soaMin))
		switch {
		case name == "www.example.test." && q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{rr(q.Name + " 300 IN A 192.0.2.1"), rr(q.Name + " 300 IN A 192.0.2.2")}
		case name == "www.example.test." && q.Qtype == dns.TypeAAAA:
			m.Answer = []dns.RR{rr(q.Name + " 300 IN AAAA 2001:db8::1")}
		case name == "alias.example.test." && q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{rr(q.Name + " 600 IN CNAME www.example.test."),
				rr("www.example.test. 300 IN A 192.0.2.1"), rr("www.example.test. 300 IN A 192.0.2.2")}
		case name == "tobad.example.test." && q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{rr(q.Name + " 600 IN CNAME bad.example.test."), rr("bad.example.test. 300 IN A 192.0.2.66")}
		case name == "bad.example.test." && q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{rr(q.Name + " 300 IN A 192.0.2.66")}
		case name == "long.example.test." && q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{rr(q.Name + " 86400 IN A 192.0.2.3")}
		case name == "ttl0.example.test." && q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{rr(q.Name + " 0 IN A 192.0.2.4")}
		case name == "big.example.test." && q.Qtype == dns.TypeA:
			for i := range 60 {
				m.Answer = append(m.Answer, rr(fmt.Sprintf("%s 300 IN A 198.51.100.%d", q.Name, i+1)))
			}
		case name == "tc.example.test." && q.Qtype == dns.TypeA:
			if proto == "udp" {
				m.Truncated = true
			} else {
				m.Answer = []dns.RR{rr(q.Name + " 300 IN A 192.0.2.5")}
			}
		case name == "longneg.example.test.":
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{rr("example.test. 7200 IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 7200")}
		case name == "nosoa.example.test.":
			m.Rcode = dns.RcodeNameError
		case name == "nodata.example.test." && q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{rr(q.Name + " 300 IN A 192.0.2.6")}
		case name == "www.example.test." || name == "nodata.example.test.":
			m.Ns = []dns.RR{soa} // NODATA
		case strings.HasSuffix(name, ".rot.example.test.") && q.Qtype == dns.TypeA:
			// A new address for target.example.test on every query (an
			// attacker's name server), behind ever new CNAMEs.
			n := z.total.Load()
			m.Answer = []dns.RR{rr(q.Name + " 3600 IN CNAME target.example.test."),
				rr(fmt.Sprintf("target.example.test. 3600 IN A 10.%d.%d.%d", n>>16&255, n>>8&255, n&255))}
		case strings.HasSuffix(name, ".slow.example.test."):
			time.Sleep(300 * time.Millisecond)
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa}
		case strings.HasSuffix(name, ".any.example.test.") && q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{rr(fmt.Sprintf("%s 300 IN A 203.0.113.%d", q.Name, z.tag))}
		case strings.HasSuffix(name, ".example.test.") || name == "example.test.":
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa}
		default:
			m.Rcode = dns.RcodeRefused
		}
		m.Compress = true
		if proto == "udp" {
			size := dns.MinMsgSize
			if o := req.IsEdns0(); o != nil {
				size = int(o.UDPSize())
			}
			m.Truncate(size)
		}
		w.WriteMsg(m)
	}
}

// fakeClock is a settable clock for cache and table expiry.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// records collects log records.
type records struct {
	mu sync.Mutex
	rs []telemetry.Record
}

func (r *records) log(rec telemetry.Record) {
	r.mu.Lock()
	r.rs = append(r.rs, rec)
	r.mu.Unlock()
}

func (r *records) last() telemetry.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.rs) == 0 {
		return telemetry.Record{}
	}
	return r.rs[len(r.rs)-1]
}

func (r *records) all() []telemetry.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]telemetry.Record(nil), r.rs...)
}

// harness is a proxy serving on loopback.
type harness struct {
	p    *Proxy
	addr string
	logs *records
}

type harnessOpt func(*Proxy)

// withClock sets the clock of the proxy and of its table (one time base:
// the table compares expiries the proxy computed).
func withClock(c *fakeClock) harnessOpt {
	return func(p *Proxy) { p.now = c.Now; p.table.now = c.Now }
}

func startProxy(t testing.TB, cfg Config, o Options, opts ...harnessOpt) *harness {
	t.Helper()
	h := &harness{logs: &records{}}
	if o.Log == nil {
		o.Log = h.logs.log
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	p, err := New(cfg, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, f := range opts {
		f(p)
	}
	l, err := Listen("127.0.0.1:0", 2)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Serve(ctx, l)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	h.p, h.addr = p, l.Addr().String()
	return h
}

// testWriter sends the proxy's operational log to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// ask sends one query and returns the answer.
func (h *harness) ask(t testing.TB, proto, name string, qtype uint16, edit ...func(*dns.Msg)) *dns.Msg {
	t.Helper()
	r, err := h.tryAsk(proto, name, qtype, edit...)
	if err != nil {
		t.Fatalf("%s %s %s: %v", proto, name, dns.TypeToString[qtype], err)
	}
	return r
}

func (h *harness) tryAsk(proto, name string, qtype uint16, edit ...func(*dns.Msg)) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	for _, e := range edit {
		e(m)
	}
	c := &dns.Client{Net: proto, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, h.addr)
	return r, err
}

func aRecords(m *dns.Msg) []string {
	var out []string
	for _, r := range m.Answer {
		switch v := r.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	return out
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// deadPort returns a loopback address where nothing answers over UDP (the
// proxy's upstream transport: queries get ICMP port unreachable). Its TCP
// twin is held open until release (or the test's end) so that no other
// socket takes the port before a test revives it.
func deadPort(t testing.TB) (addr string, release func()) {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil {
			ln.Close()
			continue
		}
		pc.Close()
		var once sync.Once
		release = func() { once.Do(func() { ln.Close() }) }
		t.Cleanup(release)
		return ln.Addr().String(), release
	}
	t.Fatal("no free port")
	return "", nil
}

// eventually polls cond for up to d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

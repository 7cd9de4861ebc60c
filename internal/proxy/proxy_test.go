package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// setup starts a TLS upstream "good" on 127.0.0.1, a TLS upstream
// "attacker" on 127.0.0.2 (same port when free), an HTTP upstream on
// 127.0.0.1, and the policy for their ports.
type fixture struct {
	good, attacker, web *upstream
	res                 *countingResolver
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{}
	f.good = startUpstream(t, "good", "127.0.0.1:0", true)
	port := f.good.addr.Port()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2:%d: %v", port, err)
	}
	f.attacker = serveUpstream(t, "attacker", ln, true)
	f.web = startUpstream(t, "web", "127.0.0.1:0", false)
	f.res = &countingResolver{known: StaticResolver{
		"ok.test":     {netip.MustParseAddr("127.0.0.1")},
		"www.ok.test": {netip.MustParseAddr("127.0.0.1")},
		"bad.test":    {netip.MustParseAddr("127.0.0.1")},
	}}
	return f
}

func (f *fixture) config(t *testing.T, dst netip.AddrPort) Config {
	return Config{
		Matcher:     testPolicy(t, f.good.addr.Port(), f.web.addr.Port()),
		Resolver:    f.res,
		OriginalDst: fixedDst(dst),
	}
}

func TestTLSDecisions(t *testing.T) {
	f := newFixture(t)
	port := f.good.addr.Port()
	good := f.good.addr
	tests := []struct {
		name      string
		dst       netip.AddrPort
		sni       string
		spoof     SpoofPolicy
		wantBody  string // "" when the handshake must fail
		wantErr   string
		action    string
		reason    string
		rule      string
		category  string
		resolved  string
		attackers int64 // connections the attacker server may see
	}{
		{name: "allowed name passes end to end", dst: good, sni: "ok.test", wantBody: "good host=ok.test",
			action: "Allow", reason: "rule matched", rule: "app/allowset/ok", resolved: "127.0.0.1"},
		{name: "wildcard rule", dst: good, sni: "www.ok.test", wantBody: "good host=www.ok.test",
			action: "Allow", rule: "app/allowset/ok", resolved: "127.0.0.1"},
		{name: "deny rule", dst: good, sni: "bad.test", wantErr: "access denied",
			action: "Deny", reason: "rule matched", rule: "app/denyset/bad"},
		{name: "no rule matched", dst: good, sni: "other.test", wantErr: "access denied",
			action: "Deny", reason: "no rule matched"},
		{name: "no SNI and no network rule", dst: good, sni: "127.0.0.1", wantErr: "access denied",
			action: "Deny", reason: ReasonNoSNI},
		{name: "no SNI allowed by a network rule", dst: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), port), sni: "127.0.0.3",
			wantBody: "host=127.0.0.3", action: "Allow", rule: "net/netallow/direct", category: telemetry.CategoryNetworkRule, resolved: "127.0.0.3"},
		{name: "spoofed SNI is refused", dst: f.attacker.addr, sni: "ok.test", wantErr: "unrecognized name",
			action: "Deny", reason: "destination 127.0.0.2 is not an address of ok.test (spoofed SNI/Host?)", rule: "app/allowset/ok"},
		{name: "spoofed SNI is rerouted", dst: f.attacker.addr, sni: "ok.test", spoof: SpoofReroute, wantBody: "good host=ok.test",
			action: "Allow", reason: "destination 127.0.0.2 is not an address of ok.test (spoofed SNI/Host?); rerouted to 127.0.0.1", rule: "app/allowset/ok", resolved: "127.0.0.1"},
	}
	if f.good.addr.Port() == 0 {
		t.Fatal("no port")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.dst.Addr() == netip.MustParseAddr("127.0.0.3") {
				startAt(t, "direct", tt.dst, true)
			}
			cfg := f.config(t, tt.dst)
			cfg.Spoof = tt.spoof
			e := startProxy(t, cfg)
			before := f.attacker.accepted.Load()
			body, err := tlsGet(t, e.addr, tt.sni)
			switch {
			case tt.wantBody != "":
				if err != nil {
					t.Fatalf("request failed: %v\nlog:\n%s", err, e.sink.dump())
				}
				if !strings.Contains(body, tt.wantBody) {
					t.Errorf("body %q, want %q", body, tt.wantBody)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			}
			if n := f.attacker.accepted.Load() - before; n != tt.attackers {
				t.Errorf("the attacker's server saw %d connections", n)
			}
			rec := e.sink.wait(t, "for the connection", func(r telemetry.Record) bool { return r.Protocol == "HTTPS" })
			checkRecord(t, rec, tt.action, tt.reason, tt.rule)
			wantCat := tt.category
			if wantCat == "" {
				wantCat = telemetry.CategoryApplicationRule
			}
			wantFqdn := tt.sni
			if _, err := netip.ParseAddr(tt.sni); err == nil {
				wantFqdn = "" // Go sends no SNI for an address
			}
			if rec.Category != wantCat || rec.Fqdn != wantFqdn || rec.DestinationPort != int(port) || rec.SourceIp != "127.0.0.1" ||
				rec.OriginalDestinationIp != tt.dst.Addr().String() || rec.ResolvedDestinationIp != tt.resolved || rec.Policy != "test-policy" {
				t.Errorf("record %+v", rec)
			}
			if len(e.sink.all()) != 1 {
				t.Errorf("%d records, want 1:\n%s", len(e.sink.all()), e.sink.dump())
			}
		})
	}
}

// startAt serves an upstream named name on addr.
func startAt(t *testing.T, name string, addr netip.AddrPort, tlsOn bool) *upstream {
	ln, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	return serveUpstream(t, name, ln, tlsOn)
}

func checkRecord(t *testing.T, r telemetry.Record, action, reason, rule string) {
	t.Helper()
	if r.Action != action {
		t.Errorf("Action = %q, want %q (%+v)", r.Action, action, r)
	}
	if reason != "" && r.ActionReason != reason {
		t.Errorf("ActionReason = %q, want %q", r.ActionReason, reason)
	}
	got := ""
	if r.Rule != "" {
		got = r.RuleCollectionGroup + "/" + r.RuleCollection + "/" + r.Rule
	}
	if got != rule {
		t.Errorf("rule = %q, want %q", got, rule)
	}
	if r.Source != "proxy" || r.Time.IsZero() {
		t.Errorf("record %+v", r)
	}
}

// TestResolverFreshLookup: a destination the DNS proxy did not hand out is
// accepted when a fresh lookup returns it (CDNs, geo-DNS), and the lookup
// happens only then.
func TestResolverFreshLookup(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.good.addr)
	res := &countingResolver{known: StaticResolver{}, fresh: StaticResolver{"ok.test": {netip.MustParseAddr("127.0.0.1")}}}
	cfg.Resolver = res
	e := startProxy(t, cfg)
	if _, err := tlsGet(t, e.addr, "ok.test"); err != nil {
		t.Fatal(err)
	}
	if res.lookups.Load() != 1 {
		t.Errorf("%d lookups, want 1", res.lookups.Load())
	}
	// Known answers need no lookup.
	res.known = StaticResolver{"ok.test": {netip.MustParseAddr("127.0.0.1")}}
	e2 := startProxy(t, Config{Matcher: cfg.Matcher, Resolver: res, OriginalDst: cfg.OriginalDst})
	if _, err := tlsGet(t, e2.addr, "ok.test"); err != nil {
		t.Fatal(err)
	}
	if res.lookups.Load() != 1 {
		t.Errorf("%d lookups after a known answer, want still 1", res.lookups.Load())
	}
	// A name that does not resolve cannot be verified.
	res2 := &countingResolver{known: StaticResolver{}}
	e3 := startProxy(t, Config{Matcher: cfg.Matcher, Resolver: res2, OriginalDst: cfg.OriginalDst})
	if _, err := tlsGet(t, e3.addr, "ok.test"); err == nil || !strings.Contains(err.Error(), "unrecognized name") {
		t.Fatalf("err = %v", err)
	}
	r := e3.sink.wait(t, "deny", func(r telemetry.Record) bool { return r.Action == "Deny" })
	if !strings.HasPrefix(r.ActionReason, "cannot verify destination 127.0.0.1 for ok.test") {
		t.Errorf("reason %q", r.ActionReason)
	}
}

func TestHTTPDecisions(t *testing.T) {
	f := newFixture(t)
	web := f.web.addr
	hp := web.Port()
	tests := []struct {
		name     string
		dst      netip.AddrPort
		req      string
		status   int
		body     string // part of the body
		action   string
		reason   string
		rule     string
		upstream bool
	}{
		{name: "allowed", dst: web, req: "GET /x HTTP/1.1\r\nHost: ok.test\r\n\r\n", status: 200,
			body: "web host=ok.test close=true uri=/x", action: "Allow", rule: "app/allowset/ok", upstream: true},
		{name: "allowed with the right port", dst: web, req: fmt.Sprintf("GET / HTTP/1.1\r\nHost: ok.test:%d\r\nConnection: keep-alive\r\n\r\n", hp), status: 200,
			body: "close=true", action: "Allow", rule: "app/allowset/ok", upstream: true},
		{name: "denied by rule gets 403 naming it", dst: web, req: "GET / HTTP/1.1\r\nHost: bad.test\r\n\r\n", status: 403,
			body: "Action: Deny. Reason: rule matched.\nRule Collection Group: app. Rule Collection: denyset. Rule: bad.", action: "Deny", reason: "rule matched", rule: "app/denyset/bad"},
		{name: "no rule matched", dst: web, req: "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n", status: 403,
			body: "Action: Deny. Reason: no rule matched.\nRule: none.", action: "Deny", reason: "no rule matched"},
		{name: "Host port differs from TCP port", dst: web, req: "GET / HTTP/1.1\r\nHost: ok.test:1\r\n\r\n", status: 403,
			body: fmt.Sprintf("Host port 1 differs from the destination port %d", hp), action: "Deny", reason: fmt.Sprintf("Host port 1 differs from the destination port %d", hp)},
		{name: "missing Host", dst: web, req: "GET / HTTP/1.0\r\n\r\n", status: 403,
			body: ReasonNoHost, action: "Deny", reason: ReasonNoHost},
		{name: "IP literal Host equal to the destination", dst: web, req: "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", status: 200,
			body: "web host=127.0.0.1", action: "Allow", rule: "app/allowset/ok", upstream: true},
		{name: "IP literal Host for another address", dst: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), hp), req: "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", status: 403,
			body: "IP literal", action: "Deny", reason: "Host is the IP literal 127.0.0.1 but the destination is 127.0.0.2 (spoofed SNI/Host?)", rule: "app/allowset/ok"},
		{name: "spoofed Host", dst: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), hp), req: "GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n", status: 403,
			body: "spoofed", action: "Deny", reason: "destination 127.0.0.2 is not an address of ok.test (spoofed SNI/Host?)", rule: "app/allowset/ok"},
		{name: "malformed request", dst: web, req: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: 400,
			body: "more than one Host", action: "Deny", reason: "bad HTTP request: more than one Host header field"},
		{name: "CONNECT on the transparent port", dst: web, req: "CONNECT ok.test:443 HTTP/1.1\r\n\r\n", status: 405,
			body: "explicit proxy port", action: "Deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := startProxy(t, f.config(t, tt.dst))
			resp, body, err := rawHTTP(t, e.addr, tt.req)
			if err != nil {
				t.Fatalf("%v\nlog:\n%s", err, e.sink.dump())
			}
			if resp.StatusCode != tt.status || !strings.Contains(body, tt.body) {
				t.Errorf("got %d %q, want %d containing %q", resp.StatusCode, body, tt.status, tt.body)
			}
			rec := e.sink.wait(t, "decision", func(r telemetry.Record) bool { return r.Protocol == "HTTP" })
			checkRecord(t, rec, tt.action, tt.reason, tt.rule)
			if (rec.ResolvedDestinationIp != "") != tt.upstream {
				t.Errorf("ResolvedDestinationIp = %q", rec.ResolvedDestinationIp)
			}
		})
	}
}

// TestHTTPKeepAliveOption: with HTTPKeepAlive the request goes upstream
// byte for byte.
func TestHTTPKeepAliveOption(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.web.addr)
	cfg.HTTPKeepAlive = true
	e := startProxy(t, cfg)
	_, body, err := rawHTTP(t, e.addr, "GET /k HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n")
	if err != nil || !strings.Contains(body, "close=true") {
		t.Fatalf("%v %q", err, body)
	}
	resp, err := keepAliveTwice(e.addr)
	if err != nil || !strings.Contains(resp, "close=false") {
		t.Fatalf("%v %q", err, resp)
	}
}

// keepAliveTwice sends two requests on one connection and returns the
// second response's body.
func keepAliveTwice(addr string) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	var body []byte
	for i := 0; i < 2; i++ {
		fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: ok.test\r\n\r\n", i)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return "", err
		}
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return "", err
		}
	}
	return string(body), nil
}

func TestExplicitProxy(t *testing.T) {
	f := newFixture(t)
	e := startProxy(t, f.config(t, netip.AddrPort{}))
	proxyURL, _ := url.Parse("http://" + e.explicit)
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:           http.ProxyURL(proxyURL),
			TLSClientConfig: &tls.Config{RootCAs: getPKI(t).pool},
		},
	}
	get := func(u string) (int, string, error) {
		resp, err := client.Get(u)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	tp, hp := f.good.addr.Port(), f.web.addr.Port()

	t.Run("CONNECT allowed", func(t *testing.T) {
		code, body, err := get(fmt.Sprintf("https://ok.test:%d/c", tp))
		if err != nil || code != 200 || !strings.Contains(body, "good host=ok.test") {
			t.Fatalf("%d %q %v", code, body, err)
		}
		r := e.sink.wait(t, "CONNECT allow", func(r telemetry.Record) bool { return r.Protocol == "HTTPS" && r.Action == "Allow" })
		checkRecord(t, r, "Allow", "rule matched", "app/allowset/ok")
		if r.ResolvedDestinationIp != "127.0.0.1" || r.OriginalDestinationIp != "" || r.Fqdn != "ok.test" || r.DestinationPort != int(tp) {
			t.Errorf("record %+v", r)
		}
	})
	t.Run("CONNECT denied", func(t *testing.T) {
		_, _, err := get(fmt.Sprintf("https://bad.test:%d/", tp))
		if err == nil || !strings.Contains(err.Error(), "Forbidden") {
			t.Fatalf("err = %v", err)
		}
		e.sink.wait(t, "CONNECT deny", func(r telemetry.Record) bool { return r.Fqdn == "bad.test" && r.Rule == "bad" && r.Action == "Deny" })
	})
	t.Run("CONNECT with another SNI inside", func(t *testing.T) {
		c, err := net.Dial("tcp", e.explicit)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "CONNECT ok.test:%d HTTP/1.1\r\nHost: ok.test:%d\r\n\r\n", tp, tp)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %v %v", resp, err)
		}
		tc := tls.Client(c, &tls.Config{ServerName: "other.test", RootCAs: getPKI(t).pool})
		if err := tc.Handshake(); err == nil || !strings.Contains(err.Error(), "access denied") {
			t.Fatalf("handshake err = %v", err)
		}
		r := e.sink.wait(t, "SNI mismatch", func(r telemetry.Record) bool { return strings.Contains(r.ActionReason, "does not match") })
		if r.ActionReason != "SNI other.test does not match the CONNECT host ok.test" || r.Action != "Deny" {
			t.Errorf("record %+v", r)
		}
	})
	t.Run("absolute URI allowed, then another host on the same client", func(t *testing.T) {
		code, body, err := get(fmt.Sprintf("http://ok.test:%d/abs?x=1", hp))
		if err != nil || code != 200 || !strings.Contains(body, "web host=ok.test") || !strings.Contains(body, "uri=/abs?x=1") || !strings.Contains(body, "close=true") {
			t.Fatalf("%d %q %v", code, body, err)
		}
		code, body, err = get(fmt.Sprintf("http://bad.test:%d/", hp))
		if err != nil || code != 403 || !strings.Contains(body, "Rule: bad.") {
			t.Fatalf("%d %q %v", code, body, err)
		}
	})
	t.Run("origin-form request is refused", func(t *testing.T) {
		resp, body, err := rawHTTP(t, e.explicit, "GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n")
		if err != nil || resp.StatusCode != 400 || !strings.Contains(body, "this is a proxy") {
			t.Fatalf("%v %q %v", resp, body, err)
		}
	})
	t.Run("unresolvable name", func(t *testing.T) {
		resp, _, err := rawHTTP(t, e.explicit, fmt.Sprintf("GET http://nx.ok.test:%d/ HTTP/1.1\r\n\r\n", hp))
		if err != nil || resp.StatusCode != 502 {
			t.Fatalf("%v %v", resp, err)
		}
		e.sink.wait(t, "resolve failure", func(r telemetry.Record) bool {
			return r.Fqdn == "nx.ok.test" && strings.HasPrefix(r.ActionReason, "cannot resolve nx.ok.test")
		})
	})
}

// TestConnectionLimits: the per-source limit refuses the next connection
// from the same address while other sources are served; the global limit
// refuses everyone.
func TestConnectionLimits(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.good.addr)
	cfg.MaxConnsPerSource = 2
	cfg.HelloTimeout = 10 * time.Second
	e := startProxy(t, cfg)
	var idle []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	waitFor(t, "2 active", func() bool { return e.p.Stats().Active == 2 })
	// The proxy resets the connection at once: the dial itself may
	// already see the reset.
	if c, err := net.Dial("tcp", e.addr); err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("third connection from the same source: read %d, %v; want closed", n, err)
		}
		c.Close()
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("third connection: %v", err)
	}
	r := e.sink.wait(t, "limit", func(r telemetry.Record) bool { return r.ActionReason == "per-source connection limit reached" })
	if r.SourceIp != "127.0.0.1" || r.Action != "Deny" {
		t.Errorf("%+v", r)
	}
	// Another source is served.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}
	oc, err := d.Dial("tcp", e.addr)
	if err != nil {
		t.Skipf("cannot bind 127.0.0.5: %v", err)
	}
	tc := tls.Client(oc, &tls.Config{ServerName: "ok.test", RootCAs: getPKI(t).pool})
	oc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("other source: %v", err)
	}
	tc.Close()
	// Closing one idle connection frees a slot.
	idle[0].Close()
	waitFor(t, "slot freed", func() bool { return e.p.Stats().Active <= 1 })
	if _, err := tlsGet(t, e.addr, "ok.test"); err != nil {
		t.Fatalf("after a slot was freed: %v", err)
	}
	if e.p.Stats().Limited != 1 {
		t.Errorf("Limited = %d", e.p.Stats().Limited)
	}

	t.Run("global", func(t *testing.T) {
		cfg := f.config(t, f.good.addr)
		cfg.MaxConns = 1
		e := startProxy(t, cfg)
		c1, _ := net.Dial("tcp", e.addr)
		defer c1.Close()
		waitFor(t, "1 active", func() bool { return e.p.Stats().Active == 1 })
		if _, err := tlsGet(t, e.addr, "ok.test"); err == nil {
			t.Fatal("second connection passed the global limit")
		}
		e.sink.wait(t, "global limit", func(r telemetry.Record) bool { return r.ActionReason == "global connection limit reached" })
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSlowClientTimeout: a client trickling its ClientHello is cut at the
// hello timeout while other clients are served meanwhile.
func TestSlowClientTimeout(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.good.addr)
	cfg.HelloTimeout = 400 * time.Millisecond
	e := startProxy(t, cfg)
	hello := realHello(t, &tls.Config{ServerName: "ok.test"})

	slow, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	start := time.Now()
	slowDone := make(chan time.Duration, 1)
	go func() {
		for i := 0; i < len(hello); i++ {
			if _, err := slow.Write(hello[i : i+1]); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	go func() {
		slow.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, slow)
		slowDone <- time.Since(start)
	}()
	// Others are served while the slow one hangs on.
	for i := 0; i < 5; i++ {
		if _, err := tlsGet(t, e.addr, "ok.test"); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	took := <-slowDone
	if took < 350*time.Millisecond || took > 3*time.Second {
		t.Errorf("slow client closed after %v, want about 400ms", took)
	}
	r := e.sink.wait(t, "timeout", func(r telemetry.Record) bool {
		return strings.HasPrefix(r.ActionReason, "timed out reading the TLS ClientHello")
	})
	if r.Action != "Deny" || r.Protocol != "HTTPS" {
		t.Errorf("%+v", r)
	}
}

// TestMatcherSwap: SetMatcher changes the next decision; a connection
// already spliced is not affected.
func TestMatcherSwap(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.web.addr)
	cfg.HTTPKeepAlive = true
	e := startProxy(t, cfg)
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	roundTrip := func(i int) error {
		fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: ok.test\r\n\r\n", i)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return err
	}
	if err := roundTrip(1); err != nil {
		t.Fatal(err)
	}
	e.p.SetMatcher(compile(t, "name: deny-all\nruleCollectionGroups: []\n"))
	if err := roundTrip(2); err != nil {
		t.Fatalf("established connection after the swap: %v", err)
	}
	resp, body, err := rawHTTP(t, e.addr, "GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n")
	if err != nil || resp.StatusCode != 403 || !strings.Contains(body, "no rule matched") {
		t.Fatalf("new connection after the swap: %v %q %v", resp, body, err)
	}
	r := e.sink.wait(t, "deny-all decision", func(r telemetry.Record) bool { return r.Policy == "deny-all" })
	if r.Action != "Deny" {
		t.Errorf("%+v", r)
	}
}

// TestIdleTimeout: a spliced connection that moves nothing is closed; one
// that keeps trickling (every 100 ms) stays open. The timeout is 6 trickles
// long: with 3 (300 ms) a machine at load 11 once stalled the trickle long
// enough to close the busy one too ("IdleClosed = 2").
func TestIdleTimeout(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	dst, _ := addrPortOf(echo.Addr())
	m := testPolicy(t, 1, dst.Port())
	e := startProxy(t, Config{Matcher: m, Resolver: StaticResolver{"ok.test": {netip.MustParseAddr("127.0.0.1")}},
		OriginalDst: fixedDst(dst), IdleTimeout: 600 * time.Millisecond, HTTPKeepAlive: true})
	open := func() net.Conn {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n")
		buf := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf[:10]); err != nil {
			t.Fatalf("echo: %v", err)
		}
		return c
	}
	quiet, busy := open(), open()
	defer quiet.Close()
	defer busy.Close()
	start := time.Now()
	stop := make(chan struct{})
	busyErr := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		for {
			select {
			case <-stop:
				busyErr <- nil
				return
			case <-time.After(100 * time.Millisecond):
			}
			busy.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := busy.Write([]byte{'x'}); err != nil {
				busyErr <- err
				return
			}
			if _, err := io.ReadFull(busy, b); err != nil {
				busyErr <- err
				return
			}
		}
	}()
	quiet.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, quiet)
	took := time.Since(start)
	if err != nil || took < 550*time.Millisecond || took > 3*time.Second {
		t.Errorf("quiet connection ended after %v (%v), want about 600ms", took, err)
	}
	time.Sleep(800 * time.Millisecond)
	close(stop)
	if err := <-busyErr; err != nil {
		t.Errorf("busy connection broke: %v", err)
	}
	if n := e.p.Stats().IdleClosed; n != 1 {
		t.Errorf("IdleClosed = %d, want 1", n)
	}
}

// TestHalfClose: the client finishes its upload with a FIN and still gets
// the answer the server sends after reading to EOF.
func TestHalfClose(t *testing.T) {
	// Sizes: data and FIN in one segment, one copy buffer and a bit, and
	// enough to be spliced.
	for _, size := range []int{0, 10, 20 << 10, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { testHalfClose(t, size) })
	}
}

func testHalfClose(t *testing.T, size int) {
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		c, err := srv.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "read %d bytes", n)
	}()
	dst, _ := addrPortOf(srv.Addr())
	e := startProxy(t, Config{Matcher: testPolicy(t, 1, dst.Port()), Resolver: StaticResolver{"ok.test": {netip.MustParseAddr("127.0.0.1")}},
		OriginalDst: fixedDst(dst), HTTPKeepAlive: true})
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	head := "PUT / HTTP/1.1\r\nHost: ok.test\r\n\r\n"
	payload := strings.Repeat("z", size)
	io.WriteString(c, head+payload)
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if want := fmt.Sprintf("read %d bytes", len(head)+len(payload)); err != nil || string(got) != want {
		t.Fatalf("got %q (%v), want %q", got, err, want)
	}
}

// TestServerSpeaksFirst: an upstream that writes and closes as soon as it
// accepts (its bytes and FIN may come with the connect's completion).
func TestServerSpeaksFirst(t *testing.T) {
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nbanner")
			c.Close()
		}
	}()
	dst, _ := addrPortOf(srv.Addr())
	e := startProxy(t, Config{Matcher: testPolicy(t, 1, dst.Port()), Resolver: StaticResolver{"ok.test": {netip.MustParseAddr("127.0.0.1")}},
		OriginalDst: fixedDst(dst)})
	for i := range 20 {
		resp, body, err := rawHTTP(t, e.addr, "GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n")
		if err != nil || resp.StatusCode != 200 || body != "banner" {
			t.Fatalf("connection %d: %v %q (%v)", i, resp, body, err)
		}
	}
}

// TestHostileClients: 200 hostile connections (garbage, oversized and
// endless ClientHellos and headers, silence) at once. Others are served
// meanwhile, every hostile connection is closed, and the heap stays
// bounded by the per-connection buffer.
func TestHostileClients(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.good.addr)
	cfg.HelloTimeout = 2 * time.Second
	cfg.MaxConnsPerSource = 1000
	e := startProxy(t, cfg)
	// Warm up pools and code paths before measuring.
	if _, err := tlsGet(t, e.addr, "ok.test"); err != nil {
		t.Fatal(err)
	}
	before := heapInUse()

	hello := realHello(t, &tls.Config{ServerName: "ok.test"})
	kinds := []func(c net.Conn){
		func(c net.Conn) { // garbage
			c.Write([]byte{0x17, 0x03, 0x03, 0xff, 0xff, 1, 2, 3})
			io.Copy(c, &limitedRepeat{n: 1 << 20})
		},
		func(c net.Conn) { // a ClientHello claiming 16 MiB
			c.Write([]byte{22, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff})
			io.Copy(c, &limitedRepeat{n: 1 << 20})
		},
		func(c net.Conn) { // endless tiny records
			c.Write([]byte{22, 3, 1, 0, 4, 1, 0, 0x3f, 0xff})
			for i := 0; i < 20000; i++ {
				if _, err := c.Write([]byte{22, 3, 1, 0, 1, 0xaa}); err != nil {
					return
				}
			}
		},
		func(c net.Conn) { // never-ending header
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: ok.test\r\nX: ")
			io.Copy(c, &limitedRepeat{n: 1 << 20, b: 'a'})
		},
		func(c net.Conn) { // half a ClientHello, then silence
			c.Write(hello[:len(hello)/2])
			time.Sleep(3 * time.Second)
		},
		func(c net.Conn) { // silence
			time.Sleep(3 * time.Second)
		},
	}
	const hostile = 200
	var wg sync.WaitGroup
	conns := make(chan net.Conn, hostile)
	for i := 0; i < hostile; i++ {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns <- c
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			kinds[i%len(kinds)](c)
		}(i, c)
	}
	close(conns)
	// Peak: every hostile connection is open and has sent what it sends.
	time.Sleep(500 * time.Millisecond)
	waitFor(t, "hostile connections admitted", func() bool { return e.p.Stats().Accepted >= hostile+1 })
	peak := heapInUse()
	for i := 0; i < 3; i++ {
		if _, err := tlsGet(t, e.addr, "ok.test"); err != nil {
			t.Fatalf("good client during the attack: %v", err)
		}
	}
	// Each connection may hold one peek buffer plus small state; 200
	// connections reading 1 MiB each unbounded would be 200 MiB.
	perConn := int64(maxPeek(DefaultMaxClientHello)) + 16<<10
	if grew := peak - before; grew > hostile*perConn {
		t.Errorf("heap grew %d KiB with %d hostile connections, more than %d KiB", grew>>10, hostile, hostile*perConn>>10)
	}
	t.Logf("heap in use: before %d KiB, at peak %d KiB (+%d KiB for %d hostile connections)", before>>10, peak>>10, (peak-before)>>10, hostile)
	waitFor(t, "hostile connections closed", func() bool { return e.p.Stats().Active == 0 })
	wg.Wait()
	for c := range conns {
		c.Close()
	}
	deny := 0
	for _, r := range e.sink.all() {
		if r.Action == "Deny" {
			deny++
		}
	}
	if deny != hostile {
		t.Errorf("%d deny records, want %d", deny, hostile)
	}
}

// heapInUse is the live heap and the goroutine stacks after a GC.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

type limitedRepeat struct {
	n int
	b byte
}

func (r *limitedRepeat) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = r.b + byte(i%7)
	}
	r.n -= k
	return k, nil
}

// TestClose: Close ends active connections and Serve returns.
func TestClose(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.good.addr)
	cfg.Log = func(telemetry.Record) {}
	p := New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "active", func() bool { return p.Stats().Active == 1 })
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := <-served; err != ErrClosed {
		t.Errorf("Serve returned %v", err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("connection still open after Close: %v", err)
	}
	if err := p.Serve(ln); err != ErrClosed {
		t.Errorf("Serve after Close: %v", err)
	}
}

package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/recovery"
)

// panicResolver panics for two names: on the event loop (Addrs) and on
// the goroutine of a fresh lookup (LookupNetIP).
type panicResolver struct{ StaticResolver }

func (r panicResolver) Addrs(name string) []netip.Addr {
	if name == "boom.ok.test" {
		var m map[string]int
		m[name]++ // a real runtime panic
	}
	return r.StaticResolver.Addrs(name)
}

func (r panicResolver) LookupNetIP(ctx context.Context, name string) ([]netip.Addr, error) {
	if name == "late.ok.test" {
		panic("lookup bug")
	}
	return r.StaticResolver.LookupNetIP(ctx, name)
}

// TestConnectionPanicRecovered: a panic while deciding one connection —
// on the event loop, and on a fresh lookup's goroutine — closes that
// connection, is logged and counted, and the proxy goes on: a connection
// relayed by the same loop before the panics finishes its request, and new
// ones are served. Without the recovery the first panic killed the
// process (the test binary).
func TestConnectionPanicRecovered(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.good.addr)
	cfg.Resolver = panicResolver{StaticResolver{"ok.test": {netip.MustParseAddr("127.0.0.1")}}}
	e := startProxy(t, cfg)
	before := recovery.Count(recovery.Proxy)

	// A connection in the relay state before the panics.
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	early := tls.Client(c, &tls.Config{ServerName: "ok.test", RootCAs: getPKI(t).pool})
	if err := early.Handshake(); err != nil {
		t.Fatal(err)
	}

	for _, sni := range []string{"boom.ok.test", "late.ok.test"} {
		t0 := time.Now()
		body, err := tlsGet(t, e.addr, sni)
		if time.Since(t0) > 2*time.Second {
			t.Errorf("%s: the client waited %v (want the connection reset at once)", sni, time.Since(t0))
		}
		if err == nil {
			t.Errorf("%s: served %q despite the panic", sni, body)
		}
		if body, err := tlsGet(t, e.addr, "ok.test"); err != nil || !strings.Contains(body, "good") {
			t.Errorf("after the %s panic: %q, %v", sni, body, err)
		}
	}
	fmt.Fprintf(early, "GET / HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(early), nil)
	if err != nil {
		t.Fatalf("the connection relayed before the panics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "good") {
		t.Errorf("early connection: %q", body)
	}
	if got := recovery.Count(recovery.Proxy) - before; got != 2 || e.p.Stats().Panics != 2 {
		t.Errorf("recovered %d panics (stats %d), want 2", got, e.p.Stats().Panics)
	}
	early.Close()
	waitFor(t, "connections released", func() bool { return e.p.Stats().Active == 0 })
}

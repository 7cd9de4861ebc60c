package proxy

import (
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// TestUpstreamUnreachable: an allowed connection whose upstream refuses
// gets a TLS internal_error alert or an HTTP 502 naming the address, and
// the proxy forgets it (no connection left counted).
func TestUpstreamUnreachable(t *testing.T) {
	f := newFixture(t)
	closedTLS := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), f.good.addr.Port())
	closedWeb := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), f.web.addr.Port())

	e := startProxy(t, f.config(t, closedTLS))
	_, err := tlsGet(t, e.addr, "127.0.0.3")
	if err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("TLS to a closed port: err = %v, want a TLS internal_error alert", err)
	}
	e.sink.wait(t, "allow line", func(r telemetry.Record) bool {
		return r.Action == "Allow" && r.ResolvedDestinationIp == "127.0.0.3" && r.Category == telemetry.CategoryNetworkRule
	})

	e2 := startProxy(t, f.config(t, closedWeb))
	resp, body, err := rawHTTP(t, e2.addr, fmt.Sprintf("GET / HTTP/1.1\r\nHost: 127.0.0.3:%d\r\n\r\n", closedWeb.Port()))
	if err != nil {
		t.Fatalf("HTTP to a closed port: %v", err)
	}
	if resp.StatusCode != 502 || !strings.Contains(body, "cannot connect to "+closedWeb.String()) {
		t.Fatalf("HTTP to a closed port: %d %q, want 502 naming %s", resp.StatusCode, body, closedWeb)
	}
	for _, p := range []*Proxy{e.p, e2.p} {
		waitFor(t, "no active connection", func() bool { return p.Stats().Active == 0 })
	}
}

// TestServeNeedsTCPListener: transparent mode reads the original
// destination from the kernel socket; another listener is refused.
func TestServeNeedsTCPListener(t *testing.T) {
	ln, err := Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := New(Config{})
	defer p.Close()
	var n atomic.Int64
	err = p.Serve(countingListener{ln, &n})
	if err == nil || !strings.Contains(err.Error(), "needs a TCP listener") {
		t.Fatalf("Serve(wrapped listener) = %v, want an error naming the TCP listener", err)
	}
}

package e2e

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// TestAntiSpoofing: the daemon turns on the reverse path filter of the
// cluster-facing interface itself (in the firewall's namespace), so a pod
// that sends from an address that is not the cluster's is dropped before
// any rule — no decision line under the claimed address — while real
// sources are decided and logged as before. Turned off by hand (what the
// daemon found before it set it), the same spoofed flow is decided and
// logged under the claimed address, and /readyz says so.
func TestAntiSpoofing(t *testing.T) {
	f := newFWLab(t, streamPolicyWith(0, false))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rp := func() string {
		out, err := f.Exec(ctx, lab.HostFW, "cat", "/proc/sys/net/ipv4/conf/"+lab.FWInside+"/rp_filter")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := rp(); got != "1" {
		t.Fatalf("rp_filter of %s in fw = %s, want 1 (strict), set by the daemon", lab.FWInside, got)
	}
	spoofed := netip.MustParseAddr("10.99.0.5")
	if out, err := f.Exec(ctx, lab.HostNode, "ip", "addr", "add", spoofed.String()+"/32", "dev", "eth0"); err != nil {
		t.Fatalf("ip addr add in node: %v %s", err, out)
	}
	dst := netip.MustParseAddr("198.18.10.5")
	send := func(src netip.Addr, port uint16) {
		c, err := f.dial(lab.HostNode, src, "tcp", netip.AddrPortFrom(dst, port), 300*time.Millisecond)
		if err == nil {
			c.Close()
		}
	}
	real := flowKey{src: netip.MustParseAddr("10.42.1.10"), dst: dst, port: 9101, proto: "TCP"}
	spoof := flowKey{src: spoofed, dst: dst, port: 9102, proto: "TCP"}
	send(spoofed, 9102)
	send(real.src, 9101)
	got := f.waitDecisions(t, []flowKey{real, spoof}, 3*time.Second)
	if _, ok := got[real]; !ok {
		t.Fatalf("no decision line for the real source %s", real)
	}
	if r, ok := got[spoof]; ok {
		t.Fatalf("a spoofed source was decided and logged under %s: %+v", spoofed, r)
	}
	if code, body, err := f.Admin(ctx, http.MethodGet, "/readyz"); err != nil || code != 200 {
		t.Fatalf("readyz with anti-spoofing on: %d %s %v", code, body, err)
	}

	// Off (as the daemon found it): the spoofed source is logged as if it
	// were real, and readiness says what is wrong.
	if out, err := f.Exec(ctx, lab.HostFW, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter; echo 0 > /proc/sys/net/ipv4/conf/"+lab.FWInside+"/rp_filter"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	spoof2 := flowKey{src: spoofed, dst: dst, port: 9103, proto: "TCP"}
	send(spoofed, 9103)
	if _, ok := f.waitDecisions(t, []flowKey{spoof2}, 3*time.Second)[spoof2]; !ok {
		t.Fatalf("without the filter the spoofed flow was not decided either: the test proves nothing")
	}
	code, body, err := f.Admin(ctx, http.MethodGet, "/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(string(body), "anti-spoofing") {
		t.Fatalf("readyz with the filter off: %d %s %v", code, body, err)
	}
}

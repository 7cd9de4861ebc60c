package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// TestFairConnectionLimits is the regression test for issue 17's "the L7
// proxy's global connection limit can be filled from 40 addresses with
// idle connections; every other client is then reset": eight addresses in
// eight /24s hold every slot with idle connections (no ClientHello); a
// client from another address still gets its TLS request through, and an
// attacker's connection is the one reset. Before fair limits the newcomer
// was refused ("global connection limit reached").
func TestFairConnectionLimits(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.good.addr)
	cfg.MaxConns = 64
	cfg.MaxConnsPerSource = 32
	cfg.HelloTimeout = time.Minute
	e := startProxy(t, cfg)
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := range 8 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte(10+i), 1)}}
		for range 8 {
			c, err := d.Dial("tcp", e.addr)
			if err != nil {
				t.Fatalf("attacker %d: %v", i, err)
			}
			idle = append(idle, c)
		}
	}
	waitFor(t, "64 active", func() bool { return e.p.Stats().Active == 64 })
	// Another client: served.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 99, 1)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, &tls.Config{ServerName: "ok.test", RootCAs: getPKI(t).pool})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("a client outside the attackers' networks at the global limit: %v (stats %+v)", err, e.p.Stats())
	}
	// Exactly one attacker connection was shed (reset), with a line.
	e.sink.wait(t, "shed line", func(r telemetry.Record) bool { return r.ActionReason == reasonShed })
	waitFor(t, "the shed connection closed", func() bool { return e.p.Stats().Active == 64 })
	reset := 0
	for _, ic := range idle {
		ic.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := ic.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			reset++
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("shed connection: %v, want a reset", err)
			}
		}
	}
	if st := e.p.Stats(); reset != 1 || st.Shed != 1 || st.RefusedGlobal != 0 {
		t.Errorf("%d attacker connections reset, stats %+v; want 1 shed", reset, st)
	}
	// An attacker opening more is refused: it is the heaviest.
	ad := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 10, 1)}}
	if ac, err := ad.Dial("tcp", e.addr); err == nil {
		ac.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := ac.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("an attacker's new connection at the limit was kept")
		}
		ac.Close()
	}
}

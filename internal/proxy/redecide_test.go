package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// echoUpstream serves TCP echo on 127.0.0.1 until the test ends.
func echoUpstream(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	a, _ := addrPortOf(ln.Addr())
	return a
}

// echoed writes msg on c and reads it back.
func echoed(c net.Conn, r io.Reader, msg string) error {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(r, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echoed %q, sent %q", buf, msg)
	}
	return nil
}

// TestRedecide: Redecide with the same policy keeps every open connection
// (transparent and explicit); with a policy that no longer allows their
// name it closes them at once, logs each with telemetry.ReasonPolicyChanged, counts
// them, and a connection that had not sent its request yet is decided with
// the new policy.
func TestRedecide(t *testing.T) {
	dst := echoUpstream(t)
	pol := func() string {
		return fmt.Sprintf(`
name: %%s
ruleCollectionGroups:
  - name: app
    priority: 300
    ruleCollections:
      - name: allowset
        kind: Application
        priority: 200
        action: Allow
        rules:
          - name: other
            protocols: ['Http:%[1]d']
            sourceAddresses: ['*']
            targetFqdns: [other.test]
%%s`, dst.Port())
	}()
	okRule := fmt.Sprintf(`          - name: ok
            protocols: ['Http:%d']
            sourceAddresses: ['*']
            targetFqdns: [ok.test]
`, dst.Port())
	withOK := compile(t, fmt.Sprintf(pol, "with-ok", okRule))
	e := startProxy(t, Config{Matcher: withOK, Resolver: StaticResolver{"ok.test": {dst.Addr()}},
		OriginalDst: fixedDst(dst), HTTPKeepAlive: true})

	// A transparent connection: its head is relayed as is (keep-alive),
	// then the echo server returns whatever the client sends.
	head := "GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n"
	tc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if err := echoed(tc, tc, head); err != nil {
		t.Fatalf("transparent: %v", err)
	}
	// An explicit absolute-URI request: forwarded in origin form.
	xc, err := net.Dial("tcp", e.explicit)
	if err != nil {
		t.Fatal(err)
	}
	defer xc.Close()
	xc.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(xc, "GET http://ok.test:%d/x HTTP/1.1\r\nHost: ok.test:%d\r\n\r\n", dst.Port(), dst.Port())
	xr := bufio.NewReader(xc)
	line, err := xr.ReadString('\n')
	if err != nil || line != "GET /x HTTP/1.1\r\n" {
		t.Fatalf("explicit: %q %v", line, err)
	}
	for {
		l, err := xr.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	if err := echoed(xc, xr, "after the head"); err != nil {
		t.Fatalf("explicit: %v", err)
	}
	// A connection that has not sent its request yet.
	waiting, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	time.Sleep(50 * time.Millisecond) // accepted by a loop

	// The same policy, compiled again (a no-op reload): nothing is cut.
	if n := e.p.Redecide(compile(t, fmt.Sprintf(pol, "with-ok", okRule))); n != 0 {
		t.Fatalf("Redecide(same policy) closed %d connections", n)
	}
	if err := echoed(tc, tc, "still here"); err != nil {
		t.Fatalf("transparent after a no-op Redecide: %v", err)
	}
	if err := echoed(xc, xr, "still here"); err != nil {
		t.Fatalf("explicit after a no-op Redecide: %v", err)
	}

	// A policy without ok.test: both relayed connections are closed.
	if n := e.p.Redecide(compile(t, fmt.Sprintf(pol, "without-ok", ""))); n != 2 {
		t.Fatalf("Redecide(without ok.test) closed %d connections, want 2", n)
	}
	for name, c := range map[string]net.Conn{"transparent": tc, "explicit": xc} {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("%s connection still open after its rule was removed (read %d, %v)", name, n, err)
		}
	}
	cuts := 0
	for _, r := range e.sink.all() {
		if strings.HasPrefix(r.ActionReason, telemetry.ReasonPolicyChanged) {
			cuts++
			if r.Action != "Deny" || r.Fqdn != "ok.test" || r.Policy != "without-ok" || !strings.HasSuffix(r.ActionReason, "no rule matched") {
				t.Errorf("cut record %+v", r)
			}
		}
	}
	if cuts != 2 {
		t.Errorf("%d records of cut connections, want 2:\n%s", cuts, e.sink.dump())
	}
	if st := e.p.Stats(); st.Cut != 2 {
		t.Errorf("Stats.Cut = %d, want 2", st.Cut)
	}
	// The waiting connection is decided with the new policy.
	waiting.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(waiting, head)
	resp, err := http.ReadResponse(bufio.NewReader(waiting), nil)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("waiting connection: %v %v, want 403", resp, err)
	}
	e.sink.wait(t, "the waiting connection's deny", func(r telemetry.Record) bool {
		return r.Policy == "without-ok" && r.Action == "Deny" && r.ActionReason == "no rule matched"
	})
}

// TestRecheckUnverifiedDestination: a connection a network rule allowed
// (dialled as addressed, never checked against its name) that the new
// policy allows only by an application rule stays only if the resolver
// knows its destination for the name.
func TestRecheckUnverifiedDestination(t *testing.T) {
	m := compile(t, `
name: p
ruleCollectionGroups:
  - name: app
    priority: 300
    ruleCollections:
      - name: allowset
        kind: Application
        priority: 200
        action: Allow
        rules:
          - name: ok
            protocols: ['Https:443']
            sourceAddresses: ['*']
            targetFqdns: [ok.test]
`)
	known, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	p := New(Config{Matcher: m, Resolver: StaticResolver{"ok.test": {known}}})
	defer p.Close()
	req := &request{src: netip.MustParseAddrPort("10.0.0.1:5000"), port: 443, name: "ok.test", scheme: policy.SchemeHTTPS}
	for _, c := range []struct {
		dst      netip.Addr
		verified bool
		keep     bool
	}{
		{known, false, true},
		{other, false, false},
		{other, true, true}, // verified when it was made (e.g. a fresh lookup)
	} {
		d, keep := p.recheck(m, req, c.dst, c.verified)
		if keep != c.keep {
			t.Errorf("recheck(%s, verified %v) = %v (%s), want %v", c.dst, c.verified, keep, d.Reason, c.keep)
		}
	}
}

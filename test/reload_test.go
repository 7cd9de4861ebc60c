package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// streamPolicyWith returns streamPolicy with the toggle rule on port
// 20000+n and, when cut is true, the rule that allows port 9100.
func streamPolicyWith(n int, cut bool) string {
	p := strings.Replace(streamPolicy, "TOGGLE", strconv.Itoa(20000+n), 1)
	keep := ""
	if cut {
		keep = streamCutRule
	}
	return strings.Replace(p, "KEEP", keep, 1)
}

var (
	nonazure4 = lab.MustLookup(lab.NameNonAzure).V4
	nonazure6 = lab.MustLookup(lab.NameNonAzure).V6
	ghcr4     = lab.MustLookup(lab.NameGHCR).V4
	ghcr6     = lab.MustLookup(lab.NameGHCR).V6
	example4  = lab.MustLookup(lab.NameExample).V4
	example6  = lab.MustLookup(lab.NameExample).V6
)

// TestReloadAtomicity reloads the policy about 20 times — rewriting the
// file, SIGHUP and POST /v1/reload in turn — while flows run that every
// generation allows or denies alike:
//   - two established TCP connections (v4 and v6, through SNAT) exchange
//     data continuously: no error, and no TCP retransmission at either end
//     (a dropped packet would cause one);
//   - new connections are opened in a loop (v4 and v6): every one connects
//     at once (a dropped SYN costs a 1 s retransmission);
//   - new connections to a denied address never get through.
func TestReloadAtomicity(t *testing.T) {
	t.Parallel()
	f := newFWLab(t, streamPolicyWith(0, false))
	keep4, keep6 := ap(nonazure4, 9101), ap(nonazure6, 9101)
	f.echoServer(t, keep4)
	f.echoServer(t, keep6)
	streams := []*echoConn{f.echoDial(t, lab.HostNode, keep4), f.echoDial(t, lab.HostNode, keep6)}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	var exchanges, newConns, deniedTries atomic.Int64
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := s.roundTrip(1024, 2*time.Second); err != nil {
					problem("established %s: %v", s.RemoteAddr(), err)
					return
				}
				exchanges.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	for _, dst := range []netip.AddrPort{ap(ghcr4, 80), ap(ghcr6, 80)} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				start := time.Now()
				c, err := f.dial(lab.HostNode, netip.Addr{}, "tcp", dst, 3*time.Second)
				if err != nil {
					problem("new connection to %s: %v", dst, err)
					continue
				}
				c.Close()
				if d := time.Since(start); d > 900*time.Millisecond { // a dropped SYN costs 1 s (the initial RTO)
					problem("new connection to %s took %s (a SYN was dropped)", dst, d.Round(time.Millisecond))
				}
				newConns.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	for _, dst := range []netip.AddrPort{ap(example4, 80), ap(example6, 80), ap(example4, 80), ap(example6, 80), ap(example4, 80), ap(example6, 80)} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := f.dial(lab.HostNode, netip.Addr{}, "tcp", dst, 100*time.Millisecond)
				if err == nil {
					c.Close()
					problem("denied %s got through", dst)
				}
				deniedTries.Add(1)
			}
		}()
	}

	const reloads = 21
	took := f.reloads(t, reloads, func(i int) (reloadHow, string) {
		return []reloadHow{reloadFile, reloadSIGHUP, reloadAPI}[i%3], streamPolicyWith(i, false)
	}, 30*time.Millisecond)
	gen := f.status(t).Generation
	time.Sleep(200 * time.Millisecond)
	stop()
	wg.Wait()

	for _, p := range problems {
		t.Error(p)
	}
	for _, s := range streams {
		if n, err := retransmits(s.Conn); err != nil || n != 0 {
			t.Errorf("established %s: %d TCP retransmissions (%v), want 0", s.RemoteAddr(), n, err)
		}
	}
	t.Logf("%d reloads in %s (generation %d): %d round trips on the established connections, %d new connections, %d denied attempts",
		reloads, took.Round(time.Millisecond), gen, exchanges.Load(), newConns.Load(), deniedTries.Load())
	if exchanges.Load() < reloads || newConns.Load() < reloads || deniedTries.Load() < reloads {
		t.Errorf("too few flows ran during the reloads to mean anything")
	}
}

// TestReloadCutsDeniedConnections: after a reload that removes the rule
// allowing an established connection, the connection is cut (its
// conntrack entry deleted; the next packets are new flows, and denied),
// while a connection the new policy still allows survives.
func TestReloadCutsDeniedConnections(t *testing.T) {
	t.Parallel()
	f := newFWLab(t, streamPolicyWith(0, true))
	for _, a := range []netip.AddrPort{ap(nonazure4, 9100), ap(nonazure6, 9100), ap(nonazure4, 9101), ap(nonazure6, 9101)} {
		f.echoServer(t, a)
	}
	cut := []*echoConn{f.echoDial(t, lab.HostNode, ap(nonazure4, 9100)), f.echoDial(t, lab.HostNode, ap(nonazure6, 9100))}
	kept := []*echoConn{f.echoDial(t, lab.HostNode, ap(nonazure4, 9101)), f.echoDial(t, lab.HostNode, ap(nonazure6, 9101))}
	st0 := f.status(t)

	f.writePolicy(t, streamPolicyWith(1, false))
	st := f.waitStatus(t, "the reload", 5*time.Second, func(s daemonStatus) bool { return s.LastReloadAt.After(st0.LastReloadAt) })
	if st.LastReload != "ok" || st.Generation != st0.Generation+1 {
		t.Fatalf("reload: %q", st.LastReload)
	}
	if got := st.ConnsCut - st0.ConnsCut; got < 2 {
		t.Errorf("connectionsCut grew by %d, want at least 2 (the v4 and v6 connections to 9100)", got)
	}
	for _, c := range cut {
		if err := c.roundTrip(64, 1500*time.Millisecond); err == nil {
			t.Errorf("connection to %s still works after its rule was removed", c.RemoteAddr())
		} else {
			t.Logf("connection to %s cut: %v", c.RemoteAddr(), err)
		}
	}
	for _, c := range kept {
		if err := c.roundTrip(64, 2*time.Second); err != nil {
			t.Errorf("connection to %s (still allowed) broke: %v", c.RemoteAddr(), err)
		}
	}
	// New connections to 9100 are denied now.
	for _, dst := range []netip.AddrPort{ap(nonazure4, 9100), ap(nonazure6, 9100)} {
		if c, err := f.dial(lab.HostNode, netip.Addr{}, "tcp", dst, denyWait); err == nil {
			c.Close()
			t.Errorf("new connection to %s got through after its rule was removed", dst)
		}
	}
}

// TestBadPolicyRejected: an invalid policy — written to the file (the
// watcher reloads), then asked for with POST /v1/reload and SIGHUP — is
// rejected with FILE:LINE:COL errors in the daemon's log, in the admin
// API's answer and in /v1/status; the running policy stays in force. A
// valid policy is then accepted again.
func TestBadPolicyRejected(t *testing.T) {
	t.Parallel()
	f := newFWLab(t, streamPolicyWith(0, false))
	st0 := f.status(t)

	// Line 15 of the policy: destinationPorts of the rule "web". The port
	// is out of range; the column points at it.
	bad := strings.Replace(streamPolicyWith(0, false), "destinationPorts: ['80']", "destinationPorts: ['99999']", 1)
	lines := strings.Split(bad, "\n")
	line, col := 0, 0
	for i, l := range lines {
		if j := strings.Index(l, "99999"); j >= 0 {
			line, col = i+1, j+1
		}
	}
	wantPos := regexp.MustCompile(regexp.QuoteMeta(f.policy) + `:` + strconv.Itoa(line) + `:\d+`)
	f.writePolicy(t, bad)
	st := f.waitStatus(t, "the watcher's reload to be rejected", 5*time.Second, func(s daemonStatus) bool { return s.LastReload != "ok" && s.LastReload != "" })
	if !wantPos.MatchString(st.LastReload) || !strings.Contains(st.LastReload, "99999") {
		t.Errorf("/v1/status lastReload = %q, want an error at %s:%d:%d (column of the bad port %d)", st.LastReload, f.policy, line, col, col)
	}
	if st.Generation != st0.Generation {
		t.Errorf("generation %d after a rejected policy, want %d", st.Generation, st0.Generation)
	}

	code, body, err := f.Admin(context.Background(), http.MethodPost, "/v1/reload")
	if err != nil || code != http.StatusUnprocessableEntity || !wantPos.Match(body) {
		t.Errorf("POST /v1/reload = %d %v %s, want 422 with %s:%d:COL", code, err, body, f.policy, line)
	}
	if err := f.Signal(lab.DaemonProc, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The daemon's log names the position (once per attempt: watcher, API, SIGHUP).
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(f.LogFile(lab.DaemonProc))
		n := len(wantPos.FindAll(data, -1))
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("daemon.log has %d errors at %s:%d:COL, want 3:\n%s", n, f.policy, line, data)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The running policy still applies: ghcr.io:80 allowed, example.org denied.
	for _, c := range []flowCase{
		{name: "still allowed", host: lab.HostNode, proto: "TCP", dst: ap(ghcr4, 80), want: passed, line: "ghcr.io"},
		{name: "still allowed v6", host: lab.HostNode, proto: "TCP", dst: ap(ghcr6, 80), want: passed, line: "ghcr.io"},
		{name: "still denied", host: lab.HostNode, proto: "TCP", dst: ap(example4, 80), want: timedOut},
	} {
		c.run(t, f)
	}
	if st := f.status(t); st.Generation != st0.Generation {
		t.Errorf("generation %d, want %d", st.Generation, st0.Generation)
	}

	// A valid policy is accepted again.
	f.writePolicy(t, streamPolicyWith(1, false))
	st = f.waitStatus(t, "the good policy", 5*time.Second, func(s daemonStatus) bool { return s.LastReload == "ok" })
	if st.Generation != st0.Generation+1 {
		t.Errorf("generation %d after a valid policy, want %d", st.Generation, st0.Generation+1)
	}
}

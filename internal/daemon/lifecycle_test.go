package daemon

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// daemonGoroutines lists the goroutines running code of the daemon's
// packages (not this test's).
func daemonGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "lifecycle_test.go") || strings.Contains(g, "testing.tRunner") && !strings.Contains(g, "clusterwall/internal/daemon.(*") {
			continue
		}
		for _, pkg := range []string{"internal/daemon.", "internal/dnsproxy.", "internal/proxy.", "internal/threatintel."} {
			if strings.Contains(g, "clusterwall/"+pkg) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// waitNoDaemonGoroutines fails the test when goroutines of the daemon's
// packages still run: at once for one that is blocked (waiting for I/O, a
// channel, a lock: it has not been joined), after grace for one that is
// runnable (it may have signalled its end and be past its last line).
func waitNoDaemonGoroutines(t *testing.T, what string, grace time.Duration) {
	t.Helper()
	deadline := time.Now().Add(grace)
	for first := true; ; first = false {
		left := daemonGoroutines()
		if len(left) == 0 {
			return
		}
		var blocked []string
		for _, g := range left {
			if !strings.Contains(strings.SplitN(g, "\n", 2)[0], "[runnable") {
				blocked = append(blocked, g)
			}
		}
		if first && grace < time.Second && len(blocked) > 0 {
			t.Fatalf("%s: %d goroutines of the daemon are still blocked:\n%s", what, len(blocked), strings.Join(blocked, "\n\n"))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d goroutines of the daemon still run:\n%s", what, len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRunJoinsEveryGoroutine: Run with the DNS proxy, the L7 proxy (and
// its explicit listener) and threat intelligence started returns only
// after every goroutine it started has ended.
func TestRunJoinsEveryGoroutine(t *testing.T) {
	waitNoDaemonGoroutines(t, "before the test", 2*time.Second)
	// An upstream that never answers: a refresh of the FQDN rule's name
	// waits for its timeout unless the daemon's context ends it.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	dir := t.TempDir()
	conf := writeDaemonConfig(t, dir, "dns:\n  listen: "+freePort(t)+"\n  upstreams: ['"+silent.LocalAddr().String()+"']\nproxy:\n  listen: "+freePort(t)+"\n  explicit: "+freePort(t)+"\n")
	withFQDN := testPolicy + `          - name: named
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationFqdns: [api.example.com]
            destinationPorts: ['443']
`
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(withFQDN), 0o644); err != nil {
		t.Fatal(err)
	}
	d := loadTestDaemon(t, conf, &fakeDataplane{}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(d.notReady()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", d.notReady())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d.proxy == nil || d.dns == nil {
		t.Fatal("the proxies did not start")
	}
	// An apply while running: the DNS refresh it asks for runs on the
	// daemon's own refresher, not on a goroutine of its own.
	if err := d.Reload("test"); err != nil {
		t.Fatal(err)
	}
	cancel()
	stopAt := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		t.Logf("Run returned %s after its context ended", time.Since(stopAt).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	// Run has returned: nothing may be left (a short grace only for
	// goroutines that have signalled their end and are past their last
	// line).
	waitNoDaemonGoroutines(t, "after Run returned", 100*time.Millisecond)
}

// TestStartFailsWithTheReason: a DNS proxy or L7 proxy that cannot start
// (its address is taken) fails Start with the component and the reason,
// and whatever had started is stopped again.
func TestStartFailsWithTheReason(t *testing.T) {
	for _, c := range []struct {
		name, want string
		extra      func(taken string) string
	}{
		{"DNS proxy", "DNS proxy on", func(taken string) string {
			return "dns:\n  listen: " + taken + "\n  upstreams: ['127.0.0.1:9']\nproxy:\n  listen: off\n"
		}},
		{"L7 proxy", "L7 proxy on", func(taken string) string {
			return "dns:\n  listen: off\nproxy:\n  listen: " + taken + "\n"
		}},
		{"explicit proxy", "explicit listener", func(taken string) string {
			return "dns:\n  listen: " + freePort(t) + "\n  upstreams: ['127.0.0.1:9']\nproxy:\n  listen: " + freePort(t) + "\n  explicit: " + taken + "\n"
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			taken := ln.Addr().String()
			d := loadTestDaemon(t, writeDaemonConfig(t, t.TempDir(), c.extra(taken)), &fakeDataplane{}, nil, nil)
			err = d.Start(context.Background())
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "address already in use") {
				t.Fatalf("Start = %v, want %q and the reason", err, c.want)
			}
			waitNoDaemonGoroutines(t, "after the failed Start", 100*time.Millisecond)
		})
	}
}

// TestComponentFailureMakesNotReady: a component that stops serving after
// it started is a readiness problem naming it and the error.
func TestComponentFailureMakesNotReady(t *testing.T) {
	conf := writeDaemonConfig(t, t.TempDir(), "dns:\n  listen: off\nproxy:\n  listen: off\n")
	d := loadTestDaemon(t, conf, &fakeDataplane{}, nil, nil)
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	if p := d.notReady(); len(p) != 0 {
		t.Fatalf("not ready: %v", p)
	}
	d.componentFailed("L7 proxy", errTest("epoll_wait: bad file descriptor"))
	p := d.notReady()
	if len(p) != 1 || p[0] != "L7 proxy stopped serving: epoll_wait: bad file descriptor" {
		t.Fatalf("problems %q", p)
	}
	if r := d.statusReport(); r.Ready {
		t.Errorf("status reports ready: %+v", r)
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }

// TestComponentsHealth: /v1/status's components name every part with its
// state — the proxies up with their addresses, what is not configured off —
// and a component that stopped serving is down with the reason.
func TestComponentsHealth(t *testing.T) {
	dns, l7, explicit := freePort(t), freePort(t), freePort(t)
	conf := writeDaemonConfig(t, t.TempDir(), "dns:\n  listen: "+dns+"\n  upstreams: ['127.0.0.1:9']\nproxy:\n  listen: "+l7+"\n  explicit: "+explicit+"\n")
	d := loadTestDaemon(t, conf, &fakeDataplane{}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); d.shutdown() }()
	state := func() map[string]ComponentHealth {
		out := map[string]ComponentHealth{}
		for _, c := range d.statusReport().Components {
			out[c.Name] = c
		}
		return out
	}
	got := state()
	for name, want := range map[string]string{
		"data plane": "up", "kernel decision log": "off", "DNS proxy": "up", "L7 proxy": "up", "explicit proxy": "up", "WAF": "off",
	} {
		if c := got[name]; c.State != want {
			t.Errorf("%s: %+v, want state %s", name, c, want)
		}
	}
	if c := got["DNS proxy"]; !strings.Contains(c.Detail, "listening on "+dns) || !strings.Contains(c.Detail, "upstreams 1/1 healthy") {
		t.Errorf("DNS proxy detail %q", c.Detail)
	}
	if c := got["L7 proxy"]; !strings.Contains(c.Detail, "listening on "+l7) {
		t.Errorf("L7 proxy detail %q", c.Detail)
	}
	d.componentFailed("L7 proxy", errTest("accept: too many open files"))
	if c := state()["L7 proxy"]; c.State != "down" || c.Detail != "stopped serving: accept: too many open files" {
		t.Errorf("after a failure: %+v", c)
	}
}

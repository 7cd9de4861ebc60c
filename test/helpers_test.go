package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

var (
	// exe is the clusterwall binary TestMain built (the lab's servers and
	// the daemon); buildErr is why there is none.
	exe      string
	buildErr error
	repoRoot string
	// raceBuild: the tests run under the race detector (race_test.go), and
	// so does the daemon they start.
	raceBuild bool
)

func TestMain(m *testing.M) {
	lab.ServeIfAsked()
	os.Exit(func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "clusterwall-e2e-")
			if err != nil {
				buildErr = err
			} else {
				defer os.RemoveAll(dir)
				exe, buildErr = build(dir)
			}
		}
		code := m.Run()
		if shared.close() && code == 0 {
			code = 1
		}
		return code
	}())
}

// build builds cmd/clusterwall into dir and notes the repository's root
// (for examples/).
func build(dir string) (string, error) {
	var flags []string
	if raceBuild {
		flags = append(flags, "-race")
	}
	bin, err := lab.BuildBinaryTo(dir, flags...)
	if err != nil {
		return "", err
	}
	if raceBuild {
		// The daemon's races are found only if it has the detector.
		info, err := buildinfo.ReadFile(bin)
		if err != nil || !slices.Contains(info.Settings, debug.BuildSetting{Key: "-race", Value: "true"}) {
			return "", fmt.Errorf("the daemon binary is not built with -race (%v)", err)
		}
	}
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Dir(filepath.Dir(file))
	return bin, nil
}

// requireFW skips without root and fails when the binary did not build.
func requireFW(t *testing.T) {
	t.Helper()
	lab.RequireLab(t)
	if buildErr != nil {
		t.Fatalf("building clusterwall: %v", buildErr)
	}
	if exe == "" {
		t.Fatal("clusterwall binary not built")
	}
}

// fwLab is a lab whose firewall runs the real daemon with a test policy.
type fwLab struct {
	*lab.Lab
	dir    string // holds policy.yaml
	policy string
}

// policyText expands @TAGS@ (the example service tags file) in a policy.
func policyText(yaml string) string {
	return strings.ReplaceAll(yaml, "@TAGS@", filepath.Join(repoRoot, "examples", "service-tags.json"))
}

// newFWLab brings up a lab of the test's own, with the daemon enforcing
// policyYAML, and removes it when the test ends.
func newFWLab(t *testing.T, policyYAML string) *fwLab {
	t.Helper()
	requireFW(t)
	dir := t.TempDir()
	f := &fwLab{dir: dir, policy: filepath.Join(dir, "policy.yaml")}
	if err := os.WriteFile(f.policy, []byte(policyText(policyYAML)), 0o644); err != nil {
		t.Fatal(err)
	}
	f.up(t, &lab.DaemonOptions{Policy: f.policy}, "the daemon")
	return f
}

// up brings f's lab up with the daemon (options daemon; what names it in
// the log), waits until it forwards, and logs the daemon's log if the test
// fails.
func (f *fwLab) up(t *testing.T, daemon *lab.DaemonOptions, what string) {
	t.Helper()
	start := time.Now()
	f.Lab = lab.NewTestLab(t, lab.Config{Exe: exe, Daemon: daemon})
	if err := f.warmUp(); err != nil {
		t.Fatal(err)
	}
	t.Logf("lab %s up with %s in %s", f.Name(), what, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		data, _ := os.ReadFile(f.LogFile(lab.DaemonProc))
		if raced(data) {
			t.Errorf("the daemon reported a data race")
		}
		if t.Failed() {
			t.Logf("daemon.log:\n%s", data)
		}
	})
}

// raced reports whether a daemon log holds a race detector report.
func raced(log []byte) bool { return bytes.Contains(log, []byte("WARNING: DATA RACE")) }

// enableTokens writes tokens ("TOKEN NAME" lines) to f.dir/tokens and
// restarts the daemon with that file as its admin.tokenFile; it returns
// the file.
func (f *fwLab) enableTokens(t *testing.T, tokens string) string {
	t.Helper()
	file := filepath.Join(f.dir, "tokens")
	if err := os.WriteFile(file, []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(f.Dir(), lab.DaemonConfigFile)
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	listen := "admin:\n  listen: \"" + lab.DaemonAdmin + "\"\n"
	if !strings.Contains(string(data), listen) {
		t.Fatalf("daemon config without %q:\n%s", listen, data)
	}
	data = []byte(strings.Replace(string(data), listen, listen+"  tokenFile: \""+file+"\"\n", 1))
	if err := os.WriteFile(conf, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.Stop(lab.DaemonProc); err != nil {
		t.Fatal(err)
	}
	f.restartDaemon(t)
	return file
}

// sharedLab is one lab for the tests that do not change it (rules, DNAT,
// SNAT, decision log): made on first use, removed by TestMain.
type sharedLab struct {
	once sync.Once
	fw   *fwLab
	err  error
}

var shared sharedLab

func (s *sharedLab) get(t *testing.T) *fwLab {
	t.Helper()
	requireFW(t)
	s.once.Do(func() {
		dir, err := os.MkdirTemp("", "clusterwall-e2e-policy-")
		if err != nil {
			s.err = err
			return
		}
		f := &fwLab{dir: dir, policy: filepath.Join(dir, "policy.yaml")}
		if s.err = os.WriteFile(f.policy, []byte(policyText(kindsPolicy)), 0o644); s.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		f.Lab, s.err = lab.Up(ctx, lab.Config{Name: lab.UniqueName(), Exe: exe, Daemon: &lab.DaemonOptions{Policy: f.policy}})
		s.fw = f
		if s.err == nil {
			s.err = f.warmUp()
		}
	})
	if s.err != nil {
		t.Fatalf("shared lab: %v", s.err)
	}
	return s.fw
}

// close removes the shared lab; it reports whether its daemon reported a
// data race (printed, and failing the run).
func (s *sharedLab) close() (racy bool) {
	if s.fw == nil {
		return false
	}
	if s.fw.Lab != nil {
		if data, _ := os.ReadFile(s.fw.LogFile(lab.DaemonProc)); raced(data) {
			fmt.Fprintf(os.Stderr, "the shared lab's daemon reported a data race:\n%s\n", data)
			racy = true
		}
		if err := s.fw.Down(); err != nil {
			fmt.Fprintf(os.Stderr, "shared lab down: %v\n", err)
		}
	}
	os.RemoveAll(s.fw.dir)
	return racy
}

// warmUp waits until the daemon writes decision lines (the kernel hands
// log messages over in batches, and the lab's first flows may race the
// daemon's start): it sends denied SYNs (node → 192.0.2.99:1) until one
// is logged, so that a test's own flows are logged from the first.
func (f *fwLab) warmUp() error {
	key := flowKey{src: lab.NodeV4, dst: netip.MustParseAddr("192.0.2.99"), port: 1, proto: "TCP"}
	var from int
	if data, err := os.ReadFile(f.DecisionLog()); err == nil {
		from = len(data)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := f.dial(lab.HostNode, netip.Addr{}, "tcp", netip.AddrPortFrom(key.dst, 1), 100*time.Millisecond); err == nil {
			c.Close()
		}
		data, _ := os.ReadFile(f.DecisionLog())
		if len(data) < from {
			from = 0
		}
		for _, line := range bytes.Split(data[from:], []byte("\n")) {
			var r telemetry.Record
			if json.Unmarshal(line, &r) == nil && key.match(&r) {
				return nil
			}
		}
	}
	return fmt.Errorf("lab %s: no decision line for %s after 10 s", f.Name(), key)
}

// writePolicy replaces the policy file atomically (rename), which the
// daemon's watcher takes as a change.
func (f *fwLab) writePolicy(t *testing.T, yaml string) {
	t.Helper()
	tmp := filepath.Join(f.dir, ".policy.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(policyText(yaml)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f.policy); err != nil {
		t.Fatal(err)
	}
}

// daemonStatus is the part of GET /v1/status the tests read.
type daemonStatus struct {
	Generation uint64 `json:"generation"`
	PolicyName string `json:"policyName"`
	Rules      int    `json:"rules"`
	LastReload string `json:"lastReload"`
	// LastReloadAt changes when a reload has finished (after the
	// connections the new policy denies were cut); the new generation is
	// visible a little earlier.
	LastReloadAt time.Time `json:"lastReloadAt"`
	ConnsCut     uint64    `json:"connectionsCut"`
}

func (f *fwLab) status(t *testing.T) daemonStatus {
	t.Helper()
	code, body, err := f.Admin(context.Background(), http.MethodGet, "/v1/status")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /v1/status: %d %v %s", code, err, body)
	}
	var st daemonStatus
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("GET /v1/status: %v: %s", err, body)
	}
	return st
}

// waitStatus polls /v1/status until ok accepts it.
func (f *fwLab) waitStatus(t *testing.T, what string, timeout time.Duration, ok func(daemonStatus) bool) daemonStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := f.status(t)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon: %s not reached after %s; status %+v", what, timeout, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restartDaemon starts the daemon again (after a crash or Stop) and waits
// until it has applied the policy.
func (f *fwLab) restartDaemon(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := f.Start(ctx, lab.Proc{Name: lab.DaemonProc, Host: lab.HostFW,
		Args:  []string{"run", "--config", filepath.Join(f.Dir(), lab.DaemonConfigFile)},
		Ready: func(ctx context.Context, l *lab.Lab) error { return l.WaitDaemon(ctx, 20*time.Second) }})
	if err != nil {
		t.Fatalf("restart the daemon: %v", err)
	}
	if err := f.warmUp(); err != nil {
		t.Fatal(err)
	}
}

// exec runs the clusterwall binary in host.
func (f *fwLab) cw(t *testing.T, host string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := f.Exec(ctx, host, append([]string{exe}, args...)...)
	return string(out), err
}

// ---- flows ----

// outcome is what a client saw.
type outcome int

const (
	passed   outcome = iota + 1 // the server answered
	refused                     // a reset or an ICMP error came back at once
	timedOut                    // nothing came back
)

func (o outcome) String() string {
	return map[outcome]string{passed: "passed", refused: "refused", timedOut: "timed out"}[o]
}

// denyWait is how long a client waits before it calls a flow dropped.
const denyWait = time.Second

// dial opens a connection from host (from src, when valid) to dst.
func (f *fwLab) dial(host string, src netip.Addr, network string, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := f.Do(host, func() error {
		d := net.Dialer{Timeout: timeout}
		if src.IsValid() {
			switch network {
			case "tcp":
				d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
			case "udp":
				d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
			}
		}
		var err error
		c, err = d.Dial(network, dst.String())
		return err
	})
	return c, err
}

func classify(err error) outcome {
	var ne net.Error
	switch {
	case err == nil:
		return passed
	case errors.As(err, &ne) && ne.Timeout():
		return timedOut
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EACCES):
		return refused
	}
	return 0
}

// tcpLine connects and reads the first line the server writes (the lab's
// TCP 9000 servers write their name), or sends an HTTP request first when
// the port is 80 and returns the body's first line.
func (f *fwLab) tcpLine(host string, src netip.Addr, dst netip.AddrPort) (outcome, string, error) {
	c, err := f.dial(host, src, "tcp", dst, denyWait)
	if err != nil {
		if o := classify(err); o != 0 {
			return o, "", nil
		}
		return 0, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if dst.Port() == 80 {
		fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", dst.Addr())
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, "", fmt.Errorf("HTTP from %s: %w", dst, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return passed, strings.TrimSpace(string(body)), nil
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && line == "" {
		return 0, "", fmt.Errorf("read from %s: %w", dst, err)
	}
	return passed, strings.TrimSpace(line), nil
}

// udpEcho sends a datagram and waits for the echo.
func (f *fwLab) udpEcho(host string, src netip.Addr, dst netip.AddrPort) (outcome, error) {
	c, err := f.dial(host, src, "udp", dst, denyWait)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	msg := fmt.Sprintf("e2e %d\n", time.Now().UnixNano())
	c.SetDeadline(time.Now().Add(denyWait))
	if _, err := c.Write([]byte(msg)); err != nil {
		return 0, err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		if o := classify(err); o != 0 {
			return o, nil
		}
		return 0, err
	}
	if string(buf[:n]) != msg {
		return 0, fmt.Errorf("udp %s echoed %q, sent %q", dst, buf[:n], msg)
	}
	return passed, nil
}

// ping sends one ICMP echo request with ping(8) (from src when valid).
func (f *fwLab) ping(host string, src, dst netip.Addr) (outcome, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	argv := []string{"ping", "-n", "-c", "1", "-W", "1"}
	if src.IsValid() {
		argv = append(argv, "-I", src.String())
	}
	out, err := f.Exec(ctx, host, append(argv, dst.String())...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return passed, nil
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return timedOut, nil
	}
	return 0, fmt.Errorf("ping %s: %v: %s", dst, err, out)
}

// httpGet fetches http(s)://dst/ from host (from src when valid) and
// returns the body and the peer the server saw (X-Clusterwall-Peer).
func (f *fwLab) httpGet(host string, src netip.Addr, scheme string, dst netip.AddrPort) (body string, peer netip.AddrPort, err error) {
	pool, err := f.CAPool()
	if err != nil {
		return "", peer, err
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			return f.dial(host, src, "tcp", ap, denyWait)
		},
		DisableKeepAlives: true,
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(scheme + "://" + dst.String() + "/")
	if err != nil {
		return "", peer, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", peer, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", peer, fmt.Errorf("GET %s: %s", dst, resp.Status)
	}
	peer, _ = netip.ParseAddrPort(resp.Header.Get(lab.PeerHeader))
	return strings.TrimSpace(string(data)), peer, nil
}

// ---- decision log ----

func (f *fwLab) decisions(t *testing.T) []telemetry.Record {
	t.Helper()
	data, err := os.ReadFile(f.DecisionLog())
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []telemetry.Record
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r telemetry.Record
		if err := json.Unmarshal(line, &r); err != nil {
			continue // a line being written
		}
		out = append(out, r)
	}
	return out
}

// flowKey identifies a flow in the decision log.
type flowKey struct {
	src, dst netip.Addr
	port     int // 0 for ICMP
	proto    string
}

func (k flowKey) String() string {
	return fmt.Sprintf("%s %s → %s", k.proto, k.src, netip.AddrPortFrom(k.dst, uint16(k.port)))
}

func (k flowKey) match(r *telemetry.Record) bool {
	src, err1 := netip.ParseAddr(r.SourceIp)
	dst, err2 := netip.ParseAddr(r.DestinationIp)
	return err1 == nil && err2 == nil && src == k.src && dst == k.dst && r.Protocol == k.proto &&
		(k.port == 0 || r.DestinationPort == k.port)
}

// waitDecisions waits until the decision log has a line for every key
// (the kernel hands log messages over in batches, up to a second late)
// and returns the first line of each.
func (f *fwLab) waitDecisions(t *testing.T, keys []flowKey, timeout time.Duration) map[flowKey]telemetry.Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		found := map[flowKey]telemetry.Record{}
		for _, r := range f.decisions(t) {
			for _, k := range keys {
				if _, ok := found[k]; !ok && k.match(&r) {
					found[k] = r
				}
			}
		}
		if len(found) == len(keys) || time.Now().After(deadline) {
			return found
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- long-lived connections ----

// echoServer serves TCP echo on addr in inet until the test ends.
func (f *fwLab) echoServer(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	f.echoServerIn(t, lab.HostInet, addr)
}

// echoServerIn serves TCP echo on addr in host until the test ends.
func (f *fwLab) echoServerIn(t *testing.T, host string, addr netip.AddrPort) {
	t.Helper()
	s, err := f.EchoServer(host, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
}

// serveTCP listens on addr in host (wrapped by wrap, when set) and serves
// each connection with handle on a goroutine of its own, until the test
// ends; then the listener and every connection are closed.
func (f *fwLab) serveTCP(t *testing.T, host string, addr netip.AddrPort, handle func(net.Conn), wrap ...func(net.Listener) net.Listener) {
	t.Helper()
	var ln net.Listener
	err := f.Do(host, func() error {
		var err error
		ln, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		t.Fatalf("server on %s in %s: %v", addr, host, err)
	}
	for _, w := range wrap {
		ln = w(ln)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
}

// reloadHow is one way to make the daemon reload.
type reloadHow string

const (
	reloadFile   reloadHow = "file"            // the policy file rewritten (the watcher)
	reloadSIGHUP reloadHow = "SIGHUP"          // the same file, SIGHUP
	reloadAPI    reloadHow = "POST /v1/reload" // the same file, the admin API
)

// reloads makes the daemon reload n times, the i-th (from 1) the way how(i)
// says (with the policy text it returns for reloadFile), waits for each to
// finish with a new generation, and pauses between them. It returns the
// time the reloads took.
func (f *fwLab) reloads(t *testing.T, n int, how func(i int) (reloadHow, string), pause time.Duration) time.Duration {
	t.Helper()
	st0 := f.status(t)
	gen, at := st0.Generation, st0.LastReloadAt
	start := time.Now()
	for i := 1; i <= n; i++ {
		h, text := how(i)
		switch h {
		case reloadFile:
			f.writePolicy(t, text)
		case reloadSIGHUP:
			if err := f.Signal(lab.DaemonProc, syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		case reloadAPI:
			code, body, err := f.Admin(context.Background(), http.MethodPost, "/v1/reload")
			if err != nil || code != http.StatusOK {
				t.Fatalf("POST /v1/reload: %d %v %s", code, err, body)
			}
		}
		st := f.waitStatus(t, fmt.Sprintf("reload %d (%s)", i, h), 5*time.Second, func(s daemonStatus) bool { return s.LastReloadAt.After(at) })
		if st.LastReload != "ok" || st.Generation != gen+1 {
			t.Fatalf("reload %d (%s): lastReload %q, generation %d (was %d)", i, h, st.LastReload, st.Generation, gen)
		}
		gen, at = st.Generation, st.LastReloadAt
		time.Sleep(pause)
	}
	return time.Since(start)
}

// echoConn is a client connection to an echo server.
type echoConn struct {
	net.Conn
	buf []byte
}

func (f *fwLab) echoDial(t *testing.T, host string, dst netip.AddrPort) *echoConn {
	t.Helper()
	c, err := f.dial(host, netip.Addr{}, "tcp", dst, 2*time.Second)
	if err != nil {
		t.Fatalf("connect %s from %s: %v", dst, host, err)
	}
	t.Cleanup(func() { c.Close() })
	e := &echoConn{Conn: c, buf: make([]byte, 4096)}
	if err := e.roundTrip(64, 2*time.Second); err != nil {
		t.Fatalf("echo %s: %v", dst, err)
	}
	return e
}

// roundTrip writes n bytes and reads them back within timeout.
func (e *echoConn) roundTrip(n int, timeout time.Duration) error {
	msg := bytes.Repeat([]byte{byte(time.Now().UnixNano())}, n)
	e.SetDeadline(time.Now().Add(timeout))
	if _, err := e.Write(msg); err != nil {
		return err
	}
	got := e.buf[:n]
	if _, err := io.ReadFull(e, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo mismatch")
	}
	return nil
}

// retransmits returns the TCP retransmissions of the connection's socket
// (TCP_INFO): on the lab's lossless veths, any retransmission means a
// packet was dropped.
func retransmits(c net.Conn) (uint32, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, errors.New("not a syscall.Conn")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var info *unix.TCPInfo
	var ierr error
	err = raw.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err != nil {
		return 0, err
	}
	if ierr != nil {
		return 0, ierr
	}
	return info.Total_retrans, nil
}

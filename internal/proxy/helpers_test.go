package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// testPKI is a CA and one server certificate for the test names.
type testPKI struct {
	pool   *x509.CertPool
	server tls.Certificate
	caPEM  []byte
}

var (
	pkiOnce sync.Once
	pkiVal  *testPKI
)

// getPKI makes (once) a CA and a server certificate for ok.test,
// *.ok.test, bad.test, other.test and the loopback addresses the tests use.
func getPKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() {
		caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		now := time.Now()
		caTmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clusterwall test CA"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
		caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
		if err != nil {
			panic(err)
		}
		ca, _ := x509.ParseCertificate(caDER)
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "ok.test"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			DNSNames:    []string{"ok.test", "*.ok.test", "bad.test", "other.test"},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("127.0.0.2"), net.ParseIP("127.0.0.3"), net.ParseIP("::1"), net.ParseIP("10.77.2.2"), net.ParseIP("fd77:2::2")},
			KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			panic(err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		pkiVal = &testPKI{pool: pool, server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
			caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	})
	return pkiVal
}

// upstream is a test server: HTTPS or HTTP on a loopback address, answering
// "NAME host=HOST close=BOOL" so that tests see which server answered.
type upstream struct {
	name     string
	addr     netip.AddrPort
	accepted atomic.Int64
	srv      *http.Server
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startUpstream listens on addr ("127.0.0.1:0") and serves HTTP, over TLS
// when tlsOn.
func startUpstream(t testing.TB, name, addr string, tlsOn bool) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	return serveUpstream(t, name, ln, tlsOn)
}

func serveUpstream(t testing.TB, name string, ln net.Listener, tlsOn bool) *upstream {
	u := &upstream{name: name}
	u.addr, _ = addrPortOf(ln.Addr())
	var l net.Listener = countingListener{ln, &u.accepted}
	if tlsOn {
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{getPKI(t).server}})
	}
	u.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				n, _ := io.Copy(io.Discard, r.Body)
				fmt.Fprintf(w, "%s got %d bytes", name, n)
				return
			}
			fmt.Fprintf(w, "%s host=%s close=%v uri=%s", name, r.Host, r.Close, r.RequestURI)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go u.srv.Serve(l)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

// logSink collects decision records.
type logSink struct {
	mu   sync.Mutex
	recs []telemetry.Record
	cond chan struct{}
}

func newLogSink() *logSink { return &logSink{cond: make(chan struct{}, 1)} }

func (s *logSink) log(r telemetry.Record) {
	s.mu.Lock()
	s.recs = append(s.recs, r)
	s.mu.Unlock()
	select {
	case s.cond <- struct{}{}:
	default:
	}
}

func (s *logSink) all() []telemetry.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]telemetry.Record(nil), s.recs...)
}

// wait returns the first record matching pred, waiting up to 5 s.
func (s *logSink) wait(t testing.TB, what string, pred func(telemetry.Record) bool) telemetry.Record {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		for _, r := range s.all() {
			if pred(r) {
				return r
			}
		}
		select {
		case <-s.cond:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no log record %s; have:\n%s", what, s.dump())
		}
	}
}

func (s *logSink) dump() string {
	var b strings.Builder
	for _, r := range s.all() {
		fmt.Fprintf(&b, "  %+v\n", r)
	}
	return b.String()
}

// testPolicy is the policy of the loopback tests. tlsPort and httpPort are
// the upstream servers' ports (the proxy decides on the original
// destination port, which is theirs).
func testPolicy(t testing.TB, tlsPort, httpPort uint16) *match.Matcher {
	t.Helper()
	y := fmt.Sprintf(`
name: test-policy
ruleCollectionGroups:
  - name: net
    priority: 200
    ruleCollections:
      - name: netallow
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: direct
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [127.0.0.3]
            destinationPorts: ['%[1]d', '%[2]d']
  - name: app
    priority: 300
    ruleCollections:
      - name: denyset
        kind: Application
        priority: 100
        action: Deny
        rules:
          - name: bad
            protocols: ['Https:%[1]d', 'Http:%[2]d']
            sourceAddresses: ['*']
            targetFqdns: [bad.test]
      - name: allowset
        kind: Application
        priority: 200
        action: Allow
        rules:
          - name: ok
            protocols: ['Https:%[1]d', 'Http:%[2]d']
            sourceAddresses: ['*']
            targetFqdns: [ok.test, '*.ok.test', 127.0.0.1]
`, tlsPort, httpPort)
	return compile(t, y)
}

func compile(t testing.TB, y string) *match.Matcher {
	t.Helper()
	p, err := policy.Load("test.yaml", []byte(y), policy.Options{})
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	m, err := match.Compile(p, match.Options{})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return m
}

// countingResolver is a StaticResolver that counts fresh lookups; fresh,
// when set, answers lookups instead of the static table.
type countingResolver struct {
	known   StaticResolver
	fresh   StaticResolver
	lookups atomic.Int64
}

func (r *countingResolver) Addrs(name string) []netip.Addr { return r.known[name] }
func (r *countingResolver) LookupNetIP(ctx context.Context, name string) ([]netip.Addr, error) {
	r.lookups.Add(1)
	if r.fresh != nil {
		return r.fresh.LookupNetIP(ctx, name)
	}
	return r.known.LookupNetIP(ctx, name)
}

// env is a running proxy with its sink.
type env struct {
	p        *Proxy
	addr     string // transparent listener
	explicit string // explicit listener
	sink     *logSink
}

// fixedDst returns an OriginalDst function that always answers dst.
func fixedDst(dst netip.AddrPort) func(src, local netip.AddrPort) (netip.AddrPort, error) {
	return func(_, _ netip.AddrPort) (netip.AddrPort, error) { return dst, nil }
}

// startProxy starts a proxy with cfg (Log is set here) on loopback, with
// a transparent and an explicit listener.
func startProxy(t testing.TB, cfg Config) *env {
	t.Helper()
	e := &env{sink: newLogSink()}
	cfg.Log = e.sink.log
	e.p = New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	xln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr, e.explicit = ln.Addr().String(), xln.Addr().String()
	go e.p.Serve(ln)
	go e.p.ServeExplicit(xln)
	t.Cleanup(func() { e.p.Close() })
	return e
}

// tlsGet connects to the transparent proxy, does a TLS handshake for sni
// (verified against the test CA) and a GET, and returns the body.
func tlsGet(t testing.TB, proxyAddr, sni string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, &tls.Config{ServerName: sni, RootCAs: getPKI(t).pool})
	if err := tc.Handshake(); err != nil {
		return "", err
	}
	host := sni
	if host == "" {
		host = "noname"
	}
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// rawHTTP sends a raw request to addr and returns the response.
func rawHTTP(t testing.TB, addr, req string) (*http.Response, string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// startChildProxy runs the test named child of this binary (a proxy in a
// process of its own, so that its CPU and I/O can be read apart) with the
// extra environment env, and returns the address it prints as "LISTEN
// addr". stop closes its standard input (the child's signal to end) and
// waits for it.
func startChildProxy(tb testing.TB, child string, env ...string) (cmd *exec.Cmd, addr string, stop func()) {
	tb.Helper()
	cmd = exec.Command(os.Args[0], "-test.run=^"+child+"$", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	stdout, _ := cmd.StdoutPipe()
	stdin, _ := cmd.StdinPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	stop = func() { stdin.Close(); cmd.Wait() }
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "LISTEN "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		stop()
		tb.Fatal("child did not start")
	}
	go io.Copy(io.Discard, stdout)
	return cmd, addr, stop
}

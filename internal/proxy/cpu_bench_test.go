package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// benchListen makes the child's listener (cpu_listen_test.go sets it to
// the proxy's own Listen).
var benchListen = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// BenchmarkProxyConnCPU measures what bench/l7 measures in the lab, on
// loopback: the proxy runs in a child process (this test binary again) and
// 8 client loops here open connections through it to an HTTPS server here,
// each a TCP connect, a full TLS 1.3 handshake, a GET with
// "Connection: close", the response, close. proxy-µs/conn is the child's
// CPU time (user + system, /proc/PID/stat) per connection: unlike ns/op it
// hardly depends on the machine's load. CW_PROXY_BENCH_PROF=FILE writes
// the child's CPU profile; CW_PROXY_BENCH_GOMAXPROCS=N sets the child's
// GOMAXPROCS; CW_PROXY_BENCH_LIMITS=default turns the connection limits
// on at their defaults (off otherwise). CW_PROXY_BENCH_HAPROXY=/usr/sbin/haproxy measures HAProxy
// doing the same job instead (TCP mode, req.ssl_sni, splice-auto, two
// threads), for a comparison on the same machine in the same run.
func BenchmarkProxyConnCPU(b *testing.B) {
	if os.Getenv("CW_PROXY_BENCH_CHILD") != "" {
		b.Skip("child")
	}
	up := startUpstream(b, "up", "127.0.0.1:0", true)
	var cmd *exec.Cmd
	var addr string
	if hap := os.Getenv("CW_PROXY_BENCH_HAPROXY"); hap != "" {
		// The same job for HAProxy, as bench/l7 configures it (but a
		// fixed server: there is no redirect on loopback).
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
		cfg := filepath.Join(b.TempDir(), "haproxy.cfg")
		os.WriteFile(cfg, fmt.Appendf(nil, `global
    maxconn 7000
    nbthread 2
defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend sni
    bind %s
    tcp-request inspect-delay 5s
    acl allowed req.ssl_sni -i ok.test
    tcp-request content accept if { req.ssl_hello_type 1 } allowed
    tcp-request content reject
    default_backend up
backend up
    server up %s
`, addr, up.addr), 0o644)
		cmd = exec.Command(hap, "-db", "-f", cfg)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		for i := 0; ; i++ {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				break
			}
			if i == 100 {
				b.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	} else {
		env := []string{"CW_PROXY_BENCH_CHILD=" + up.addr.String(), "CW_PROXY_BENCH_LIMITS=" + os.Getenv("CW_PROXY_BENCH_LIMITS")}
		if n := os.Getenv("CW_PROXY_BENCH_GOMAXPROCS"); n != "" {
			env = append(env, "GOMAXPROCS="+n)
		}
		var stop func()
		cmd, addr, stop = startChildProxy(b, "TestProxyBenchChild", env...)
		defer stop()
	}
	cfg := &tls.Config{ServerName: "ok.test", RootCAs: getPKI(b).pool, ClientSessionCache: nil}
	req := []byte("GET / HTTP/1.1\r\nHost: ok.test\r\nConnection: close\r\n\r\n")
	one := func() error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(c, cfg)
		if _, err := tc.Write(req); err != nil {
			return err
		}
		body, err := io.ReadAll(tc)
		if err != nil {
			return err
		}
		if !strings.Contains(string(body), "up host=ok.test") {
			return fmt.Errorf("response %q", body)
		}
		return nil
	}
	if err := one(); err != nil { // warm up, and check the path works
		b.Fatal(err)
	}
	pid := cmd.Process.Pid
	b.ResetTimer()
	cpu0, sw0 := procCPU(b, pid), ctxSwitches(pid)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := one(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	cpu, sw := procCPU(b, pid)-cpu0, ctxSwitches(pid)-sw0
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "proxy-µs/conn")
	b.ReportMetric(float64(sw)/float64(b.N), "ctxsw/conn")
}

// ctxSwitches is the number of context switches of a process's threads
// (those alive now).
func ctxSwitches(pid int) int64 {
	var n int64
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		s, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(s), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += x
			}
		}
	}
	return n
}

// procCPU is a process's user + system CPU time.
func procCPU(tb testing.TB, pid int) time.Duration {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after the command name (which may hold spaces).
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)        // utime: field 14
	st, _ := strconv.ParseInt(f[12], 10, 64)        // stime: field 15
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// TestProxyBenchChild is the child of BenchmarkProxyConnCPU: a proxy whose
// original destination is the parent's server. It serves until stdin
// closes.
func TestProxyBenchChild(t *testing.T) {
	target := os.Getenv("CW_PROXY_BENCH_CHILD")
	if target == "" {
		t.Skip("only run by BenchmarkProxyConnCPU")
	}
	if f := os.Getenv("CW_PROXY_BENCH_PROF"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		pprof.StartCPUProfile(out)
		defer func() { pprof.StopCPUProfile(); out.Close() }()
	}
	dst := netip.MustParseAddrPort(target)
	limit := -1 // CW_PROXY_BENCH_LIMITS=default: the connection limits' defaults
	if os.Getenv("CW_PROXY_BENCH_LIMITS") == "default" {
		limit = 0
	}
	p := New(Config{
		Matcher:           testPolicy(t, dst.Port(), 1),
		Resolver:          StaticResolver{"ok.test": {dst.Addr()}},
		OriginalDst:       fixedDst(dst),
		Log:               func(telemetry.Record) {},
		MaxConnsPerSource: limit,
		MaxConns:          limit,
	})
	ln, err := benchListen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	fmt.Printf("LISTEN %s\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	p.Close()
}

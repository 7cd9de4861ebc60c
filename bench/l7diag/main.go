// Command l7diag is a diagnostic companion of bench/l7 (not a benchmark):
// on a lab kept with bench/l7 -keep it switches the set-up (mode), runs
// the HTTPS server (server, in inet) and the connection loops (client, in
// node) as separate processes, so that the clients' and the server's CPU
// and context switches per connection can be told apart. l7diag hops
// FILE reads a capture taken in fw during a benchmark run and prints
// where a proxied connection's time goes, step by step (hops.go).
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterwall/clusterwall/bench/internal/benchkit"
	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/nft"
)

func main() {
	name := flag.String("lab", "", "lab name")
	clients := flag.Int("clients", 8, "connection loops")
	dur := flag.Duration("time", 3*time.Second, "rate measurement time")
	pids := flag.String("pids", "", "name=pid,... processes whose CPU to report per connection")
	flag.Parse()
	if flag.Arg(0) == "hops" {
		// No lab needed: a capture taken in fw (see hops).
		if err := hops(flag.Arg(1), netip.MustParseAddrPort("192.0.2.14:8443")); err != nil {
			fatal(err)
		}
		return
	}
	l, err := lab.Open(*name)
	if err != nil {
		fatal(err)
	}
	switch flag.Arg(0) {
	case "mode":
		fw, err := benchkit.FWNetNS(l)
		if err != nil {
			fatal(err)
		}
		s := flag.Arg(1)
		for _, p := range []string{"haproxy", "squid"} {
			if err := benchkit.SetDormant(int(fw), "cwb-"+p, p != s); err != nil {
				fatal(err)
			}
		}
		if err := benchkit.SetDormant(int(fw), nft.DefaultTable, s != "clusterwall"); err != nil {
			fatal(err)
		}
		if err := benchkit.FlushConntrack(fw); err != nil {
			fatal(err)
		}
	case "server":
		cert, err := tls.LoadX509KeyPair(filepath.Join(l.Dir(), "certs", "example.org.pem"), filepath.Join(l.Dir(), "certs", "example.org-key.pem"))
		if err != nil {
			fatal(err)
		}
		ln, err := net.Listen("tcp", "192.0.2.14:8443")
		if err != nil {
			fatal(err)
		}
		s := &http.Server{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Peer", r.RemoteAddr)
				io.WriteString(w, "ok\n")
			})}
		s.SetKeepAlivesEnabled(false)
		fmt.Println(os.Getpid())
		fatal(s.ServeTLS(ln, "", ""))
	case "client":
		pool, err := l.CAPool()
		if err != nil {
			fatal(err)
		}
		type proc struct {
			name string
			pid  int
			cpu  time.Duration
			sw   int64
			wait time.Duration
		}
		var ps []*proc
		ps = append(ps, &proc{name: "clients", pid: os.Getpid()})
		for _, kv := range strings.Split(*pids, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				pid, _ := strconv.Atoi(v)
				ps = append(ps, &proc{name: k, pid: pid})
			}
		}
		for _, p := range ps {
			p.cpu, p.sw, p.wait = benchkit.ProcRunTime(p.pid), benchkit.ProcCtxSwitches(p.pid), runDelay(p.pid)
		}
		var ru0, ru1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		var n, fails atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(*dur)
		var firstErr atomic.Value
		for range *clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d := &net.Dialer{Timeout: 3 * time.Second}
				for time.Now().Before(deadline) {
					if err := get(d, pool); err != nil {
						fails.Add(1)
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		c := n.Load()
		fmt.Printf("%d conns, %.0f conn/s, %d fails %v\n", c, float64(c)/el.Seconds(), fails.Load(), firstErr.Load())
		for _, p := range ps {
			cpu := benchkit.ProcRunTime(p.pid) - p.cpu
			sw := benchkit.ProcCtxSwitches(p.pid) - p.sw
			wait := runDelay(p.pid) - p.wait
			fmt.Printf("  %-8s %6.1f µs/conn  %5.2f ctxsw/conn  run queue wait %6.1f µs/conn\n", p.name, float64(cpu.Microseconds())/float64(c), float64(sw)/float64(c), float64(wait.Microseconds())/float64(c))
		}
		for i, name := range []string{"dial", "handshake", "request"} {
			v := phases[i]
			slices.Sort(v)
			if len(v) > 0 {
				fmt.Printf("  %-9s median %6.0f µs  p25 %6.0f  p75 %6.0f\n", name, float64(v[len(v)/2].Microseconds()), float64(v[len(v)/4].Microseconds()), float64(v[3*len(v)/4].Microseconds()))
			}
		}
		us := func(t syscall.Timeval) float64 { return float64(t.Sec)*1e6 + float64(t.Usec) }
		fmt.Printf("  clients user %.1f sys %.1f µs/conn, vol %.2f invol %.2f ctxsw/conn\n",
			(us(ru1.Utime)-us(ru0.Utime))/float64(c), (us(ru1.Stime)-us(ru0.Stime))/float64(c),
			float64(ru1.Nvcsw-ru0.Nvcsw)/float64(c), float64(ru1.Nivcsw-ru0.Nivcsw)/float64(c))
	default:
		fatal(fmt.Errorf("usage: l7diag -lab NAME mode SETUP | server | client; l7diag hops CAPTURE.pcap"))
	}
}

var phases [3][]time.Duration
var phMu sync.Mutex

func get(d *net.Dialer, pool *x509.CertPool) error {
	t0 := time.Now()
	conn, err := d.Dial("tcp", "192.0.2.14:8443")
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(conn, &tls.Config{ServerName: "example.org", RootCAs: pool,
		CurvePreferences: []tls.CurveID{tls.X25519}, MinVersion: tls.VersionTLS12})
	t1 := time.Now()
	if err := tc.Handshake(); err != nil {
		return err
	}
	t2 := time.Now()
	defer func() {
		t3 := time.Now()
		phMu.Lock()
		phases[0] = append(phases[0], t1.Sub(t0))
		phases[1] = append(phases[1], t2.Sub(t1))
		phases[2] = append(phases[2], t3.Sub(t2))
		phMu.Unlock()
	}()
	if _, err := fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(tc, 64<<10), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "l7diag:", err)
	os.Exit(1)
}

// runDelay is the time pid's threads waited on a run queue.
func runDelay(pid int) time.Duration {
	_, wait := benchkit.ProcSchedstat(pid)
	return wait
}

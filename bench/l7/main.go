// Command l7 compares clusterwall's transparent SNI proxy with HAProxy and
// Squid doing the same job in the same place: the firewall namespace of a
// lab, as the target of the same kernel redirect of cluster TCP to an
// application rule's port, allowing TLS connections whose SNI is on an
// allow-list and refusing the others, without terminating TLS.
//
//	clusterwall  the daemon with a policy whose application rule allows
//	             Https:8443 to example.org and ghcr.io; its own nftables
//	             table redirects node → *:8443 to its proxy (port 15001);
//	haproxy      Debian's haproxy in TCP mode: tcp-request inspect-delay and
//	             a req.ssl_sni ACL with the same two names, connecting to
//	             the original destination (server 0.0.0.0:0, which HAProxy
//	             reads with SO_ORIGINAL_DST), splice-auto;
//	squid        Debian's squid-openssl: https_port ... intercept ssl-bump,
//	             ssl_bump peek at step 1, splice if ssl::server_name is on
//	             the list, terminate the rest (a CA generated here, as
//	             ssl-bump requires one even when it only splices).
//
// The peers get the redirect from a table of the benchmark's own
// (prerouting nat, iifname cw-in tcp dport 8443 redirect to their port);
// the benchmark switches between the set-ups by making tables dormant, so
// exactly one redirect is live, and checks before each measurement that
// an allowed name passes through a proxy (the server sees the firewall's
// address, not the node's) and that a name off the list is refused.
//
// The clients are Go (crypto/tls) in the node namespace: the connection
// rate is N loops each doing a new TCP connection, a full TLS 1.3
// handshake (no session cache, X25519 like curl/OpenSSL), one small GET
// and close; the throughput is one download of a large body over one
// connection. The server is Go (net/http over TLS with the lab's
// certificate for example.org) on 192.0.2.14:8443 in the lab internet.
// Every round measures every set-up once, in a rotating order; the report
// gives medians and the medians of the per-round ratios, and the CPU time
// each proxy process used per connection.
//
// For an A/B of two builds in one run, -exe-b adds the set-up
// clusterwall-b: the daemon restarted from that binary (same config), in
// the same rotation; -only picks set-ups (a comma-separated list). The
// report gives context switches and TCP segments sent by fw per
// connection besides the CPU; -counters prints every TCP/IP counter of fw
// per connection. For the bulk download it gives the proxy's CPU per MB,
// the same with this process's (the client's and the server's) added, and
// fw's TCP segments per MB; -conn-time 0 measures the bulk download alone,
// and -only ...,forward adds a set-up without a proxy (every table
// dormant, fw's kernel forwards): the ceiling of the client and the server.
//
// For the connection rate, which moves with everything else on the
// machine: -aa measures clusterwall against itself and HAProxy against a
// second HAProxy (set-up haproxy-b, same configuration, its own port and
// redirect table), the method's own noise; -pin-proxy and -pin-bench pin
// the proxy's threads and this process to CPUs (each set-up alike);
// -warmup runs the connection loops uncounted before each measurement;
// -prio gives the benchmark's and the proxy's autogroups nice -19. The
// report gives, per pair, the median of the per-round ratios with a
// distribution-free 95 % confidence interval, quartiles, range and the
// rounds above 1, and the per-round ratios themselves; besides the rate,
// the connections per CPU-second of the proxy, clients and server, which
// does not move with the share of the machine a round got.
//
// bench/l7.sh runs it; docs/benchmarks.md has the results.
package main

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
	"flag"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/bench/internal/benchkit"
	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/nft"
)

const (
	allowedName  = "example.org"      // on the allow-list; the server's certificate
	deniedName   = "evil.example.net" // not on it
	benchPort    = 8443               // the application rule's port
	haproxyPort  = 15101
	haproxyBPort = 15103 // the second HAProxy of -aa (set-up haproxy-b)
	squidPort    = 15102
)

var server = netip.AddrPortFrom(netip.MustParseAddr("192.0.2.14"), benchPort) // example.org in the lab internet

type config struct {
	exe      string
	exeB     string
	name     string
	rounds   int
	connDur  time.Duration
	clients  int
	bulkMB   int
	keep     bool
	only     string
	counters bool
	// aa: A/A mode (clusterwall against itself, HAProxy against itself).
	aa bool
	// pinProxy, pinBench: CPU lists the proxy's threads and this
	// process's (the clients' and the server's) are pinned to; warmup:
	// connection loops run before each rate measurement, not counted;
	// prio: the benchmark's and the proxy's autogroups at nice -19.
	pinProxy, pinBench string
	warmup             time.Duration
	prio               bool
	order              string // rotate or balanced
}

type setup string

const (
	setupClusterwall setup = "clusterwall"
	setupB           setup = "clusterwall-b" // -exe-b
	setupHAProxy     setup = "haproxy"
	setupHAProxyB    setup = "haproxy-b" // a second HAProxy, same configuration (-aa)
	setupSquid       setup = "squid"
	// setupForward: no proxy and no firewall, fw's kernel forwards (every
	// table dormant) — the ceiling of the client and the server through
	// the same namespaces; only with -only.
	setupForward setup = "forward"
)

// isDaemon: the set-up is a clusterwall daemon (A or B).
func (s setup) isDaemon() bool { return s == setupClusterwall || s == setupB }

func main() {
	var c config
	flag.StringVar(&c.exe, "exe", "bin/clusterwall", "clusterwall binary (lab servers and the daemon)")
	flag.StringVar(&c.name, "name", "cwb7", "lab name (must not exist)")
	flag.IntVar(&c.rounds, "rounds", 5, "rounds (each measures every set-up once)")
	flag.DurationVar(&c.connDur, "conn-time", 3*time.Second, "connection-rate measurement time per set-up and round")
	flag.IntVar(&c.clients, "clients", 8, "concurrent connection loops")
	flag.IntVar(&c.bulkMB, "bulk-mb", 1024, "size of the bulk download (MiB)")
	flag.BoolVar(&c.keep, "keep", false, "leave the lab and the peers up afterwards")
	flag.StringVar(&c.only, "only", "", "measure only these set-ups (comma-separated): clusterwall, clusterwall-b, haproxy, squid, forward (no proxy: fw forwards; a ceiling for the client and the server)")
	flag.StringVar(&c.exeB, "exe-b", "", "a second daemon binary, measured as set-up clusterwall-b in the same rounds (A/B of a change); the daemon is restarted with the other binary when the set-up changes")
	flag.BoolVar(&c.counters, "counters", false, "print fw's TCP/IP counters (/proc/net/snmp, netstat) per connection of each rate measurement")
	flag.BoolVar(&c.aa, "aa", false, "A/A mode: set-ups clusterwall, clusterwall-b (the -exe binary again unless -exe-b is given), haproxy and haproxy-b (a second HAProxy, same configuration): the method's own noise, as ratios clusterwall-b / clusterwall and haproxy-b / haproxy")
	flag.StringVar(&c.pinProxy, "pin-proxy", "", "pin every thread of the measured proxy to these CPUs (a list: 1, 0-1, 0,1) before each measurement; the same for every set-up")
	flag.StringVar(&c.pinBench, "pin-bench", "", "pin this process (the clients and the HTTPS server) to these CPUs")
	flag.DurationVar(&c.warmup, "warmup", 0, "connection loops run before each rate measurement without being counted (e.g. 300ms: a restarted daemon's first connections)")
	flag.BoolVar(&c.prio, "prio", false, "give this process's and the measured proxy's autogroups nice -19 (what bench/l7prio.sh does), for runs on a machine shared with other work")
	flag.StringVar(&c.order, "order", "rotate", "the order of the set-ups in each round: rotate (round r rotated by r) or balanced (a Williams design: every set-up in every position and directly after every other one equally often over len(set-ups) rounds, twice that for an odd count)")
	daemonProcs := flag.Int("daemon-gomaxprocs", 0, "GOMAXPROCS of the daemon (0: the Go default, one per CPU)")
	flag.Parse()
	if *daemonProcs > 0 {
		// Read by the daemon's runtime at its start (lab processes inherit
		// this environment); this process's runtime is already set up.
		os.Setenv("GOMAXPROCS", strconv.Itoa(*daemonProcs))
	}
	benchkit.Main(func(ctx context.Context) error { return run(ctx, c, os.Stdout) })
}

type sample struct {
	connsPS float64       // new TLS connections per second
	fails   int64         // connections that failed
	mbps    float64       // bulk download, MB/s (10^6 bytes)
	cpu     time.Duration // CPU time of the proxy process during the rate measurement
	conns   int64         // connections in the rate measurement
	ctxsw   int64         // context switches of the proxy process's threads during it
	segs    int64         // TCP segments fw sent during it (TcpOutSegs)
	bulkCPU time.Duration // CPU time of the proxy process during the bulk download
	bulkMB  float64       // its size in MB (10^6 bytes)
	// bulkAll: the CPU time of the proxy process and of this one (the
	// client and the server) during the bulk download: the whole
	// transfer's cost but for kernel work done in other processes'
	// time (softirq) — on the 2-vCPU machine the throughput follows it
	// when nothing else runs.
	bulkAll time.Duration
	// bulkSegs: the TCP segments fw sent during the bulk download (the
	// data to the client and the ACKs to the server).
	bulkSegs int64
	// selfCPU: the CPU time of this process (the 8 clients and the
	// server) during the rate measurement; idle: the share of the
	// machine's CPU time that was idle during it (/proc/stat). With
	// idle near 0 the rate is bound by the CPU every process spends per
	// connection; with idle left, by each connection's latency.
	selfCPU time.Duration
	idle    float64
	// busy, softirq: the machine's busy CPU time (every process, the
	// kernel's softirq work included) and the part of it ticks found in
	// softirq (charged to no process) during the rate measurement.
	busy, softirq time.Duration
	// wait, selfWait: the time the proxy's threads and this process's
	// threads spent runnable on a run queue, waiting for a CPU, during
	// the rate measurement (/proc/PID/task/*/schedstat); threads: the
	// proxy's threads at its end.
	wait, selfWait time.Duration
	threads        int
}

// peer is a proxy process started by the benchmark in fw.
type peer struct {
	cmd  *exec.Cmd
	name string
	out  string // its standard output and error
	log  string // its log (for error messages)
}

func (p *peer) stop() {
	if p != nil {
		benchkit.Stop(p.cmd)
	}
}

func run(ctx context.Context, c config, out io.Writer) (err error) {
	exe, err := benchkit.Preflight(c.exe, c.name, "haproxy squid-openssl", "haproxy", "squid")
	if err != nil {
		return err
	}
	if c.order != "rotate" && c.order != "balanced" {
		return fmt.Errorf("-order %q: want rotate or balanced", c.order)
	}
	var pinProxy, pinBench *unix.CPUSet
	if pinProxy, err = parseCPUs(c.pinProxy); err != nil {
		return fmt.Errorf("-pin-proxy: %w", err)
	}
	if pinBench, err = parseCPUs(c.pinBench); err != nil {
		return fmt.Errorf("-pin-bench: %w", err)
	}
	if c.aa {
		if c.exeB == "" {
			c.exeB = c.exe
		}
		if c.only == "" {
			c.only = "clusterwall,clusterwall-b,haproxy,haproxy-b"
		}
	}
	if err := pinAll(os.Getpid(), pinBench); err != nil {
		return fmt.Errorf("-pin-bench: %w", err)
	}
	setups := []setup{setupClusterwall, setupHAProxy, setupSquid}
	exeB := ""
	if c.exeB != "" {
		if exeB, err = filepath.Abs(c.exeB); err != nil {
			return err
		}
		setups = []setup{setupClusterwall, setupB, setupHAProxy, setupSquid}
	}
	withHAProxyB := slices.Contains(strings.Split(c.only, ","), string(setupHAProxyB))
	if withHAProxyB {
		// After haproxy: in the rotation, the two HAProxies are measured
		// one after the other as the two daemons are.
		i := slices.Index(setups, setupHAProxy)
		setups = slices.Insert(setups, i+1, setupHAProxyB)
	}
	if slices.Contains(strings.Split(c.only, ","), string(setupForward)) {
		setups = append(setups, setupForward)
	}
	measured := func(s setup) bool {
		return c.only == "" || slices.Contains(strings.Split(c.only, ","), string(s))
	}
	dir, err := os.MkdirTemp("", "clusterwall-bench-l7-")
	if err != nil {
		return err
	}
	if !c.keep {
		defer os.RemoveAll(dir)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(out, "clusterwall L7 benchmark: SNI allow-list proxy vs HAProxy and Squid, %d rounds, %d clients, lab %s\n", c.rounds, c.clients, c.name)
	if c.aa || c.pinProxy != "" || c.pinBench != "" || c.warmup > 0 || c.prio || c.order != "rotate" {
		fmt.Fprintf(out, "set-ups %v, measured %q, order %s; proxy pinned to CPUs %q, clients and server to %q; warm-up %v; autogroup nice -19: %v\n", setups, c.only, c.order, c.pinProxy, c.pinBench, c.warmup, c.prio)
	}
	if !c.keep {
		defer benchkit.RemoveLab(c.name, &err)
	}
	// SNAT off: the server then tells a proxied connection (from the
	// firewall's address) from a forwarded one (from the node's).
	// The daemon watches its policy file's directory: a directory of its
	// own, so that the peers' logs (written per connection, in dir) cost
	// the idle daemon nothing while a peer is measured.
	pdir := filepath.Join(dir, "daemon")
	if err := os.Mkdir(pdir, 0o755); err != nil {
		return err
	}
	l, fwNS, err := benchkit.UpWithDaemon(ctx, c.name, exe, pdir, []byte(policyYAML))
	if err != nil {
		return err
	}
	defer fwNS.Close()
	// The same socket limits for every set-up: a wide port range in node
	// and fw (proxies dial from fw), and TIME_WAIT reuse.
	for _, h := range []string{lab.HostNode, lab.HostFW} {
		if _, err := l.Exec(ctx, h, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=10000 65000", "net.ipv4.tcp_tw_reuse=1"); err != nil {
			return err
		}
	}

	srv, err := startServer(l)
	if err != nil {
		return err
	}
	defer srv.Close()

	// The peers: HAProxy and Squid in fw, each with a dormant redirect
	// table of its own.
	ca, caKey, err := writeCA(dir)
	if err != nil {
		return err
	}
	hap, err := startHAProxy(ctx, l, dir, "haproxy", haproxyPort)
	if err != nil {
		return err
	}
	var hapB *peer
	if withHAProxyB {
		if hapB, err = startHAProxy(ctx, l, dir, "haproxy-b", haproxyBPort); err != nil {
			hap.stop()
			return err
		}
		if !c.keep {
			defer hapB.stop()
		}
	}
	sq, err := startSquid(ctx, l, dir, ca, caKey)
	if err != nil {
		hap.stop()
		return err
	}
	if !c.keep {
		defer hap.stop()
		defer sq.stop()
	}
	peers := []setup{setupHAProxy, setupSquid}
	if withHAProxyB {
		peers = append(peers, setupHAProxyB)
	}
	for _, p := range peers {
		if err := redirectTable(int(fwNS), tableOf(p), peerPort[p]); err != nil {
			return err
		}
	}
	// With -exe-b, one daemon runs at a time: the lab's (A) or B.
	dm := &daemons{l: l, exeB: exeB, out: l.LogFile("daemon-b"), current: setupClusterwall}
	defer dm.stopB()
	pids := map[setup]func() int{
		setupClusterwall: func() int { return l.Pid(lab.DaemonProc) },
		setupB:           dm.pidB,
		setupHAProxy:     func() int { return hap.cmd.Process.Pid },
		setupSquid:       func() int { return sq.cmd.Process.Pid },
		setupHAProxyB:    func() int { return hapB.cmd.Process.Pid },
		setupForward:     func() int { return 0 },
	}
	logs := map[setup]string{setupClusterwall: l.DecisionLog(), setupB: dm.out, setupHAProxy: hap.log, setupSquid: sq.log, setupForward: "-"}
	if hapB != nil {
		logs[setupHAProxyB] = hapB.log
	}

	client, err := newClient(l)
	if err != nil {
		return err
	}
	results := map[setup][]sample{}
	var loads []string
	for round := range c.rounds {
		order := benchkit.Rotate(setups, round)
		if c.order == "balanced" {
			// Only the measured set-ups: the design balances what runs.
			order = benchkit.Balanced(slices.DeleteFunc(slices.Clone(setups), func(s setup) bool { return !measured(s) }), round)
		}
		loads = append(loads, benchkit.Loadavg())
		for _, s := range order {
			if !measured(s) {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if s.isDaemon() {
				if err := dm.use(ctx, s); err != nil {
					return fmt.Errorf("round %d, %s: %w", round+1, s, err)
				}
			}
			if err := setMode(int(fwNS), s, peers); err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, s, err)
			}
			if err := benchkit.FlushConntrack(fwNS); err != nil {
				return err
			}
			if err := client.verify(srv, s == setupForward); err != nil {
				return fmt.Errorf("round %d, %s: set-up check: %w (log: %s)", round+1, s, err, logs[s])
			}
			pid := pids[s]()
			if err := pinAll(pid, pinProxy); err != nil {
				return fmt.Errorf("round %d, %s: -pin-proxy: %w", round+1, s, err)
			}
			if err := pinAll(os.Getpid(), pinBench); err != nil {
				return fmt.Errorf("round %d: -pin-bench: %w", round+1, err)
			}
			if c.prio {
				prioritize(os.Getpid(), pid)
			}
			smp, err := measure(ctx, client, c, pid)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w (log: %s)", round+1, s, err, logs[s])
			}
			results[s] = append(results[s], smp)
			fmt.Fprintf(out, "round %d %-13s %7.0f conn/s  %7.1f MB/s  proxy CPU %4.0f µs/conn  %4.1f ctxsw/conn  %4.1f segs/conn  bulk CPU %4.0f µs/MB (with client and server %4.0f), %3.0f segs/MB  run-queue wait %4.0f µs/conn (clients and server %4.0f), %d threads, idle %2.0f%%, own share %2.0f%%", round+1, s, smp.connsPS, smp.mbps, perConn(smp), ctxPerConn(smp), segsPerConn(smp), perMB(smp), allPerMB(smp), float64(smp.bulkSegs)/max(smp.bulkMB, 1), waitPerConn(smp), selfWaitPerConn(smp), smp.threads, 100*smp.idle, 100*ownShare(smp))
			if smp.fails > 0 {
				fmt.Fprintf(out, "  (%d failed)", smp.fails)
			}
			fmt.Fprintf(out, "  load %s\n", benchkit.Loadavg())
		}
	}
	report(out, setups, results, loads)
	return nil
}

// daemons switches the firewall daemon between the lab's binary (set-up
// clusterwall) and -exe-b (clusterwall-b), with the same config: the
// running one stops, the other starts and is waited for.
type daemons struct {
	l       *lab.Lab
	exeB    string
	out     string // B's output
	current setup
	cmdB    *exec.Cmd
}

func (d *daemons) use(ctx context.Context, s setup) error {
	if s == d.current {
		return nil
	}
	conf := filepath.Join(lab.StateDir(d.l.Name()), lab.DaemonConfigFile)
	if s == setupB {
		if err := d.l.Stop(lab.DaemonProc); err != nil {
			return err
		}
		cmd, err := benchkit.StartIn(d.l, lab.HostFW, d.out, d.exeB, "run", "--config", conf)
		if err != nil {
			return err
		}
		d.cmdB, d.current = cmd, setupB
	} else {
		d.stopB()
		if err := d.l.Start(ctx, lab.Proc{Name: lab.DaemonProc, Host: lab.HostFW, Args: []string{"run", "--config", conf}}); err != nil {
			return err
		}
		d.current = setupClusterwall
	}
	return d.l.WaitDaemon(ctx, 20*time.Second)
}

func (d *daemons) pidB() int {
	if d.cmdB == nil {
		return 0
	}
	return d.cmdB.Process.Pid
}

func (d *daemons) stopB() {
	benchkit.Stop(d.cmdB)
	d.cmdB = nil
}

// spread describes per-round ratios: their median with a distribution-free
// 95 % confidence interval (the order statistics x(k), x(n+1-k) for the
// largest k with P(Binomial(n, ½) < k) ≤ 2.5 %; none below 6 rounds),
// quartiles, range and how many are above 1.
func spread(xs []float64) string {
	n := len(xs)
	if n == 0 {
		return "-"
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	above := 0
	for _, x := range s {
		if x > 1 {
			above++
		}
	}
	ci := "n/a"
	if k := medianCIRank(n); k > 0 {
		ci = fmt.Sprintf("%.3f–%.3f", s[k-1], s[n-k])
	}
	return fmt.Sprintf("%.3f [%s] (%.3f–%.3f; %.3f–%.3f; %d of %d)", benchkit.Median(s), ci, quantile(s, 0.25), quantile(s, 0.75), s[0], s[n-1], above, n)
}

// medianCIRank is the largest k ≥ 1 with P(Binomial(n, ½) ≤ k-1) ≤ 0.025,
// or 0 if there is none.
func medianCIRank(n int) int {
	k, cum, c := 0, 0.0, 1.0 // c = C(n, i)
	p := math.Pow(0.5, float64(n))
	for i := 0; i < n; i++ {
		cum += c * p
		if cum > 0.025 {
			break
		}
		k = i + 1
		c = c * float64(n-i) / float64(i+1)
	}
	return k
}

// quantile of sorted s (linear interpolation).
func quantile(s []float64, q float64) float64 {
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}

// connsPerCPU is the connections per CPU-second of the proxy and this
// process (the clients and the server) together: the rate the whole
// set-up would reach on CPUs of its own, but for softirq charged to no
// process and idle time. On a machine shared with other work it does not
// move with the share of the CPUs the benchmark got in a round, as the
// rate does (docs/benchmarks.md, "Branch l7rate").
func connsPerCPU(s sample) float64 {
	if t := s.cpu + s.selfCPU; t > 0 {
		return float64(s.conns) / t.Seconds()
	}
	return 0
}

// perConn is the proxy's CPU per connection, in µs.
func perConn(s sample) float64 { return usPerConn(s, s.cpu) }

// perMB is the proxy's CPU per MB of the bulk download, in µs.
func perMB(s sample) float64 {
	if s.bulkMB == 0 {
		return 0
	}
	return float64(s.bulkCPU.Microseconds()) / s.bulkMB
}

// allPerMB is the proxy's, the client's and the server's CPU per MB of
// the bulk download, in µs.
func allPerMB(s sample) float64 {
	if s.bulkMB == 0 {
		return 0
	}
	return float64(s.bulkAll.Microseconds()) / s.bulkMB
}

func ctxPerConn(s sample) float64 {
	if s.conns == 0 {
		return 0
	}
	return float64(s.ctxsw) / float64(s.conns)
}

// selfPerConn is the clients' and the server's CPU per connection, in µs.
func selfPerConn(s sample) float64 { return usPerConn(s, s.selfCPU) }

// usPerConn is d per connection of s, in µs.
func usPerConn(s sample, d time.Duration) float64 {
	if s.conns == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(s.conns)
}

// waitPerConn and selfWaitPerConn: run-queue wait (µs) per connection of
// the proxy's threads and of the clients' and server's.
func waitPerConn(s sample) float64     { return usPerConn(s, s.wait) }
func selfWaitPerConn(s sample) float64 { return usPerConn(s, s.selfWait) }

// busyPerConn and softPerConn are the machine's busy CPU and its softirq
// part per connection, in µs.
func busyPerConn(s sample) float64 { return usPerConn(s, s.busy) }
func softPerConn(s sample) float64 { return usPerConn(s, s.softirq) }

// ownShare is the share of the machine's CPU time the proxy and this
// process (the clients and the server) used during the rate measurement:
// 1 - idle on a quiet machine but for softirq charged to no process; with
// other work running at a lower priority (nice), where idle is filled by
// that work, it is what the benchmark's own processes took.
func ownShare(s sample) float64 {
	if s.conns == 0 || s.connsPS == 0 {
		return 0
	}
	elapsed := float64(s.conns) / s.connsPS
	return (s.cpu + s.selfCPU).Seconds() / (elapsed * float64(runtime.NumCPU()))
}

// procThreads returns how many threads process pid has (0 if gone).
func procThreads(pid int) int {
	if pid == 0 {
		return 0
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	return len(tasks)
}

// ticks converts /proc/stat's clock ticks (USER_HZ, 100 on Linux) to time.
func ticks(t float64) time.Duration { return time.Duration(t * float64(time.Second) / 100) }

// machineCPU returns the machine's busy, idle (idle and iowait) and
// softirq CPU time so far, in clock ticks, from /proc/stat's first line.
func machineCPU() (busy, idle, softirq float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		switch {
		case i == 3 || i == 4: // idle, iowait
			idle += v
		case i < 8: // user nice system ... steal; guest is in user already
			busy += v
			if i == 6 {
				softirq += v
			}
		}
	}
	return busy, idle, softirq
}

func segsPerConn(s sample) float64 {
	if s.conns == 0 {
		return 0
	}
	return float64(s.segs) / float64(s.conns)
}

// policyYAML allows TLS on the benchmark port to the two listed names from
// the cluster; everything else is denied by default.
const policyYAML = `apiVersion: clusterwall.io/v1alpha1
kind: FirewallPolicy
name: bench-l7
ruleCollectionGroups:
  - name: bench
    priority: 300
    ruleCollections:
      - name: allowlist
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: sni
            protocols: ['Https:8443']
            sourceAddresses: [10.42.1.0/24]
            targetFqdns: [example.org, ghcr.io]
`

const haproxyCfg = `global
    maxconn 7000
    log stdout format raw local0
defaults
    mode tcp
    log global
    option tcplog
    option splice-auto
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend sni
    bind :%d
    tcp-request inspect-delay 5s
    acl allowed req.ssl_sni -i example.org ghcr.io
    tcp-request content accept if { req.ssl_hello_type 1 } allowed
    tcp-request content reject
    default_backend original
backend original
    # 0.0.0.0:0: the destination the client connected to (SO_ORIGINAL_DST
    # after the kernel's redirect), same port.
    server original 0.0.0.0:0
`

// peerPort is the port each peer listens on (its redirect's target).
var peerPort = map[setup]uint16{setupHAProxy: haproxyPort, setupHAProxyB: haproxyBPort, setupSquid: squidPort}

// startHAProxy starts an HAProxy called name (haproxy, haproxy-b: the same
// configuration on another port) in fw.
func startHAProxy(ctx context.Context, l *lab.Lab, dir, name string, port int) (*peer, error) {
	cfg := filepath.Join(dir, name+".cfg")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, haproxyCfg, port), 0o644); err != nil {
		return nil, err
	}
	log := filepath.Join(dir, name+".log") // stdout: option tcplog lines
	p := &peer{name: name, out: log, log: log}
	if out, err := exec.CommandContext(ctx, "haproxy", "-c", "-f", cfg).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("haproxy -c: %v: %s", err, out)
	}
	// -db: foreground; ip netns exec execs haproxy, so the pid is its own.
	return p, p.start(ctx, l, port, "haproxy", "-db", "-f", cfg)
}

const squidCfg = `# Squid intercepting TLS: peek at the ClientHello, splice allowed SNI, terminate the rest.
visible_hostname %[1]s-fw
http_port 127.0.0.1:3128
https_port %[2]d intercept ssl-bump tls-cert=%[3]s tls-key=%[4]s generate-host-certificates=off
acl cluster src 10.42.0.0/16
acl step1 at_step SslBump1
acl allowed ssl::server_name example.org ghcr.io
ssl_bump peek step1
ssl_bump splice allowed
ssl_bump terminate all
http_access allow cluster
http_access deny all
cache deny all
dns_nameservers 192.0.2.53
access_log stdio:%[5]s/squid-access.log
cache_log %[5]s/squid-cache.log
pid_filename %[5]s/squid.pid
coredump_dir %[5]s
shutdown_lifetime 1 seconds
max_filedescriptors 16384
`

func startSquid(ctx context.Context, l *lab.Lab, dir, ca, caKey string) (*peer, error) {
	sdir := filepath.Join(dir, "squid")
	if err := os.MkdirAll(sdir, 0o777); err != nil {
		return nil, err
	}
	os.Chmod(sdir, 0o777) // squid drops privileges to the proxy user
	cfg := filepath.Join(dir, "squid.conf")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, squidCfg, l.Name(), squidPort, ca, caKey, sdir), 0o644); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "squid", "-k", "parse", "-f", cfg).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("squid -k parse: %v: %s", err, out)
	}
	p := &peer{name: "squid", out: filepath.Join(sdir, "squid.out"), log: filepath.Join(sdir, "squid-cache.log")}
	// -N: no daemon, no kid processes.
	return p, p.start(ctx, l, squidPort, "squid", "-N", "-f", cfg)
}

// start runs argv in fw with its output in dir and waits until port listens.
func (p *peer) start(ctx context.Context, l *lab.Lab, port int, argv ...string) error {
	cmd, err := benchkit.StartIn(l, lab.HostFW, p.out, argv...)
	if err != nil {
		return fmt.Errorf("%s: %w", p.name, err)
	}
	p.cmd = cmd
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ok bool
		l.Do(lab.HostFW, func() error {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("10.42.1.1:%d", port), 200*time.Millisecond)
			if err == nil {
				c.Close()
				ok = true
			}
			return nil
		})
		if ok {
			return nil
		}
		if isZombie(cmd.Process.Pid) {
			return fmt.Errorf("%s exited; see %s", p.name, p.out)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return fmt.Errorf("%s does not listen on %d after 20 s; see %s", p.name, port, p.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// writeCA generates the CA that Squid's ssl-bump port requires (it never
// signs anything here: the allowed connections are spliced, the others
// terminated).
func writeCA(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "clusterwall bench squid CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "squid-ca.pem"), filepath.Join(dir, "squid-ca-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	// Readable by Squid's unprivileged user; a throw-away key.
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// httpsServer is the HTTPS server in the lab internet: GET / answers "ok\n",
// GET /bulk?n=BYTES streams BYTES bytes; every response names the peer
// address the server saw (X-Peer).
type httpsServer struct {
	*http.Server
}

func startServer(l *lab.Lab) (*httpsServer, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(l.Dir(), "certs", allowedName+".pem"), filepath.Join(l.Dir(), "certs", allowedName+"-key.pem"))
	if err != nil {
		return nil, err
	}
	var ln net.Listener
	if err := l.Do(lab.HostInet, func() error {
		var err error
		ln, err = net.Listen("tcp", server.String())
		return err
	}); err != nil {
		return nil, err
	}
	chunk := make([]byte, 256<<10)
	s := &httpsServer{}
	s.Server = &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Peer", r.RemoteAddr)
			if r.URL.Path != "/bulk" {
				io.WriteString(w, "ok\n")
				return
			}
			n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			for n > 0 {
				k, err := w.Write(chunk[:min(int64(len(chunk)), n)])
				if err != nil {
					return
				}
				n -= int64(k)
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	s.SetKeepAlivesEnabled(false)
	go s.ServeTLS(ln, "", "")
	return s, nil
}

// client makes connections from node.
type client struct {
	l    *lab.Lab
	pool *x509.CertPool
}

func newClient(l *lab.Lab) (*client, error) {
	pool, err := l.CAPool()
	if err != nil {
		return nil, err
	}
	return &client{l: l, pool: pool}, nil
}

// tlsConfig is a fresh configuration for every connection: no session
// cache, so every handshake is a full one; X25519 as curl with OpenSSL 3.0
// offers first.
func (cl *client) tlsConfig(name string, verify bool) *tls.Config {
	return &tls.Config{ServerName: name, RootCAs: cl.pool, InsecureSkipVerify: !verify,
		CurvePreferences: []tls.CurveID{tls.X25519}, MinVersion: tls.VersionTLS12}
}

// get does one GET over a new TLS connection (must run in node) and
// returns the X-Peer header and the body length.
func (cl *client) get(d *net.Dialer, name, path string, verify bool, timeout time.Duration) (peer string, n int64, err error) {
	conn, err := d.Dial("tcp", server.String())
	if err != nil {
		return "", 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	tc := tls.Client(conn, cl.tlsConfig(name, verify))
	if err := tc.Handshake(); err != nil {
		return "", 0, fmt.Errorf("handshake: %w", err)
	}
	if _, err := fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, name); err != nil {
		return "", 0, err
	}
	br := bufio.NewReaderSize(tc, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	n, err = io.Copy(io.Discard, resp.Body)
	if err != nil {
		return "", n, err
	}
	if resp.StatusCode != 200 {
		return "", n, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Peer"), n, nil
}

// verify checks that an allowed name reaches the server through a proxy
// in fw and that a name off the list is refused; with forward, that the
// connection is forwarded, not proxied.
func (cl *client) verify(srv *httpsServer, forward bool) error {
	return cl.l.Do(lab.HostNode, func() error {
		d := &net.Dialer{Timeout: 3 * time.Second}
		peer, _, err := cl.get(d, allowedName, "/", true, 5*time.Second)
		if err != nil {
			return fmt.Errorf("SNI %s: %w", allowedName, err)
		}
		if forward {
			if !strings.HasPrefix(peer, lab.NodeV4.String()+":") {
				return fmt.Errorf("forward: the server saw %s, not the node (%s)", peer, lab.NodeV4)
			}
			return nil
		}
		if !strings.HasPrefix(peer, lab.FWPublicV4.String()+":") {
			return fmt.Errorf("SNI %s: the server saw %s, not the firewall (%s): not proxied", allowedName, peer, lab.FWPublicV4)
		}
		if _, _, err := cl.get(d, deniedName, "/", false, 5*time.Second); err == nil {
			return fmt.Errorf("SNI %s passed; want it refused", deniedName)
		}
		return nil
	})
}

// outSegs is fw's TcpOutSegs (/proc/net/snmp of its namespace): the TCP
// segments the proxy's sockets sent, both ways.
func (cl *client) outSegs() int64 { return cl.netCounters()["Tcp:OutSegs"] }

// netCounters returns fw's protocol counters (/proc/net/snmp and
// /proc/net/netstat of its namespace) by "Group:Name".
func (cl *client) netCounters() map[string]int64 {
	m := map[string]int64{}
	cl.l.Do(lab.HostFW, func() error {
		for _, f := range []string{"/proc/thread-self/net/snmp", "/proc/thread-self/net/netstat"} {
			data, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			var names []string
			for line := range strings.Lines(string(data)) {
				fs := strings.Fields(line)
				if len(fs) == 0 {
					continue
				}
				if names == nil || names[0] != fs[0] {
					names = fs
					continue
				}
				for i, k := range names[1:] {
					if i+1 < len(fs) {
						m[fs[0]+k], _ = strconv.ParseInt(fs[i+1], 10, 64)
					}
				}
				names = nil
			}
		}
		return nil
	})
	return m
}

// measure runs the connection loops and then the bulk download.
func measure(ctx context.Context, cl *client, c config, pid int) (sample, error) {
	var s sample
	if c.warmup > 0 {
		cl.loops(ctx, c.clients, time.Now().Add(c.warmup))
	}
	cpu0, sw0, net0 := benchkit.ProcCPU(pid), benchkit.ProcCtxSwitches(pid), cl.netCounters()
	self0 := benchkit.ProcCPU(os.Getpid())
	_, wait0 := benchkit.ProcSchedstat(pid)
	_, selfWait0 := benchkit.ProcSchedstat(os.Getpid())
	busy0, idle0, soft0 := machineCPU()
	start := time.Now()
	conns, fails, firstErr := cl.loops(ctx, c.clients, start.Add(c.connDur))
	elapsed := time.Since(start)
	s.cpu = benchkit.ProcCPU(pid) - cpu0
	s.selfCPU = benchkit.ProcCPU(os.Getpid()) - self0
	_, wait1 := benchkit.ProcSchedstat(pid)
	_, selfWait1 := benchkit.ProcSchedstat(os.Getpid())
	s.wait, s.selfWait = wait1-wait0, selfWait1-selfWait0
	s.threads = procThreads(pid)
	if busy1, idle1, soft1 := machineCPU(); busy1+idle1 > busy0+idle0 {
		s.idle = (idle1 - idle0) / (busy1 + idle1 - busy0 - idle0)
		s.busy, s.softirq = ticks(busy1-busy0), ticks(soft1-soft0)
	}
	s.ctxsw = benchkit.ProcCtxSwitches(pid) - sw0
	net1 := cl.netCounters()
	s.segs = net1["Tcp:OutSegs"] - net0["Tcp:OutSegs"]
	if c.counters && conns > 0 {
		var keys []string
		for k, v := range net1 {
			if v != net0[k] {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Printf("  counter %-32s %8.3f per connection\n", k, float64(net1[k]-net0[k])/float64(conns))
		}
	}
	s.conns, s.fails = conns, fails
	if s.fails*100 > s.conns {
		return s, fmt.Errorf("%d of %d connections failed: %v", s.fails, s.fails+s.conns, firstErr)
	}
	s.connsPS = float64(s.conns) / elapsed.Seconds()

	size := int64(c.bulkMB) << 20
	err := cl.l.Do(lab.HostNode, func() error {
		d := &net.Dialer{Timeout: 3 * time.Second}
		segs0 := cl.outSegs()
		t0, cpu0, self0 := time.Now(), benchkit.ProcCPU(pid), benchkit.ProcCPU(os.Getpid())
		_, got, err := cl.get(d, allowedName, fmt.Sprintf("/bulk?n=%d", size), true, 5*time.Minute)
		s.bulkCPU, s.bulkMB = benchkit.ProcCPU(pid)-cpu0, float64(size)/1e6
		s.bulkAll = s.bulkCPU + benchkit.ProcCPU(os.Getpid()) - self0
		s.bulkSegs = cl.outSegs() - segs0
		if err != nil {
			return fmt.Errorf("bulk download: %w", err)
		}
		if got != size {
			return fmt.Errorf("bulk download: %d of %d bytes", got, size)
		}
		s.mbps = float64(size) / time.Since(t0).Seconds() / 1e6
		return nil
	})
	return s, err
}

// loops runs clients connection loops in node until deadline: each a new
// TCP connection, a full TLS handshake, one small GET and close, again. It
// returns the connections that succeeded, those that failed and the first
// error.
func (cl *client) loops(ctx context.Context, clients int, deadline time.Time) (conns, fails int64, firstErr error) {
	var n, nf atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := cl.l.Do(lab.HostNode, func() error {
				d := &net.Dialer{Timeout: 3 * time.Second}
				for time.Now().Before(deadline) && ctx.Err() == nil {
					if _, _, err := cl.get(d, allowedName, "/", true, 5*time.Second); err != nil {
						nf.Add(1)
						first.CompareAndSwap(nil, err)
						continue
					}
					n.Add(1)
				}
				return nil
			})
			if err != nil {
				first.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if e, ok := first.Load().(error); ok {
		firstErr = e
	}
	return n.Load(), nf.Load(), firstErr
}

// parseCPUs parses a CPU list ("1", "0-1", "0,2-3"); nil for "".
func parseCPUs(list string) (*unix.CPUSet, error) {
	if list == "" {
		return nil, nil
	}
	var set unix.CPUSet
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= runtime.NumCPU() {
			return nil, fmt.Errorf("%q: not a list of CPUs 0-%d", list, runtime.NumCPU()-1)
		}
		for i := a; i <= b; i++ {
			set.Set(i)
		}
	}
	return &set, nil
}

// pinAll sets the CPU affinity of every thread of process pid (threads
// it creates later inherit it from their creator); nothing for a nil set
// or pid 0.
func pinAll(pid int, set *unix.CPUSet) error {
	if set == nil || pid == 0 {
		return nil
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("thread %d of %d: %w", tid, pid, err)
		}
	}
	return nil
}

// prioritize gives the autogroups (sessions) of the given processes nice
// -19: with kernel.sched_autogroup_enabled the kernel shares the CPUs
// between sessions first, and every proxy runs in a session of its own
// (bench/l7prio.sh).
func prioritize(pids ...int) {
	for _, p := range pids {
		if p != 0 {
			os.WriteFile(fmt.Sprintf("/proc/%d/autogroup", p), []byte("-19"), 0)
		}
	}
}

func tableOf(s setup) string { return "cwb-" + string(s) }

// setMode leaves exactly one redirect live: the daemon's table for
// clusterwall, else the peer's table (the daemon's table dormant: its input
// chain would drop the peers' ports).
func setMode(fwFD int, s setup, peers []setup) error {
	for _, p := range peers {
		if err := benchkit.SetDormant(fwFD, tableOf(p), p != s); err != nil {
			return err
		}
	}
	return benchkit.SetDormant(fwFD, nft.DefaultTable, !s.isDaemon())
}

// redirectTable installs a dormant table
//
//	table inet NAME { flags dormant
//	  chain pre { type nat hook prerouting priority dstnat;
//	    iifname "cw-in" tcp dport 8443 redirect to :PORT } }
func redirectTable(fwFD int, name string, port uint16) error {
	c, err := nftables.New(nftables.WithNetNSFd(fwFD))
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	ch := c.AddChain(&nftables.Chain{Name: "pre", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	ifname := make([]byte, 16)
	copy(ifname, lab.FWInside)
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(benchPort)},
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: 1},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("table %s: %w", name, err)
	}
	return benchkit.SetDormant(fwFD, name, true)
}

func report(out io.Writer, setups []setup, r map[setup][]sample, loads []string) {
	get := func(s setup, f func(sample) float64) []float64 { return benchkit.Values(r[s], f) }
	ratios := func(num, den setup, f func(sample) float64) []float64 { return benchkit.Ratios(r[num], r[den], f) }
	median := benchkit.Median
	rate := func(s sample) float64 { return s.connsPS }
	tput := func(s sample) float64 { return s.mbps }
	fmt.Fprintf(out, "\n| set-up | new TLS connections/s, median | bulk MB/s, median | proxy CPU µs/connection, median | context switches/connection | TCP segments sent by fw/connection | proxy CPU µs/MB in the bulk download, median | with client and server | clients and server CPU µs/connection | machine idle during the rate | machine busy µs/connection (softirq) | proxy run-queue wait µs/connection | clients' and server's run-queue wait µs/connection | proxy's, clients' and server's share of the machine |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range setups {
		if len(r[s]) == 0 {
			continue
		}
		fmt.Fprintf(out, "| %s | %.0f | %.1f | %.0f | %.1f | %.1f | %.0f | %.0f | %.0f | %.1f %% | %.0f (%.0f) | %.0f | %.0f | %.1f %% |\n", s, median(get(s, rate)), median(get(s, tput)), median(get(s, perConn)), median(get(s, ctxPerConn)), median(get(s, segsPerConn)), median(get(s, perMB)), median(get(s, allPerMB)), median(get(s, selfPerConn)), 100*median(get(s, func(x sample) float64 { return x.idle })), median(get(s, busyPerConn)), median(get(s, softPerConn)), median(get(s, waitPerConn)), median(get(s, selfWaitPerConn)), 100*median(get(s, ownShare)))
	}
	fmt.Fprintf(out, "\n| ratio (median of the per-round ratios) | connection rate | throughput | CPU per connection | CPU per MB (bulk) | with client and server | machine busy CPU per connection |\n|---|---|---|---|---|---|---|\n")
	pair := func(num, den setup, label string) {
		if len(r[num]) == 0 || len(r[den]) == 0 {
			return
		}
		fmt.Fprintf(out, "| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", label, median(ratios(num, den, rate)), median(ratios(num, den, tput)), median(ratios(num, den, perConn)), median(ratios(num, den, perMB)), median(ratios(num, den, allPerMB)), median(ratios(num, den, busyPerConn)))
	}
	pair(setupClusterwall, setupHAProxy, "clusterwall / haproxy (targets ≥ 1.0, ≥ 1.0, ≤ 0.9)")
	pair(setupB, setupHAProxy, "clusterwall-b / haproxy")
	pair(setupB, setupClusterwall, "clusterwall-b / clusterwall")
	pair(setupHAProxyB, setupHAProxy, "haproxy-b / haproxy (A/A)")
	pair(setupClusterwall, setupSquid, "clusterwall / squid")
	pair(setupHAProxy, setupSquid, "haproxy / squid")
	pair(setupClusterwall, setupForward, "clusterwall / forward")
	pair(setupHAProxy, setupForward, "haproxy / forward")
	// The spread of the per-round ratios: the method's resolution (an
	// A/A pair shows its noise).
	type pairOf struct {
		num, den setup
		label    string
	}
	pairs := []pairOf{{setupClusterwall, setupHAProxy, "clusterwall / haproxy"}, {setupB, setupHAProxy, "clusterwall-b / haproxy"},
		{setupB, setupClusterwall, "clusterwall-b / clusterwall"}, {setupHAProxyB, setupHAProxy, "haproxy-b / haproxy"}}
	fmt.Fprintf(out, "\n| spread of the per-round ratios: median [95 %% confidence interval of the median] (quartiles; min–max; rounds above 1 of n) | connection rate | throughput | CPU per connection | connections per CPU-second of the proxy, clients and server |\n|---|---|---|---|---|\n")
	var perRound []string
	for _, p := range pairs {
		if len(r[p.num]) == 0 || len(r[p.den]) == 0 {
			continue
		}
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s |\n", p.label, spread(ratios(p.num, p.den, rate)), spread(ratios(p.num, p.den, tput)), spread(ratios(p.num, p.den, perConn)), spread(ratios(p.num, p.den, connsPerCPU)))
		var parts []string
		rr, cr := ratios(p.num, p.den, rate), ratios(p.num, p.den, perConn)
		for i := range min(len(rr), len(cr)) {
			parts = append(parts, fmt.Sprintf("%.3f/%.3f", rr[i], cr[i]))
		}
		perRound = append(perRound, fmt.Sprintf("  %-27s %s", p.label, strings.Join(parts, "  ")))
	}
	fmt.Fprintf(out, "per-round ratios (connection rate / CPU per connection):\n%s\n", strings.Join(perRound, "\n"))
	fmt.Fprintf(out, "\nload average at the start of each round: %s\n", strings.Join(loads, "; "))
	fmt.Fprintf(out, "per round (conn/s / MB/s / proxy µs per connection / proxy µs per MB in the bulk / clients and server µs per connection / machine idle during the rate / machine busy µs per connection / proxy run-queue wait µs per connection / clients' and server's run-queue wait µs per connection / their and the proxy's share of the machine):\n")
	for _, s := range setups {
		if len(r[s]) == 0 {
			continue
		}
		var parts []string
		for _, x := range r[s] {
			parts = append(parts, fmt.Sprintf("%.0f/%.0f/%.0f/%.0f/%.0f/%.0f%%/%.0f/%.0f/%.0f/%.0f%%", x.connsPS, x.mbps, perConn(x), perMB(x), selfPerConn(x), 100*x.idle, busyPerConn(x), waitPerConn(x), selfWaitPerConn(x), 100*ownShare(x)))
		}
		fmt.Fprintf(out, "  %-13s %s\n", s, strings.Join(parts, "  "))
	}
}

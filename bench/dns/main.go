// Command dns compares clusterwall's DNS proxy with dnsmasq answering from
// its cache, in the same place: the firewall's private IP 10.42.2.4 in a
// lab, forwarding to the same upstream (the lab DNS, 192.0.2.53), queried
// by dnsperf from the node namespace.
//
// All servers run at the same time on their own port of 10.42.2.4 (an idle
// server costs nothing); each round runs dnsperf against every one of them
// in a rotating order, so the machine's load falls on all alike:
//
//	cw          clusterwall dns serve --no-query-log
//	cw-log      clusterwall dns serve, one JSON query log line per query
//	            (AZFWDnsQuery) to a file, no rate limit
//	cw-log1k    the same limited to 1,000 lines/s, the daemon's default
//	            decision-log rate (log.ratePerSecond)
//	dnsmasq     dnsmasq, not logging queries (its default)
//	dnsmasq-log dnsmasq --log-queries to a file
//
// The queries are A and AAAA for every name of the lab internet, answered
// from the cache after the first pass (the lab DNS's TTL is 60 s, so a
// handful of queries per minute go upstream). The report gives medians and
// the medians of the per-round ratios, with each server's CPU time and
// context switches (all threads) per query.
//
// For A/B comparisons, -exe-b adds cwB and cwB-log1k from a second binary
// (-args-b: extra flags for them) and -only picks the servers to measure.
//
// bench/dns.sh runs it; docs/benchmarks.md has the results.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterwall/clusterwall/bench/internal/benchkit"
	"github.com/clusterwall/clusterwall/internal/lab"
)

type config struct {
	exe      string
	name     string
	rounds   int
	secs     int
	clients  int
	inflight int
	threads  int
	keep     bool
	exeB     string // a second clusterwall binary (A/B comparisons)
	argsB    string // extra dns serve flags for it
	only     string // comma-separated server names; empty: all
}

type server struct {
	name string
	port int
	// start starts the server in fw; it returns its pid.
	start func(ctx context.Context, l *lab.Lab, dir string) (int, error)
	cmd   *exec.Cmd // for servers started outside the lab's process list
}

const upstream = "192.0.2.53"

func clusterwall(name string, port int, extra ...string) *server {
	return &server{name: name, port: port, start: func(ctx context.Context, l *lab.Lab, dir string) (int, error) {
		args := append([]string{"dns", "serve", "--listen", fmt.Sprintf("%s:%d", lab.FWPrivateV4, port), "--upstream", upstream}, extra...)
		err := l.Start(ctx, lab.Proc{Name: name, Host: lab.HostFW, Args: args})
		return l.Pid(name), err
	}}
}

// clusterwallExe is clusterwall dns serve from another binary than the
// lab's (-exe-b), started like dnsmasq.
func clusterwallExe(exe, name string, port int, extra ...string) *server {
	return process(name, port, func(string) []string {
		return append([]string{exe, "dns", "serve", "--listen", fmt.Sprintf("%s:%d", lab.FWPrivateV4, port), "--upstream", upstream}, extra...)
	})
}

func dnsmasq(name string, port int, extra ...string) *server {
	return process(name, port, func(dir string) []string {
		return append([]string{"dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
			"--server=" + upstream, "--listen-address=" + lab.FWPrivateV4.String(), "--bind-interfaces",
			"--port=" + strconv.Itoa(port), "--cache-size=10000", "--user=root",
			"--pid-file=" + filepath.Join(dir, name+".pid")}, extra...)
	})
}

// process is a server that runs the command args(dir) in the firewall
// namespace, its output in dir.
func process(name string, port int, args func(dir string) []string) *server {
	s := &server{name: name, port: port}
	s.start = func(ctx context.Context, l *lab.Lab, dir string) (int, error) {
		cmd, err := benchkit.StartIn(l, lab.HostFW, filepath.Join(dir, name+".out"), args(dir)...)
		if err != nil {
			return 0, err
		}
		s.cmd = cmd
		return cmd.Process.Pid, nil
	}
	return s
}

func main() {
	var c config
	flag.StringVar(&c.exe, "exe", "bin/clusterwall", "clusterwall binary")
	flag.StringVar(&c.name, "name", "cwb8", "lab name (must not exist)")
	flag.IntVar(&c.rounds, "rounds", 5, "rounds (each measures every server once)")
	flag.IntVar(&c.secs, "time", 5, "dnsperf run time per server and round (seconds)")
	flag.IntVar(&c.clients, "clients", 8, "dnsperf -c: client sockets")
	flag.IntVar(&c.inflight, "inflight", 100, "dnsperf -q: queries outstanding")
	flag.IntVar(&c.threads, "threads", 1, "dnsperf -T: threads")
	flag.BoolVar(&c.keep, "keep", false, "leave the lab and the servers up afterwards")
	flag.StringVar(&c.exeB, "exe-b", "", "a second clusterwall binary, measured as cwB and cwB-log1k (A/B comparisons)")
	flag.StringVar(&c.argsB, "args-b", "", "extra `dns serve` flags for the -exe-b servers (space-separated, e.g. \"--udp-sockets 1\")")
	flag.StringVar(&c.only, "only", "", "comma-separated servers to measure (e.g. cw,cwB,dnsmasq); default all")
	flag.Parse()
	benchkit.Main(func(ctx context.Context) error { return run(ctx, c, os.Stdout) })
}

type sample struct {
	qps  float64
	lost float64 // per cent
	cpu  time.Duration
	n    float64 // queries completed
	cs   float64 // the server's context switches (all threads)
}

func run(ctx context.Context, c config, out io.Writer) (err error) {
	exe, err := benchkit.Preflight(c.exe, c.name, "dnsmasq dnsperf", "dnsmasq", "dnsperf")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "clusterwall-bench-dns-")
	if err != nil {
		return err
	}
	if !c.keep {
		defer os.RemoveAll(dir)
	}
	queries := filepath.Join(dir, "queries.txt")
	var qb strings.Builder
	for _, n := range lab.Names {
		fmt.Fprintf(&qb, "%s A\n%s AAAA\n", n.Name, n.Name)
	}
	if err := os.WriteFile(queries, []byte(qb.String()), 0o644); err != nil {
		return err
	}

	fmt.Fprintf(out, "clusterwall DNS benchmark: cached answers, clusterwall dns serve vs dnsmasq, %d rounds of %d s, dnsperf -c %d -q %d -T %d, lab %s\n",
		c.rounds, c.secs, c.clients, c.inflight, c.threads, c.name)
	if !c.keep {
		// Remove kills every process in the lab's namespaces, dnsmasq too.
		defer benchkit.RemoveLab(c.name, &err)
	}
	l, err := lab.Up(ctx, lab.Config{Name: c.name, Exe: exe, NoDNSForwarder: true, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	servers := []*server{
		clusterwall("cw", 5301, "--no-query-log"),
		clusterwall("cw-log", 5302),
		clusterwall("cw-log1k", 5303, "--log-rate", "1000"),
		dnsmasq("dnsmasq", 5311),
		dnsmasq("dnsmasq-log", 5312, "--log-queries", "--log-facility="+filepath.Join(dir, "dnsmasq-queries.log")),
	}
	if c.exeB != "" {
		servers = append(servers,
			clusterwallExe(c.exeB, "cwB", 5321, append(strings.Fields(c.argsB), "--no-query-log")...),
			clusterwallExe(c.exeB, "cwB-log1k", 5323, append(strings.Fields(c.argsB), "--log-rate", "1000")...))
	}
	if c.only != "" {
		keep := map[string]bool{}
		for _, n := range strings.Split(c.only, ",") {
			keep[strings.TrimSpace(n)] = true
		}
		var sel []*server
		for _, s := range servers {
			if keep[s.name] {
				sel = append(sel, s)
				delete(keep, s.name)
			}
		}
		if len(keep) > 0 || len(sel) == 0 {
			return fmt.Errorf("-only %q: unknown or no servers", c.only)
		}
		servers = sel
	}
	pids := map[string]int{}
	for _, s := range servers {
		pid, err := s.start(ctx, l, dir)
		if err != nil {
			return fmt.Errorf("start %s: %w", s.name, err)
		}
		pids[s.name] = pid
		if s.cmd != nil && !c.keep {
			defer benchkit.Stop(s.cmd)
		}
	}
	for _, s := range servers {
		if err := check(ctx, l, s); err != nil {
			return err
		}
	}
	// Fill every cache.
	for _, s := range servers {
		if _, err := dnsperf(ctx, l, c, s, queries, 1); err != nil {
			return fmt.Errorf("%s: warm-up: %w", s.name, err)
		}
	}

	results := map[string][]sample{}
	var loads []string
	for round := range c.rounds {
		order := benchkit.Rotate(servers, round)
		loads = append(loads, benchkit.Loadavg())
		for _, s := range order {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			cpu0, cs0 := benchkit.ProcCPU(pids[s.name]), ctxSwitches(pids[s.name])
			smp, err := dnsperf(ctx, l, c, s, queries, c.secs)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, s.name, err)
			}
			smp.cpu = benchkit.ProcCPU(pids[s.name]) - cpu0
			smp.cs = ctxSwitches(pids[s.name]) - cs0
			results[s.name] = append(results[s.name], smp)
			fmt.Fprintf(out, "round %d %-12s %8.0f queries/s  lost %.2f%%  server CPU %.1f µs/query  %.3f context switches/query  load %s\n",
				round+1, s.name, smp.qps, smp.lost, perQuery(smp), switchesPerQuery(smp), benchkit.Loadavg())
		}
	}
	report(out, servers, results, loads)
	return nil
}

func perQuery(s sample) float64 {
	if s.n == 0 {
		return 0
	}
	return float64(s.cpu.Microseconds()) / s.n
}

func switchesPerQuery(s sample) float64 {
	if s.n == 0 {
		return 0
	}
	return s.cs / s.n
}

// ctxSwitches sums the voluntary and involuntary context switches of all
// threads of process pid so far (0 if it is gone).
func ctxSwitches(pid int) float64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var n float64
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				x, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				n += x
			}
		}
	}
	return n
}

// check asks s for ghcr.io A from node and wants the lab's address.
func check(ctx context.Context, l *lab.Lab, s *server) error {
	addr := fmt.Sprintf("%s:%d", lab.FWPrivateV4, s.port)
	var last error
	for range 50 {
		var r *dns.Msg
		err := l.Do(lab.HostNode, func() error {
			m := new(dns.Msg)
			m.SetQuestion("ghcr.io.", dns.TypeA)
			c := &dns.Client{Timeout: time.Second}
			var err error
			r, _, err = c.ExchangeContext(ctx, m, addr)
			return err
		})
		if err == nil {
			if len(r.Answer) == 1 && strings.Contains(r.Answer[0].String(), "192.0.2.10") {
				return nil
			}
			err = fmt.Errorf("unexpected answer %v", r.Answer)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s on %s: %w", s.name, addr, last)
}

var (
	reQPS  = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
	reLost = regexp.MustCompile(`Queries lost:\s+\d+ \(([0-9.]+)%\)`)
	reDone = regexp.MustCompile(`Queries completed:\s+(\d+)`)
)

func dnsperf(ctx context.Context, l *lab.Lab, c config, s *server, queries string, secs int) (sample, error) {
	var smp sample
	out, err := l.Exec(ctx, lab.HostNode, "dnsperf", "-s", lab.FWPrivateV4.String(), "-p", strconv.Itoa(s.port),
		"-d", queries, "-l", strconv.Itoa(secs), "-c", strconv.Itoa(c.clients), "-q", strconv.Itoa(c.inflight),
		"-T", strconv.Itoa(c.threads), "-t", "2")
	if err != nil {
		return smp, fmt.Errorf("dnsperf: %w\n%s", err, out)
	}
	m := reQPS.FindSubmatch(out)
	d := reDone.FindSubmatch(out)
	if m == nil || d == nil {
		return smp, fmt.Errorf("dnsperf output without a rate:\n%s", out)
	}
	smp.qps, _ = strconv.ParseFloat(string(m[1]), 64)
	smp.n, _ = strconv.ParseFloat(string(d[1]), 64)
	if m := reLost.FindSubmatch(out); m != nil {
		smp.lost, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if smp.lost > 1 {
		return smp, fmt.Errorf("%.2f%% of the queries were lost:\n%s", smp.lost, out)
	}
	return smp, nil
}

func report(out io.Writer, servers []*server, r map[string][]sample, loads []string) {
	qps := func(s sample) float64 { return s.qps }
	get := func(name string, f func(sample) float64) []float64 { return benchkit.Values(r[name], f) }
	ratio := func(num, den string) float64 { return benchkit.Median(benchkit.Ratios(r[num], r[den], qps)) }
	fmt.Fprintf(out, "\n| server | queries/s, median | server CPU µs/query, median | context switches/query, median |\n|---|---|---|---|\n")
	for _, s := range servers {
		fmt.Fprintf(out, "| %s | %.0f | %.1f | %.3f |\n", s.name, benchkit.Median(get(s.name, qps)), benchkit.Median(get(s.name, perQuery)),
			benchkit.Median(get(s.name, switchesPerQuery)))
	}
	fmt.Fprintf(out, "\n| ratio (median of the per-round ratios; target ≥ 1.0) | |\n|---|---|\n")
	for _, p := range [][2]string{{"cw", "dnsmasq"}, {"cw-log", "dnsmasq"}, {"cw-log1k", "dnsmasq"}, {"cw-log", "dnsmasq-log"},
		{"cwB", "dnsmasq"}, {"cwB-log1k", "dnsmasq"}, {"cwB", "cw"}, {"cwB-log1k", "cw-log1k"}} {
		if len(r[p[0]]) == 0 || len(r[p[1]]) == 0 {
			continue
		}
		fmt.Fprintf(out, "| %s / %s | %.3f |\n", p[0], p[1], ratio(p[0], p[1]))
	}
	fmt.Fprintf(out, "\nload average at the start of each round: %s\n", strings.Join(loads, "; "))
	fmt.Fprintf(out, "per round (queries/s):\n")
	for _, s := range servers {
		var parts []string
		for _, x := range r[s.name] {
			parts = append(parts, fmt.Sprintf("%.0f", x.qps))
		}
		fmt.Fprintf(out, "  %-12s %s\n", s.name, strings.Join(parts, "  "))
	}
}

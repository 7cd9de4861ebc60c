// Command dataplane measures what clusterwall's kernel data plane costs:
// TCP throughput (iperf3) and the new-connection rate from the lab's node
// to a server in the lab internet, through the firewall, in three set-ups
// of the same lab, interleaved in one run:
//
//	plain     the firewall only forwards: no nftables table at all;
//	baseline  a minimal hand-written stateful ruleset (installed with
//	          google/nftables): ct state established,related accept, one
//	          accept for the benchmark server, policy drop;
//	policy    the daemon enforcing a generated policy of N network rules
//	          (default 10,000) that do not match the benchmark flows, and
//	          one allow rule for them at the end, so that every rule is in
//	          front of it;
//	stopped   the same ruleset with the daemon stopped (the table stays,
//	          fail closed): the kernel's cost alone, without the daemon's
//	          work for the decision log (one log message per new flow);
//	1-rule    the daemon enforcing only the allow rule: policy / 1-rule is
//	          the cost of the rule count alone.
//
// Each round measures plain first (both tables deleted), then puts the
// tables back (the daemon re-applies the policy: an apply-time sample) and
// measures the other set-ups in a rotating order, switching between them
// by making a table dormant (milliseconds), so that the set-ups compared
// with each other are measured seconds apart. The report gives per-round
// numbers, medians, and the medians of the per-round ratios (policy /
// baseline, policy / plain, ...), and the daemon's apply time of the
// generated policy (apply_ms of its log).
//
// bench/dataplane.sh runs it; docs/benchmarks.md has the results.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/bench/internal/benchkit"
	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/nft"
)

var (
	server     = netip.MustParseAddr("192.0.2.99") // nonazure.example.net in the lab internet
	iperfPort  = 5201
	acceptPort = 5202
)

type config struct {
	exe      string
	name     string
	rules    int
	rounds   int
	iperfDur time.Duration
	connDur  time.Duration
	conns    int
	keep     bool
	only     string
	logRate  int
	logRateB int
	exeB     string
}

func main() {
	var c config
	flag.StringVar(&c.exe, "exe", "bin/clusterwall", "clusterwall binary (lab servers and the daemon)")
	flag.StringVar(&c.name, "name", "cwbench", "lab name (must not exist)")
	flag.IntVar(&c.rules, "rules", 10000, "network rules in the generated policy")
	flag.IntVar(&c.rounds, "rounds", 5, "rounds (each measures every set-up once)")
	flag.DurationVar(&c.iperfDur, "iperf-time", 4*time.Second, "iperf3 measurement time per set-up and round (after 1 s omitted)")
	flag.DurationVar(&c.connDur, "conn-time", 2*time.Second, "new-connection measurement time per set-up and round")
	flag.IntVar(&c.conns, "clients", 4, "parallel connect/close loops")
	flag.BoolVar(&c.keep, "keep", false, "leave the lab up afterwards (in the last set-up measured)")
	flag.StringVar(&c.only, "only", "", "measure only these set-ups (comma-separated: plain, baseline, policy, stopped, 1-rule)")
	flag.IntVar(&c.logRate, "log-rate", -1, "the daemon's log.ratePerSecond (0: every flow logged; -1: the daemon's default)")
	flag.IntVar(&c.logRateB, "log-rate-b", -1, "also measure set-up policy-b: the daemon restarted with this log.ratePerSecond (0: every flow logged)")
	flag.StringVar(&c.exeB, "exe-b", "", "also measure set-up policy-b: the daemon restarted from this clusterwall binary (an A/B of two builds in one run)")
	policyOut := flag.String("write-policy", "", "only write the generated policy to this file")
	flag.Parse()
	if *policyOut != "" {
		if err := os.WriteFile(*policyOut, generatePolicy(c.rules), 0o644); err != nil {
			benchkit.Fatal(err)
		}
		return
	}
	benchkit.Main(func(ctx context.Context) error { return run(ctx, c, os.Stdout) })
}

type mode string

const (
	modePlain    mode = "plain"
	modeBaseline mode = "baseline"
	modePolicy   mode = "policy"
	// modeStopped is the policy with the daemon stopped (SIGTERM; the
	// kernel table stays: fail closed): the kernel's cost alone, without
	// the daemon reading one log message per new flow and writing decision
	// lines. The daemon is started again afterwards.
	modeStopped mode = "stopped"
	// modeOneRule is the daemon enforcing a policy with only the rule that
	// allows the benchmark flows: the same table structure (NAT chains,
	// decision logging) without the 9,999 rules in front.
	modeOneRule mode = "1-rule"
	// modePolicyB is the policy with the daemon restarted with
	// log.ratePerSecond -log-rate-b (the decision log's setting compared
	// in one run), then restarted as before.
	modePolicyB mode = "policy-b"
)

var modes = []mode{modePlain, modeBaseline, modePolicy, modeStopped, modeOneRule, modePolicyB}

type sample struct {
	gbps    float64 // iperf3 throughput
	connsPS float64 // new connections per second
	fails   int64   // connections that failed (timed out)
	// daemonCPU is the CPU time the daemon used during the measurement
	// (reading the kernel's log messages, writing decision lines).
	daemonCPU time.Duration
}

func run(ctx context.Context, c config, out io.Writer) (err error) {
	exe, err := benchkit.Preflight(c.exe, c.name, "iperf3", "iperf3")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "clusterwall-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The lab runs the daemon from dir/clusterwall, a symbolic link: set-up
	// policy-b points it at -exe-b for its measurement.
	if err := os.Symlink(exe, filepath.Join(dir, "clusterwall")); err != nil {
		return err
	}
	exeA := exe
	exe = filepath.Join(dir, "clusterwall")
	if c.exeB != "" {
		if c.exeB, err = filepath.Abs(c.exeB); err != nil {
			return err
		}
	}
	logRate := "the daemon's default"
	var daemonOpts []func(*lab.DaemonOptions)
	if c.logRate >= 0 {
		logRate = fmt.Sprint(c.logRate)
		daemonOpts = append(daemonOpts, func(o *lab.DaemonOptions) { o.LogRatePerSecond = &c.logRate })
	}
	fmt.Fprintf(out, "clusterwall data plane benchmark: %d network rules, %d rounds, lab %s, log.ratePerSecond %s\n", c.rules, c.rounds, c.name, logRate)
	if !c.keep {
		defer benchkit.RemoveLab(c.name, &err)
	}
	// SNAT off: the baseline does no NAT either, so the comparison is
	// about the rules (the lab internet routes the cluster's ranges back).
	l, fwNS, err := benchkit.UpWithDaemon(ctx, c.name, exe, dir, generatePolicy(c.rules), daemonOpts...)
	policyFile := filepath.Join(dir, "policy.yaml") // UpWithDaemon's; swapped per round
	if err != nil {
		return err
	}
	defer fwNS.Close()
	applies := []int64{}
	if ms, err := lastApplyMS(l); err == nil {
		applies = append(applies, ms)
	}

	// Servers in the lab internet: iperf3, and an accept-and-close server.
	iperf, err := l.Command(ctx, lab.HostInet, "iperf3", "-s", "-B", server.String(), "-p", fmt.Sprint(iperfPort))
	if err != nil {
		return err
	}
	iperf.Stdout, iperf.Stderr = io.Discard, io.Discard
	if err := iperf.Start(); err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() { iperf.Process.Kill(); iperf.Wait() }()
	ln, err := acceptServer(l)
	if err != nil {
		return err
	}
	defer ln.Close()
	time.Sleep(300 * time.Millisecond) // iperf3 binds

	if err := baseline(int(fwNS), true); err != nil {
		return err
	}
	// Apply times: the first apply, and a few more re-applies of the
	// whole table.
	for range 3 {
		ms, err := reapply(ctx, l)
		if err != nil {
			return err
		}
		applies = append(applies, ms)
	}

	// Each round measures plain first (both tables deleted), puts the
	// tables back, then the other set-ups in a rotating order, switched by
	// making tables dormant (milliseconds), so that the set-ups compared
	// with each other are measured seconds apart.
	results := map[mode][]sample{}
	for round := range c.rounds {
		rotated := []mode{modeBaseline, modePolicy, modeStopped, modeOneRule}
		if c.logRateB >= 0 || c.exeB != "" {
			rotated = append(rotated, modePolicyB)
		}
		order := benchkit.Rotate(rotated, round)
		order = append([]mode{modePlain}, order...)
		for i, m := range order {
			if c.only != "" && !slices.Contains(strings.Split(c.only, ","), string(m)) {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := setMode(l, int(fwNS), m); err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, m, err)
			}
			if m == modeOneRule {
				if _, err := swapPolicy(ctx, l, policyFile, generatePolicy(1)); err != nil {
					return fmt.Errorf("round %d, %s: %w", round+1, m, err)
				}
			}
			var daemonConf []byte
			if m == modePolicyB {
				if daemonConf, err = restartB(ctx, l, exe, c); err != nil {
					return fmt.Errorf("round %d, %s: %w", round+1, m, err)
				}
			}
			if err := verify(l, m); err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, m, err)
			}
			if err := benchkit.FlushConntrack(fwNS); err != nil {
				return err
			}
			settle(l)
			cpu0 := daemonCPU(l)
			s, err := measure(ctx, l, c)
			s.daemonCPU = daemonCPU(l) - cpu0
			if m == modeOneRule {
				ms, err := swapPolicy(ctx, l, policyFile, generatePolicy(c.rules))
				if err != nil {
					return fmt.Errorf("round %d: back to %d rules: %w", round+1, c.rules, err)
				}
				applies = append(applies, ms)
			}
			if m == modePolicyB {
				if werr := os.WriteFile(filepath.Join(l.Dir(), lab.DaemonConfigFile), daemonConf, 0o644); werr != nil {
					return werr
				}
				if werr := relink(exe, exeA); werr != nil {
					return werr
				}
				if serr := l.Stop(lab.DaemonProc); serr != nil {
					return serr
				}
			}
			if m == modeStopped || m == modePolicyB {
				ms, serr := startDaemon(ctx, l)
				if serr != nil {
					return fmt.Errorf("round %d: restart the daemon: %w", round+1, serr)
				}
				applies = append(applies, ms)
			}
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, m, err)
			}
			results[m] = append(results[m], s)
			fmt.Fprintf(out, "round %d %-8s  %6.2f Gbit/s  %8.0f conn/s  daemon CPU %6.3f s (%.2f µs per new connection)", round+1, m, s.gbps, s.connsPS, s.daemonCPU.Seconds(), s.daemonCPU.Seconds()*1e6/(s.connsPS*c.connDur.Seconds()))
			if s.fails > 0 {
				fmt.Fprintf(out, "  (%d connections timed out)", s.fails)
			}
			fmt.Fprintln(out)
			if m == modePlain && i < len(order)-1 {
				ms, err := restore(ctx, l, int(fwNS))
				if err != nil {
					return fmt.Errorf("round %d: restore: %w", round+1, err)
				}
				applies = append(applies, ms)
			}
		}
	}
	report(out, c, results, applies)
	return nil
}

// setMode puts the firewall into mode m. Plain deletes both tables (a
// table that is only dormant still keeps conntrack hooked); the others
// need both tables in the kernel (restore re-creates them) and switch by
// making one of them dormant.
func setMode(l *lab.Lab, fwFD int, m mode) error {
	if m == modePlain {
		if err := nft.NewNetlinkRunner(nft.NetlinkOptions{NetNSFd: fwFD}).Flush(); err != nil {
			return err
		}
		return baseline(fwFD, false)
	}
	if err := benchkit.SetDormant(fwFD, baselineTable, m != modeBaseline); err != nil {
		return err
	}
	if err := benchkit.SetDormant(fwFD, nft.DefaultTable, m == modeBaseline); err != nil {
		return err
	}
	if m == modeStopped {
		return l.Stop(lab.DaemonProc)
	}
	return nil
}

// restartB restarts the daemon as set-up policy-b: with log.ratePerSecond
// -log-rate-b in its config, from binary -exe-b (the link exe points
// there). It returns the config as it was.
func restartB(ctx context.Context, l *lab.Lab, exe string, c config) ([]byte, error) {
	file := filepath.Join(l.Dir(), lab.DaemonConfigFile)
	orig, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if c.logRateB >= 0 {
		var b strings.Builder
		for _, line := range strings.SplitAfter(string(orig), "\n") {
			if strings.HasPrefix(line, "  ratePerSecond:") {
				continue
			}
			b.WriteString(line)
			if line == "log:\n" {
				fmt.Fprintf(&b, "  ratePerSecond: %d\n", c.logRateB)
			}
		}
		if !strings.Contains(b.String(), "ratePerSecond") {
			return nil, errors.New("no log section in the daemon's config")
		}
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			return nil, err
		}
	}
	if c.exeB != "" {
		if err := relink(exe, c.exeB); err != nil {
			return nil, err
		}
	}
	if err := l.Stop(lab.DaemonProc); err != nil {
		return nil, err
	}
	if _, err := startDaemon(ctx, l); err != nil {
		return nil, err
	}
	return orig, nil
}

// relink points the symbolic link link at target (atomically: a new link
// renamed over it).
func relink(link, target string) error {
	tmp := link + ".new"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, link)
}

// startDaemon starts the daemon again after modeStopped and returns its
// apply time.
func startDaemon(ctx context.Context, l *lab.Lab) (int64, error) {
	err := l.Start(ctx, lab.Proc{Name: lab.DaemonProc, Host: lab.HostFW,
		Args:  []string{"run", "--config", filepath.Join(l.Dir(), lab.DaemonConfigFile)},
		Ready: func(ctx context.Context, l *lab.Lab) error { return l.WaitDaemon(ctx, time.Minute) }})
	if err != nil {
		return -1, err
	}
	// /healthz answers once the policy is applied; the log line follows.
	time.Sleep(100 * time.Millisecond)
	return lastApplyMS(l)
}

// verify checks that the firewall is in set-up m, with two flows that the
// set-ups treat differently: TCP to 192.0.2.99:9000 (plain and baseline
// pass it, the policy does not allow it) and to 192.0.2.10:80 (only plain
// passes it).
func verify(l *lab.Lab, m mode) error {
	try := func(dst string) bool {
		var ok bool
		l.Do(lab.HostNode, func() error {
			c, err := net.DialTimeout("tcp", dst, 300*time.Millisecond)
			if err == nil {
				c.Close()
				ok = true
			}
			return nil
		})
		return ok
	}
	want99 := m == modePlain || m == modeBaseline
	want10 := m == modePlain
	if got := try("192.0.2.99:9000"); got != want99 {
		return fmt.Errorf("set-up check: 192.0.2.99:9000 passes=%v, want %v", got, want99)
	}
	if got := try("192.0.2.10:80"); got != want10 {
		return fmt.Errorf("set-up check: 192.0.2.10:80 passes=%v, want %v", got, want10)
	}
	return nil
}

// daemonCPU returns the CPU time the daemon used so far: its threads' run
// time (schedstat, nanoseconds; /proc's user and system times count 10 ms
// ticks, as much as a sixth of a measurement's 0.06 s).
func daemonCPU(l *lab.Lab) time.Duration {
	return benchkit.ProcRunTime(l.Pid(lab.DaemonProc))
}

// settle waits (up to 10 s) until the daemon is idle, so that its work on
// one measurement's log messages does not spill into the next one.
func settle(l *lab.Lab) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		a := daemonCPU(l)
		time.Sleep(200 * time.Millisecond)
		if daemonCPU(l)-a <= 10*time.Millisecond {
			return
		}
	}
}

// restore puts both tables back after the plain set-up: the baseline
// table, and the policy, which the daemon applies again (SIGHUP). It
// returns the daemon's apply time.
func restore(ctx context.Context, l *lab.Lab, fwFD int) (int64, error) {
	if err := baseline(fwFD, true); err != nil {
		return -1, err
	}
	return reapply(ctx, l)
}

const baselineTable = "cwbench"

// baseline installs (or, with on false, removes) the minimal stateful
// ruleset:
//
//	table inet cwbench {
//	  chain forward { type filter hook forward priority 0; policy drop;
//	    ct state established,related accept
//	    ip daddr 192.0.2.99 accept
//	  }
//	}
func baseline(fwFD int, on bool) error {
	c, err := nftables.New(nftables.WithNetNSFd(fwFD))
	if err != nil {
		return err
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: baselineTable}
	// Add first so that the delete never fails on a missing table.
	c.AddTable(t)
	c.DelTable(t)
	if on {
		t = c.AddTable(t)
		drop := nftables.ChainPolicyDrop
		ch := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: server.AsSlice()},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
	}
	return c.Flush()
}

// swapPolicy replaces the policy file (rename) and waits until the
// daemon has applied it; it returns the apply time.
func swapPolicy(ctx context.Context, l *lab.Lab, file string, data []byte) (int64, error) {
	before, err := status(ctx, l)
	if err != nil {
		return -1, err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return -1, err
	}
	if err := os.Rename(tmp, file); err != nil {
		return -1, err
	}
	return waitReload(ctx, l, before)
}

// reapply makes the daemon apply its policy again (SIGHUP) and returns its
// apply time.
func reapply(ctx context.Context, l *lab.Lab) (int64, error) {
	before, err := status(ctx, l)
	if err != nil {
		return -1, err
	}
	if err := l.Signal(lab.DaemonProc, syscall.SIGHUP); err != nil {
		return -1, err
	}
	return waitReload(ctx, l, before)
}

// waitReload waits until the daemon finished a reload after before and
// returns its apply time.
func waitReload(ctx context.Context, l *lab.Lab, before daemonStatus) (int64, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := status(ctx, l)
		if err == nil && st.LastReloadAt.After(before.LastReloadAt) {
			if st.LastReload != "ok" {
				return -1, fmt.Errorf("reload: %s", st.LastReload)
			}
			break
		}
		if time.Now().After(deadline) {
			return -1, errors.New("the daemon did not reload within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return lastApplyMS(l)
}

type daemonStatus struct {
	Generation   uint64    `json:"generation"`
	LastReload   string    `json:"lastReload"`
	LastReloadAt time.Time `json:"lastReloadAt"`
}

func status(ctx context.Context, l *lab.Lab) (daemonStatus, error) {
	var st daemonStatus
	code, body, err := l.Admin(ctx, http.MethodGet, "/v1/status")
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("status: %d", code)
	}
	return st, json.Unmarshal(body, &st)
}

// lastApplyMS reads apply_ms of the daemon's last "policy applied" line.
func lastApplyMS(l *lab.Lab) (int64, error) {
	f, err := os.Open(l.LogFile(lab.DaemonProc))
	if err != nil {
		return -1, err
	}
	defer f.Close()
	ms := int64(-1)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg     string `json:"msg"`
			ApplyMS int64  `json:"apply_ms"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "policy applied" {
			ms = line.ApplyMS
		}
	}
	if ms < 0 {
		return -1, errors.New("no apply_ms in the daemon's log")
	}
	return ms, nil
}

// acceptServer listens on server:acceptPort in inet and closes every
// connection it accepts.
func acceptServer(l *lab.Lab) (net.Listener, error) {
	var ln net.Listener
	err := l.Do(lab.HostInet, func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(server, uint16(acceptPort)).String())
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln, nil
}

// measure runs iperf3 and then the connect/close loops from node.
func measure(ctx context.Context, l *lab.Lab, c config) (sample, error) {
	var s sample
	secs := int((c.iperfDur + time.Second - 1) / time.Second)
	cctx, cancel := context.WithTimeout(ctx, c.iperfDur+30*time.Second)
	defer cancel()
	outb, err := l.Exec(cctx, lab.HostNode, "iperf3", "-c", server.String(), "-p", fmt.Sprint(iperfPort),
		"-t", fmt.Sprint(secs), "-O", "1", "-J")
	if err != nil {
		return s, fmt.Errorf("iperf3: %w %s", err, outb)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(outb, &res); err != nil || res.Error != "" {
		return s, fmt.Errorf("iperf3 output: %v %s", err, res.Error)
	}
	s.gbps = res.End.SumReceived.BitsPerSecond / 1e9

	var n, fails atomic.Int64
	var wg sync.WaitGroup
	dst := netip.AddrPortFrom(server, uint16(acceptPort)).String()
	deadline := time.Now().Add(c.connDur)
	var firstErr atomic.Value
	for range c.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The loop runs on a thread inside node's namespace, so its
			// sockets are node's.
			err := l.Do(lab.HostNode, func() error {
				d := net.Dialer{Timeout: 3 * time.Second}
				for time.Now().Before(deadline) {
					conn, err := d.Dial("tcp", dst)
					if err != nil {
						fails.Add(1)
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					conn.(*net.TCPConn).SetLinger(0) // RST: no TIME_WAIT, no port exhaustion
					conn.Close()
					n.Add(1)
				}
				return nil
			})
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	// A few failures under load are noise (a full accept queue drops a
	// SYN); many mean the firewall is in the way.
	if f := fails.Load(); f*100 > n.Load() {
		return s, fmt.Errorf("%d of %d connections failed: %v", f, f+n.Load(), firstErr.Load())
	}
	s.fails = fails.Load()
	s.connsPS = float64(n.Load()) / c.connDur.Seconds()
	return s, nil
}

func report(out io.Writer, c config, r map[mode][]sample, applies []int64) {
	get := func(m mode, f func(sample) float64) []float64 { return benchkit.Values(r[m], f) }
	ratios := func(num, den mode, f func(sample) float64) []float64 { return benchkit.Ratios(r[num], r[den], f) }
	median := benchkit.Median
	tput := func(s sample) float64 { return s.gbps }
	rate := func(s sample) float64 { return s.connsPS }
	fmt.Fprintf(out, "\n| set-up | TCP throughput, median (Gbit/s) | new connections, median (per s) |\n|---|---|---|\n")
	for _, m := range modes {
		if len(r[m]) > 0 {
			fmt.Fprintf(out, "| %s | %.2f | %.0f |\n", m, median(get(m, tput)), median(get(m, rate)))
		}
	}
	fmt.Fprintf(out, "\n| ratio (median of the %d per-round ratios) | throughput | new connections |\n|---|---|---|\n", c.rounds)
	ratio := func(label string, num, den mode) {
		if len(r[num]) > 0 && len(r[den]) > 0 {
			fmt.Fprintf(out, "| %s | %.3f | %.3f |\n", label, median(ratios(num, den, tput)), median(ratios(num, den, rate)))
		}
	}
	ratio(fmt.Sprintf("policy (%d rules) / baseline", c.rules), modePolicy, modeBaseline)
	ratio(fmt.Sprintf("policy-b (%d rules; log.ratePerSecond %d, -exe-b %q) / baseline", c.rules, c.logRateB, c.exeB), modePolicyB, modeBaseline)
	ratio(fmt.Sprintf("policy (%d rules) / plain", c.rules), modePolicy, modePlain)
	ratio(fmt.Sprintf("policy (%d rules) / 1-rule", c.rules), modePolicy, modeOneRule)
	ratio("1-rule / baseline", modeOneRule, modeBaseline)
	ratio(fmt.Sprintf("stopped (%d rules, daemon stopped) / baseline", c.rules), modeStopped, modeBaseline)
	ratio("policy / stopped (the daemon's share)", modePolicy, modeStopped)
	ratio("policy-b / stopped", modePolicyB, modeStopped)
	ratio("policy-b / policy", modePolicyB, modePolicy)
	ratio("baseline / plain", modeBaseline, modePlain)
	cpu := func(s sample) float64 { return s.daemonCPU.Seconds() }
	fmt.Fprintf(out, "\ndaemon CPU time per policy measurement (%s iperf3 + %s connect loops; it reads one kernel log message per new flow): median %.3f s\n",
		c.iperfDur, c.connDur, median(get(modePolicy, cpu)))
	perConn := func(s sample) float64 { return s.daemonCPU.Seconds() * 1e6 / (s.connsPS * c.connDur.Seconds()) }
	fmt.Fprintf(out, "daemon CPU per new connection (all of the measurement's CPU over the connect loops' flows): policy median %.2f µs, policy-b %.2f µs, 1-rule %.2f µs\n",
		median(get(modePolicy, perConn)), median(get(modePolicyB, perConn)), median(get(modeOneRule, perConn)))
	var ms []float64
	for _, a := range applies {
		ms = append(ms, float64(a))
	}
	if len(ms) > 0 {
		fmt.Fprintf(out, "\napply time of the %d-rule policy (daemon apply_ms: load, validate, compile, one netlink batch): median %.0f ms, max %.0f ms over %d applies\n",
			c.rules, median(ms), slices.Max(ms), len(ms))
	}
	fmt.Fprintf(out, "per round (Gbit/s / new connections per s):\n")
	for _, m := range modes {
		if len(r[m]) == 0 {
			continue
		}
		var parts []string
		for _, s := range r[m] {
			parts = append(parts, fmt.Sprintf("%.2f/%.0f", s.gbps, s.connsPS))
		}
		fmt.Fprintf(out, "  %-8s %s\n", m, strings.Join(parts, "  "))
	}
}

// generatePolicy is lab.BenchPolicy with the benchmark's server,
// 192.0.2.99 and 2001:db8:192::99.
func generatePolicy(n int) []byte { return lab.BenchPolicy(n, "192.0.2.99", "2001:db8:192::99") }

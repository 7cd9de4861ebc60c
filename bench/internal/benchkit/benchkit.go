// Package benchkit holds what the benchmark drivers (bench/dataplane,
// bench/dns, bench/l7) share: the start and end of a run (root, the peers'
// binaries, the lab name, removing the lab), starting and stopping peer
// processes in a lab namespace, switching nftables tables dormant in one
// netlink batch, flushing conntrack, the CPU time of a process, the load
// average, rotating the order of the set-ups, and medians and per-round
// ratios for the reports.
package benchkit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables/binaryutil"
	mnetlink "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// Main runs run with a context cancelled on SIGINT or SIGTERM and exits 1
// with "bench: ERROR" on standard error when it fails.
func Main(run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		Fatal(err)
	}
}

// Fatal prints "bench: ERROR" on standard error and exits 1.
func Fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// Preflight checks what a run needs before it builds anything: root (for
// the network namespaces), the peers' binaries bins (install names the
// Debian packages that hold them), and that lab name does not exist. It
// returns the absolute path of the clusterwall binary exe.
func Preflight(exe, name, install string, bins ...string) (string, error) {
	if os.Geteuid() != 0 {
		return "", errors.New("needs root (network namespaces)")
	}
	for _, bin := range bins {
		if _, err := exec.LookPath(bin); err != nil {
			return "", fmt.Errorf("%s is missing: apt-get install -y %s", bin, install)
		}
	}
	abs, err := filepath.Abs(exe)
	if err != nil {
		return "", err
	}
	if lab.Exists(name) {
		return "", fmt.Errorf("lab %s exists; remove it (clusterwall lab down --name %s) or pick -name", name, name)
	}
	return abs, nil
}

// RemoveLab removes lab name (every process in its namespaces too) and
// joins a failure to *err; deferred by a run that does not keep its lab.
func RemoveLab(name string, err *error) {
	if derr := lab.Remove(name); derr != nil {
		*err = errors.Join(*err, derr)
	}
}

// UpWithDaemon writes policy to dir/policy.yaml and brings up lab name
// with the daemon running it, SNAT off (the benchmarks compare against
// set-ups without NAT, and their servers tell a proxied connection by its
// source). It returns the lab and its firewall's network namespace (the
// caller closes it, and removes the lab: RemoveLab).
func UpWithDaemon(ctx context.Context, name, exe, dir string, policy []byte, opts ...func(*lab.DaemonOptions)) (*lab.Lab, netns.NsHandle, error) {
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, policy, 0o644); err != nil {
		return nil, netns.None(), err
	}
	do := &lab.DaemonOptions{Policy: policyFile, SNAT: "off"}
	for _, o := range opts {
		o(do)
	}
	l, err := lab.Up(ctx, lab.Config{Name: name, Exe: exe, Log: slog.New(slog.DiscardHandler), Daemon: do})
	if err != nil {
		return nil, netns.None(), err
	}
	ns, err := FWNetNS(l)
	return l, ns, err
}

// FWNetNS opens the network namespace of the lab's firewall.
func FWNetNS(l *lab.Lab) (netns.NsHandle, error) {
	return netns.GetFromName(l.NS(lab.HostFW))
}

// StartIn starts argv in host of lab l in a session of its own, with its
// standard output and error appended to the file out. The caller waits for it
// (Stop does).
func StartIn(l *lab.Lab, host, out string, argv ...string) (*exec.Cmd, error) {
	cmd, err := l.Command(context.Background(), host, argv...)
	if err != nil {
		return nil, err
	}
	// Started as the lab starts its own processes (lab.Start): a session
	// of its own and its output appended to its file. In bench/l7 the
	// daemon started here in a process group of the benchmark's session,
	// its output in a new file, got 1.2 × the connection rate of the same
	// binary started by the lab, run after run; started like this, it did
	// not (docs/benchmarks.md, "Issue 15 goal 4").
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return cmd, nil
}

// Stop sends cmd SIGTERM and waits for it, killing it after 5 s.
func Stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// SetDormant switches an inet table between dormant (its base chains
// unhooked: packets do not see it) and active, in one netlink batch. It is
// how the benchmarks alternate quickly between set-ups whose tables stay
// in the kernel. (google/nftables always sends table flags 0, so the
// message is built here.)
func SetDormant(fwFD int, table string, dormant bool) error {
	c, err := mnetlink.Dial(unix.NETLINK_NETFILTER, &mnetlink.Config{NetNS: fwFD})
	if err != nil {
		return err
	}
	defer c.Close()
	nfgen := func(family uint8, resID uint16) []byte {
		return []byte{family, 0 /* NFNETLINK_V0 */, byte(resID >> 8), byte(resID)}
	}
	flags := uint32(0)
	if dormant {
		flags = unix.NFT_TABLE_F_DORMANT
	}
	attrs, err := mnetlink.MarshalAttributes([]mnetlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: append([]byte(table), 0)},
		{Type: unix.NFTA_TABLE_FLAGS, Data: binaryutil.BigEndian.PutUint32(flags)},
	})
	if err != nil {
		return err
	}
	msgs := []mnetlink.Message{
		{Header: mnetlink.Header{Type: mnetlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN), Flags: mnetlink.Request},
			Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
		{Header: mnetlink.Header{Type: mnetlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE), Flags: mnetlink.Request | mnetlink.Acknowledge},
			Data: append(nfgen(unix.NFPROTO_INET, 0), attrs...)},
		{Header: mnetlink.Header{Type: mnetlink.HeaderType(unix.NFNL_MSG_BATCH_END), Flags: mnetlink.Request},
			Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
	}
	if _, err := c.SendMessages(msgs); err != nil {
		return fmt.Errorf("table %s dormant=%v: %w", table, dormant, err)
	}
	if _, err := c.Receive(); err != nil {
		return fmt.Errorf("table %s dormant=%v: %w", table, dormant, err)
	}
	return nil
}

// FlushConntrack empties the conntrack table of namespace ns.
func FlushConntrack(ns netns.NsHandle) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		return fmt.Errorf("flush conntrack: %w", err)
	}
	return nil
}

// ProcCPU returns the CPU time (user and system) process pid used so far;
// 0 for pid 0 or a process that is gone.
func ProcCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ...: utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100
}

// ProcRunTime returns the time process pid's threads that are alive now
// have run on a CPU so far (/proc/PID/task/*/schedstat, in nanoseconds:
// exact, where /proc/PID/stat's user and system times come in 10 ms
// ticks); 0 for pid 0 or a process that is gone.
func ProcRunTime(pid int) time.Duration {
	run, _ := ProcSchedstat(pid)
	return run
}

// ProcSchedstat returns the time process pid's threads that are alive now
// have run on a CPU and have waited on a run queue so far
// (/proc/PID/task/*/schedstat's first two fields); 0s for pid 0 or a
// process that is gone.
func ProcSchedstat(pid int) (run, wait time.Duration) {
	if pid == 0 {
		return 0, 0
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		var r, w int64
		fmt.Sscan(string(data), &r, &w)
		run += time.Duration(r)
		wait += time.Duration(w)
	}
	return run, wait
}

// ProcCtxSwitches returns the context switches (voluntary and not) of
// process pid's threads that are alive now; 0 for pid 0.
func ProcCtxSwitches(pid int) int64 {
	if pid == 0 {
		return 0
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var n int64
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(data)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				var x int64
				fmt.Sscan(strings.TrimSpace(v), &x)
				n += x
			}
		}
	}
	return n
}

// Loadavg returns the 1, 5 and 15 minute load averages ("?" if unknown).
func Loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// Rotate returns a copy of xs rotated left by n mod len(xs): round r of a
// benchmark measures its set-ups in the order Rotate(setups, r).
func Rotate[T any](xs []T, n int) []T {
	if len(xs) == 0 {
		return nil
	}
	k := n % len(xs)
	return append(slices.Clone(xs[k:]), xs[:k]...)
}

// Balanced returns xs in the order of round n of a Williams design: over
// len(xs) consecutive rounds (2 × len(xs) for an odd count) every element
// is measured in every position equally often and directly after every
// other element equally often, so that neither a position in the round
// nor what ran just before (a daemon restart, the TIME_WAIT sockets of a
// faster set-up) favours one set-up. Rotate balances positions only:
// with it the same element always follows the same other one. For two
// elements both give AB, BA.
func Balanced[T any](xs []T, n int) []T {
	k := len(xs)
	if k == 0 {
		return nil
	}
	rows := k
	if k%2 == 1 {
		rows = 2 * k
	}
	r := n % rows
	// The first row: 0, 1, k-1, 2, k-2, ...; row i adds i (mod k); for
	// an odd k, rows k..2k-1 are rows 0..k-1 reversed.
	seq := make([]int, k)
	lo, hi := 1, k-1
	for i := 1; i < k; i++ {
		if i%2 == 1 {
			seq[i], lo = lo, lo+1
		} else {
			seq[i], hi = hi, hi-1
		}
	}
	out := make([]T, k)
	for i, j := range seq {
		idx := (j + r%k) % k
		if r >= k {
			out[k-1-i] = xs[idx]
		} else {
			out[i] = xs[idx]
		}
	}
	return out
}

// Median returns the median of xs (0 for none).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Values returns f of every sample.
func Values[S any](samples []S, f func(S) float64) []float64 {
	var xs []float64
	for _, s := range samples {
		xs = append(xs, f(s))
	}
	return xs
}

// Ratios returns the per-round ratios f(num[i]) / f(den[i]), leaving out
// rounds where the denominator is not positive.
func Ratios[S any](num, den []S, f func(S) float64) []float64 {
	var xs []float64
	for i := range min(len(num), len(den)) {
		if d := f(den[i]); d > 0 {
			xs = append(xs, f(num[i])/d)
		}
	}
	return xs
}

package ha

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// procs supervises keepalived and conntrackd.
type procs struct {
	m          *Manager
	keepalived *child
	conntrackd *child
	fifo       *os.File
}

// child is one supervised process, restarted when it dies.
type child struct {
	name string
	argv []string
	log  string // its standard output and error
	pid  string // pid file the supervisor writes ("" when the program writes its own)
	// ready, when set, must return nil (within a few seconds) once a
	// start took.
	ready func() error

	mu       sync.Mutex
	cmd      *exec.Cmd
	running  bool
	restarts uint64
	lastExit string
	stopping bool
	done     chan struct{} // closed when the current process has been reaped
}

func (c *child) start() error {
	logf, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- %s clusterwall starts: %s\n", time.Now().UTC().Format(time.RFC3339Nano), strings.Join(c.argv, " "))
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a signal to the daemon's group (Ctrl-C) does
	// not reach it, and a daemon that crashes leaves it running: keepalived
	// then gives the addresses up when its readiness check fails.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	if c.pid != "" {
		os.WriteFile(c.pid, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	}
	done := make(chan struct{})
	c.mu.Lock()
	c.cmd, c.running, c.done = cmd, true, done
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		c.running = false
		if err != nil {
			c.lastExit = err.Error()
		} else {
			c.lastExit = "exited"
		}
		c.mu.Unlock()
		close(done)
	}()
	return nil
}

// supervise restarts c whenever it dies, with a backoff, until ctx ends
// or stop is called.
func (c *child) supervise(ctx context.Context, m *Manager, restarted func()) {
	backoff := 500 * time.Millisecond
	for {
		c.mu.Lock()
		done := c.done
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-done:
		}
		c.mu.Lock()
		stopping, exit := c.stopping, c.lastExit
		c.mu.Unlock()
		if stopping || ctx.Err() != nil {
			return
		}
		m.log.Error("HA process died; restarting", "process", c.name, "exit", exit, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
		if c.name == conntrackdProgName {
			cleanConntrackd(m.spec)
		}
		if err := c.start(); err != nil {
			m.log.Error("HA process restart failed", "process", c.name, "err", err)
			// Retry after the next backoff: fake a dead process.
			d := make(chan struct{})
			close(d)
			c.mu.Lock()
			c.done = d
			c.mu.Unlock()
			continue
		}
		c.mu.Lock()
		c.restarts++
		c.mu.Unlock()
		if restarted != nil {
			restarted()
		}
	}
}

// stop ends the process: SIGTERM, then SIGKILL after timeout.
func (c *child) stop(timeout time.Duration) {
	c.mu.Lock()
	c.stopping = true
	cmd, done, running := c.cmd, c.done, c.running
	c.mu.Unlock()
	if cmd == nil || !running {
		return
	}
	cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
	}
	if c.pid != "" {
		os.Remove(c.pid)
	}
}

func (c *child) status() ProcStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := ProcStatus{Running: c.running, Restarts: c.restarts, LastExit: c.lastExit}
	if c.running && c.cmd != nil {
		ps.Pid = c.cmd.Process.Pid
	}
	return ps
}

func (p *procs) keepalivedRunning() bool {
	return p.keepalived.status().Running
}

func (p *procs) status() (ProcStatus, ProcStatus) {
	return p.keepalived.status(), p.conntrackd.status()
}

func program(configured, def, name string) string {
	if configured != "" {
		return configured
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return def
}

// startProcs prepares RunDir and starts conntrackd, then keepalived.
func (m *Manager) startProcs(ctx context.Context) error {
	s := m.spec
	s.Keepalived = program(s.Keepalived, defaultKeepalived, keepalivedProgName)
	s.Conntrackd = program(s.Conntrackd, defaultConntrackd, conntrackdProgName)
	for _, prog := range []string{s.Keepalived, s.Conntrackd} {
		if _, err := os.Stat(prog); err != nil {
			return fmt.Errorf("HA needs %s (Debian: apt-get install keepalived conntrackd): %w", filepath.Base(prog), err)
		}
	}
	if err := os.MkdirAll(s.RunDir, 0o700); err != nil {
		return err
	}
	os.Chmod(s.RunDir, 0o700) // keepalived's script security: only root may write here
	killLeftovers(s, m.log)
	cleanConntrackd(s)
	if err := removeVirtualAddrs(s); err != nil {
		m.log.Warn("removing virtual addresses left by an earlier run", "err", err)
	}
	// Flows to or from any address of this gateway are its own: not
	// replicated (conntrackd's Address Ignore).
	if addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL); err == nil {
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.IsLinkLocalUnicast() {
				s.LocalAddrs = append(s.LocalAddrs, ip.Unmap())
			}
		}
	}
	for name, data := range s.Files() {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o700
		}
		if err := writeFileAtomic(s.Path(name), data, mode); err != nil {
			return err
		}
	}
	fifo := s.Path(KeepalivedFIFO)
	if fi, err := os.Lstat(fifo); err == nil && fi.Mode()&os.ModeNamedPipe == 0 {
		os.Remove(fifo)
	}
	if err := unix.Mkfifo(fifo, 0o600); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("notify FIFO %s: %w", fifo, err)
	}
	// O_RDWR: reads never see end-of-file while keepalived restarts.
	f, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("notify FIFO %s: %w", fifo, err)
	}
	p := &procs{m: m, fifo: f}
	p.conntrackd = &child{name: conntrackdProgName, log: s.Path(ConntrackdStdout), pid: s.Path(ConntrackdPid),
		argv: []string{s.Conntrackd, "-C", s.Path(ConntrackdConf)}}
	p.keepalived = &child{name: keepalivedProgName, log: s.Path(KeepalivedLog),
		argv: []string{s.Keepalived, "--dont-fork", "--log-console", "--log-detail", "--vrrp", "--no-syslog",
			"--use-file", s.Path(KeepalivedConf), "--pid", s.Path(KeepalivedPid),
			"--vrrp_pid", s.Path(KeepalivedVRRPPid), "--checkers_pid", s.Path(KeepalivedCheckPid)}}
	m.procs = p
	if err := p.conntrackd.start(); err != nil {
		f.Close()
		return err
	}
	// keepalived's first transition runs the notify script, which talks
	// to conntrackd: wait for its control socket first.
	if err := waitSocket(ctx, s.Path(ConntrackdSocket), p.conntrackd, 5*time.Second); err != nil {
		p.conntrackd.stop(2 * time.Second)
		f.Close()
		return fmt.Errorf("conntrackd did not start (see %s): %w", s.Path(ConntrackdLog), err)
	}
	if err := p.keepalived.start(); err != nil {
		p.conntrackd.stop(2 * time.Second)
		f.Close()
		return err
	}
	m.wg.Add(3)
	go func() {
		defer m.wg.Done()
		p.conntrackd.supervise(ctx, m, func() {
			m.mu.Lock()
			m.syncErrs++ // a conntrackd restart loses its caches
			m.mu.Unlock()
		})
	}()
	go func() { defer m.wg.Done(); p.keepalived.supervise(ctx, m, nil) }()
	go func() { defer m.wg.Done(); p.readFIFO(ctx) }()
	m.log.Info("HA started", "gateway", s.Name, "mode", s.Mode(), "runDir", s.RunDir,
		"keepalived", p.keepalived.status().Pid, "conntrackd", p.conntrackd.status().Pid)
	return nil
}

// stopProcs stops keepalived (which hands its addresses over) and then
// conntrackd.
func (m *Manager) stopProcs() {
	p := m.procs
	if p == nil {
		return
	}
	p.keepalived.stop(5 * time.Second)
	p.conntrackd.stop(3 * time.Second)
	p.fifo.Close()
}

func (p *procs) readFIFO(ctx context.Context) {
	go func() { <-ctx.Done(); p.fifo.Close() }()
	sc := bufio.NewScanner(p.fifo)
	for sc.Scan() {
		kind, name, state, ok := ParseFIFOLine(sc.Text())
		if !ok {
			continue
		}
		p.m.log.Info("keepalived", "kind", strings.ToLower(kind), "name", name, "state", state)
		p.m.noteInstance(kind, name, state)
	}
}

// conntrackdCtl runs conntrackd's client mode against this instance.
func (m *Manager) conntrackdCtl(ctx context.Context, args ...string) (string, error) {
	if m.procs == nil || !m.procs.conntrackd.status().Running {
		return "", errors.New("not running")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.spec.Conntrackd, append([]string{"-C", m.spec.Path(ConntrackdConf)}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("conntrackd %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// held returns the groups' addresses present on this gateway's interfaces.
func (m *Manager) held() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, ifc := range []string{m.spec.Inside, m.spec.Outside} {
		l, err := netlink.LinkByName(ifc)
		if err != nil {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out[ip.Unmap()] = true
			}
		}
	}
	return out
}

// removeVirtualAddrs deletes the groups' addresses from the interfaces: a
// gateway that starts holds none of them until keepalived says so (a
// keepalived killed earlier leaves them behind, and two gateways answering
// for one address is a split brain).
func removeVirtualAddrs(s *Spec) error {
	var errs []error
	for _, g := range s.Groups {
		for _, x := range []struct {
			ifc   string
			addrs []netip.Prefix
		}{{s.Inside, g.Inside}, {s.Outside, g.Public}} {
			l, err := netlink.LinkByName(x.ifc)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", x.ifc, err))
				continue
			}
			have, err := netlink.AddrList(l, netlink.FAMILY_ALL)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, a := range have {
				ip, ok := netip.AddrFromSlice(a.IP)
				if !ok {
					continue
				}
				for _, p := range x.addrs {
					if ip.Unmap() == p.Addr() {
						if err := netlink.AddrDel(l, &netlink.Addr{IPNet: &net.IPNet{IP: a.IP, Mask: a.Mask}}); err != nil {
							errs = append(errs, fmt.Errorf("delete %s from %s: %w", p.Addr(), x.ifc, err))
						}
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// killLeftovers ends keepalived and conntrackd processes an earlier run
// of this gateway's daemon left (found by this instance's pid files, and
// only when their command line names this instance's config).
func killLeftovers(s *Spec, log interface{ Info(string, ...any) }) {
	for _, x := range []struct{ pidFile, conf string }{
		{s.Path(KeepalivedPid), s.Path(KeepalivedConf)},
		{s.Path(KeepalivedVRRPPid), s.Path(KeepalivedConf)},
		{s.Path(KeepalivedCheckPid), s.Path(KeepalivedConf)},
		{s.Path(ConntrackdPid), s.Path(ConntrackdConf)},
	} {
		data, err := os.ReadFile(x.pidFile)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 1 {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(x.conf)) {
			continue
		}
		log.Info("stopping an HA process an earlier run left", "pid", pid, "cmdline", strings.ReplaceAll(string(bytes.TrimRight(cmdline, "\x00")), "\x00", " "))
		unix.Kill(pid, unix.SIGTERM)
		deadline := time.Now().Add(3 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			unix.Kill(pid, unix.SIGKILL)
			for i := 0; alive(pid) && i < 100; i++ {
				time.Sleep(10 * time.Millisecond)
			}
		}
		os.Remove(x.pidFile)
	}
}

func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')')
	return i > 0 && i+2 < len(data) && data[i+2] != 'Z' && data[i+2] != 'X'
}

// cleanConntrackd removes a stale lock and control socket (conntrackd
// refuses to start while its lock file exists).
func cleanConntrackd(s *Spec) {
	os.Remove(s.Path(ConntrackdLock))
	os.Remove(s.Path(ConntrackdSocket))
}

func waitSocket(ctx context.Context, path string, c *child, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return nil
		}
		if !c.status().Running {
			return fmt.Errorf("exited: %s", c.status().LastExit)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no control socket %s after %s", path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

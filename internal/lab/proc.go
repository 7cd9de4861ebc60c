package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readyTimeout bounds how long Start waits for a process to report ready
// (a process that exits early fails at once). The daemon with the WAF
// compiles the CRS at start: a race-detector build did it in 6 s alone and
// took over 15 s while make test ran every package at once.
const readyTimeout = 60 * time.Second

// Start starts p in its host's namespace and waits until it is ready
// (Proc.ReadyFD, Proc.Ready); a process that exits early fails Start with
// the tail of its log. The process is detached: it outlives the caller
// until Stop or Down.
func (l *Lab) Start(ctx context.Context, p Proc) error {
	if err := checkProc(p); err != nil {
		return err
	}
	if r, ok := l.record(p.Name); ok && l.alive(r) {
		return fmt.Errorf("lab process %s already runs (pid %d)", p.Name, r.Pid)
	}
	ip, err := preflight()
	if err != nil {
		return err
	}
	logPath := l.LogFile(p.Name)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- %s start: %s %s\n", time.Now().Format(time.RFC3339), l.exe, strings.Join(p.Args, " "))

	cmd := exec.Command(ip, append([]string{"netns", "exec", l.NS(p.Host), l.exe}, p.Args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var ready *os.File
	if p.ReadyFD {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		defer r.Close()
		cmd.ExtraFiles = []*os.File{w} // fd 3
		ready = r
	}
	err = cmd.Start()
	for _, f := range cmd.ExtraFiles {
		f.Close() // the child holds its own copy
	}
	if err != nil {
		return fmt.Errorf("start %s in %s: %w", p.Name, p.Host, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps it when it ends
	rec := procRecord{Name: p.Name, Host: p.Host, Args: p.Args, Pid: cmd.Process.Pid, Log: logPath, Started: time.Now()}
	l.mu.Lock()
	l.procs = slices.DeleteFunc(l.procs, func(r procRecord) bool { return r.Name == p.Name })
	l.procs = append(l.procs, rec)
	l.mu.Unlock()
	if err := l.save(); err != nil {
		cmd.Process.Kill()
		return err
	}
	fail := func(err error) error {
		cmd.Process.Kill()
		l.forget(p.Name)
		l.save()
		return fmt.Errorf("lab process %s (%s): %w%s", p.Name, p.Host, err, logTail(logPath))
	}

	if ready != nil {
		line := make(chan string, 1)
		go func() {
			s, _ := bufio.NewReader(ready).ReadString('\n')
			line <- strings.TrimSpace(s)
		}()
		select {
		case s := <-line:
			if s != "ok" {
				if s == "" {
					s = "exited before it was ready"
				}
				return fail(errors.New(s))
			}
		case <-time.After(readyTimeout):
			return fail(fmt.Errorf("not ready after %s", readyTimeout))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	} else {
		// No readiness protocol: at least catch an immediate failure.
		select {
		case err := <-exited:
			return fail(fmt.Errorf("exited at once: %v", err))
		case <-time.After(150 * time.Millisecond):
		}
	}
	if p.Ready != nil {
		if err := p.Ready(ctx, l); err != nil {
			return fail(err)
		}
	}
	l.log.Info("lab process started", "proc", p.Name, "host", p.Host, "pid", rec.Pid)
	return nil
}

// logTail returns the last lines of a log, formatted for an error message.
func logTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return "\n\t" + strings.Join(lines, "\n\t")
}

// Stop ends the lab process name (SIGTERM, then SIGKILL after 3 s) and
// forgets it. Stopping a process that is not running is not an error.
func (l *Lab) Stop(name string) error {
	r, ok := l.record(name)
	if !ok {
		return nil
	}
	if l.alive(r) {
		unix.Kill(r.Pid, unix.SIGTERM)
		deadline := time.Now().Add(3 * time.Second)
		for l.alive(r) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if l.alive(r) {
			unix.Kill(r.Pid, unix.SIGKILL)
			for l.alive(r) && time.Now().Before(deadline.Add(2*time.Second)) {
				time.Sleep(10 * time.Millisecond)
			}
			if l.alive(r) {
				return fmt.Errorf("lab process %s (pid %d) does not die", name, r.Pid)
			}
		}
	}
	l.forget(name)
	return l.save()
}

// Signal sends sig to the lab process name (e.g. SIGKILL to simulate a
// crash, SIGHUP to reload); the process stays recorded.
func (l *Lab) Signal(name string, sig syscall.Signal) error {
	r, ok := l.record(name)
	if !ok || !l.alive(r) {
		return fmt.Errorf("lab process %s is not running", name)
	}
	return unix.Kill(r.Pid, sig)
}

// Pid returns the process id of the lab process name, or 0 when it does
// not run.
func (l *Lab) Pid(name string) int {
	r, ok := l.record(name)
	if !ok || !l.alive(r) {
		return 0
	}
	return r.Pid
}

func (l *Lab) forget(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.procs = slices.DeleteFunc(l.procs, func(r procRecord) bool { return r.Name == name })
}

func (l *Lab) record(name string) (procRecord, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.procs {
		if r.Name == name {
			return r, true
		}
	}
	return procRecord{}, false
}

func (l *Lab) records() []procRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.procs)
}

// alive reports whether r's process runs (not a zombie) in r's host's
// namespace: a reused pid elsewhere does not count.
func (l *Lab) alive(r procRecord) bool {
	ino := nsInode(nsName(l.name, r.Host))
	return ino != 0 && pidAliveIn(r.Pid, ino)
}

// orphan reports whether r's process still runs although its namespace is
// gone (deleted by hand): same pid, same command line. Such a process is
// the lab's and must be stopped too.
func (l *Lab) orphan(r procRecord) bool {
	if isZombie(r.Pid) {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", r.Pid))
	if err != nil {
		return false
	}
	want := strings.Join(append([]string{l.exe}, r.Args...), "\x00") + "\x00"
	return string(data) == want
}

func pidAliveIn(pid int, nsIno uint64) bool {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil || st.Ino != nsIno {
		return false
	}
	return !isZombie(pid)
}

func isZombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) STATE ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	return i < 0 || i+2 >= len(data) || data[i+2] == 'Z' || data[i+2] == 'X'
}

// pidsIn returns the processes whose network namespace is one of inodes.
func pidsIn(inodes map[uint64]bool) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &st); err != nil {
			continue
		}
		if inodes[st.Ino] && !isZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killInNamespaces kills every process left in the given namespaces and
// waits until they are gone.
func killInNamespaces(inodes map[uint64]bool, log *slog.Logger) error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		pids := pidsIn(inodes)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still in the lab's namespaces: %v", pids)
		}
		for _, pid := range pids {
			log.Debug("killing lab process", "pid", pid)
			unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

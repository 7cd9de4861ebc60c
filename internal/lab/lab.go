// Package lab builds, on one Linux machine, network namespaces joined by
// veth links that reproduce the seed's topology: an AKS subnet whose default
// route is the firewall, the firewall itself, and a lab "internet" with
// servers and an authoritative DNS for the names the seed's policy uses,
// plus an outside client. The lab has no link to the host's own network:
// it never creates an interface or a route in the root namespace, so
// nothing it does leaves the machine.
//
// docs/lab.md describes the topology, names and addresses, which are a
// contract (see topology.go). Up and Down are idempotent; Open attaches to a
// lab made by another process. Tests elsewhere create labs with unique
// names (Config.Name) and tear them down with t.Cleanup.
package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultName is the CLI's lab name (namespaces cw-node, cw-fw, ...).
const DefaultName = "cw"

// StateRoot holds one state directory per lab (CA, certificates, logs,
// state.json).
const StateRoot = "/run/clusterwall-lab"

// DaemonProc is the name of the firewall daemon's process (Config.DaemonArgs).
const DaemonProc = "daemon"

// Config says which lab to make.
type Config struct {
	// Name prefixes the namespaces (NAME-node, NAME-fw, ...): 1 to 8
	// lowercase letters and digits, starting with a letter. Default "cw".
	Name string
	// Exe is the program started in the namespaces as `Exe lab serve ...`
	// and `Exe ARGS...` for extra processes. Default: this executable.
	// Test binaries can serve by calling ServeMain from TestMain.
	Exe string
	// NoDNSForwarder leaves 10.42.2.4:53 free for a real DNS proxy. It is
	// implied by Daemon: the daemon's DNS proxy is the cluster's resolver.
	NoDNSForwarder bool
	// DaemonArgs, when not nil, starts `Exe run DaemonArgs...` in fw as the
	// process DaemonProc, with its log in the state directory.
	DaemonArgs []string
	// Daemon, when not nil, starts the real firewall daemon in fw: Up
	// writes its config (DaemonConfig) into the state directory as
	// DaemonConfigFile, sets DaemonArgs, and waits until the daemon has
	// applied the policy. Its decision log is Lab.DecisionLog.
	Daemon *DaemonOptions
	// Procs are further processes to start (after the servers and the daemon).
	Procs []Proc
	// Files are written into the state directory (by base name) before any
	// process starts, e.g. the daemon's config. When Up finds the lab
	// already up and a file's content changed, it restarts the daemon and
	// Procs.
	Files map[string][]byte
	// Log receives progress messages (default: discarded).
	Log *slog.Logger
	// HA, when not nil, makes the highly available lab: a second firewall
	// fw2, bridges on both sides, a sync link (ha.go, docs/ha.md); with
	// Daemon, both firewalls run the daemon with an ha section.
	HA *HAOptions
}

// Proc is a long-running process in one host of the lab, started as
// `ip netns exec NS Exe Args...`, detached (its own session), with its
// standard output and error in the state directory as NAME.log.
type Proc struct {
	Name string   // unique in the lab: letters, digits, '-' and '_'
	Host string   // one of HostNames
	Args []string // arguments to the lab's Exe
	// ReadyFD: the program writes "ok\n" on file descriptor 3 once ready
	// (or "error: ...\n"); Start waits for it.
	ReadyFD bool
	// Ready, when set, is called after the start (and ReadyFD) and must
	// return nil once the process is ready (e.g. by polling an API).
	Ready func(ctx context.Context, l *Lab) error
}

// Lab is a running lab.
type Lab struct {
	name string
	dir  string
	exe  string
	log  *slog.Logger
	ha   *HAOptions // nil for the single-firewall lab

	mu    sync.Mutex
	procs []procRecord
	// saveMu serializes writes of state.json.
	saveMu sync.Mutex
}

// procRecord is a started process, as kept in state.json.
type procRecord struct {
	Name    string    `json:"name"`
	Host    string    `json:"host"`
	Args    []string  `json:"args"`
	Pid     int       `json:"pid"`
	Log     string    `json:"log"`
	Started time.Time `json:"started"`
}

type stateFile struct {
	Name  string       `json:"name"`
	Exe   string       `json:"exe"`
	Procs []procRecord `json:"procs"`
	HA    *HAOptions   `json:"ha,omitempty"`
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)

// CheckName reports whether name is a valid lab name.
func CheckName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("lab name %q: want 1 to 8 lowercase letters and digits, starting with a letter", name)
	}
	return nil
}

func nsName(lab, host string) string { return lab + "-" + host }

// StateDir is the state directory of lab name.
func StateDir(name string) string { return filepath.Join(StateRoot, name) }

// Name is the lab's name (its namespace prefix).
func (l *Lab) Name() string { return l.name }

// Dir is the lab's state directory.
func (l *Lab) Dir() string { return l.dir }

// CAFile is the path of the lab CA's certificate (PEM).
func (l *Lab) CAFile() string { return filepath.Join(l.dir, caFile) }

// CAPool is a pool with only the lab CA.
func (l *Lab) CAPool() (*x509.CertPool, error) { return CAPool(l.dir) }

// Certificate is the certificate (and key) the lab CA issued for one of
// the lab's names (Names), for a test's own TLS server in inet.
func (l *Lab) Certificate(name string) (tls.Certificate, error) { return loadLeaf(l.dir, name) }

// NS is the name of host's network namespace (for `ip netns exec`), or ""
// for an unknown host.
func (l *Lab) NS(host string) string {
	if !slices.Contains(HostNames, host) && host != HostFW2 {
		return ""
	}
	return nsName(l.name, host)
}

// LogFile is the log of the lab process name.
func (l *Lab) LogFile(name string) string { return filepath.Join(l.dir, name+".log") }

func checkHostName(host string) error {
	if !slices.Contains(HostNames, host) && host != HostFW2 { // fw2: HA labs (ha.go)
		return fmt.Errorf("unknown lab host %q (hosts: %s)", host, strings.Join(HostNames, ", "))
	}
	return nil
}

func preflight() (string, error) {
	if os.Geteuid() != 0 {
		return "", errors.New("the lab needs root (network namespaces)")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return "", errors.New("the lab needs `ip` from iproute2 (apt-get install iproute2)")
	}
	return ip, nil
}

// Up makes the lab cfg describes and returns it. When that lab is already
// up and intact, Up keeps it, restarts only the processes that are dead or
// whose arguments changed, and stops processes cfg no longer asks for; a
// broken or partial lab is removed and built anew. On failure Up removes
// whatever it made.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if err := CheckName(cfg.Name); err != nil {
		return nil, err
	}
	if _, err := preflight(); err != nil {
		return nil, err
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("lab: find own executable: %w", err)
		}
		cfg.Exe = exe
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	for _, p := range cfg.Procs {
		if err := checkProc(p); err != nil {
			return nil, err
		}
	}
	if cfg.Daemon != nil {
		var copied []byte
		if cfg.Daemon.CopyPolicy {
			o, data, err := copyPolicy(*cfg.Daemon)
			if err != nil {
				return nil, err
			}
			cfg.Daemon, copied = &o, data
		}
		files, err := daemonFiles(cfg.Name, *cfg.Daemon, cfg.HA)
		if err != nil {
			return nil, err
		}
		if copied != nil {
			files[PolicyCopyFile] = copied
		}
		if cfg.Daemon.WAF && cfg.Daemon.WAFConfig == "" {
			if files[WAFConfigFile], err = WAFConfig(cfg.Name); err != nil {
				return nil, err
			}
		}
		for k, v := range cfg.Files {
			files[k] = v
		}
		cfg.Files = files
		cfg.DaemonArgs = []string{"--config", filepath.Join(StateDir(cfg.Name), DaemonConfigFile)}
		cfg.NoDNSForwarder = true
	}
	for f := range cfg.Files {
		if f != filepath.Base(f) || f == "state.json" || strings.HasPrefix(f, ".") {
			return nil, fmt.Errorf("lab file %q: want a plain file name", f)
		}
	}
	unlock, err := lockRoot()
	if err != nil {
		return nil, err
	}
	defer unlock()

	servers, extras := cfg.procs()
	if l, err := open(cfg.Name); err == nil && l.exe == cfg.Exe && sameHA(l.ha, cfg.HA) {
		l.log = cfg.Log
		if problems := checkTopology(cfg.Name, specFor(cfg.HA)); len(problems) == 0 {
			cfg.Log.Info("lab already up; reconciling processes", "lab", cfg.Name)
			changed, err := writeFiles(l.dir, cfg.Files)
			if err != nil {
				return nil, err
			}
			if changed {
				// The daemon and extra processes may read these files.
				for _, p := range extras {
					if err := l.Stop(p.Name); err != nil {
						return nil, err
					}
				}
			}
			if err := l.reconcile(ctx, servers, extras); err != nil {
				return nil, err
			}
			return l, nil
		} else {
			cfg.Log.Info("lab broken; rebuilding", "lab", cfg.Name, "problems", problems)
		}
	}
	if err := remove(cfg.Name, cfg.Log); err != nil {
		return nil, fmt.Errorf("lab: clean up before up: %w", err)
	}
	l := &Lab{name: cfg.Name, dir: StateDir(cfg.Name), exe: cfg.Exe, log: cfg.Log, ha: cfg.HA}
	if err := l.create(ctx, servers, extras, cfg.Files); err != nil {
		if rerr := remove(cfg.Name, cfg.Log); rerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", rerr))
		}
		return nil, fmt.Errorf("lab up %s: %w", cfg.Name, err)
	}
	return l, nil
}

// procs returns the lab's servers and the extra processes (the daemon and
// Config.Procs).
func (cfg *Config) procs() (servers, extras []Proc) {
	serve := func(role, host string) Proc {
		return Proc{Name: role, Host: host, ReadyFD: true,
			Args: []string{"lab", "serve", "--role", role, "--dir", StateDir(cfg.Name), "--ready-fd", "3"}}
	}
	servers = []Proc{serve(RoleInet, HostInet), serve(RoleStore, HostStore), serve(RoleAPI, HostAPI)}
	if !cfg.NoDNSForwarder {
		servers = append(servers, serve(RoleDNSFwd, HostFW))
	}
	if cfg.DaemonArgs != nil {
		d := Proc{Name: DaemonProc, Host: HostFW, Args: append([]string{"run"}, cfg.DaemonArgs...)}
		if cfg.Daemon != nil {
			d.Ready = daemonReady
		}
		extras = append(extras, d)
		if cfg.HA != nil && cfg.Daemon != nil { // ha.go: the second firewall's daemon
			extras = append(extras, daemon2Proc(cfg.Name, cfg.HA))
		}
	}
	return servers, append(extras, cfg.Procs...)
}

var validProcName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)

func checkProc(p Proc) error {
	if !validProcName.MatchString(p.Name) {
		return fmt.Errorf("lab process name %q: want letters, digits, '-' and '_'", p.Name)
	}
	return checkHostName(p.Host)
}

// writeFiles writes files into dir and reports whether any content changed.
func writeFiles(dir string, files map[string][]byte) (changed bool, err error) {
	for name, data := range files {
		p := filepath.Join(dir, name)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data) {
			continue
		}
		changed = true
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return changed, err
		}
	}
	return changed, nil
}

func (l *Lab) create(ctx context.Context, servers, extras []Proc, files map[string][]byte) error {
	start := time.Now()
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return err
	}
	if _, err := writeFiles(l.dir, files); err != nil {
		return err
	}
	if err := l.save(); err != nil {
		return err
	}
	if err := writePKI(l.dir); err != nil {
		return err
	}
	if err := build(l.name, specFor(l.ha)); err != nil {
		return err
	}
	l.log.Info("lab network built", "lab", l.name, "took", time.Since(start))
	// The servers first: the daemon may rely on them.
	if err := l.startAll(ctx, servers); err != nil {
		return err
	}
	if err := l.startAll(ctx, extras); err != nil {
		return err
	}
	l.log.Info("lab up", "lab", l.name, "took", time.Since(start))
	return nil
}

// startAll starts procs concurrently (they are independent) and waits for
// all of them to be ready.
func (l *Lab) startAll(ctx context.Context, procs []Proc) error {
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Start(ctx, p)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// reconcile makes the running processes match servers and extras.
func (l *Lab) reconcile(ctx context.Context, servers, extras []Proc) error {
	want := append(slices.Clone(servers), extras...)
	var start []Proc
	for _, p := range want {
		r, ok := l.record(p.Name)
		if ok && r.Host == p.Host && slices.Equal(r.Args, p.Args) && l.alive(r) {
			continue
		}
		if ok {
			if err := l.Stop(r.Name); err != nil {
				return err
			}
		}
		start = append(start, p)
	}
	for _, r := range l.records() {
		if !slices.ContainsFunc(want, func(p Proc) bool { return p.Name == r.Name }) {
			if err := l.Stop(r.Name); err != nil {
				return err
			}
		}
	}
	isServer := func(p Proc) bool {
		return slices.ContainsFunc(servers, func(s Proc) bool { return s.Name == p.Name })
	}
	first := slices.DeleteFunc(slices.Clone(start), func(p Proc) bool { return !isServer(p) })
	then := slices.DeleteFunc(start, isServer)
	if err := l.startAll(ctx, first); err != nil {
		return err
	}
	return l.startAll(ctx, then)
}

// Open attaches to the running lab name (made by this or another process).
func Open(name string) (*Lab, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	return open(name)
}

func open(name string) (*Lab, error) {
	data, err := os.ReadFile(filepath.Join(StateDir(name), "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab %s is not up (no %s)", name, filepath.Join(StateDir(name), "state.json"))
	}
	if err != nil {
		return nil, err
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(StateDir(name), "state.json"), err)
	}
	return &Lab{name: name, dir: StateDir(name), exe: st.Exe, procs: st.Procs, ha: st.HA, log: slog.New(slog.DiscardHandler)}, nil
}

func (l *Lab) save() error {
	l.saveMu.Lock()
	defer l.saveMu.Unlock()
	l.mu.Lock()
	st := stateFile{Name: l.name, Exe: l.exe, Procs: slices.Clone(l.procs), HA: l.ha}
	l.mu.Unlock()
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(l.dir, ".state.json.tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(l.dir, "state.json"))
}

// Down removes the lab: its processes, namespaces (and so every link),
// /etc/netns entries and state directory. Removing a lab that is already
// gone is not an error.
func (l *Lab) Down() error { return Remove(l.name) }

// Remove removes lab name, whatever state it is in (see Lab.Down).
func Remove(name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	unlock, err := lockRoot()
	if err != nil {
		return err
	}
	defer unlock()
	return remove(name, slog.New(slog.DiscardHandler))
}

func remove(name string, log *slog.Logger) error {
	var errs []error
	inodes := map[uint64]bool{}
	for _, h := range allHosts() {
		if ino := nsInode(nsName(name, h)); ino != 0 {
			inodes[ino] = true
		}
	}
	// Ask the recorded processes to stop, then kill whatever still runs
	// in the lab's namespaces (including commands started by `lab exec`).
	if l, err := open(name); err == nil {
		ours := func(r procRecord) bool { return l.alive(r) || l.orphan(r) }
		for _, r := range l.records() {
			if ours(r) {
				unix.Kill(r.Pid, unix.SIGTERM)
			}
		}
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) && slices.ContainsFunc(l.records(), ours) {
			time.Sleep(20 * time.Millisecond)
		}
		for _, r := range l.records() {
			if ours(r) {
				unix.Kill(r.Pid, unix.SIGKILL)
			}
		}
	}
	if len(inodes) > 0 {
		if err := killInNamespaces(inodes, log); err != nil {
			errs = append(errs, err)
		}
	}
	for _, h := range allHosts() {
		ns := nsName(name, h)
		if err := deleteNamed(ns); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(filepath.Join(etcNetnsDir, ns)); err != nil {
			errs = append(errs, err)
		}
	}
	os.Remove(etcNetnsDir) // only if empty
	if err := os.RemoveAll(StateDir(name)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// lockRoot serializes Up and Down of all labs on this machine (flock on
// the state root directory).
func lockRoot() (func(), error) {
	if err := os.MkdirAll(StateRoot, 0o755); err != nil {
		return nil, err
	}
	fd, err := unix.Open(StateRoot, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", StateRoot, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock %s: %w", StateRoot, err)
	}
	return func() { unix.Flock(fd, unix.LOCK_UN); unix.Close(fd) }, nil
}

// Command returns a command that runs argv in host's namespace through
// `ip netns exec` (so the host's resolv.conf applies).
func (l *Lab) Command(ctx context.Context, host string, argv ...string) (*exec.Cmd, error) {
	if err := checkHostName(host); err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("lab exec: no command")
	}
	ip, err := preflight()
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, ip, append([]string{"netns", "exec", l.NS(host)}, argv...)...), nil
}

// Exec runs argv in host's namespace and returns its standard output. On
// failure the error holds the exit status (an *exec.ExitError, for
// errors.As) and the standard error.
func (l *Lab) Exec(ctx context.Context, host string, argv ...string) ([]byte, error) {
	cmd, err := l.Command(ctx, host, argv...)
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("lab exec %s: %s: %w: %s", host, strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Do runs fn on an OS thread inside host's network namespace: sockets fn
// opens belong to that namespace (and keep working after Do returns). fn
// must not start goroutines that open sockets, and must not resolve names
// (the Go resolver would query from other threads); use addresses.
func (l *Lab) Do(host string, fn func() error) error {
	if err := checkHostName(host); err != nil {
		return err
	}
	return inNamed(l.NS(host), fn)
}

// DialContext returns a dial function whose connections start in host's
// namespace; address must hold an IP address, not a name.
func (l *Lab) DialContext(host string) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		h, _, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		if _, err := netip.ParseAddr(h); err != nil {
			return nil, fmt.Errorf("lab dial %s from %s: want an IP address, not a name", address, host)
		}
		var c net.Conn
		err = l.Do(host, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, address)
			return err
		})
		return c, err
	}
}

// HTTPClient returns an HTTP client whose connections start in host's
// namespace and that trusts only the lab CA. URLs must use IP addresses
// (or set Transport.DialContext's address mapping via a custom client).
func (l *Lab) HTTPClient(host string) (*http.Client, error) {
	pool, err := CAPool(l.dir)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:       l.DialContext(host),
			TLSClientConfig:   &tls.Config{RootCAs: pool},
			DisableKeepAlives: true,
		},
	}, nil
}

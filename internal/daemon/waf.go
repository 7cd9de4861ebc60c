package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
	"github.com/clusterwall/clusterwall/internal/waf"
)

// WAFConfig is the daemon config's waf section: the ingress WAF
// (internal/waf, docs/waf.md) the daemon runs in front of the cluster's
// published services.
type WAFConfig struct {
	// Config is the WAF configuration file (listeners, routes, policies;
	// docs/waf.md), relative to the daemon config. Empty: no WAF.
	Config string `yaml:"config,omitempty"`
	// KubernetesState keeps what the Kubernetes controller pushed (PUT
	// /v1/waf/kubernetes: routes, WAF policies, certificates with their
	// private keys, so mode 0600) across restarts; relative to the daemon
	// config. Default: waf-kubernetes.yaml next to the WAF config.
	KubernetesState string `yaml:"kubernetesState,omitempty"`

	loaded  *waf.Config  // parsed and compiled by LoadConfig, with the Kubernetes state merged
	static  *waf.Config  // the file alone
	kube    *kubeState   // the Kubernetes state loaded at start (nil: none)
	kubeErr error        // why the Kubernetes state at start was not used
	ports   []uint16     // the listeners' TCP ports, accepted from the internet
	addrs   []netip.Addr // the listeners' addresses; nil when one is unspecified
}

// loadWAF reads the waf section's file. Its errors name the WAF file's
// FILE:LINE:COL and field (waf.LoadConfig), or the daemon config's
// waf.config field when the file cannot be read.
func (c *Config) loadWAF() policy.ErrorList {
	w := &c.WAF
	if w.Config == "" {
		return nil
	}
	if !filepath.IsAbs(w.Config) {
		w.Config = filepath.Join(filepath.Dir(c.path), w.Config)
	}
	cfg, err := waf.LoadConfig(w.Config)
	if err != nil {
		return wafErrors(c.path, err)
	}
	ports, err := listenerPorts(cfg)
	if err != nil {
		return policy.ErrorList{{Pos: policy.Pos{File: w.Config}, Path: "listeners", Msg: err.Error()}}
	}
	w.loaded, w.static, w.ports, w.addrs = cfg, cfg, ports, listenerAddrs(cfg)
	if w.KubernetesState == "" {
		w.KubernetesState = filepath.Join(filepath.Dir(w.Config), "waf-kubernetes.yaml")
	} else if !filepath.IsAbs(w.KubernetesState) {
		w.KubernetesState = filepath.Join(filepath.Dir(c.path), w.KubernetesState)
	}
	// What the controller pushed before a restart: a state that no longer
	// fits the file (a listener renamed) is set aside, not fatal; the
	// controller pushes again.
	if ks, merged, err := loadKubernetesState(w.KubernetesState, cfg); err != nil {
		w.kubeErr = err
	} else if ks != nil {
		w.loaded, w.kube = merged, ks
	}
	return nil
}

// wafErrors turns a waf.LoadConfig error into the daemon config's error
// list: the WAF file's own positioned errors as they are, anything else
// (a missing file) as an error of the field waf.config.
func wafErrors(daemonConfig string, err error) policy.ErrorList {
	var list policy.ErrorList
	if errors.As(err, &list) {
		return list
	}
	var one *policy.Error
	if errors.As(err, &one) {
		return policy.ErrorList{one}
	}
	return policy.ErrorList{{Pos: policy.Pos{File: daemonConfig}, Path: "waf.config", Msg: err.Error()}}
}

// listenerPorts returns the TCP ports of cfg's listeners (sorted, without
// duplicates); a listener on port 0 (any free port, for tests) is not
// exposed.
func listenerPorts(cfg *waf.Config) ([]uint16, error) {
	var ports []uint16
	for _, l := range cfg.Listeners {
		_, p, err := net.SplitHostPort(l.Address)
		if err != nil {
			return nil, fmt.Errorf("listener %q: address %q: %v", l.Name, l.Address, err)
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("listener %q: address %q: port %q is not a number", l.Name, l.Address, p)
		}
		if n != 0 && !slices.Contains(ports, uint16(n)) {
			ports = append(ports, uint16(n))
		}
	}
	slices.Sort(ports)
	return ports, nil
}

// listenerAddrs returns the addresses of cfg's exposed listeners (port not
// 0), or nil when one listens on every address (0.0.0.0, [::], no host).
func listenerAddrs(cfg *waf.Config) []netip.Addr {
	var addrs []netip.Addr
	for _, l := range cfg.Listeners {
		host, p, err := net.SplitHostPort(l.Address)
		if err != nil || p == "0" {
			continue
		}
		a, err := netip.ParseAddr(host)
		if err != nil || a.IsUnspecified() {
			return nil
		}
		if a = a.Unmap(); !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// WAFPorts are the TCP ports the WAF's listeners use; the data plane
// accepts them from the internet on the public IPs (only on those the
// listeners use, when each names its address: see wafDataPlane).
func (c *Config) WAFPorts() []uint16 { return c.WAF.ports }

// wafDataPlane returns the TCP ports and addresses the data plane accepts
// from the internet for the WAF: its listeners' ports on the public IPs
// the listeners use (addrs nil: on every public IP, when a listener listens
// on every address). Listeners on none of the public IPs expose nothing.
func (c *Config) wafDataPlane() (ports []uint16, addrs []netip.Addr) {
	w := &c.WAF
	if len(w.ports) == 0 || w.addrs == nil {
		return w.ports, nil
	}
	for _, a := range w.addrs {
		if slices.Contains(c.publicIPs, a) {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, nil
	}
	return w.ports, addrs
}

// wafRunner is the daemon's running WAF.
type wafRunner struct {
	srv       *waf.Server
	file      string
	stateFile string // the Kubernetes state (wafkubernetes.go)

	mu     sync.Mutex // serializes reloads and Kubernetes pushes
	gen    uint64
	last   string // "ok" or the error of the last load
	lastAt time.Time
	static *waf.Config // the file alone
	kube   *kubeState  // what the Kubernetes controller pushed (nil: nothing)
}

// WAFStatus is the WAF's part of the daemon's Status.
type WAFStatus struct {
	ConfigFile   string            `json:"configFile"`
	Generation   uint64            `json:"generation"`
	Listeners    map[string]string `json:"listeners"` // name → bound address
	Routes       int               `json:"routes"`
	Policies     int               `json:"policies"`
	LastReload   string            `json:"lastReload"` // "ok" or the error
	LastReloadAt time.Time         `json:"lastReloadAt"`
	// Kubernetes is what the Kubernetes controller pushed (nil: nothing).
	Kubernetes *WAFKubernetesStatus `json:"kubernetes,omitempty"`
}

// startWAF starts the WAF's listeners with the configuration LoadConfig
// read; it stops (waiting up to 10 s for requests in flight) when ctx ends.
func (d *Daemon) startWAF(ctx context.Context) error {
	cfg := d.cfg.WAF.loaded
	if cfg == nil {
		return errors.New("waf.config was not loaded")
	}
	srv, err := waf.NewServer(cfg, waf.Options{Logger: d.log.With("component", "waf"), OnEvent: d.logWAFEvent})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	w := &wafRunner{srv: srv, file: d.cfg.WAF.Config, stateFile: d.cfg.WAF.KubernetesState, gen: 1, last: "ok", lastAt: time.Now(),
		static: d.cfg.WAF.static, kube: d.cfg.WAF.kube}
	if err := d.cfg.WAF.kubeErr; err != nil {
		d.log.Error("the Kubernetes controller's WAF state does not fit the WAF config; starting without it (the controller pushes it again)",
			"file", w.stateFile, "err", err.Error())
	}
	d.wafMu.Lock()
	d.waf = w
	d.wafMu.Unlock()
	d.spawn(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			d.log.Warn("WAF shutdown", "err", err)
		}
	})
	d.warnWAFDNAT()
	d.log.Info("WAF listening", "config", w.file, "listeners", w.listeners(), "routes", len(cfg.Routes), "policies", len(cfg.Policies))
	return nil
}

func (d *Daemon) wafRunning() *wafRunner {
	d.wafMu.Lock()
	defer d.wafMu.Unlock()
	return d.waf
}

// ReloadWAF re-reads the WAF config file and swaps it in atomically
// (waf.Server.Reload): requests in flight finish with the configuration
// they started with. An invalid file — or one that changes what is fixed
// while running (listeners, timeouts) — is rejected with its
// FILE:LINE:COL errors and the running configuration stays. Without a WAF
// it does nothing.
func (d *Daemon) ReloadWAF(reason string) error {
	w := d.wafRunning()
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	err := func() error {
		static, err := waf.LoadConfig(w.file)
		if err != nil {
			return err
		}
		ports, err := listenerPorts(static)
		if err != nil {
			return err
		}
		if !slices.Equal(ports, d.cfg.WAF.ports) {
			return fmt.Errorf("reload: the WAF listener ports changed (%v → %v); restart to change them", d.cfg.WAF.ports, ports)
		}
		cfg := static
		if w.kube != nil {
			// The controller's routes stay: the file must still fit them.
			if cfg, err = static.WithKubernetes(w.kube.doc); err != nil {
				return fmt.Errorf("the new WAF config does not fit the routes the Kubernetes controller pushed: %w", err)
			}
		}
		if err := w.srv.Reload(cfg); err != nil {
			return err
		}
		w.static = static
		return nil
	}()
	w.lastAt = time.Now()
	if err != nil {
		w.last = err.Error()
		d.log.Error("WAF config rejected; the running WAF configuration stays", "reason", reason, "file", w.file, "err", err.Error())
		return wafErrors(w.file, err)
	}
	w.gen++
	w.last = "ok"
	cfg := w.srv.Config()
	d.log.Info("WAF config applied", "reason", reason, "generation", w.gen, "routes", len(cfg.Routes), "policies", len(cfg.Policies))
	return nil
}

// reloadAll is a reload an operator asked for (SIGHUP, POST /v1/reload):
// the policy, then the WAF config; each keeps running when its file is
// rejected. The errors of both are returned as one policy.ErrorList.
func (d *Daemon) reloadAll(reason string) error {
	perr := d.Reload(reason)
	werr := d.ReloadWAF(reason)
	if perr == nil || werr == nil {
		return errors.Join(perr, werr)
	}
	var list policy.ErrorList
	if !errors.As(perr, &list) {
		list = policy.ErrorList{{Msg: perr.Error()}}
	}
	return append(slices.Clone(list), wafErrors(d.cfg.path, werr)...)
}

func (w *wafRunner) listeners() map[string]string {
	out := map[string]string{}
	for _, l := range w.srv.Config().Listeners {
		if a := w.srv.Addr(l.Name); a != nil {
			out[l.Name] = a.String()
		}
	}
	return out
}

func (w *wafRunner) status() *WAFStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	cfg := w.srv.Config()
	return &WAFStatus{ConfigFile: w.file, Generation: w.gen, Listeners: w.listeners(), Routes: len(cfg.Routes),
		Policies: len(cfg.Policies), LastReload: w.last, LastReloadAt: w.lastAt, Kubernetes: w.kubeStatus()}
}

// WAFStatus reports the running WAF (nil without one).
func (d *Daemon) WAFStatus() *WAFStatus {
	if w := d.wafRunning(); w != nil {
		return w.status()
	}
	return nil
}

// logWAFEvent writes a WAF event (a blocked or detected request) to the
// decision log with category WAF.
func (d *Daemon) logWAFEvent(e *waf.Event) {
	if d.dlog == nil {
		return
	}
	d.dlog.Log(wafRecord(e))
}

// wafRecord is the decision log record of a WAF event.
func wafRecord(e *waf.Event) telemetry.Record {
	return telemetry.Record{
		Time:          e.Time,
		Category:      telemetry.CategoryWAF,
		SourceIp:      e.ClientIP,
		SourcePort:    e.ClientPort,
		Action:        e.Action,
		ActionReason:  e.Reason,
		Policy:        e.Policy,
		Hostname:      e.Host,
		RequestUri:    e.URI,
		Method:        e.Method,
		RuleIds:       slices.Clone(e.RuleIDs),
		Messages:      slices.Clone(e.Messages),
		AnomalyScore:  e.AnomalyScore,
		HttpStatus:    e.Status,
		CorrelationId: e.CorrelationID,
		Listener:      e.Listener,
		Route:         e.Route,
		WafMode:       e.Mode,
		Source:        "waf",
	}
}

// warnWAFDNAT warns about DNAT rules on a WAF listener's address and port:
// the kernel translates the connections they match before the WAF could
// see them (prerouting runs before input), so those clients reach the DNAT
// target instead. A listener on an unspecified address (0.0.0.0, [::], "")
// shares every DNAT rule's destination on its port; give the WAF a public
// IP of its own to avoid it.
func (d *Daemon) warnWAFDNAT() {
	p, _ := d.Current()
	if p == nil || d.cfg.WAF.loaded == nil {
		return
	}
	for _, r := range p.RulesOf(policy.KindDNAT) {
		for _, l := range d.cfg.WAF.loaded.Listeners {
			host, ps, err := net.SplitHostPort(l.Address)
			if err != nil {
				continue
			}
			n, err := strconv.ParseUint(ps, 10, 16)
			if err != nil || n == 0 {
				continue
			}
			if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() && !r.Destination.Contains(a) {
				continue // the listener's address is not a destination of r
			}
			port := uint16(n)
			for _, pr := range r.DestinationPorts {
				if pr.Lo <= port && port <= pr.Hi {
					d.log.Warn("a DNAT rule uses a WAF listener's address and port: the connections it matches are translated before the WAF sees them",
						"rule", r.Path(), "listener", l.Name, "address", l.Address)
				}
			}
		}
	}
}

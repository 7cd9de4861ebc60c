package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/clusterwall/clusterwall/internal/dnsproxy"
	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nflog"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/proxy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// Dataplane programs the kernel. Apply replaces the whole ruleset in one
// atomic batch: on error the kernel keeps the previous ruleset.
type Dataplane interface {
	Apply(p *policy.Policy, m *match.Matcher) (LogIndex, error)
	// AddFQDNAddrs adds addresses resolved for a network rule's
	// destinationFqdns entry to the kernel's sets, for ttl.
	AddFQDNAddrs(name string, addrs []netip.Addr, ttl time.Duration) error
}

// LogIndex maps the prefix of an NFLOG message to the decision it records.
type LogIndex interface {
	Lookup(prefix string) (LoggedDecision, bool)
}

// LoggedDecision is what a kernel log rule records.
type LoggedDecision struct {
	Action policy.Action
	Kind   policy.Kind
	Rule   *policy.Rule // nil for the default deny
	// Policy is the policy of the ruleset that logged the packet (nil: the
	// daemon's current one).
	Policy *policy.Policy
	// Input: the firewall's input chain dropped a packet to the firewall itself.
	Input bool
	// UnknownRuleset: logged by a ruleset this daemon did not apply (a
	// previous process's, before the first apply); Rule is unknown.
	UnknownRuleset bool
}

// state is one applied policy generation; it is replaced atomically.
type state struct {
	policy  *policy.Policy
	matcher *match.Matcher
	index   LogIndex
	gen     uint64
	applied time.Time
	fqdns   map[string]bool // network rules' destinationFqdns
}

// Status is what the admin API reports.
type Status struct {
	Generation     uint64    `json:"generation"`
	PolicyFile     string    `json:"policyFile"`
	PolicyName     string    `json:"policyName"`
	Rules          int       `json:"rules"`
	AppliedAt      time.Time `json:"appliedAt"`
	LastReload     string    `json:"lastReload"` // "ok" or the error
	LastReloadAt   time.Time `json:"lastReloadAt"`
	ConnsCut       uint64    `json:"connectionsCut"`
	LogWritten     uint64    `json:"logLinesWritten"`
	LogDropped     uint64    `json:"logLinesDropped"`
	LogRateLimited uint64    `json:"logLinesRateLimited"`
	// WAF is the ingress WAF's state (nil without one).
	WAF *WAFStatus `json:"waf,omitempty"`
}

// Daemon is a running firewall.
type Daemon struct {
	cfg  *Config
	log  *slog.Logger
	dp   Dataplane
	dlog *telemetry.DecisionLog

	reloadMu   sync.Mutex
	cur        atomic.Pointer[state]
	lastErr    atomic.Value // string
	lastAt     atomic.Value // time.Time
	connsCut   atomic.Uint64
	nflogGroup uint16
	// kernelOverruns counts the times the kernel dropped log messages
	// the daemon did not read in time (flowlog.go).
	kernelOverruns atomic.Uint64

	// table holds the addresses the DNS proxy handed out (or refreshed) for
	// names; the matcher decides destinationFqdns rules with it.
	table *dnsproxy.Table
	dns   *dnsproxy.Proxy // nil when the DNS proxy is off
	proxy *proxy.Proxy    // nil when the L7 proxy is off
	wafMu sync.Mutex
	waf   *wafRunner // nil when the WAF is off (waf.go)

	// tiOnce and ti hold threat intelligence (threatintel.go).
	tiOnce sync.Once
	ti     *threatIntel

	// cut deletes the conntrack entries m denies (cutDenied; tests replace it).
	cut func(m *match.Matcher) (uint, error)

	// Admin API, metrics and health (admin.go, metrics.go, hits.go).
	metrics *metrics
	hits    *hitTracker
	proxyUp atomic.Pointer[proxy.Proxy]   // set once the L7 proxy listens
	dnsUp   atomic.Bool                   // set once the DNS proxy listens
	applied atomic.Pointer[appliedSource] // the running policy's text

	ui uiState // the dashboard's recent decisions (admin_ui.go)
}

// New makes a daemon; Run applies the policy.
func New(cfg *Config, log *slog.Logger, dp Dataplane, dlog *telemetry.DecisionLog, nflogGroup uint16) *Daemon {
	d := &Daemon{cfg: cfg, log: log, dp: dp, dlog: dlog, nflogGroup: nflogGroup}
	d.hits = newHitTracker()
	d.metrics = newMetrics(d)
	if dlog != nil {
		dlog.Observe(d.metrics.observe)
		dlog.Observe(d.hits.observe)
	}
	d.table = dnsproxy.NewTable(dnsproxy.TableOptions{OnExpire: d.addrInUse})
	d.cut = func(m *match.Matcher) (uint, error) {
		local, err := localAddrs()
		if err != nil {
			return 0, fmt.Errorf("listing local addresses: %w", err)
		}
		return cutDenied(m, local, cfg.publicIPs)
	}
	return d
}

// Current returns the applied policy and matcher (nil before the first apply).
func (d *Daemon) Current() (*policy.Policy, *match.Matcher) {
	s := d.cur.Load()
	if s == nil {
		return nil, nil
	}
	return s.policy, s.matcher
}

// Reload loads the policy file, validates and compiles it, programs the
// kernel and swaps the running state. Any failure leaves the running policy
// (and the kernel) as they were.
func (d *Daemon) Reload(reason string) error {
	data, err := os.ReadFile(d.cfg.Policy)
	if err != nil {
		return d.reloadDone(reason, err)
	}
	if reason == reasonFileChanged && d.isApplied(data) {
		return nil // e.g. POST /v1/apply persisting what it applied
	}
	return d.ApplyBytes(reason, data)
}

// ApplyBytes validates policy bytes (as if they were the policy file) and
// applies them. The file itself is not written.
func (d *Daemon) ApplyBytes(reason string, data []byte) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	start := time.Now()
	p, err := policy.Load(d.cfg.Policy, data, d.cfg.PolicyOptions())
	if err != nil {
		return d.reloadDone(reason, err)
	}
	d.reloadThreatIntel(p) // threatintel.go
	m, err := match.Compile(p, match.Options{Resolver: d.table, ThreatIntel: d.matchThreatIntel(p)})
	if err != nil {
		d.restoreThreatIntel()
		return d.reloadDone(reason, err)
	}
	d.foldRuleHits() // the kernel's counters start afresh with the new rules
	idx, err := d.dp.Apply(p, m)
	if err != nil {
		d.restoreThreatIntel()
		return d.reloadDone(reason, fmt.Errorf("programming the kernel: %w (the previous ruleset stays)", err))
	}
	var gen uint64 = 1
	if old := d.cur.Load(); old != nil {
		gen = old.gen + 1
	}
	d.cur.Store(&state{policy: p, matcher: m, index: idx, gen: gen, applied: time.Now(), fqdns: fqdnNames(p)})
	d.noteApplied(data)
	if d.dns != nil {
		if err := d.dns.SetConfig(d.dnsConfig(p)); err != nil {
			d.log.Warn("DNS proxy settings of the new policy rejected; the old ones stay", "err", err)
		}
		go d.dns.Refresh(context.Background(), d.currentFQDNs())
	}
	if d.proxy != nil {
		d.proxy.SetMatcher(m)
	}
	applied := time.Since(start)
	cut, err := d.cut(m)
	if err != nil {
		d.log.Warn("cutting connections the new policy denies", "err", err)
	}
	d.connsCut.Add(uint64(cut))
	for _, w := range p.Warnings {
		d.log.Warn("policy warning", "warning", w.Error())
	}
	d.log.Info("policy applied", "reason", reason, "generation", gen, "policy", p.Name,
		"rules", countRules(p), "apply_ms", applied.Milliseconds(), "connections_cut", cut)
	return d.reloadDone(reason, nil)
}

func (d *Daemon) reloadDone(reason string, err error) error {
	d.lastAt.Store(time.Now())
	d.metrics.reloaded(err)
	if err != nil {
		d.lastErr.Store(err.Error())
		d.log.Error("policy rejected; the running policy stays", "reason", reason, "err", err.Error())
		return err
	}
	d.lastErr.Store("ok")
	return nil
}

func countRules(p *policy.Policy) int {
	n := 0
	for _, g := range p.Groups {
		for _, c := range g.Collections {
			n += len(c.Rules)
		}
	}
	return n
}

// Status reports the daemon's state.
func (d *Daemon) Status() Status {
	var s Status
	s.PolicyFile = d.cfg.Policy
	if st := d.cur.Load(); st != nil {
		s.Generation = st.gen
		s.PolicyName = st.policy.Name
		s.Rules = countRules(st.policy)
		s.AppliedAt = st.applied
	}
	s.LastReload, _ = d.lastErr.Load().(string)
	s.LastReloadAt, _ = d.lastAt.Load().(time.Time)
	s.WAF = d.WAFStatus()
	s.ConnsCut = d.connsCut.Load()
	if d.dlog != nil {
		s.LogWritten, s.LogDropped, s.LogRateLimited = d.dlog.Stats()
	}
	return s
}

// Run applies the policy, then serves until ctx ends: NFLOG decisions, the
// policy file watcher, and reload requests on the hup channel. When Run
// returns the kernel rules stay in place (fail closed).
func (d *Daemon) Run(ctx context.Context, hup <-chan struct{}) error {
	// Bind the kernel log before the first apply: the socket buffers what
	// the new ruleset logs from its first packet on.
	var nfl *nflog.Reader
	if d.dlog != nil {
		r, err := nflog.Open(d.nflogGroup, 0)
		if err != nil {
			d.log.Warn("decision log from the kernel unavailable", "err", err)
		} else {
			nfl = r
		}
	}
	if err := d.Reload("start"); err != nil {
		if nfl != nil {
			nfl.Close()
		}
		return err
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
	go func() { defer wg.Done(); d.runThreatIntel(ctx, time.Second) }() // threatintel.go
	if d.cfg.DNS.Listen != "" {
		if err := d.startDNS(ctx); err != nil {
			return fmt.Errorf("DNS proxy: %w", err)
		}
	}
	if d.cfg.WAF.Config != "" {
		if err := d.startWAF(ctx); err != nil {
			return fmt.Errorf("WAF: %w", err)
		}
	}
	if d.cfg.Proxy.Listen != "" {
		if err := d.startProxy(ctx); err != nil {
			return fmt.Errorf("L7 proxy: %w", err)
		}
	}

	if nfl != nil {
		wg.Add(1)
		go func() { defer wg.Done(); d.readNFLOG(ctx, nfl) }()
	}
	var events <-chan fsnotify.Event
	if d.cfg.Watch() {
		w, err := fsnotify.NewWatcher()
		if err == nil {
			err = w.Add(filepath.Dir(d.cfg.Policy))
		}
		if err != nil {
			d.log.Warn("cannot watch the policy file; reload with SIGHUP or the admin API", "err", err)
		} else {
			defer w.Close()
			events = w.Events
		}
	}
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping; the kernel ruleset stays in place (fail closed)")
			return nil
		case <-hup:
			d.reloadAll("SIGHUP")
		case ev := <-events:
			if filepath.Clean(ev.Name) == filepath.Clean(d.cfg.Policy) && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
				debounce = time.After(200 * time.Millisecond)
			}
		case <-debounce:
			debounce = nil
			d.Reload(reasonFileChanged)
		}
	}
}

// ActionReasons of kernel lines that name no rule.
const (
	// ReasonInputDrop: the input chain dropped a packet to the firewall itself.
	ReasonInputDrop = "Default Action: not a service of the firewall (input chain)"
	// ReasonUnknownRuleset: logged by a ruleset this process did not apply.
	ReasonUnknownRuleset = "logged by a ruleset this daemon did not apply (before its first apply); rule unknown"
)

func protoName(p uint8) string {
	switch p {
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 1, 58:
		return "ICMP"
	}
	return fmt.Sprint(p)
}

// PublicIPs returns the configured public addresses.
func (c *Config) PublicAddrs() []netip.Addr { return c.publicIPs }

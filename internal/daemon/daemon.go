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
	"github.com/clusterwall/clusterwall/internal/ha"
	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nflog"
	"github.com/clusterwall/clusterwall/internal/nft"
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
	// HA is this gateway's high-availability state (nil without ha).
	HA *ha.Status `json:"ha,omitempty"`
	// SNATPool is the use of each SNAT pool address (nil without a pool).
	SNATPool []SNATPoolUse `json:"snatPool,omitempty"`
	// LastApply is where the last successful apply's time went.
	LastApply *ApplyTimes `json:"lastApply,omitempty"`
}

// Daemon is a running firewall.
type Daemon struct {
	cfg  *Config
	log  *slog.Logger
	dp   Dataplane
	dlog *telemetry.DecisionLog

	reloadMu   sync.Mutex
	loader     policy.Loader // decodes and validates only what changed (ApplyBytes)
	cur        atomic.Pointer[state]
	lastErr    atomic.Value // string
	lastAt     atomic.Value // time.Time
	connsCut   atomic.Uint64
	lastApply  atomic.Pointer[ApplyTimes]
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

	adminLim adminLimits                // the admin API's bounds (admin_limits.go)
	haMgr    atomic.Pointer[ha.Manager] // nil without ha (daemon_ha.go)

	// Lifecycle (Start, Serve): every goroutine the daemon starts runs
	// under wg and ends with stop; failed holds, per component, why it
	// stopped serving after it had started (readiness).
	wg         sync.WaitGroup
	stop       context.CancelFunc
	refreshDNS chan struct{} // asks the DNS refresher (startDNS) to resolve the FQDN rules' names
	failedMu   sync.Mutex
	failed     map[string]string
	fqdnRep    atomic.Pointer[fqdnReplicator] // nil without ha (fqdn_ha.go)
	nflogErr   atomic.Pointer[string]         // why the kernel decision log is unavailable
}

// New makes a daemon; Run applies the policy.
func New(cfg *Config, log *slog.Logger, dp Dataplane, dlog *telemetry.DecisionLog, nflogGroup uint16) *Daemon {
	d := &Daemon{cfg: cfg, log: log, dp: dp, dlog: dlog, nflogGroup: nflogGroup,
		refreshDNS: make(chan struct{}, 1), failed: map[string]string{}}
	d.hits = newHitTracker()
	d.metrics = newMetrics(d)
	if dlog != nil {
		dlog.Observe(d.metrics.observe)
		dlog.Observe(d.hits.observe)
	}
	d.table = dnsproxy.NewTable(dnsproxy.TableOptions{OnExpire: d.addrInUse, OnLearn: d.haLearned,
		MaxNames: cfg.DNS.MaxNames, MaxAddrs: cfg.DNS.MaxAddresses, MaxAddrsPerName: cfg.DNS.MaxAddressesPerName})
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
		// Nothing to apply (e.g. POST /v1/apply persisting what it
		// applied) — but the file and the running policy agree, so an
		// earlier rejected edit is no longer the last word.
		if last, _ := d.lastErr.Load().(string); last != "ok" {
			d.log.Info("policy file holds the running policy again", "reason", reason)
			return d.reloadDone(reason, nil)
		}
		return nil
	}
	return d.ApplyBytes(reason, data)
}

// ApplyBytes validates policy bytes (as if they were the policy file) and
// applies them. The file itself is not written.
func (d *Daemon) ApplyBytes(reason string, data []byte) (err error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	// The last apply's hit totals settled (hits.go: settleRuleHits), and
	// with them its collector target restored.
	d.hits.await()
	restoreGC := gcForApply() // applygc.go
	settling := false         // settleRuleHits restores it
	defer func() {
		if !settling {
			restoreGC()
		}
	}()
	stage := stageParse
	defer d.recoverApply(&stage, reason, &err)     // recover.go
	clock := startApplyClock()                     // applytime.go
	p, err := d.loadPolicyTimed(data, &clock.load) // one parse at a time (applytime.go)
	if err != nil {
		return d.reloadDone(reason, err)
	}
	clock.lap()
	d.reloadThreatIntel(p) // threatintel.go
	// The matcher's indexes are built beside the kernel ruleset's compile
	// (the data plane waits for them before it touches the kernel:
	// builtWaiter); any other data plane gets a matcher built.
	m, err := match.CompileStaged(p, match.Options{Resolver: d.table, ThreatIntel: d.matchThreatIntel(p), Gateway: d.gateway()})
	if err == nil {
		if _, ok := d.dp.(builtWaiter); !ok {
			err = m.Built()
		}
	}
	if err != nil {
		d.restoreThreatIntel()
		return d.reloadDone(reason, err)
	}
	clock.compiled()
	var (
		idx     LogIndex
		counted []nft.RuleCounter
		carry   *carryFold
	)
	sum := sumLater(data)                // admin.go: noteApplied's
	if cf := d.carryFold(p); cf != nil { // hits.go: the counters the apply deletes folded within it
		clock.kerneled()
		stage = stageKernel
		carry = cf
		idx, err = d.dp.(goneFolder).ApplyFolding(p, m, cf)
	} else {
		counted = d.foldRuleHits(p) // hits.go
		clock.kerneled()
		stage = stageKernel
		idx, err = d.dp.Apply(p, m)
	}
	clock.dataplane(d.dp)
	if err == nil {
		err = m.Built() // the data plane waited for it already
	}
	if err != nil {
		d.restoreThreatIntel()
		return d.reloadDone(reason, fmt.Errorf("programming the kernel: %w (the previous ruleset stays)", err))
	}
	stage = stageSwapped
	var gen uint64 = 1
	old := d.cur.Load()
	if old != nil {
		gen = old.gen + 1
	}
	// The hit totals move to the new generation after the apply returns
	// (hits.go: settleRuleHits); every reader of them waits for that from
	// before the new generation is published.
	var rebase func()
	if carry == nil || !carry.carries(d.hits) {
		rebase = d.rebaseLater(d.dp, gen, p, counted) // hits.go: reads the kernel now if it must
	}
	next := &state{policy: p, matcher: m, index: idx, gen: gen, applied: time.Now(), fqdns: fqdnNames(m)}
	settled := d.hits.unsettle()
	d.cur.Store(next)
	settling = true
	// The bookkeeping allocates maps of the policy's rules: the apply's
	// collector target stays until it is done.
	go d.settleRuleHits(func() { restoreGC(); settled() }, carry, rebase, gen, old, p) // hits.go
	clock.kerneled()
	d.noteApplied(data, sum())
	if d.dns != nil {
		if err := d.dns.SetConfig(d.dnsConfig(p)); err != nil {
			d.log.Warn("DNS proxy settings of the new policy rejected; the old ones stay", "err", err)
		}
		d.kickDNSRefresh() // the new policy's names, resolved by the daemon's refresher
	}
	times := clock.times()
	d.lastApply.Store(&times)
	d.metrics.applied(times)
	// Connections the new policy denies are cut, whichever engine allowed
	// them: the L7 proxy decides its own again (by name), the conntrack cut
	// the kernel's forwarded flows (by address; it leaves the proxy's
	// alone). Both ask m.
	var cut uint
	if d.proxy != nil {
		cut = uint(d.proxy.Redecide(m))
	}
	kcut, err := d.cut(m)
	if err != nil {
		d.log.Warn("cutting connections the new policy denies", "err", err)
	}
	cut += kcut
	d.connsCut.Add(uint64(cut))
	for _, w := range p.Warnings {
		d.log.Warn("policy warning", "warning", w.Error())
	}
	d.log.Info("policy applied", append([]any{"reason", reason, "generation", gen, "policy", p.Name,
		"rules", countRules(p), "apply_ms", int64(times.TotalMs)}, append(times.logAttrs(), "connections_cut", cut)...)...)
	return d.reloadDone(reason, nil)
}

// gateway is the firewall as the matcher sees it: the data plane's
// (NFTDataplane.Gateway), else the one the config describes.
func (d *Daemon) gateway() *match.Gateway {
	if g, ok := d.dp.(interface{ Gateway() *match.Gateway }); ok {
		return g.Gateway()
	}
	return d.cfg.GatewayConfig().Gateway()
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
	s.HA = d.HAStatus()             // daemon_ha.go
	s.SNATPool = d.SNATPoolStatus() // snatpool.go
	s.ConnsCut = d.connsCut.Load()
	s.LastApply = d.lastApply.Load()
	if d.dlog != nil {
		s.LogWritten, s.LogDropped, s.LogRateLimited = d.dlog.Stats()
	}
	return s
}

// Run is Start, then Serve: it applies the policy, starts every
// enforcement point and serves until ctx ends. When Run returns the kernel
// rules stay in place (fail closed) and every goroutine the daemon started
// has ended.
func (d *Daemon) Run(ctx context.Context, hup <-chan struct{}) error {
	if err := d.Start(ctx); err != nil {
		return err
	}
	return d.Serve(ctx, hup)
}

// Start applies the policy and starts every enforcement point the config
// names — the kernel's decision log reader, threat-intelligence refreshes,
// the DNS proxy, the WAF and the L7 proxy — and returns once each of them
// serves. An error names the one that could not start and why; what had
// started is stopped again (the kernel ruleset stays: fail closed). Start
// the admin API only after Start returned: it then never sees a component
// half started.
func (d *Daemon) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	d.stop = cancel
	// Bind the kernel log before the first apply: the socket buffers what
	// the new ruleset logs from its first packet on.
	var nfl *nflog.Reader
	if d.dlog != nil {
		r, err := nflog.Open(d.nflogGroup, 0)
		if err != nil {
			d.log.Warn("decision log from the kernel unavailable", "err", err)
			why := err.Error()
			d.nflogErr.Store(&why)
		} else {
			nfl = r
		}
	}
	fail := func(err error) error {
		if nfl != nil {
			nfl.Close()
		}
		d.shutdown()
		return err
	}
	d.enforceAntiSpoofing()                   // antispoof.go
	if err := d.checkSNATPool(); err != nil { // snatpool.go
		return fail(err)
	}
	if err := d.Reload("start"); err != nil {
		return fail(err)
	}
	d.spawn(func() { d.runThreatIntel(ctx, time.Second) }) // threatintel.go
	if d.cfg.DNS.Listen != "" {
		if err := d.startDNS(ctx); err != nil {
			return fail(fmt.Errorf("DNS proxy on %s: %w", d.cfg.DNS.Listen, err))
		}
	}
	if d.cfg.WAF.Config != "" {
		if err := d.startWAF(ctx); err != nil {
			return fail(fmt.Errorf("WAF: %w", err))
		}
	}
	if d.cfg.Proxy.Listen != "" {
		if err := d.startProxy(ctx); err != nil {
			return fail(fmt.Errorf("L7 proxy on %s: %w", d.cfg.Proxy.Listen, err))
		}
	}
	// keepalived claims the gateway's addresses only once every
	// enforcement point serves.
	if err := d.startHA(ctx); err != nil { // daemon_ha.go
		return fail(fmt.Errorf("HA: %w", err))
	}
	if nfl != nil {
		d.spawn(func() { d.readNFLOG(ctx, nfl) })
	}
	return nil
}

// spawn runs fn on a goroutine that shutdown waits for.
func (d *Daemon) spawn(fn func()) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		fn()
	}()
}

// shutdown stops everything Start started and waits for it.
func (d *Daemon) shutdown() {
	d.stopHA() // daemon_ha.go: hand the addresses to the peer first
	if d.stop != nil {
		d.stop()
	}
	d.wg.Wait()
}

// componentFailed records that a component stopped serving after it had
// started (the daemon is then not ready, /readyz says why).
func (d *Daemon) componentFailed(component string, err error) {
	d.log.Error(component+" stopped serving; the daemon is not ready", "err", err)
	d.failedMu.Lock()
	d.failed[component] = err.Error()
	d.failedMu.Unlock()
}

// Serve reloads on the hup channel and when the policy file changes until
// ctx ends, then stops everything Start started and waits for it. The
// kernel rules stay in place (fail closed).
func (d *Daemon) Serve(ctx context.Context, hup <-chan struct{}) error {
	defer d.shutdown()
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

package daemon

import (
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/clusterwall/clusterwall/internal/recovery"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// Metric names (docs/api.md lists them; deploy/grafana/clusterwall.json
// queries them, and a test checks that each one it queries is exported).
const (
	metricDecisions      = "clusterwall_decisions_total"
	metricWAFBlocks      = "clusterwall_waf_blocks_total"
	metricWAFBlocked     = "clusterwall_waf_blocked_requests_total"
	metricRuleHits       = "clusterwall_rule_hits_total"
	metricDefaultDeny    = "clusterwall_default_deny_hits_total"
	metricInputDrops     = "clusterwall_input_drop_hits_total"
	metricConntrack      = "clusterwall_conntrack_entries"
	metricProxyLatency   = "clusterwall_proxy_decision_duration_seconds"
	metricProxyActive    = "clusterwall_proxy_active_connections"
	metricDNSLatency     = "clusterwall_dns_request_duration_seconds"
	metricLogWritten     = "clusterwall_log_lines_written_total"
	metricLogDropped     = "clusterwall_log_lines_dropped_total"
	metricLogLimited     = "clusterwall_log_lines_rate_limited_total"
	metricLogOverruns    = "clusterwall_log_kernel_overruns_total"
	metricGeneration     = "clusterwall_policy_generation"
	metricPolicyRules    = "clusterwall_policy_rules"
	metricAppliedAt      = "clusterwall_policy_applied_timestamp_seconds"
	metricReloads        = "clusterwall_policy_reloads_total"
	metricLastReloadOK   = "clusterwall_policy_last_reload_success"
	metricLastReloadTime = "clusterwall_policy_last_reload_timestamp_seconds"
	metricConnsCut       = "clusterwall_connections_cut_total"
	metricReady          = "clusterwall_ready"
	metricApplyDuration  = "clusterwall_policy_apply_duration_seconds"
)

// metrics is the daemon's Prometheus registry (client_golang; its own
// registry, not the global one, so that tests can run several daemons).
type metrics struct {
	reg          *prometheus.Registry
	decisions    *prometheus.CounterVec
	wafBlocks    *prometheus.CounterVec
	wafBlocked   prometheus.Counter
	dnsLatency   prometheus.Histogram
	proxyLatency *prometheus.HistogramVec
	reloads      *prometheus.CounterVec
	// counters caches decisions' children by their label values:
	// WithLabelValues hashes and validates the five values on every call,
	// most of the cost of counting a kernel flow (decisioncounters.go).
	counters decisionCounters
	// applyDuration: applytime.go
	applyDuration *prometheus.HistogramVec
}

func newMetrics(d *Daemon) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	// The proxies' decisions (and any the kernel logs without a counter);
	// not registered: daemonCollector exports it with the kernel's
	// counters added (kernelDecision).
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricDecisions,
		Help: decisionsHelp,
	}, decisionsLabels)
	m.wafBlocks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricWAFBlocks,
		Help: "Requests the WAF blocked, by CRS rule id (a request counts once for every rule it matched; \"none\": a request limit such as the body size).",
	}, []string{"rule"})
	m.wafBlocked = prometheus.NewCounter(prometheus.CounterOpts{
		Name: metricWAFBlocked,
		Help: "Requests the WAF blocked.",
	})
	m.dnsLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    metricDNSLatency,
		Help:    "Time the DNS proxy took to answer a query (cache hits included).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	m.proxyLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    metricProxyLatency,
		Help:    "Time from the L7 proxy taking a connection to its decision (reading the ClientHello or request head; for allowed ones, the upstream connect too).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"action"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricReloads,
		Help: "Policy applies (start, reload, file change, admin API), by result.",
	}, []string{"result"})
	// Children that always exist, so every series the dashboard queries is
	// present from the first scrape.
	m.proxyLatency.WithLabelValues("Allow")
	m.proxyLatency.WithLabelValues("Deny")
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("error")
	m.applyDuration = newApplyDuration()
	m.reg.MustRegister(m.wafBlocks, m.wafBlocked, m.dnsLatency, m.proxyLatency, m.reloads, m.applyDuration,
		&daemonCollector{d: d}, budgetCollector{d: d}, haCollector{d: d}, snatCollector{d: d}, panicCollector{},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe sees every decision record (telemetry.DecisionLog.Observe): on
// the data path, so it only bumps counters.
func (m *metrics) observe(r *telemetry.Record) {
	if !kernelDecision(r) {
		m.counters.get(m.decisions, r).Inc()
	}
	switch r.Category {
	case telemetry.CategoryDNSQuery:
		if r.RequestDurationSecs > 0 {
			m.dnsLatency.Observe(r.RequestDurationSecs)
		}
	case telemetry.CategoryWAF:
		if !wafBlocked(r.Action) {
			return
		}
		m.wafBlocked.Inc()
		if len(r.RuleIds) == 0 {
			m.wafBlocks.WithLabelValues("none").Inc() // a request limit, not a CRS rule
		}
		for _, id := range r.RuleIds {
			m.wafBlocks.WithLabelValues(strconv.Itoa(id)).Inc()
		}
	}
}

// kernelDecision reports whether r is a decision of a kernel rule that
// has a counter: a network or DNAT rule, the default deny, the input
// chain's drop, threat intelligence. clusterwall_decisions_total counts
// those from the counters, which count every flow, not from the log
// messages, which the kernel limits (log.ratePerSecond; the default deny's
// and the input chain's always): counting both would count twice.
func kernelDecision(r *telemetry.Record) bool {
	if r.Source != "kernel" {
		return false
	}
	switch r.Category {
	case telemetry.CategoryNetworkRule, telemetry.CategoryNatRule, telemetry.CategoryThreatIntel:
		return true
	}
	return false
}

// wafBlocked reports whether a WAF record's action blocked the request
// (internal/waf says "Blocked", as Azure's WAF log does).
func wafBlocked(action string) bool {
	switch strings.ToLower(action) {
	case "blocked", "block", "deny", "denied":
		return true
	}
	return false
}

func (m *metrics) proxyObserve(allowed bool, d time.Duration) {
	a := "Deny"
	if allowed {
		a = "Allow"
	}
	m.proxyLatency.WithLabelValues(a).Observe(d.Seconds())
}

// reloaded counts one apply's result (reloadDone).
func (m *metrics) reloaded(err error) {
	if err != nil {
		m.reloads.WithLabelValues("error").Inc()
		return
	}
	m.reloads.WithLabelValues("ok").Inc()
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// daemonCollector reads the daemon's state at scrape time: the kernel's
// rule counters, conntrack, the policy generation and reload results, and
// the decision log's counters.
type daemonCollector struct{ d *Daemon }

const decisionsHelp = "Decisions of every enforcement point, by category (Azure table name), action and rule: the kernel's by its rules' counters (every flow, whatever the log's rate limit), the proxies' as they decide (counted before log rate limiting)."

var decisionsLabels = []string{"category", "action", "rule_collection_group", "rule_collection", "rule"}

var (
	descDecisions = prometheus.NewDesc(metricDecisions, decisionsHelp, decisionsLabels, nil)
	descRuleHits  = prometheus.NewDesc(metricRuleHits,
		"Hits per policy rule since the daemon started: new flows counted by the kernel rule's counter (network, DNAT rules) or L7 proxy decisions (application rules).",
		[]string{"rule_collection_group", "rule_collection", "rule", "kind", "action"}, nil)
	descDefaultDeny = prometheus.NewDesc(metricDefaultDeny, "New forwarded flows no rule allowed (the kernel's default-deny counter).", nil, nil)
	descInputDrops  = prometheus.NewDesc(metricInputDrops, "Packets to the firewall itself its input chain dropped (kernel counter).", nil, nil)
	descConntrack   = prometheus.NewDesc(metricConntrack, "Connections the kernel tracks (nf_conntrack_count of the daemon's network namespace).", nil, nil)
	descProxyActive = prometheus.NewDesc(metricProxyActive, "Connections the L7 proxy is handling.", nil, nil)
	descWritten     = prometheus.NewDesc(metricLogWritten, "Decision log lines written.", nil, nil)
	descDropped     = prometheus.NewDesc(metricLogDropped, "Decision log lines dropped because the sink was slow (queue full) or failed.", nil, nil)
	descLimited     = prometheus.NewDesc(metricLogLimited, "Decision log lines dropped by the log rate limit.", nil, nil)
	descOverruns    = prometheus.NewDesc(metricLogOverruns, "Times the kernel dropped flow log messages because the daemon did not read them in time (their flows have no line).", nil, nil)
	descGeneration  = prometheus.NewDesc(metricGeneration, "Generation of the running policy (1 after start, +1 per successful apply).", nil, nil)
	descRules       = prometheus.NewDesc(metricPolicyRules, "Rules in the running policy.", nil, nil)
	descAppliedAt   = prometheus.NewDesc(metricAppliedAt, "When the running policy was applied (Unix time).", nil, nil)
	descLastOK      = prometheus.NewDesc(metricLastReloadOK, "1 when the last apply/reload succeeded (or the watched policy file was put back to the running policy's text), 0 when it was rejected (the previous policy stays).", nil, nil)
	descLastAt      = prometheus.NewDesc(metricLastReloadTime, "When the last apply/reload finished (Unix time).", nil, nil)
	descConnsCut    = prometheus.NewDesc(metricConnsCut, "Established connections cut because a new policy denies them.", nil, nil)
	descReady       = prometheus.NewDesc(metricReady, "1 when /readyz answers 200: policy applied, data plane programmed, DNS and proxy listeners up.", nil, nil)
)

func (c *daemonCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDecisions, descRuleHits, descDefaultDeny, descInputDrops, descConntrack, descProxyActive, descWritten, descDropped,
		descLimited, descOverruns, descGeneration, descRules, descAppliedAt, descLastOK, descLastAt, descConnsCut, descReady} {
		ch <- d
	}
}

func (c *daemonCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	// The registry collects on goroutines of its own, outside the admin
	// API's recovery: a panic here would stop the process.
	defer func() {
		if v := recover(); v != nil {
			recovery.Report(d.log, recovery.Admin, v, "path", "/metrics")
		}
	}()
	gauge := func(desc *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v)
	}
	counter := func(desc *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v)
	}
	hits, kernel := d.ruleHits()
	if hits.CountersError != "" {
		d.log.Warn("metrics: reading the kernel's rule counters", "err", hits.CountersError)
	}
	c.collectDecisions(ch, kernel)
	for _, r := range hits.Rules {
		ch <- prometheus.MustNewConstMetric(descRuleHits, prometheus.CounterValue, float64(r.Hits),
			r.RuleCollectionGroup, r.RuleCollection, r.Rule, r.Kind, r.Action)
	}
	counter(descDefaultDeny, float64(hits.DefaultDenyHits))
	counter(descInputDrops, float64(hits.InputDropHits))
	if n, ok := conntrackCount(); ok {
		gauge(descConntrack, n)
	}
	if px := d.proxyUp.Load(); px != nil {
		gauge(descProxyActive, float64(px.Stats().Active))
	} else {
		gauge(descProxyActive, 0)
	}
	st := d.Status()
	counter(descWritten, float64(st.LogWritten))
	counter(descDropped, float64(st.LogDropped))
	counter(descLimited, float64(st.LogRateLimited))
	counter(descOverruns, float64(d.kernelOverruns.Load()))
	gauge(descGeneration, float64(st.Generation))
	gauge(descRules, float64(st.Rules))
	if !st.AppliedAt.IsZero() {
		gauge(descAppliedAt, float64(st.AppliedAt.UnixNano())/1e9)
	}
	ok := 0.0
	if st.LastReload == "ok" {
		ok = 1
	}
	gauge(descLastOK, ok)
	if !st.LastReloadAt.IsZero() {
		gauge(descLastAt, float64(st.LastReloadAt.UnixNano())/1e9)
	}
	counter(descConnsCut, float64(st.ConnsCut))
	ready := 0.0
	if len(d.notReady()) == 0 {
		ready = 1
	}
	gauge(descReady, ready)
}

// conntrackCount reads the number of tracked connections of this network
// namespace (a per-namespace sysctl, so the cost does not grow with the
// table, unlike listing it over netlink).
func conntrackCount() (float64, bool) {
	data, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(string(data)), 64)
	return n, err == nil
}

// collectDecisions exports clusterwall_decisions_total: the proxies'
// decisions (metrics.decisions) plus the kernel's counters (kernel), one
// series per label set.
func (c *daemonCollector) collectDecisions(ch chan<- prometheus.Metric, kernel map[decisionLabels]uint64) {
	emit := func(k decisionLabels, v float64) {
		ch <- prometheus.MustNewConstMetric(descDecisions, prometheus.CounterValue, v, k.category, k.action, k.group, k.collection, k.rule)
	}
	vec := make(chan prometheus.Metric, 64)
	go func() {
		c.d.metrics.decisions.Collect(vec)
		close(vec)
	}()
	for m := range vec {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			continue
		}
		var k decisionLabels
		for _, l := range pb.GetLabel() {
			switch l.GetName() {
			case "category":
				k.category = l.GetValue()
			case "action":
				k.action = l.GetValue()
			case "rule_collection_group":
				k.group = l.GetValue()
			case "rule_collection":
				k.collection = l.GetValue()
			case "rule":
				k.rule = l.GetValue()
			}
		}
		v := pb.GetCounter().GetValue()
		if n, ok := kernel[k]; ok {
			v += float64(n)
			delete(kernel, k)
		}
		emit(k, v)
	}
	for k, n := range kernel {
		emit(k, float64(n))
	}
}

package daemon

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// ApplyTimes is where one apply's time went (milliseconds): decoding the
// policy's YAML, validating it, compiling it (threat-intel feeds, the
// matcher and the kernel ruleset) and programming the kernel (reading the
// rule counters and the netlink transactions). The daemon's "policy
// applied" log line has them as load_ms, validate_ms, compile_ms and
// kernel_ms (apply_ms is the total), /v1/status as lastApply, the answer
// of POST /v1/apply as apply, and /metrics as
// clusterwall_policy_apply_duration_seconds{stage}.
type ApplyTimes struct {
	LoadMs     float64 `json:"loadMs"`
	ValidateMs float64 `json:"validateMs"`
	CompileMs  float64 `json:"compileMs"`
	KernelMs   float64 `json:"kernelMs"`
	TotalMs    float64 `json:"totalMs"`
}

// applyClock measures one apply's stages (ApplyBytes).
type applyClock struct {
	start, at       time.Time
	load            policy.LoadTimings
	compile, kernel time.Duration
}

func startApplyClock() *applyClock {
	now := time.Now()
	return &applyClock{start: now, at: now}
}

// lap returns the time since the last lap (or the start).
func (c *applyClock) lap() time.Duration {
	now := time.Now()
	d := now.Sub(c.at)
	c.at = now
	return d
}

// compiled notes the time since the last lap as compiling; kerneled as
// programming the kernel.
func (c *applyClock) compiled() { c.compile += c.lap() }
func (c *applyClock) kerneled() { c.kernel += c.lap() }

// dataplane splits the data plane's apply into compiling and programming
// the kernel, when it can tell (NFTDataplane.Timings).
func (c *applyClock) dataplane(dp Dataplane) {
	d := c.lap()
	if t, ok := dp.(interface {
		Timings() (compile, kernel time.Duration)
	}); ok {
		comp, kern := t.Timings()
		if comp+kern <= d {
			c.compile += comp
			c.kernel += d - comp
			return
		}
	}
	c.kernel += d
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (c *applyClock) times() ApplyTimes {
	total := time.Since(c.start)
	return ApplyTimes{LoadMs: ms(c.load.Decode), ValidateMs: ms(c.load.Validate), CompileMs: ms(c.compile),
		KernelMs: ms(c.kernel), TotalMs: ms(total)}
}

// logAttrs are the stages for the "policy applied" log line.
func (t ApplyTimes) logAttrs() []any {
	return []any{"load_ms", int64(t.LoadMs), "validate_ms", int64(t.ValidateMs), "compile_ms", int64(t.CompileMs),
		"kernel_ms", int64(t.KernelMs)}
}

// applyDuration is clusterwall_policy_apply_duration_seconds.
func newApplyDuration() *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    metricApplyDuration,
		Help:    "Time successful policy applies took, by stage: load (YAML decode), validate, compile (threat intel, matcher, kernel ruleset), kernel (rule counters and the netlink transactions), total.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"stage"})
	for _, s := range []string{"load", "validate", "compile", "kernel", "total"} {
		h.WithLabelValues(s)
	}
	return h
}

func (m *metrics) applied(t ApplyTimes) {
	for s, v := range map[string]float64{"load": t.LoadMs, "validate": t.ValidateMs, "compile": t.CompileMs, "kernel": t.KernelMs, "total": t.TotalMs} {
		m.applyDuration.WithLabelValues(s).Observe(v / 1000)
	}
}

// loadPolicyTimed is loadPolicy (one parse at a time, admin_limits.go)
// noting how long decoding and validating took; the daemon's Loader
// decodes and validates only the rule collection groups whose text
// changed since its last load (policy.Loader).
func (d *Daemon) loadPolicyTimed(data []byte, t *policy.LoadTimings) (*policy.Policy, error) {
	defer d.parsing()()
	opts := d.cfg.PolicyOptions()
	opts.Timings = t
	return d.loader.Load(d.cfg.Policy, data, opts)
}

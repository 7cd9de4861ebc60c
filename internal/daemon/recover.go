package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterwall/clusterwall/internal/nflog"
	"github.com/clusterwall/clusterwall/internal/recovery"
	"github.com/clusterwall/clusterwall/internal/threatintel"
)

// Panics in the daemon's request paths (internal/recovery): the DNS and
// L7 proxies recover per query and connection themselves; here the admin
// API (per request), a policy apply (before the kernel is touched: a
// rejected reload; after it: the state may be half changed, so the
// process stops — fail closed), the kernel log reader (per batch) and the
// threat-intelligence engine (its refresh restarts).

const metricPanics = "clusterwall_panics_recovered_total"

var descPanics = prometheus.NewDesc(metricPanics,
	"Panics recovered in a request path (one query, connection, request or batch dropped; serving went on), by where.",
	[]string{"where"}, nil)

type panicCollector struct{}

func (panicCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descPanics }
func (panicCollector) Collect(ch chan<- prometheus.Metric) {
	for _, w := range recovery.Wheres {
		ch <- prometheus.MustNewConstMetric(descPanics, prometheus.CounterValue, float64(recovery.Count(w)), w)
	}
}

// Stages of ApplyBytes for recoverApply.
const (
	stageParse   = "parsing and compiling the policy"
	stageKernel  = "programming the kernel"
	stageSwapped = "switching to the new policy"
)

// recoverApply is deferred by ApplyBytes: a panic before the kernel was
// touched is a rejected reload (the running policy stays, threat
// intelligence is restored); one after may have left the kernel and the
// daemon out of step, so the process stops (fail closed: the kernel rules
// stay; the restart applies the policy file afresh).
func (d *Daemon) recoverApply(stage *string, reason string, err *error) {
	v := recover()
	if v == nil {
		return
	}
	if *stage != stageParse {
		recovery.Report(d.log, recovery.Reload, recovery.Corrupt{What: "the policy while " + *stage, Value: v}, "reason", reason)
		return
	}
	recovery.Report(d.log, recovery.Reload, v, "reason", reason)
	d.restoreThreatIntel()
	*err = d.reloadDone(reason, fmt.Errorf("internal error while %s (a bug, logged: %v); the running policy stays", *stage, v))
}

// logPackets writes the decision lines of one NFLOG batch; a panic drops
// the rest of the batch (the kernel's next messages are read as usual).
func (d *Daemon) logPackets(fl *flowLogger, st *state, pkts []nflog.Packet) {
	defer func() {
		if v := recover(); v != nil {
			recovery.Report(d.log, recovery.NFLOG, v, "batch", len(pkts))
		}
	}()
	for i := range pkts {
		fl.log(st, &pkts[i])
	}
}

// runThreatEngine runs the threat-intelligence engine until ctx ends,
// starting it again a second after a panic (the last published set stays
// in force meanwhile).
func (d *Daemon) runThreatEngine(ctx context.Context, e *threatintel.Engine) {
	for ctx.Err() == nil {
		func() {
			defer func() {
				if v := recover(); v != nil {
					recovery.Report(d.log, recovery.ThreatIntel, v)
				}
			}()
			e.Run(ctx)
		}()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

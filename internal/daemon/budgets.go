package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterwall/clusterwall/internal/recovery"
)

// Budgets: every queue, cache, table and connection set that what arrives
// from the network can grow has a bound (a config key, docs/operations.md
// "Budgets"), and each is exported the same way, so one alert rule covers
// them all:
//
//	clusterwall_budget_used{budget}           what it holds now
//	clusterwall_budget_limit{budget}          its bound
//	clusterwall_budget_refused_total{budget}  what it turned away (or evicted) because it was full
const (
	metricBudgetUsed    = "clusterwall_budget_used"
	metricBudgetLimit   = "clusterwall_budget_limit"
	metricBudgetRefused = "clusterwall_budget_refused_total"
)

// budget is one bound, read at scrape time.
type budget struct {
	name    string
	used    float64
	limit   float64
	refused float64
}

var (
	descBudgetUsed    = prometheus.NewDesc(metricBudgetUsed, "What a bounded queue, cache, table or connection set holds now (docs/operations.md, Budgets).", []string{"budget"}, nil)
	descBudgetLimit   = prometheus.NewDesc(metricBudgetLimit, "The bound of a budget (its config key: docs/operations.md, Budgets).", []string{"budget"}, nil)
	descBudgetRefused = prometheus.NewDesc(metricBudgetRefused, "Requests, queries, connections, lines or entries a budget turned away or evicted because it was full.", []string{"budget"}, nil)
)

// budgetCollector exports the daemon's budgets.
type budgetCollector struct{ d *Daemon }

func (c budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBudgetUsed
	ch <- descBudgetLimit
	ch <- descBudgetRefused
}

func (c budgetCollector) Collect(ch chan<- prometheus.Metric) {
	defer func() {
		if v := recover(); v != nil {
			recovery.Report(c.d.log, recovery.Admin, v, "path", "/metrics")
		}
	}()
	for _, b := range c.d.budgets() {
		ch <- prometheus.MustNewConstMetric(descBudgetUsed, prometheus.GaugeValue, b.used, b.name)
		ch <- prometheus.MustNewConstMetric(descBudgetLimit, prometheus.GaugeValue, b.limit, b.name)
		ch <- prometheus.MustNewConstMetric(descBudgetRefused, prometheus.CounterValue, b.refused, b.name)
	}
}

// budgets lists every budget of the running daemon (those of components
// that are off are left out).
func (d *Daemon) budgets() []budget {
	var out []budget
	out = append(out, d.adminBudgets()...) // admin_limits.go
	if px := d.proxyUp.Load(); px != nil {
		st := px.Stats()
		out = append(out,
			budget{name: "proxy_connections", used: float64(st.Active), limit: float64(st.MaxConns), refused: float64(st.RefusedGlobal + st.Shed)},
			budget{name: "proxy_connections_per_source", used: float64(st.HeaviestSource), limit: float64(st.MaxConnsPerSource), refused: float64(st.RefusedSource)},
			budget{name: "proxy_connections_per_network", used: float64(st.HeaviestPrefix), limit: float64(st.MaxConnsPerPrefix), refused: float64(st.RefusedPrefix)})
	}
	if d.dnsUp.Load() && d.dns != nil { // dnsUp publishes d.dns
		for _, b := range d.dns.Budgets() {
			out = append(out, budget{name: b.Name, used: float64(b.Used), limit: float64(b.Limit), refused: float64(b.Refused)})
		}
	}
	if d.dlog != nil {
		waiting, bound := d.dlog.QueueFill()
		_, dropped, _ := d.dlog.Stats()
		out = append(out, budget{name: "log_queue", used: float64(waiting), limit: float64(bound), refused: float64(dropped)})
	}
	return out
}

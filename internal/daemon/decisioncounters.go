package daemon

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// decisionCounters maps a record's label values to its child of
// clusterwall_decisions_total without asking the vector each time. The
// children are the vector's own (the cache only remembers them), so
// counts are exact. Reloads that rename rules leave stale keys behind; the
// cache starts afresh beyond maxDecisionCounters.
type decisionCounters struct {
	m atomic.Pointer[sync.Map] // decisionLabels -> prometheus.Counter
	n atomic.Int64
}

const maxDecisionCounters = 1 << 14

type decisionLabels struct {
	category, action, group, collection, rule string
}

func (c *decisionCounters) get(vec *prometheus.CounterVec, r *telemetry.Record) prometheus.Counter {
	m := c.m.Load()
	if m == nil {
		m = &sync.Map{}
		if !c.m.CompareAndSwap(nil, m) {
			m = c.m.Load()
		}
	}
	k := decisionLabels{r.Category, r.Action, r.RuleCollectionGroup, r.RuleCollection, r.Rule}
	if v, ok := m.Load(k); ok {
		return v.(prometheus.Counter)
	}
	ctr := vec.WithLabelValues(k.category, k.action, k.group, k.collection, k.rule)
	if c.n.Add(1) > maxDecisionCounters {
		c.m.Store(&sync.Map{})
		c.n.Store(0)
		return ctr
	}
	m.Store(k, ctr)
	return ctr
}

package daemon

import (
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// BenchmarkObserve is the cost the metrics and hit observers add to every
// decision on the data path.
func BenchmarkObserve(b *testing.B) {
	d := &Daemon{hits: newHitTracker()}
	d.metrics = newMetrics(d)
	r := telemetry.Record{Time: time.Now(), Category: telemetry.CategoryApplicationRule, Source: "proxy", Action: "Allow",
		RuleCollectionGroup: "g", RuleCollection: "c", Rule: "web"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d.metrics.observe(&r)
			d.hits.observe(&r)
		}
	})
}

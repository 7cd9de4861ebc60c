package policy

import "testing"

// BenchmarkLoad10k decodes and validates a 10,000-rule policy (the load
// and validate stages of the daemon's apply).
func BenchmarkLoad10k(b *testing.B) {
	body := []byte(bigPolicyYAML(10_000))
	var t LoadTimings
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load("p.yaml", body, Options{Timings: &t}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(t.Decode.Microseconds())/1000, "last-decode-ms")
}

package policy

import (
	"syscall"
	"testing"
)

// BenchmarkLoad10k decodes and validates a 10,000-rule policy (the load
// and validate stages of the daemon's apply).
func BenchmarkLoad10k(b *testing.B) {
	body := []byte(bigPolicyYAML(10_000))
	var t LoadTimings
	b.ReportAllocs()
	cpu0 := loadCPU()
	for b.Loop() {
		if _, err := Load("p.yaml", body, Options{Timings: &t}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(t.Decode.Microseconds())/1000, "last-decode-ms")
	b.ReportMetric(float64(loadCPU()-cpu0)/1e6/float64(b.N), "cpu-ms/op")
}

// loadCPU is the process's user + system CPU time in nanoseconds.
func loadCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

package policy

import (
	"fmt"
	"strings"
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

// BenchmarkLoader10kOneRule: a Loader loading a 10,000-rule policy (10
// groups of 1,000 rules) and the same with one rule's port changed,
// alternately: the incremental path decodes and validates one group.
func BenchmarkLoader10kOneRule(b *testing.B) {
	body := bigPolicyYAML(10_000)
	at := strings.Index(body, "name: r005000\n")
	k := at + strings.Index(body[at:], "'443'")
	other := []byte(body[:k] + "'444'" + body[k+5:])
	loaderBench(b, [][]byte{[]byte(body), other}, 9)
}

// BenchmarkLoaderFull10k is BenchmarkLoad10k through a Loader that has
// nothing to reuse (as the daemon's first apply): what keeping the state
// for the next load costs.
func BenchmarkLoaderFull10k(b *testing.B) {
	body := []byte(bigPolicyYAML(10_000))
	var ld Loader
	b.ReportAllocs()
	cpu0 := loadCPU()
	for b.Loop() {
		ld.Reset()
		if _, err := ld.Load("p.yaml", body, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(loadCPU()-cpu0)/1e6/float64(b.N), "cpu-ms/op")
}

// BenchmarkLoaderAllChanged10k: a Loader alternating two 10,000-rule
// texts that differ in every group (another policy of the same shape).
func BenchmarkLoaderAllChanged10k(b *testing.B) {
	body := bigPolicyYAML(10_000)
	loaderBench(b, [][]byte{[]byte(body), []byte(strings.ReplaceAll(body, "'443'", "'444'"))}, 0)
}

// loaderBench loads texts[0], then the two texts alternately with one
// Loader, checking that it reused at least reused groups.
func loaderBench(b *testing.B, texts [][]byte, reused int) {
	var ld Loader
	if _, err := ld.Load("p.yaml", texts[0], Options{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := loadCPU()
	i := 1
	for b.Loop() {
		if _, err := ld.Load("p.yaml", texts[i%2], Options{}); err != nil {
			b.Fatal(err)
		}
		if ld.Reused < reused {
			b.Fatalf("%d groups reused, want %d", ld.Reused, reused)
		}
		i++
	}
	b.ReportMetric(float64(loadCPU()-cpu0)/1e6/float64(b.N), "cpu-ms/op")
}

// BenchmarkLoader10kRuleAdded: a Loader alternating a 10,000-rule text
// and the same with one rule added in its fifth group: the groups after
// it keep their validation, their lines moved.
func BenchmarkLoader10kRuleAdded(b *testing.B) {
	body := bigPolicyYAML(10_000)
	at := strings.Index(body, "          - name: r005000\n")
	other := []byte(body[:at] + "          - name: added\n            protocols: [TCP]\n            sourceAddresses: ['*']\n            destinationAddresses: [192.0.2.1]\n            destinationPorts: ['22']\n" + body[at:])
	loaderBench(b, [][]byte{[]byte(body), other}, 9)
}

// BenchmarkLoadParallel: Load of policies of 100 to 10,000 rules in
// groups of 250 (as the daemon's benchmark policy; of 50 below 500 rules)
// on the sequential path (seq) and on the parallel one whatever the size
// (par): where parallel.go's thresholds come from. cpu-ms/op is the
// process's CPU per load.
func BenchmarkLoadParallel(b *testing.B) {
	for _, n := range []int{100, 200, 500, 1000, 2000, 10000} {
		body := []byte(groupsPolicyYAML(n/250, 10, 25))
		if n < 500 {
			body = []byte(groupsPolicyYAML(n/50, 2, 25))
		}
		for _, mode := range []string{"seq", "par"} {
			b.Run(fmt.Sprintf("%d/%s", n, mode), func(b *testing.B) {
				minBytes, minRules := parallelMinBytes, parallelMinRules
				parallelOff = mode == "seq"
				parallelMinBytes, parallelMinRules = 0, 0
				defer func() { parallelOff, parallelMinBytes, parallelMinRules = false, minBytes, minRules }()
				b.ReportAllocs()
				var t, sum LoadTimings
				cpu0 := loadCPU()
				for b.Loop() {
					if _, err := Load("p.yaml", body, Options{Timings: &t}); err != nil {
						b.Fatal(err)
					}
					sum.Decode += t.Decode
					sum.Validate += t.Validate
				}
				b.ReportMetric(float64(loadCPU()-cpu0)/1e6/float64(b.N), "cpu-ms/op")
				b.ReportMetric(float64(sum.Decode.Microseconds())/1e3/float64(b.N), "decode-ms")
				b.ReportMetric(float64(sum.Validate.Microseconds())/1e3/float64(b.N), "validate-ms")
			})
		}
	}
}

package daemon

import (
	"slices"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// BenchmarkStagedCompile: the compile stage of a one-rule apply of the
// 10,000-rule policy (match, then the kernel ruleset from a kept cache),
// with the matcher's indexes built before the kernel compile (plain:
// match.Compile, as before) or beside it (staged: match.CompileStaged,
// waited for after, as the daemon does). The two run interleaved, one
// apply each in turn, so that a shared machine's load falls on both
// alike; each reports its median wall time (p50-ms) and the ratio.
func BenchmarkStagedCompile(b *testing.B) {
	cfg := nft.Config{Inside: "in0", Outside: "out0"}
	var ps [2]*policy.Policy
	for i, text := range []string{policyYAML(10000, 1, false, 0), policyYAML(10000, 1, false, 1)} {
		p, err := policy.Load("p.yaml", []byte(text), policy.Options{})
		if err != nil {
			b.Fatal(err)
		}
		ps[i] = p
	}
	opts := match.Options{Gateway: cfg.Gateway()}
	var caches [2]nft.Cache
	run := func(staged bool, p *policy.Policy, cache *nft.Cache) time.Duration {
		t0 := time.Now()
		var m *match.Matcher
		var err error
		if staged {
			m, err = match.CompileStaged(p, opts)
		} else {
			m, err = match.Compile(p, opts)
		}
		if err != nil {
			b.Fatal(err)
		}
		if _, err := nft.CompileCached(m, cfg, cache); err != nil {
			b.Fatal(err)
		}
		if err := m.Built(); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	for k := range 2 { // the caches hold the policy and its records
		run(k == 1, ps[0], &caches[k])
		run(k == 1, ps[1], &caches[k])
	}
	var plain, staged []float64
	b.ResetTimer()
	for i := range b.N {
		p := ps[i%2]
		if i%4 < 2 { // which goes first alternates too
			plain = append(plain, float64(run(false, p, &caches[0]).Microseconds())/1000)
			staged = append(staged, float64(run(true, p, &caches[1]).Microseconds())/1000)
		} else {
			staged = append(staged, float64(run(true, p, &caches[1]).Microseconds())/1000)
			plain = append(plain, float64(run(false, p, &caches[0]).Microseconds())/1000)
		}
	}
	slices.Sort(plain)
	slices.Sort(staged)
	b.ReportMetric(plain[len(plain)/2], "plain-p50-ms")
	b.ReportMetric(staged[len(staged)/2], "staged-p50-ms")
	b.ReportMetric(staged[len(staged)/2]/plain[len(plain)/2], "staged/plain")
}

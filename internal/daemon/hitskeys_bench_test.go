package daemon

import (
	"testing"

	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// BenchmarkNoteKeys: the keys of the counters a 100,000-rule apply
// creates (carryFold.Fresh), found from the tags directly ("direct")
// against each tag's string made and parsed back by kernelCounts
// ("strings", what Fresh did before), interleaved in one run.
func BenchmarkNoteKeys(b *testing.B) {
	p, err := policy.Load("bench.yaml", []byte(policyYAML(100000, 1, true, 0)), policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	n := len(p.RulesOf(policy.KindNetwork))
	tags := make([]nft.LogTag, n)
	for i := range tags {
		tags[i] = nft.LogTag{Kind: nft.LogAllow, Index: i}
	}
	b.Run("direct", func(b *testing.B) {
		for range b.N {
			f := &carryFold{drop: map[hitKey]bool{}}
			f.noteKeys(p, tags)
			if len(f.drop) != n {
				b.Fatalf("%d keys, want %d", len(f.drop), n)
			}
		}
	})
	b.Run("strings", func(b *testing.B) {
		for range b.N {
			drop := map[hitKey]bool{}
			cs := make([]nft.RuleCounter, len(tags))
			for i, t := range tags {
				cs[i] = nft.RuleCounter{Tag: t.String()}
			}
			for k := range kernelCounts(p, cs) {
				drop[k] = true
			}
			if len(drop) != n {
				b.Fatalf("%d keys, want %d", len(drop), n)
			}
		}
	})
}

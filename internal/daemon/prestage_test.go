package daemon

import (
	"slices"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// prestageRecorder is a Recorder that records the prestages
// (nft.NetlinkRunner.Prestage) asked of it.
type prestageRecorder struct {
	nft.Recorder
	pre   [][]string
	unpre int
	knows bool
}

func (p *prestageRecorder) Prestage(c []string) error { p.pre = append(p.pre, c); return nil }
func (p *prestageRecorder) Unprestage()               { p.unpre++ }
func (p *prestageRecorder) KnowsTable() bool          { return p.knows }

// TestPrestageCounters: an apply whose rules got a new log generation
// prestages exactly the counters the compiled ruleset has for them; one
// that keeps every rule's generation does not, unless the runner does not
// know its table (flushed); a compile that fails removes what it
// prestaged.
func TestPrestageCounters(t *testing.T) {
	saved := prestageMin
	prestageMin = 1
	defer func() { prestageMin = saved }()
	two := testPolicy + `          - name: db
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.11]
            destinationPorts: ['5432']
`
	rec := &prestageRecorder{knows: true}
	dp := &NFTDataplane{Runner: rec, Config: nft.Config{Inside: "in", Outside: "out"}}
	p, err := policy.Load("p.yaml", []byte(two), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := match.Compile(p, match.Options{Gateway: dp.Gateway()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dp.Apply(p, m); err != nil {
		t.Fatal(err)
	}
	if len(rec.pre) != 1 || rec.unpre != 0 {
		t.Fatalf("first apply: prestages %v, unprestages %d", rec.pre, rec.unpre)
	}
	var ruleCounters []string
	for _, c := range rec.Current.Counters() {
		if tg, err := nft.ParseLogTag(c); err == nil && (tg.Kind == nft.LogAllow || tg.Kind == nft.LogDeny) {
			ruleCounters = append(ruleCounters, c)
		}
	}
	slices.Sort(ruleCounters)
	got := slices.Sorted(slices.Values(rec.pre[0]))
	if len(got) != 2 || !slices.Equal(got, ruleCounters) {
		t.Fatalf("prestaged %v, the ruleset's rule counters are %v", got, ruleCounters)
	}
	// The same policy again: every rule keeps its generation, nothing new.
	if _, err := dp.Apply(p, m); err != nil {
		t.Fatal(err)
	}
	if len(rec.pre) != 1 {
		t.Fatalf("re-apply prestaged %v", rec.pre[1:])
	}
	// The table flushed under the daemon: every counter may be missing.
	rec.knows = false
	if _, err := dp.Apply(p, m); err != nil {
		t.Fatal(err)
	}
	if len(rec.pre) != 2 || !slices.Equal(slices.Sorted(slices.Values(rec.pre[1])), ruleCounters) {
		t.Fatalf("apply to an unknown table prestaged %v", rec.pre[1:])
	}
	// A compile that fails (the matcher compiled for another gateway)
	// removes what was prestaged.
	other, err := match.Compile(p, match.Options{Gateway: nft.Config{Inside: "in", Outside: "out", InsideTCPPorts: []uint16{9999}}.Gateway()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dp.Apply(p, other); err == nil {
		t.Fatal("compiled for another gateway")
	}
	if len(rec.pre) != 3 || rec.unpre != 1 {
		t.Fatalf("failed compile: prestages %d, unprestages %d", len(rec.pre), rec.unpre)
	}
}

package daemon

import (
	"slices"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// prestageRecorder is a Recorder that records the prestages
// (nft.NetlinkRunner.Prestage) asked of it.
type prestageRecorder struct {
	nft.Recorder
	pre    [][]string
	chains [][]*nft.Chain
	unpre  int
	knows  bool
}

func (p *prestageRecorder) Prestage(x nft.Prestaging) error {
	p.pre = append(p.pre, x.Counters)
	p.chains = append(p.chains, x.Chains)
	return nil
}
func (p *prestageRecorder) Unprestage()      { p.unpre++ }
func (p *prestageRecorder) KnowsTable() bool { return p.knows }

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

// TestPrestageChains: with decision chains prestaged (prestageChains),
// a first apply prestages every decision chain the compiled ruleset has,
// under its name with its rules; an apply that changes the matches of
// most rules (a replace) prestages theirs, one that changes one rule
// nothing; a compile that fails removes what it prestaged.
func TestPrestageChains(t *testing.T) {
	savedMin, savedCh, savedCMin, savedChg := prestageMin, prestageChains, prestageChainsMin, prestageChainsChanged
	prestageMin, prestageChains, prestageChainsMin, prestageChainsChanged = 1<<30, nft.AllDecisionChains, 2, true
	defer func() {
		prestageMin, prestageChains, prestageChainsMin, prestageChainsChanged = savedMin, savedCh, savedCMin, savedChg
	}()
	load := func(seed uint64, variant int) (*policy.Policy, *match.Matcher) {
		p, err := policy.Load("p.yaml", []byte(policyYAML(300, seed, false, variant)), policy.Options{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := match.Compile(p, match.Options{Gateway: nft.Config{Inside: "in", Outside: "out"}.Gateway()})
		if err != nil {
			t.Fatal(err)
		}
		return p, m
	}
	rec := &prestageRecorder{knows: true}
	dp := &NFTDataplane{Runner: rec, Config: nft.Config{Inside: "in", Outside: "out", LimitRuleLogs: true}}
	// Every decision chain of the ruleset was prestaged, with its rules.
	check := func(what string, want int) {
		t.Helper()
		if len(rec.chains) != want {
			t.Fatalf("%s: %d prestages, want %d", what, len(rec.chains), want)
		}
		planned := map[string]string{}
		for _, c := range rec.chains[len(rec.chains)-1] {
			planned[c.Name] = chainRules(c)
		}
		made := 0
		for _, c := range rec.Current.Chains {
			if strings.HasPrefix(c.Name, "rule_") {
				made++
				if planned[c.Name] != chainRules(c) {
					t.Errorf("%s: chain %s of the ruleset not prestaged:\n%s\nprestaged: %q", what, c.Name, chainRules(c), planned[c.Name])
				}
			}
		}
		t.Logf("%s: %d decision chains, %d prestaged", what, made, len(planned))
		if made == 0 {
			t.Fatalf("%s: no decision chain", what)
		}
	}
	p1, m1 := load(1, 0)
	rec.knows = false // a first apply: no table known
	if _, err := dp.Apply(p1, m1); err != nil {
		t.Fatal(err)
	}
	check("first apply", 1)
	rec.knows = true
	p2, m2 := load(2, 0)
	if _, err := dp.Apply(p2, m2); err != nil {
		t.Fatal(err)
	}
	check("replace", 2)
	// One rule changed: nothing prestaged.
	p3, m3 := load(2, 1)
	if _, err := dp.Apply(p3, m3); err != nil {
		t.Fatal(err)
	}
	if len(rec.chains) != 2 || rec.unpre != 0 {
		t.Fatalf("one-rule apply: %d prestages, %d unprestages", len(rec.chains), rec.unpre)
	}
	// A failed compile (another gateway) removes what it prestaged.
	rec.knows = false
	other, err := match.Compile(p1, match.Options{Gateway: nft.Config{Inside: "in", Outside: "out", InsideTCPPorts: []uint16{9999}}.Gateway()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dp.Apply(p1, other); err == nil {
		t.Fatal("compiled for another gateway")
	}
	if len(rec.chains) != 3 || len(rec.chains[2]) == 0 || rec.unpre != 1 {
		t.Fatalf("failed compile: prestages %d, unprestages %d", len(rec.chains), rec.unpre)
	}
	// As the daemon runs (prestageChainsChanged off): a replace of a known
	// table prestages no chain, a first apply does; and a policy of
	// prestageMin rules or more prestages its counters, not chains.
	prestageChainsChanged = false
	rec.knows = true
	if _, err := dp.Apply(p1, m1); err != nil {
		t.Fatal(err)
	}
	if len(rec.chains) != 3 {
		t.Fatalf("replace with prestageChainsChanged off: %d prestages, want 3", len(rec.chains))
	}
	rec.knows = false
	if _, err := dp.Apply(p2, m2); err != nil {
		t.Fatal(err)
	}
	check("first apply, defaults", 4)
	prestageMin = 200 // the policies have 300 rules
	if _, err := dp.Apply(p1, m1); err != nil {
		t.Fatal(err)
	}
	if len(rec.chains) != 5 || len(rec.chains[4]) != 0 || len(rec.pre[4]) == 0 {
		t.Fatalf("first apply of prestageMin rules: %d prestages, the last with %d chains", len(rec.chains), len(rec.chains[len(rec.chains)-1]))
	}
}

// chainRules is the text of c's rules with their comments.
func chainRules(c *nft.Chain) string {
	var b strings.Builder
	for _, r := range c.Rules {
		b.WriteString(r.String() + " # " + r.Comment + "\n")
	}
	return b.String()
}

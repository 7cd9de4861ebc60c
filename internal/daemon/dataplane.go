package daemon

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// NFTDataplane programs the kernel with internal/nft: compile the policy to
// a ruleset, then apply it to clusterwall's table (nft.NetlinkRunner sends
// only what changed, in one atomic switch).
type NFTDataplane struct {
	Runner nft.Runner
	Config nft.Config
	// ThreatIntel, when set, gives every apply the threat-intel part of
	// the ruleset (threatintel.go sets it).
	ThreatIntel func() *nft.ThreatIntel

	mu     sync.Mutex
	gen    uint32 // the last log generation applied
	recent *recentIndexes
	// The log generation of each rule of the running ruleset, with what the
	// rule's decision lines say (logIdentity): kept by the next apply for a
	// rule that still says the same.
	network, dnat []ruleGen
	policyGen     ruleGen // default deny, input drops, threat intel: the policy's name
	// Where the last apply's time went (Timings).
	compileTime, kernelTime time.Duration
	// Which of the last apply's rules kept their kernel counters (their
	// log generation, hence their counters' names, stayed): KeptCounter.
	keptNetwork, keptDNAT []bool
	keptPolicy            bool
	// The classifier trees of the last compile, reused by the next for
	// the families and protocols whose rules did not change.
	cache nft.Cache
	// The named counters of the last applied ruleset (nft.Ruleset.Counters),
	// nil before the first apply: what ApplyFolding compares the next
	// ruleset's with.
	counters []string
}

// GoneFold is what ApplyFolding tells the daemon about the counters of
// an apply. Gone is called once the ruleset is compiled and before the
// kernel is programmed, with the tags (with their generation: the
// counters' names) of the last applied ruleset's named counters that the
// new one does not have — the kernel transaction deletes them — and a
// function that reads counters by tag from the kernel. Fresh is called
// after a successful transaction with the tags of the counters it created
// (at zero). Every other counter of the new ruleset is one the table had,
// kept by the apply with its count.
type GoneFold interface {
	Gone(gone []nft.LogTag, read func([]nft.LogTag) ([]nft.RuleCounter, error))
	Fresh(fresh []nft.LogTag)
}

// ruleGen is a rule's log generation and the decision line it stands for.
type ruleGen struct {
	ident string
	gen   uint32
}

// Apply implements Dataplane. The kernel's log prefixes carry a
// generation (nft.LogTag), and the returned index maps a prefix to the
// rule of the generation that logged it, for this apply and the few
// before it. So a line logged just before a reload that reorders rules
// still names the rule that decided, never a rule of the new policy that
// happens to have the same index.
//
// A rule keeps its generation from one apply to the next for as long as
// its decision lines stay the same (same index, policy name, group,
// collection, rule name, action and, for DNAT, translation): then its
// prefix stays too, and so do its kernel chains, which is what makes an
// apply that changes one rule send the kernel only that rule's part.
// Rules that changed get the new apply's generation.
//
// The ruleset is compiled from m (nft.CompileCached), which must have been
// compiled for the data plane's gateway (Gateway).
func (d *NFTDataplane) Apply(p *policy.Policy, m *match.Matcher) (LogIndex, error) {
	return d.apply(p, m, nil)
}

// KnowsCounters reports whether the data plane knows the named counters
// of the running ruleset (it applied one) and its runner tells which
// counters an apply kept, so that ApplyFolding calls fold.
func (d *NFTDataplane) KnowsCounters() bool {
	if _, ok := d.Runner.(keptCountersRunner); !ok {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counters != nil
}

type keptCountersRunner interface {
	KeptCounters() []string
}

// freshCounters are the tags of the counters of next (the ruleset just
// applied) that the apply created: not among those the runner found in
// the table.
func (d *NFTDataplane) freshCounters(next []string) []nft.LogTag {
	kr, ok := d.Runner.(keptCountersRunner)
	var kept []string
	if ok {
		kept = kr.KeptCounters()
	}
	return freshOf(next, kept)
}

// freshOf are the tags of the counters of next that are not in kept.
func freshOf(next, kept []string) []nft.LogTag {
	if len(kept) == len(next) {
		return nil // the runner keeps only counters of next
	}
	return goneCounters(next, kept)
}

// ApplyFolding is Apply, calling fold (when KnowsCounters) between the
// compile and the kernel transaction with the counters the transaction
// deletes (GoneFold). The daemon so reads, before an apply, only the
// counters whose counts the apply would lose, not every counter of the
// table (at 10,000 rules a dump was about 16 ms of CPU per apply).
func (d *NFTDataplane) ApplyFolding(p *policy.Policy, m *match.Matcher, fold GoneFold) (LogIndex, error) {
	if !d.KnowsCounters() {
		fold = nil
	}
	return d.apply(p, m, fold)
}

// builtWaiter is a data plane that waits for the matcher's indexes
// (match.Matcher.Built) itself, before it programs anything, so that the
// daemon may hand it a matcher of match.CompileStaged.
type builtWaiter interface{ waitsForBuilt() }

func (d *NFTDataplane) waitsForBuilt() {}

func (d *NFTDataplane) apply(p *policy.Policy, m *match.Matcher, fold GoneFold) (LogIndex, error) {
	if m == nil || m.Policy() != p {
		return nil, errors.New("data plane: apply needs the policy's compiled matcher")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	if d.gen == 0 {
		// Start at a random generation so that a restarted daemon does not
		// take the previous process's prefixes for its own.
		d.gen = rand.Uint32N(1 << 30)
	}
	gen := d.gen + 1
	if gen == 0 {
		gen = 1
	}
	keep := func(old []ruleGen, rules []match.Rule) ([]ruleGen, []bool) {
		out := make([]ruleGen, len(rules))
		kept := make([]bool, len(rules))
		for i, r := range rules {
			if i < len(old) && sameLogIdentity(old[i].ident, p, r.Policy) {
				// The old identity's string is the new one's (no string
				// built per rule: a one-rule apply keeps nearly all).
				out[i] = old[i]
				kept[i] = true
				continue
			}
			out[i] = ruleGen{ident: logIdentity(p, r.Policy), gen: gen}
		}
		return out, kept
	}
	network, keptNetwork := keep(d.network, m.Rules(policy.KindNetwork))
	dnat, keptDNAT := keep(d.dnat, m.Rules(policy.KindDNAT))
	pgen := ruleGen{ident: p.Name, gen: gen}
	if d.policyGen.gen != 0 && d.policyGen.ident == p.Name {
		pgen.gen = d.policyGen.gen
	}
	keptPolicy := pgen.gen != gen
	cfg := d.Config
	cfg.LogGeneration = pgen.gen
	cfg.LogGenerations = func(t nft.LogTag) uint32 {
		switch t.Kind {
		case nft.LogAllow, nft.LogDeny:
			if t.Index < len(network) {
				return network[t.Index].gen
			}
		case nft.LogDNAT:
			if t.Index < len(dnat) {
				return dnat[t.Index].gen
			}
		}
		return pgen.gen
	}
	if d.ThreatIntel != nil {
		cfg.ThreatIntel = d.ThreatIntel()
	}
	rs, err := d.compilePrestaged(m, cfg, keptNetwork)
	if err != nil {
		return nil, err
	}
	// The matcher's indexes (match.CompileStaged) were built beside the
	// compile; a matcher that failed to build fails the apply before the
	// kernel is touched.
	if err := m.Built(); err != nil {
		return nil, err
	}
	compiled := time.Now()
	// Register the index before the kernel commits: the NFLOG reader may
	// see the new ruleset's first lines before Runner.Apply returns.
	if d.recent == nil {
		d.recent = &recentIndexes{}
	}
	x := newNFTIndex(m, pgen.gen, network, dnat)
	x.recent = d.recent
	d.recent.add(x)
	counters := rs.Counters()
	folded := fold != nil && d.counters != nil
	if err := d.runnerApply(rs, fold, folded, counters); err != nil {
		d.recent.remove(x)
		return nil, err
	}
	d.counters = counters
	d.gen, d.network, d.dnat, d.policyGen = gen, network, dnat, pgen
	d.keptNetwork, d.keptDNAT, d.keptPolicy = keptNetwork, keptDNAT, keptPolicy
	d.compileTime, d.kernelTime = compiled.Sub(start), time.Since(compiled)
	return x, nil
}

// prestager is a runner that creates an apply's named counters and
// decision chains ahead of it (nft.NetlinkRunner.Prestage).
type prestager interface {
	Prestage(nft.Prestaging) error
	Unprestage()
	KnowsTable() bool
}

// prestageMin is how many network rules must have a new log generation
// (hence new counters), or be in a policy applied to a table the runner
// does not know (KnowsTable), for their counters to be created while the
// ruleset compiles (nft/prestage.go): a first apply, or one that changes
// most rules. Below it (a change of a few rules) the apply is as before.
// The runner creates only the counters its table lacks.
//
// Measured (nft.BenchmarkPrestage, the sending thread's system CPU, on and
// off alternating): at 100,000 rules the prestage's transaction costs the
// kernel 267 ms and takes 390 ms off the apply's (the rules' lookups of
// counters committed before them are cheaper); at 10,000 it costs 22-27 ms
// and takes 0-3 ms off: no gain, so 10,000-rule applies do not prestage.
var prestageMin = 32768

// prestageChainsMin is how many network rules a policy applied to a
// table the runner does not know (a first apply: a daemon starting, or
// after a flush or a failed apply) must have, and fewer than prestageMin
// (there the counters' prestage pays more), for their decision chains
// (with Config.LimitRuleLogs) to be prestaged with their counters, as
// prestageChains says; prestageChains NoDecisionChains turns it off.
// With prestageChainsChanged, also when that many rules of a known table
// are new or changed (a new log generation, or matches the last compile
// did not build them from: nft.Cache.ChangedRules), i.e. a replace.
//
// Measured on a quiet machine (docs/benchmarks.md, "Issue 15 goal 2 after
// the seventh day's merges"): the likely chains took 24-51 ms off a 10k
// first apply's median against the same build without them in 5 of 7
// alternating rounds (9 ms in one, +74 ms in one); a 10k replace
// showed no gain (the prestage first waits for the replaced ruleset's
// deletion, which the apply would have found done), hence
// prestageChainsChanged is off.
var (
	prestageChainsMin     = 4096
	prestageChains        = nft.LikelyDecisionChains
	prestageChainsChanged = false
)

// compilePrestaged compiles the ruleset (nft.CompileCached) while the
// runner creates its new rules' counters and decision chains (prestage);
// a compile that fails or panics leaves nothing behind.
func (d *NFTDataplane) compilePrestaged(m *match.Matcher, cfg nft.Config, kept []bool) (rs *nft.Ruleset, err error) {
	wait := d.prestage(m, cfg, kept)
	ok := false
	defer func() { wait(!ok) }()
	rs, err = nft.CompileCached(m, cfg, &d.cache)
	ok = err == nil
	return rs, err
}

// prestage starts creating the counters of the network rules that did
// not keep their generation (kept), and the decision chains of those
// that changed, while the caller compiles, on the second processor; the
// function it returns waits for that and, when failed (the compile
// failed, or panicked), removes them again.
func (d *NFTDataplane) prestage(m *match.Matcher, cfg nft.Config, kept []bool) func(failed bool) {
	ps, ok := d.Runner.(prestager)
	if !ok {
		return func(bool) {}
	}
	n := 0
	for _, k := range kept {
		if !k {
			n++
		}
	}
	knows := ps.KnowsTable()
	want := func(i int) bool { return i < len(kept) && !kept[i] }
	chains := nft.NoDecisionChains
	if prestageChains != nft.NoDecisionChains && cfg.LimitRuleLogs && len(kept) >= prestageChainsMin && len(kept) < prestageMin {
		switch {
		case !knows:
			chains, want = prestageChains, nil
		case prestageChainsChanged:
			// The rules whose trees the compile builds again: new
			// generations and changed matches.
			changed := d.cache.ChangedRules(m)
			c := 0
			for i, ch := range changed {
				if ch || !kept[i] {
					changed[i] = true
					c++
				}
			}
			if c >= prestageChainsMin {
				chains, want = prestageChains, func(i int) bool { return i < len(changed) && changed[i] }
			}
		}
	}
	if chains == nft.NoDecisionChains && n < prestageMin {
		// A change of a few rules, unless the table is not what the last
		// apply left (flushed, or a failed apply): then every counter
		// may be missing.
		if len(kept) < prestageMin || knows {
			return func(bool) {}
		}
		want = nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// An error: stage 1 creates them as before.
		ps.Prestage(nft.PlanPrestage(m, cfg, want, chains))
	}()
	return func(failed bool) {
		<-done
		if failed {
			ps.Unprestage()
		}
	}
}

// overlappingRunner is a runner that runs work of the apply's while the
// kernel works on the apply's first transaction
// (nft.NetlinkRunner.ApplyOverlapping).
type overlappingRunner interface {
	ApplyOverlapping(rs *nft.Ruleset, during func(kept []string, read func([]nft.LogTag) ([]nft.RuleCounter, error))) error
}

// runnerApply programs rs and, when folded, tells fold which counters the
// apply deletes (before the switch deletes them) and creates. When the
// runner can, both happen while the kernel works on the apply's first
// transaction, which adds only what nothing refers to yet: the counters
// the switch deletes are read just before it, not before the whole
// apply, and the apply does not wait for the read (at 10,000 rules a
// replace reads some 2,000 counters by name: about 26 ms). Fresh may so
// be called for an apply that then fails; the daemon drops the fold of a
// failed apply.
//
// An apply that deletes fewer than overlapGoneMin counters (a change of a
// few rules) reads them first, as before: the goroutine and the read's
// netlink round trips beside the kernel's transaction cost a one-rule
// apply of the 10,000-rule policy 2-4 ms of its kernel stage (quiet A/B,
// 4 rounds of 30, docs/benchmarks.md) for a read of a few counters.
func (d *NFTDataplane) runnerApply(rs *nft.Ruleset, fold GoneFold, folded bool, counters []string) error {
	or, overlaps := d.Runner.(overlappingRunner)
	if overlaps && folded && len(counters) >= overlapCountersMin {
		// Which counters go is found beside the kernel too (100,000
		// counters: a map of as many names).
		old := d.counters // d.mu is held until the apply returns
		return or.ApplyOverlapping(rs, func(kept []string, read func([]nft.LogTag) ([]nft.RuleCounter, error)) {
			fold.Gone(goneCounters(old, counters), read)
			fold.Fresh(freshOf(counters, kept))
		})
	}
	var gone []nft.LogTag
	if folded {
		gone = goneCounters(d.counters, counters)
	}
	if overlaps && folded && len(gone) >= overlapGoneMin {
		return or.ApplyOverlapping(rs, func(kept []string, read func([]nft.LogTag) ([]nft.RuleCounter, error)) {
			fold.Gone(gone, read)
			fold.Fresh(freshOf(counters, kept))
		})
	}
	if folded {
		fold.Gone(gone, d.countersByTag)
	}
	if err := d.Runner.Apply(rs); err != nil {
		return err
	}
	if folded {
		fold.Fresh(d.freshCounters(counters))
	}
	return nil
}

// overlapGoneMin is how many counters an apply must delete for their
// read to run beside the kernel's first transaction (runnerApply).
const overlapGoneMin = 64

// overlapCountersMin is the size of ruleset (named counters) from which
// the fold's work always runs beside the kernel's first transaction, even
// when the apply deletes none: the apply may create them all (a table
// flushed under the daemon, or a policy whose rules all changed), and
// noting 100,000 fresh counters after the switch cost a 100,000-rule apply
// about 50 ms on its path (BenchmarkNoteKeys). Below it the one-rule
// apply of a 10,000-rule policy keeps the cheaper sequential path.
const overlapCountersMin = 32768

// goneCounters are the tags of the counters named in old that next does
// not name.
func goneCounters(old, next []string) []nft.LogTag {
	in := make(map[string]struct{}, len(next))
	for _, n := range next {
		in[n] = struct{}{}
	}
	var gone []nft.LogTag
	for _, n := range old {
		if _, ok := in[n]; ok {
			continue
		}
		if t, err := nft.ParseLogTag(n); err == nil {
			gone = append(gone, t)
		}
	}
	return gone
}

// countersByTag reads the counters of tags (with their generation) by
// name, without d.mu (GoneFold's read).
func (d *NFTDataplane) countersByTag(tags []nft.LogTag) ([]nft.RuleCounter, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	r, ok := d.Runner.(interface {
		CountersOf([]nft.LogTag) ([]nft.RuleCounter, error)
	})
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return r.CountersOf(tags)
}

// logIdentity is what a rule's kernel decision lines say about it
// (daemon.logPacket): two rules with the same identity log the same line.
func logIdentity(p *policy.Policy, r *policy.Rule) string {
	var b strings.Builder
	for _, s := range []string{p.Name, r.Collection.Group.Name, r.Collection.Name, r.Name, r.Action().String(), r.Kind().String()} {
		b.WriteString(s)
		b.WriteByte(0)
	}
	if r.Kind() == policy.KindDNAT {
		if r.TranslatedAddress.IsValid() {
			b.WriteString(r.TranslatedAddress.String())
		}
		b.WriteByte(0)
		b.WriteString(r.TranslatedFQDN)
		b.WriteByte(0)
		b.WriteString(strconv.Itoa(int(r.TranslatedPort)))
	}
	return b.String()
}

// sameLogIdentity reports whether ident is logIdentity(p, r), without
// building the latter (TestSameLogIdentity).
func sameLogIdentity(ident string, p *policy.Policy, r *policy.Rule) bool {
	if r.Kind() == policy.KindDNAT {
		return ident == logIdentity(p, r) // rare: built and compared
	}
	for _, s := range [...]string{p.Name, r.Collection.Group.Name, r.Collection.Name, r.Name, r.Action().String(), r.Kind().String()} {
		if len(ident) <= len(s) || ident[:len(s)] != s || ident[len(s)] != 0 {
			return false
		}
		ident = ident[len(s)+1:]
	}
	return ident == ""
}

// KeptCounter reports whether the kernel counters of tag (its generation
// ignored) before the last successful apply are still the kernel's after
// it: the tag's rule kept its log generation, so the apply kept its
// counters (they are named after the tag with its generation). The daemon
// then knows the counters' values just after an apply from its read just
// before it, without reading them again (rebaseRuleHits).
func (d *NFTDataplane) KeptCounter(t nft.LogTag) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch t.Kind {
	case nft.LogAllow, nft.LogDeny:
		return t.Index >= 0 && t.Index < len(d.keptNetwork) && d.keptNetwork[t.Index]
	case nft.LogDNAT:
		return t.Index >= 0 && t.Index < len(d.keptDNAT) && d.keptDNAT[t.Index]
	case nft.LogDefaultDeny, nft.LogInputDrop:
		return d.keptPolicy
	}
	return false
}

// CountersAfterApply reads the running ruleset's counters right after an
// apply, reading from the kernel only those the apply did not create
// (nft.NetlinkRunner.CountersAfterApply); Counters when the runner cannot.
func (d *NFTDataplane) CountersAfterApply() ([]nft.RuleCounter, error) {
	if r, ok := d.Runner.(interface {
		CountersAfterApply() ([]nft.RuleCounter, error)
	}); ok {
		return r.CountersAfterApply()
	}
	return d.Counters()
}

// CountersAfterApplyLater is CountersAfterApply with what it reads from
// the kernel read now and the rest left to finish
// (nft.NetlinkRunner.CountersAfterApplyLater); all read now when the
// runner cannot split it.
func (d *NFTDataplane) CountersAfterApplyLater() (finish func() ([]nft.RuleCounter, error)) {
	if r, ok := d.Runner.(interface {
		CountersAfterApplyLater() func() ([]nft.RuleCounter, error)
	}); ok {
		return r.CountersAfterApplyLater()
	}
	cs, err := d.CountersAfterApply()
	return func() ([]nft.RuleCounter, error) { return cs, err }
}

// CountersOf reads the running ruleset's counters of tags (without their
// generation) one by one (nft.NetlinkRunner.CountersOf), when the runner
// can; errors.ErrUnsupported when it cannot.
func (d *NFTDataplane) CountersOf(tags []nft.LogTag) ([]nft.RuleCounter, error) {
	r, ok := d.Runner.(interface {
		CountersOf([]nft.LogTag) ([]nft.RuleCounter, error)
	})
	if !ok {
		return nil, errors.ErrUnsupported
	}
	d.mu.Lock()
	named := make([]nft.LogTag, 0, len(tags))
	for _, t := range tags {
		switch t.Kind {
		case nft.LogAllow, nft.LogDeny:
			if t.Index < 0 || t.Index >= len(d.network) {
				continue
			}
			t.Gen = d.network[t.Index].gen
		case nft.LogDNAT:
			if t.Index < 0 || t.Index >= len(d.dnat) {
				continue
			}
			t.Gen = d.dnat[t.Index].gen
		default:
			t.Gen = d.policyGen.gen
		}
		named = append(named, t)
	}
	d.mu.Unlock()
	return r.CountersOf(named)
}

// Timings reports where the last successful apply's time went: compiling
// the ruleset, and programming the kernel.
func (d *NFTDataplane) Timings() (compile, kernel time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.compileTime, d.kernelTime
}

// Gateway is the firewall as the matcher must see it for this data plane
// (nft.Config.Gateway): the daemon compiles its matchers with it.
func (d *NFTDataplane) Gateway() *match.Gateway { return d.Config.Gateway() }

// AddFQDNAddrs implements Dataplane.
func (d *NFTDataplane) AddFQDNAddrs(name string, addrs []netip.Addr, ttl time.Duration) error {
	return d.Runner.AddFQDNAddrs(name, addrs, ttl)
}

// keepGenerations is how many applied generations an index still maps
// (packets logged by a ruleset arrive at most a few flush timeouts after it
// was replaced; reloads are rarer than that).
const keepGenerations = 8

// nftIndex maps the ruleset's NFLOG prefixes (nft.LogTag) to rules. The
// rule lists are computed once per apply, not per packet.
type nftIndex struct {
	p       *policy.Policy
	gen     uint32 // of the prefixes that name no rule (default deny, input)
	network []*policy.Rule
	dnat    []*policy.Rule
	// The generation of each rule's prefixes.
	networkGen, dnatGen []uint32
	// recent holds the indexes of the last generations the same dataplane
	// applied (nil: this index alone).
	recent *recentIndexes
}

// newNFTIndex maps the tags of m's ruleset: rule indexes are the
// matcher's (match.Rule.Index), which nft.Compile logs, with the
// generations of the apply.
func newNFTIndex(m *match.Matcher, gen uint32, network, dnat []ruleGen) *nftIndex {
	x := &nftIndex{p: m.Policy(), gen: gen}
	for i, r := range m.Rules(policy.KindNetwork) {
		x.network = append(x.network, r.Policy)
		g := gen
		if i < len(network) {
			g = network[i].gen
		}
		x.networkGen = append(x.networkGen, g)
	}
	for i, r := range m.Rules(policy.KindDNAT) {
		x.dnat = append(x.dnat, r.Policy)
		g := gen
		if i < len(dnat) {
			g = dnat[i].gen
		}
		x.dnatGen = append(x.dnatGen, g)
	}
	return x
}

// logs reports whether x's ruleset logs tag t (kind, index and generation).
func (x *nftIndex) logs(t nft.LogTag) bool {
	switch t.Kind {
	case nft.LogAllow, nft.LogDeny:
		return t.Index >= 0 && t.Index < len(x.networkGen) && x.networkGen[t.Index] == t.Gen
	case nft.LogDNAT:
		return t.Index >= 0 && t.Index < len(x.dnatGen) && x.dnatGen[t.Index] == t.Gen
	}
	return x.gen == t.Gen
}

// recentIndexes is a bounded list of applied generations, read without
// locks on the NFLOG path.
type recentIndexes struct {
	mu   sync.Mutex
	list atomic.Pointer[[]*nftIndex]
}

func (r *recentIndexes) add(x *nftIndex) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var next []*nftIndex
	if cur := r.list.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, x)
	if len(next) > keepGenerations {
		next = next[len(next)-keepGenerations:]
	}
	r.list.Store(&next)
}

func (r *recentIndexes) remove(x *nftIndex) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var next []*nftIndex
	if cur := r.list.Load(); cur != nil {
		for _, y := range *cur {
			if y != x {
				next = append(next, y)
			}
		}
	}
	r.list.Store(&next)
}

// ours reports whether gen is a generation of x or of an index applied
// with it.
func (x *nftIndex) ours(gen uint32) bool {
	if x.gen == gen {
		return true
	}
	if x.recent == nil {
		return false
	}
	if cur := x.recent.list.Load(); cur != nil {
		for _, y := range *cur {
			if y.gen == gen {
				return true
			}
		}
	}
	return false
}

// find returns the newest index whose ruleset logs t.
func (r *recentIndexes) find(t nft.LogTag) *nftIndex {
	if r == nil {
		return nil
	}
	cur := r.list.Load()
	if cur == nil {
		return nil
	}
	for i := len(*cur) - 1; i >= 0; i-- {
		if x := (*cur)[i]; x.logs(t) {
			return x
		}
	}
	return nil
}

// Lookup implements LogIndex.
func (x *nftIndex) Lookup(prefix string) (LoggedDecision, bool) {
	t, err := nft.ParseLogTag(prefix)
	if err != nil {
		return LoggedDecision{}, false
	}
	if !x.logs(t) {
		if y := x.recent.find(t); y != nil {
			x = y
		} else if !x.ours(t.Gen) {
			// A ruleset this daemon did not apply (a previous process's,
			// still in the kernel before the first apply): the verdict is
			// known, the rule is not.
			ld := LoggedDecision{Action: policy.ActionDeny, UnknownRuleset: true, Input: t.Kind == nft.LogInputDrop}
			switch t.Kind {
			case nft.LogAllow:
				ld.Action, ld.Kind = policy.ActionAllow, policy.KindNetwork
			case nft.LogDeny:
				ld.Kind = policy.KindNetwork
			case nft.LogDNAT:
				ld.Action, ld.Kind = policy.ActionDNAT, policy.KindDNAT
			}
			return ld, true
		} else {
			return LoggedDecision{}, false // a rule no ruleset of ours has
		}
	}
	var rules []*policy.Rule
	switch t.Kind {
	case nft.LogAllow, nft.LogDeny:
		rules = x.network
	case nft.LogDNAT:
		rules = x.dnat
	case nft.LogDefaultDeny:
		return LoggedDecision{Action: policy.ActionDeny, Policy: x.p}, true
	case nft.LogInputDrop:
		return LoggedDecision{Action: policy.ActionDeny, Policy: x.p, Input: true}, true
	default:
		return LoggedDecision{}, false
	}
	if t.Index < 0 || t.Index >= len(rules) {
		return LoggedDecision{}, false
	}
	r := rules[t.Index]
	return LoggedDecision{Action: r.Action(), Kind: r.Kind(), Rule: r, Policy: x.p}, true
}

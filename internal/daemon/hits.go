package daemon

import (
	"errors"
	"maps"
	"net"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/recovery"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// RuleHits is GET /v1/rules: every rule of the running policy with its
// hit count. The shape is a contract (the dashboard reads it); fields may
// be added, never renamed or removed.
type RuleHits struct {
	Generation uint64    `json:"generation"`
	Rules      []RuleHit `json:"rules"`
	// DefaultDenyHits counts the flows no rule allowed: new forwarded
	// flows the kernel's default deny dropped (its counter) and connections
	// the L7 proxy denied because no rule matched their name (its decision
	// lines), since the daemon started. InputDropHits counts packets to the
	// firewall itself its input chain dropped (the kernel's counter).
	DefaultDenyHits uint64 `json:"defaultDenyHits"`
	InputDropHits   uint64 `json:"inputDropHits"`
	// CountersError is set when the kernel's counters could not be read
	// (hits then count only what the proxies decided).
	CountersError string `json:"countersError,omitempty"`
}

// RuleHit is one rule's hits: new flows (network and DNAT rules: the
// kernel rule's counter) or decisions (application rules, and network
// rules decided by the L7 proxy) since the daemon started. A rule is
// identified by kind and group/collection/rule name, so its count survives
// applies that keep its name. LastHit is RFC 3339 or "" (never hit since
// the daemon started).
type RuleHit struct {
	RuleCollectionGroup string `json:"ruleCollectionGroup"`
	RuleCollection      string `json:"ruleCollection"`
	Rule                string `json:"rule"`
	Kind                string `json:"kind"`
	Action              string `json:"action"`
	Priority            int    `json:"priority"` // the rule collection's
	GroupPriority       int    `json:"groupPriority"`
	Hits                uint64 `json:"hits"`
	LastHit             string `json:"lastHit"`
	// What the rule matches, as text: sources and destinations (addresses
	// and prefixes as the policy resolved them — service tags and IP groups
	// expanded; destination FQDNs and target FQDNs as names), protocols
	// ("TCP", "Https:443"), destination ports (none for application rules:
	// their protocols carry the port) and, for DNAT, the translation
	// ("10.42.1.100:80").
	Sources      []string `json:"sources"`
	Destinations []string `json:"destinations"`
	Protocols    []string `json:"protocols"`
	Ports        []string `json:"ports"`
	Translated   string   `json:"translated,omitempty"`
}

// describeRule fills what r matches into h.
func describeRule(h *RuleHit, r *policy.Rule) {
	addrs := func(s *policy.AddrSet) []string {
		if str := s.String(); str != "" {
			return strings.Split(str, ",")
		}
		return nil
	}
	h.Sources = addrs(&r.Source)
	switch r.Kind() {
	case policy.KindApplication:
		for _, p := range r.TargetFQDNs {
			h.Destinations = append(h.Destinations, p.String())
		}
		for _, a := range r.AppProtocols {
			h.Protocols = append(h.Protocols, a.String())
		}
	default:
		h.Destinations = append(addrs(&r.Destination), r.DestinationFQDNs...)
		h.Protocols = strings.Split(r.Protocols.String(), ",")
		for _, p := range r.DestinationPorts {
			h.Ports = append(h.Ports, p.String())
		}
		if r.Kind() == policy.KindDNAT {
			to := r.TranslatedFQDN
			if r.TranslatedAddress.IsValid() {
				to = r.TranslatedAddress.String()
			}
			h.Translated = net.JoinHostPort(to, strconv.Itoa(int(r.TranslatedPort)))
		}
	}
	for _, s := range []*[]string{&h.Sources, &h.Destinations, &h.Protocols, &h.Ports} {
		if *s == nil {
			*s = []string{}
		}
	}
}

type hitKey struct {
	kind              policy.Kind
	group, coll, rule string
}

func keyOf(r *policy.Rule) hitKey {
	return hitKey{kind: r.Kind(), group: r.Collection.Group.Name, coll: r.Collection.Name, rule: r.Name}
}

// Special keys for the kernel's non-rule counters.
var (
	keyDefaultDeny = hitKey{rule: "\x00default"}
	keyInputDrop   = hitKey{rule: "\x00input"}
	// The threat-intel chain's (counted for clusterwall_decisions_total
	// only).
	keyThreatDeny  = hitKey{rule: "\x00threat-deny"}
	keyThreatAlert = hitKey{rule: "\x00threat-alert"}
)

// hitTracker sums the kernel's per-rule counters across policy
// generations (an apply starts fresh kernel counters: the previous
// generation's are folded into base just before) and counts the decisions
// the proxies log.
//
// An apply moves the totals to its generation after it returns
// (Daemon.settleRuleHits): from before the new generation is published
// until that is done, settling is open, and every reader of the totals
// (total, fold, basedOn: GET /v1/rules, /metrics, the next apply) waits
// for it, so that none sees the new generation's counters against the
// old generation's base. observe and note do not wait.
type hitTracker struct {
	mu       sync.Mutex
	settling chan struct{}     // closed (and nil) once the last apply's totals are settled
	base     map[hitKey]uint64 // folded kernel counts of earlier generations
	folded   map[hitKey]uint64 // the kernel counts of foldedGen already in base
	foldedAt uint64            // generation whose counters were last folded
	seen     map[hitKey]uint64 // last kernel read (of seenGen), for lastHit
	seenGen  uint64
	observed map[hitKey]uint64 // decisions logged by the proxies
	last     map[hitKey]time.Time
}

func newHitTracker() *hitTracker {
	return &hitTracker{base: map[hitKey]uint64{}, seen: map[hitKey]uint64{}, observed: map[hitKey]uint64{}, last: map[hitKey]time.Time{}}
}

// kindOfCategory maps a decision record's category to the rule kind.
func kindOfCategory(c string) policy.Kind {
	switch c {
	case telemetry.CategoryNetworkRule:
		return policy.KindNetwork
	case telemetry.CategoryApplicationRule:
		return policy.KindApplication
	case telemetry.CategoryNatRule:
		return policy.KindDNAT
	}
	return 0
}

// observe notes a decision record: its time as the rule's last hit, and,
// for decisions outside the kernel (the L7 proxy), one hit.
func (h *hitTracker) observe(r *telemetry.Record) {
	if r.Rule == "" {
		// The L7 proxy's default deny (the kernel's has its counter).
		if r.Source == "proxy" && r.Action == "Deny" && r.ActionReason == match.ReasonNoRuleMatched {
			h.mu.Lock()
			h.observed[keyDefaultDeny]++
			h.mu.Unlock()
		}
		return
	}
	if r.Source == "kernel" {
		// The kernel's flow log notes its rules' last hits itself, once a
		// second per rule (flowLogger.log: note), and its hits are the
		// kernel's counters.
		return
	}
	k := kindOfCategory(r.Category)
	if k == 0 {
		return
	}
	key := hitKey{kind: k, group: r.RuleCollectionGroup, coll: r.RuleCollection, rule: r.Rule}
	h.mu.Lock()
	h.observed[key]++
	if r.Time.After(h.last[key]) {
		h.last[key] = r.Time
	}
	h.mu.Unlock()
}

// note notes t as a last hit of key (a rule the kernel's flow log logged a
// flow of). LastHit is shown to the second, so the flow log notes the
// first flow of each second: the second of the latest one is kept.
func (h *hitTracker) note(key hitKey, t time.Time) {
	h.mu.Lock()
	if t.After(h.last[key]) {
		h.last[key] = t
	}
	h.mu.Unlock()
}

// kernelCounts maps the dataplane's counters to rule keys for policy p.
func kernelCounts(p *policy.Policy, cs []nft.RuleCounter) map[hitKey]uint64 {
	out := make(map[hitKey]uint64, len(cs))
	// The rules by index (nft.LogTag.Rule lists them on every call).
	network, dnat := p.RulesOf(policy.KindNetwork), p.RulesOf(policy.KindDNAT)
	for _, c := range cs {
		t, err := nft.ParseLogTag(c.Tag)
		if err != nil {
			continue
		}
		if k, ok := tagKey(network, dnat, t); ok {
			out[k] += c.Packets
		}
	}
	return out
}

// tagKey is the rule key of a counter's tag, given the policy's network
// and DNAT rules by index (policy.RulesOf); false for a tag of no rule.
func tagKey(network, dnat []*policy.Rule, t nft.LogTag) (hitKey, bool) {
	switch t.Kind {
	case nft.LogDefaultDeny:
		return keyDefaultDeny, true
	case nft.LogInputDrop:
		return keyInputDrop, true
	case nft.LogThreatDeny:
		return keyThreatDeny, true
	case nft.LogThreatAlert:
		return keyThreatAlert, true
	case nft.LogAllow, nft.LogDeny:
		if t.Index >= 0 && t.Index < len(network) {
			return keyOf(network[t.Index]), true
		}
	case nft.LogDNAT:
		if t.Index >= 0 && t.Index < len(dnat) {
			return keyOf(dnat[t.Index]), true
		}
	}
	return hitKey{}, false
}

// unsettle opens settling (see hitTracker): readers of the totals wait
// until done is called. ApplyBytes calls it (under reloadMu, the last
// apply's totals settled: await) before it publishes a new generation.
func (h *hitTracker) unsettle() (done func()) {
	c := make(chan struct{})
	h.mu.Lock()
	h.settling = c
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		if h.settling == c {
			h.settling = nil
		}
		h.mu.Unlock()
		close(c)
	}
}

// await waits until the last apply's totals are settled.
func (h *hitTracker) await() {
	h.lockSettled()
	h.mu.Unlock()
}

// lockSettled locks h once the last apply's totals are settled; the
// readers of the totals take h.mu so (Daemon.settleRuleHits's own steps,
// carry, rebase and prune, take it directly).
func (h *hitTracker) lockSettled() {
	h.mu.Lock()
	for h.settling != nil {
		c := h.settling
		h.mu.Unlock()
		<-c
		h.mu.Lock()
	}
}

// fold moves generation gen's kernel counts into base (called just before
// an apply replaces the kernel's rules). Folding gen again (an apply that
// failed, then another) adds only what it counted since. partial: counts
// holds only some of gen's counters (foldRuleHits read them one by one);
// what an earlier fold of gen noted for the others stays.
func (h *hitTracker) fold(gen uint64, counts map[hitKey]uint64, partial bool) {
	h.lockSettled()
	defer h.mu.Unlock()
	if h.foldedAt != gen {
		h.folded = nil
	}
	for k, n := range counts {
		if prev := h.folded[k]; n > prev {
			h.base[k] += n - prev
		}
	}
	if partial && h.folded != nil {
		merged := maps.Clone(h.folded)
		maps.Copy(merged, counts)
		counts = merged
	}
	h.folded, h.foldedAt = counts, gen
}

// prune forgets every count of a rule p does not have (called after p
// was applied), so that the maps hold the running policy's rules, not every
// rule that ever existed: a policy managed by a controller changes rule
// names all day. A rule removed and added back later counts from zero.
func (h *hitTracker) prune(p *policy.Policy) {
	keep := map[hitKey]bool{keyDefaultDeny: true, keyInputDrop: true, keyThreatDeny: true, keyThreatAlert: true}
	for _, g := range p.Groups {
		for _, c := range g.Collections {
			for _, r := range c.Rules {
				keep[keyOf(r)] = true
			}
		}
	}
	gone := func(k hitKey, _ uint64) bool { return !keep[k] }
	h.mu.Lock()
	defer h.mu.Unlock()
	maps.DeleteFunc(h.base, gone)
	maps.DeleteFunc(h.observed, gone)
	// folded and seen are the previous generation's kernel counts (the
	// next read of the new generation replaces them).
	maps.DeleteFunc(h.folded, gone)
	maps.DeleteFunc(h.seen, gone)
	maps.DeleteFunc(h.last, func(k hitKey, _ time.Time) bool { return !keep[k] })
}

// rulesGone reports whether cur has a rule next does not (same kind,
// group, collection and name), whose hits prune would forget. Groups next
// shares with cur (the incremental loader reuses the unchanged ones) have
// the same rules, so only the others are compared, by group name: an
// apply that changes one rule's ports compares one group, not every rule.
func rulesGone(cur, next *policy.Policy) bool {
	shared := make(map[*policy.Group]bool, len(next.Groups))
	byName := make(map[string]*policy.Group, len(next.Groups))
	for _, g := range next.Groups {
		shared[g] = true
		byName[g.Name] = g
	}
	for _, g := range cur.Groups {
		if shared[g] {
			continue
		}
		ng := byName[g.Name]
		if ng == nil {
			return true
		}
		keys := map[hitKey]bool{}
		for _, c := range ng.Collections {
			for _, r := range c.Rules {
				keys[keyOf(r)] = true
			}
		}
		for _, c := range g.Collections {
			for _, r := range c.Rules {
				if !keys[keyOf(r)] {
					return true
				}
			}
		}
	}
	return false
}

// total returns the hits of key given the kernel's current counts of gen,
// and notes now as the last hit when the kernel count grew since the last
// read. kernel is what the kernel's counters counted alone (without the
// proxies' decisions), by key.
func (h *hitTracker) total(gen uint64, counts map[hitKey]uint64, now time.Time) (get func(hitKey) (uint64, time.Time), kernel map[hitKey]uint64) {
	h.lockSettled()
	if h.seenGen != gen {
		h.seen, h.seenGen = map[hitKey]uint64{}, gen
	}
	for k, n := range counts {
		if n > h.seen[k] && now.After(h.last[k]) {
			h.last[k] = now
		}
		h.seen[k] = n
	}
	kernel = make(map[hitKey]uint64, len(h.base)+len(counts))
	lastSnap := map[hitKey]time.Time{}
	for k, n := range h.base {
		kernel[k] += n
	}
	for k, n := range counts {
		if gen == h.foldedAt {
			if prev := h.folded[k]; n > prev {
				kernel[k] += n - prev
			}
			continue
		}
		kernel[k] += n
	}
	snap := maps.Clone(kernel)
	for k, n := range h.observed {
		snap[k] += n
	}
	for k, t := range h.last {
		lastSnap[k] = t
	}
	h.mu.Unlock()
	return func(k hitKey) (uint64, time.Time) { return snap[k], lastSnap[k] }, kernel
}

// counterReader is a dataplane that can read the kernel's rule counters.
type counterReader interface {
	Counters() ([]nft.RuleCounter, error)
}

// Counters implements counterReader when the runner can read counters.
func (d *NFTDataplane) Counters() ([]nft.RuleCounter, error) {
	if r, ok := d.Runner.(counterReader); ok {
		return r.Counters()
	}
	return nil, nil
}

// foldRuleHits folds the running generation's kernel counters into the
// totals; ApplyBytes calls it (under reloadMu) before programming the
// kernel with next. It returns the counters it read (nil when it read
// none), which rebaseRuleHits may reuse.
//
// Only the counters of rules next has too matter (prune forgets the
// others' hits once next is applied). When they are few, or the running
// policy is very large, they are read by name (NFTDataplane.CountersOf:
// a hash lookup each in the kernel) instead of dumping every counter,
// which costs the kernel a walk of all the table's objects per 32 KiB
// round (about 1.5 s of CPU for 100,000 counters); see keptTags.
func (d *Daemon) foldRuleHits(next *policy.Policy) []nft.RuleCounter {
	st := d.cur.Load()
	cr, ok := d.dp.(counterReader)
	if st == nil || !ok {
		return nil
	}
	var (
		cs      []nft.RuleCounter
		err     error
		partial bool
	)
	if co, ok := d.dp.(countersOfReader); ok {
		if tags := keptTags(st.policy, next); tags != nil {
			cs, err = co.CountersOf(tags)
			partial = !errors.Is(err, errors.ErrUnsupported)
		}
	}
	if !partial {
		cs, err = cr.Counters()
	}
	if err != nil {
		d.log.Warn("reading the kernel's rule counters before the apply (their hits since the last read are lost)", "err", err)
		return nil
	}
	d.hits.fold(st.gen, kernelCounts(st.policy, cs), partial)
	if cs == nil {
		cs = []nft.RuleCounter{}
	}
	return cs
}

// goneFolder is a data plane that tells which counters an apply deletes
// and creates (NFTDataplane.ApplyFolding).
type goneFolder interface {
	KnowsCounters() bool
	ApplyFolding(p *policy.Policy, m *match.Matcher, fold GoneFold) (LogIndex, error)
}

// carryFold is foldRuleHits and rebaseRuleHits for a data plane that tells
// which counters an apply deletes and creates (goneFolder): before the
// kernel transaction it reads and folds only the counters the transaction
// deletes (their counts since the last read would be lost), not every
// counter of the table — an apply that changes one rule's ports deletes
// none —, and after it the running generation's base carries over to the
// new one for every counter the apply kept (the kernel goes on counting
// in it), without a read. It returns nil when the full read must be
// taken: no running policy, a data plane that cannot tell, or totals not
// based on the running generation's counters (a read after the last apply
// failed).
func (d *Daemon) carryFold(next *policy.Policy) *carryFold {
	st := d.cur.Load()
	gf, ok := d.dp.(goneFolder)
	if st == nil || !ok || !gf.KnowsCounters() || !d.hits.basedOn(st.gen) {
		return nil
	}
	return &carryFold{d: d, st: st, next: next, drop: map[hitKey]bool{}}
}

type carryFold struct {
	d           *Daemon
	st          *state
	next        *policy.Policy
	drop        map[hitKey]bool // keys whose counter the apply deletes or creates
	gone, fresh bool            // Gone and Fresh were called
}

// Gone implements GoneFold: the counters the apply deletes are folded.
func (f *carryFold) Gone(gone []nft.LogTag, read func([]nft.LogTag) ([]nft.RuleCounter, error)) {
	f.gone = true
	if len(gone) == 0 {
		return
	}
	f.noteKeys(f.st.policy, gone)
	gone = f.stillRuled(gone)
	if len(gone) == 0 {
		return
	}
	cs, err := read(gone)
	partial := true
	if errors.Is(err, errors.ErrUnsupported) {
		if cr, ok := f.d.dp.(counterReader); ok {
			cs, err = cr.Counters()
			partial = false
		}
	}
	if err != nil {
		f.d.log.Warn("reading the kernel's rule counters before the apply (their hits since the last read are lost)", "err", err)
		return
	}
	f.d.hits.fold(f.st.gen, kernelCounts(f.st.policy, cs), partial)
}

// stillRuledMin is the number of gone counters up to which stillRuled
// keeps them all (a variable for the tests).
var stillRuledMin = 64

// stillRuled leaves out of gone the counters of rules next does not have:
// their hits are pruned after the apply (rulesGone, prune), so reading them
// is wasted. When many counters go — a 100,000-rule policy replaced by an
// 8-rule one deletes every rule's — reading each by name cost more than
// the rest of the apply (BenchmarkDaemonApply/100k-to-8: 2.6 against 1.5 s
// of CPU). A few tags are read as they are: keying next's rules costs more
// than reading them (stillRuledMin).
func (f *carryFold) stillRuled(gone []nft.LogTag) []nft.LogTag {
	if len(gone) <= stillRuledMin {
		return gone
	}
	keys := map[hitKey]bool{}
	for _, g := range f.next.Groups {
		for _, c := range g.Collections {
			for _, r := range c.Rules {
				keys[keyOf(r)] = true
			}
		}
	}
	network, dnat := f.st.policy.RulesOf(policy.KindNetwork), f.st.policy.RulesOf(policy.KindDNAT)
	return slices.DeleteFunc(gone, func(t nft.LogTag) bool {
		switch t.Kind {
		case nft.LogAllow, nft.LogDeny:
			return t.Index >= 0 && t.Index < len(network) && !keys[keyOf(network[t.Index])]
		case nft.LogDNAT:
			return t.Index >= 0 && t.Index < len(dnat) && !keys[keyOf(dnat[t.Index])]
		}
		return false // the default deny's, the input drops', threat intel's
	})
}

// Fresh implements GoneFold: the counters the apply created count from 0.
func (f *carryFold) Fresh(fresh []nft.LogTag) {
	f.fresh = true
	f.noteKeys(f.next, fresh)
}

func (f *carryFold) noteKeys(p *policy.Policy, tags []nft.LogTag) {
	// The tags' keys as kernelCounts finds them, without a counter's
	// tag string made and parsed back per tag (a 100,000-rule apply
	// creates 100,000 counters).
	network, dnat := p.RulesOf(policy.KindNetwork), p.RulesOf(policy.KindDNAT)
	for _, t := range tags {
		if k, ok := tagKey(network, dnat, t); ok {
			f.drop[k] = true
		}
	}
}

// carries reports whether carried can move the hit totals to the apply's
// generation: the data plane called Gone and Fresh, and the totals are
// based on the running generation; false when they must be rebased on the
// counters read after the switch (rebaseLater).
func (f *carryFold) carries(h *hitTracker) bool {
	return f.gone && f.fresh && h.basedOn(f.st.gen)
}

// carried moves the hit totals to generation gen (the apply succeeded).
func (f *carryFold) carried(h *hitTracker, gen uint64) bool {
	return h.carry(f.st.gen, gen, f.drop)
}

// countersOfReader is a dataplane that can read some counters by tag
// (NFTDataplane.CountersOf).
type countersOfReader interface {
	CountersOf(tags []nft.LogTag) ([]nft.RuleCounter, error)
}

// keptTags are the counter tags of cur's rules that next has too (same
// kind, group, collection and name), with the default deny's and the
// input drops', when reading them by name is cheaper than one dump of
// every counter: nil when cur has under 1,024 rules (a dump of a few
// rounds), or under 32,768 and next keeps more than one in 16 of them
// (measured with BenchmarkDaemonApply: at 10,000 rules the dump is the
// cheaper by about 30 ms of CPU; at 100,000 reading by name saves 0.7 s).
func keptTags(cur, next *policy.Policy) []nft.LogTag {
	network, dnat := cur.RulesOf(policy.KindNetwork), cur.RulesOf(policy.KindDNAT)
	n := len(network) + len(dnat)
	if n < 1024 {
		return nil
	}
	keys := map[hitKey]bool{}
	for _, g := range next.Groups {
		for _, c := range g.Collections {
			for _, r := range c.Rules {
				keys[keyOf(r)] = true
			}
		}
	}
	tags := []nft.LogTag{{Kind: nft.LogDefaultDeny}, {Kind: nft.LogInputDrop}}
	for i, r := range network {
		if keys[keyOf(r)] {
			t := nft.LogTag{Kind: nft.LogAllow, Index: i}
			if r.Action() == policy.ActionDeny {
				t.Kind = nft.LogDeny
			}
			tags = append(tags, t)
		}
	}
	for i, r := range dnat {
		if keys[keyOf(r)] {
			tags = append(tags, nft.LogTag{Kind: nft.LogDNAT, Index: i})
		}
	}
	if n < 32768 && len(tags) > n/16 {
		return nil
	}
	return tags
}

// RuleHits reads the kernel's counters and reports every rule's hits.
func (d *Daemon) RuleHits() RuleHits {
	h, _ := d.ruleHits()
	return h
}

// ruleHits is RuleHits, and the decisions the kernel's counters counted
// (every flow a kernel rule decided, since the daemon started) by the
// labels of clusterwall_decisions_total.
func (d *Daemon) ruleHits() (RuleHits, map[decisionLabels]uint64) {
	d.reloadMu.Lock() // no apply (and fold) in between the read and the sums
	defer d.reloadMu.Unlock()
	st := d.cur.Load()
	if st == nil {
		return RuleHits{Rules: []RuleHit{}}, nil
	}
	out := RuleHits{Generation: st.gen, Rules: []RuleHit{}}
	var counts map[hitKey]uint64
	if cr, ok := d.dp.(counterReader); ok {
		cs, err := cr.Counters()
		if err != nil {
			out.CountersError = err.Error()
		}
		counts = kernelCounts(st.policy, cs)
	}
	get, kernel := d.hits.total(st.gen, counts, time.Now().UTC())
	decisions := make(map[decisionLabels]uint64, len(kernel))
	add := func(k decisionLabels, n uint64) {
		if n > 0 {
			decisions[k] += n
		}
	}
	noRule := decisionLabels{category: telemetry.CategoryNetworkRule, action: policy.ActionDeny.String()}
	add(noRule, kernel[keyDefaultDeny])
	add(noRule, kernel[keyInputDrop])
	add(decisionLabels{category: telemetry.CategoryThreatIntel, action: policy.ActionDeny.String()}, kernel[keyThreatDeny])
	add(decisionLabels{category: telemetry.CategoryThreatIntel, action: policy.ActionAlert.String()}, kernel[keyThreatAlert])
	for _, g := range st.policy.Groups {
		for _, c := range g.Collections {
			for _, r := range c.Rules {
				switch c.Kind {
				case policy.KindNetwork:
					add(decisionLabels{telemetry.CategoryNetworkRule, c.Action.String(), g.Name, c.Name, r.Name}, kernel[keyOf(r)])
				case policy.KindDNAT:
					add(decisionLabels{telemetry.CategoryNatRule, "DNAT", g.Name, c.Name, r.Name}, kernel[keyOf(r)])
				}
				n, last := get(keyOf(r))
				rh := RuleHit{RuleCollectionGroup: g.Name, RuleCollection: c.Name, Rule: r.Name,
					Kind: c.Kind.String(), Action: c.Action.String(), Priority: c.Priority, GroupPriority: g.Priority, Hits: n}
				describeRule(&rh, r)
				if !last.IsZero() {
					rh.LastHit = last.UTC().Format(time.RFC3339)
				}
				out.Rules = append(out.Rules, rh)
			}
		}
	}
	out.DefaultDenyHits, _ = get(keyDefaultDeny)
	out.InputDropHits, _ = get(keyInputDrop)
	return out, decisions
}

// settleHook, when set (tests), runs first in settleRuleHits.
var settleHook func()

// settleRuleHits moves the hit totals to generation gen, just applied
// (policy p, replacing old's; nil: none ran): the running generation's
// base carried over (carry: the apply told which counters it kept) or
// rebased on the counters as they were just after the switch (rebase,
// from rebaseLater), and the hits of the rules p does not have forgotten
// (prune). ApplyBytes starts it after the switch and returns without
// waiting: at 100,000 rules the carry and the comparison of the two
// policies' rules were about 80 ms on the apply's path, a starting
// daemon's counters and prune more. The readers of the totals wait for
// done, which hitTracker.unsettle armed before gen was published: none
// sees gen's counters against the old base.
func (d *Daemon) settleRuleHits(done func(), carry *carryFold, rebase func(), gen uint64, old *state, p *policy.Policy) {
	defer done()
	defer func() {
		// As a panic after the switch in ApplyBytes (recoverApply): the
		// totals may be half moved; the process stops.
		if v := recover(); v != nil {
			recovery.Report(d.log, recovery.Reload, recovery.Corrupt{What: "the rule hit totals after an apply", Value: v, Stack: debug.Stack()})
		}
	}()
	if settleHook != nil {
		settleHook()
	}
	if rebase != nil {
		rebase()
	} else if !carry.carried(d.hits, gen) {
		// Not reached: carries said the totals are based on the running
		// generation, and nothing folds in between.
		d.log.Warn("rule hits: the running generation's base could not be carried over; kept counters' hits may count twice")
	}
	if old == nil || rulesGone(old.policy, p) {
		d.hits.prune(p) // only the running policy's rules
	}
}

// rebaseLater is rebaseRuleHits in two parts: what it must read from the
// kernel is read now (right after the switch: a count the kernel takes
// after the read adds to the totals, one before it is the base), the rest
// (the counters' keys, the totals) is returned to run later.
func (d *Daemon) rebaseLater(dp Dataplane, gen uint64, p *policy.Policy, before []nft.RuleCounter) func() {
	if k, ok := dp.(interface{ KeptCounter(nft.LogTag) bool }); ok && before != nil {
		// No read: the data plane's kept counters stay what they are
		// until the next apply, which waits for the totals to settle.
		return func() { d.rebaseRuleHits(k, gen, p, before) }
	}
	cr, ok := dp.(counterReader)
	if !ok {
		return func() {}
	}
	var finish func() ([]nft.RuleCounter, error)
	if l, ok := dp.(interface {
		CountersAfterApplyLater() func() ([]nft.RuleCounter, error)
	}); ok {
		finish = l.CountersAfterApplyLater()
	} else {
		read := cr.Counters
		if ar, ok := dp.(interface {
			CountersAfterApply() ([]nft.RuleCounter, error)
		}); ok {
			read = ar.CountersAfterApply // the counters the apply created are zero, not read
		}
		cs, err := read()
		finish = func() ([]nft.RuleCounter, error) { return cs, err }
	}
	return func() {
		cs, err := finish()
		if err != nil {
			d.log.Warn("reading the kernel's rule counters after the apply (hits of kept rules may count twice)", "err", err)
			return
		}
		d.hits.rebase(gen, kernelCounts(p, cs))
	}
}

// rebaseRuleHits notes the kernel's counters of generation gen (policy p)
// just after it was applied as already counted: an apply keeps the chains
// (and named counters) of the rules it does not change, whose counts
// foldRuleHits has just folded into the totals. Here the data plane tells
// which counters the apply kept (NFTDataplane.KeptCounter: a rule whose
// log generation stayed keeps its counters, the others are new and start
// at 0), so the counters' values just after the apply are the kept ones
// of before, what foldRuleHits read just before the apply, and the kernel
// is not read again: a second dump of every counter per apply (10,000
// rules: about 10,000 objects) was a tenth of the apply's CPU. Hits the
// kept counters took between the read and the switch then count too (a
// read after the switch took them for the base). Without KeptCounter the
// counters are read after the switch (rebaseLater).
func (d *Daemon) rebaseRuleHits(k interface{ KeptCounter(nft.LogTag) bool }, gen uint64, p *policy.Policy, before []nft.RuleCounter) {
	kept := make([]nft.RuleCounter, 0, len(before))
	for _, c := range before {
		if t, err := nft.ParseLogTag(c.Tag); err == nil && k.KeptCounter(t) {
			kept = append(kept, c)
		}
	}
	d.hits.rebase(gen, kernelCounts(p, kept))
}

// basedOn reports whether the totals hold generation gen's counts as
// read at its last fold or apply (folded), which carry needs.
func (h *hitTracker) basedOn(gen uint64) bool {
	h.lockSettled()
	defer h.mu.Unlock()
	return h.foldedAt == gen
}

// carry makes generation next, whose counters are gen's but those of the
// keys in drop (deleted or created by the apply), the base: a kept counter
// goes on counting in the kernel, so what of it base holds is what it held
// for gen (its count is folded into base only when its counter goes). False
// when gen is not what the totals are based on.
func (h *hitTracker) carry(gen, next uint64, drop map[hitKey]bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.foldedAt != gen {
		return false
	}
	if h.folded == nil {
		h.folded = map[hitKey]uint64{}
	}
	// A dropped key's counter was read before the apply when the apply
	// deleted it (folded holds the read); one the apply created though the
	// last ruleset had it (the table was flushed under the daemon) keeps
	// what the last read of it saw (seen), as a fold would have.
	for k := range drop {
		if h.seenGen == gen {
			if n, prev := h.seen[k], h.folded[k]; n > prev {
				h.base[k] += n - prev
			}
			delete(h.seen, k)
		}
		delete(h.folded, k)
	}
	if h.seenGen != gen || h.seen == nil {
		h.seen = maps.Clone(h.folded)
	}
	h.foldedAt, h.seenGen = next, next
	return true
}

// rebase makes counts the base of generation gen: later reads of gen add
// what they count beyond it (see fold and total).
func (h *hitTracker) rebase(gen uint64, counts map[hitKey]uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.folded, h.foldedAt = counts, gen
	h.seen, h.seenGen = maps.Clone(counts), gen
}

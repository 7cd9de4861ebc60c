package nft

import (
	"fmt"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/google/nftables"
)

// Stage 1's named counters sent while the ruleset is compiled.
//
// A first apply of a large policy (or one whose rules all changed) adds a
// named counter per rule, about 3 µs of the kernel's work each inside our
// sendmsg (30 ms at 10,000 rules, 0.3 s at 100,000), on one processor,
// while the other waits. Their names do not depend on the compile — a
// rule's log tag with its generation — so the daemon sends them
// (Prestage) in a transaction of its own on the second processor while it
// compiles the ruleset on the first. Like the rest of stage 1 they are
// unreferenced until the switch, so committing them changes nothing for
// packets.
//
// The names are a prediction (PlannedRuleCounters): the apply that
// follows diffs the ruleset against a table that holds them, so a counter
// the ruleset has and the prestage did not send is created by stage 1 as
// before, and one it sent that the ruleset does not have is deleted with
// the old ruleset after the switch (retire.go). The counters the
// prestage created are fresh for the apply (not among KeptCounters). If
// the apply fails, or does not come (the compile failed: Unprestage),
// they are deleted again — and the table itself when the prestage created
// it — so a failed apply leaves the kernel as it was.
//
// With Config.LimitRuleLogs (the daemon's) a network rule's leaves go to
// its decision chain (compiler.decisionChainOf: `rule_<i>[_tcp]_<hash>`,
// the counter and the limited log, then the verdict), about 14 µs of the
// kernel's work each. Its content, hence its name (names.go), depends
// only on the rule (index, action, log tag with generation, comment) and
// the config, so a prestage can send it too (PlanPrestage, with the
// limit object its log refers to). Whether the compile makes a rule's
// decision chain at all depends on the classifier's tree (a leaf of that
// rule alone whose matches fuse into one comparison goes without:
// compiler.fusedLeaf), so it is a prediction like the counters: a chain
// the ruleset does not have is deleted with the old ruleset after the
// switch (diff's oldChains, retire.go), before the objects it refers to.

// prestaged is what Prestage added to the table, until the next apply
// (or Unprestage) consumes it.
type prestaged struct {
	table   string
	objs    []string // counters created
	limit   string   // the limit object created, if any
	chains  []string // decision chains created
	created bool     // the table too
	took    time.Duration
}

// Prestaging is what Prestage is to create: named counters, and decision
// chains (with their rules, under their final names) with the log limit
// their logs refer to.
type Prestaging struct {
	Counters []string
	Chains   []*Chain
	Limit    LimitSpec // when Chains
}

// DecisionChains says which decision chains PlanPrestage plans.
type DecisionChains int

const (
	// NoDecisionChains: only the counters.
	NoDecisionChains DecisionChains = iota
	// LikelyDecisionChains: the chains a compile most likely makes: a
	// rule's with destinationFqdns (their leaves never fuse), and the
	// non-TCP chain of a rule with UDP or ICMP (the trees of those
	// protocols are smaller, and their leaves more often hold several
	// entries; in the daemon's 10,000-rule benchmark policy about 70 %
	// of these chains are made, and a third of the TCP ones).
	LikelyDecisionChains
	// AllDecisionChains: every chain a rule's decisions may use.
	AllDecisionChains
)

// PlanPrestage is what a prestage of a compile of m with cfg creates for
// the network rules for which want (nil: every rule) returns true: their
// counters (PlannedRuleCounters) or, with Config.LimitRuleLogs and
// chains, the decision chains chains says (PlannedDecisionChains) and
// their counters.
func PlanPrestage(m *match.Matcher, cfg Config, want func(i int) bool, chains DecisionChains) Prestaging {
	if chains == NoDecisionChains || !cfg.LimitRuleLogs {
		return Prestaging{Counters: PlannedRuleCounters(m, cfg, want)}
	}
	cfg = cfg.withDefaults()
	p := Prestaging{Limit: LimitSpec{Rate: cfg.LogRate, Burst: cfg.LogBurst}}
	p.Chains = PlannedDecisionChains(m, cfg, want, chains == LikelyDecisionChains)
	// Only the counters of the planned chains: the others are cheaper
	// in the apply's stage 1 (at 10,000 rules a prestage of every
	// counter costs the kernel 22-27 ms and takes 0-3 ms off the apply:
	// docs/benchmarks.md, branch stream).
	seen := make(map[string]bool, len(p.Chains))
	for _, c := range p.Chains {
		name := c.Rules[0].Stmts[0].(Counter).Name // limitedDecision's
		if !seen[name] {
			seen[name] = true
			p.Counters = append(p.Counters, name)
		}
	}
	return p
}

// PlannedDecisionChains are the decision chains, under their final names
// and with their rules, that a compile of m with cfg (with
// Config.LimitRuleLogs) may give the network rules for which want (nil:
// every rule) returns true: a rule's chain, and a Deny rule's for TCP
// (its verdict a reset) when it has TCP and the other for its other
// protocols; with likely only those LikelyDecisionChains says. They are
// made as the compiler makes them (limitedDecision, ruleComment,
// decisionPrefix) and named as the namer names them (chainNameOf).
func PlannedDecisionChains(m *match.Matcher, cfg Config, want func(i int) bool, likely bool) []*Chain {
	if !cfg.LimitRuleLogs {
		return nil
	}
	cfg = cfg.withDefaults()
	limit := LimitSpec{Rate: cfg.LogRate, Burst: cfg.LogBurst}.Name()
	rules := m.Rules(policy.KindNetwork)
	out := make([]*Chain, 0, len(rules))
	for i := range rules {
		r := &rules[i]
		if want != nil && !want(r.Index) {
			continue
		}
		deny := r.Action == policy.ActionDeny
		fqdn := len(r.FQDNs) > 0
		other := r.Protocols&^policy.ProtoTCP != 0
		var resets []bool
		switch {
		case !deny:
			if !likely || other || fqdn {
				resets = []bool{false}
			}
		default:
			if r.Protocols&policy.ProtoTCP != 0 && (!likely || fqdn) {
				resets = append(resets, true)
			}
			if other {
				resets = append(resets, false)
			}
		}
		if len(resets) == 0 {
			continue
		}
		tag, comment := cfg.cfgTag(ruleTag(r)), ruleComment(r)
		for _, reset := range resets {
			ch := &Chain{}
			limitedDecision(ch, comment, tag, cfg.LogGroup, limit, ruleVerdict(deny, reset))
			ch.Name = chainNameOf(decisionPrefix(r.Index, reset), ch.Rules)
			out = append(out, ch)
		}
	}
	return out
}

// cfgTag is t with the generation of its log prefix under cfg
// (Config.LogGenerations, else Config.LogGeneration): compiler.tag.
func (cfg Config) cfgTag(t LogTag) LogTag {
	t.Gen = cfg.LogGeneration
	if cfg.LogGenerations != nil {
		t.Gen = cfg.LogGenerations(t)
	}
	return t
}

// PlannedRuleCounters are the names of the named counters a compile of m
// with cfg gives the network rules for which want (nil: every rule)
// returns true: their decisions' log tags with generation. A rule that
// compiles to no classifier entry has none, so the list may hold a name
// the ruleset does not; Prestage's apply deletes it (see above).
func PlannedRuleCounters(m *match.Matcher, cfg Config, want func(i int) bool) []string {
	rules := m.Rules(policy.KindNetwork)
	out := make([]string, 0, len(rules))
	for _, r := range rules {
		if want != nil && !want(r.Index) {
			continue
		}
		t := LogTag{Kind: LogAllow, Index: r.Index}
		if r.Action == policy.ActionDeny {
			t.Kind = LogDeny
		}
		out = append(out, cfg.cfgTag(t).String())
	}
	return out
}

// Prestage creates, in one transaction, what of p the runner's table
// does not have (and the table, if it has none), ahead of the Apply that
// is to use it: the named counters, the limit object the decision
// chains' logs refer to, then the chains with their rules; see above.
// The next Apply consumes them, or Unprestage deletes them. An error
// leaves the table as it was (the transaction commits nothing) and the
// apply creates them in its stage 1 as usual.
func (r *NetlinkRunner) Prestage(p Prestaging) error {
	t0 := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unprestage() // an earlier one no apply consumed
	r.settle()
	name := r.table()
	old, err := r.kernelState(name)
	if err != nil {
		return err
	}
	var add []string
	seen := make(map[string]bool, len(p.Counters))
	for _, c := range p.Counters {
		if _, ok := old.objs[c]; !ok && !seen[c] {
			seen[c] = true
			add = append(add, c)
		}
	}
	var chains []*Chain
	rules := 0
	seenCh := make(map[string]bool, len(p.Chains))
	for _, c := range p.Chains {
		if old.chains[c.Name] == nil && !seenCh[c.Name] {
			seenCh[c.Name] = true
			chains = append(chains, c)
			rules += len(c.Rules)
		}
	}
	limit := ""
	if len(chains) > 0 {
		if _, ok := old.objs[p.Limit.Name()]; !ok {
			limit = p.Limit.Name()
		}
	}
	if len(add) == 0 && len(chains) == 0 {
		return nil
	}
	table := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	pl := &plan{table: table} // the chains' rules refer to no set or chain
	err = r.transact(4096+64*len(add)+64*len(chains)+256*rules,
		nftPart(func(conn *nftables.Conn) error {
			if !old.exists {
				conn.AddTable(table)
			}
			if limit != "" {
				conn.AddObj(limitObj(table, p.Limit))
			}
			return nil
		}),
		wirePart(func(w *wire) error {
			for _, c := range add {
				if err := w.newCounter(name, c); err != nil {
					return err
				}
			}
			for _, c := range chains {
				w.newChain(name, c.Name)
			}
			return appendRules(w, pl, chains)
		}))
	if err != nil {
		r.known = nil
		return kernelErr("prestage", err)
	}
	pre := &prestaged{table: name, objs: add, limit: limit, created: !old.exists, took: time.Since(t0)}
	pre.chains = make([]string, len(chains))
	for i, c := range chains {
		pre.chains[i] = c.Name
	}
	r.pre = pre
	// What the table holds now: the apply diffs against it.
	kt := &kernelTable{name: name, exists: true,
		chains: make(map[string]*nftables.Chain, len(old.chains)+len(chains)), sets: old.sets,
		objs: make(map[string]nftables.ObjType, len(old.objs)+len(add)+1), base: old.base}
	for n, c := range old.chains {
		kt.chains[n] = c
	}
	for _, c := range chains {
		kt.chains[c.Name] = &nftables.Chain{Name: c.Name, Table: table}
	}
	for n, t := range old.objs {
		kt.objs[n] = t
	}
	for _, c := range add {
		kt.objs[c] = nftables.ObjTypeCounter
	}
	if limit != "" {
		kt.objs[limit] = nftables.ObjTypeLimit
	}
	if exists, handle, use, err := r.tableInfo(name); err == nil && exists {
		kt.handle, kt.use = handle, use
		r.known = kt
	} else {
		r.known = nil
	}
	return nil
}

// KnowsTable reports whether the runner knows what its table holds
// without listing it (the last apply's state; not after Flush or a failed
// apply). A daemon prestages when it does not, whatever changed: the
// table may be empty.
func (r *NetlinkRunner) KnowsTable() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.known != nil || r.retiring != nil
}

// Unprestage deletes what the last Prestage created, when no apply
// consumed it (the compile failed).
func (r *NetlinkRunner) Unprestage() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unprestage()
}

// unprestage is Unprestage; r.mu is held. Nothing refers to the
// prestaged chains and counters (the chains of a failed apply are
// unstaged first); the chains go before the objects they refer to.
func (r *NetlinkRunner) unprestage() {
	p := r.pre
	if p == nil {
		return
	}
	r.pre = nil
	r.known = nil
	table := &nftables.Table{Name: p.table, Family: nftables.TableFamilyINet}
	err := r.transact(4096+64*len(p.objs)+128*len(p.chains),
		nftPart(func(conn *nftables.Conn) error {
			if p.created {
				conn.DelTable(table)
			}
			return nil
		}),
		wirePart(func(w *wire) error {
			if p.created {
				return nil
			}
			for _, c := range p.chains {
				w.flushChain(p.table, c)
			}
			for _, c := range p.chains {
				w.delChain(p.table, c)
			}
			for _, c := range p.objs {
				w.delObj(p.table, c, nftables.ObjTypeCounter)
			}
			if p.limit != "" {
				w.delObj(p.table, p.limit, nftables.ObjTypeLimit)
			}
			return nil
		}))
	if err != nil {
		r.log.Warn("data plane: removing the prestaged chains and counters of a failed apply", "err", fmt.Sprint(err))
	}
}

// prestagedNames is the set of counters the pending prestage created.
func (p *prestaged) names() map[string]bool {
	if p == nil {
		return nil
	}
	m := make(map[string]bool, len(p.objs))
	for _, c := range p.objs {
		m[c] = true
	}
	return m
}

// count is how many objects and chains p created.
func (p *prestaged) count() int {
	n := len(p.objs) + len(p.chains)
	if p.limit != "" {
		n++
	}
	return n
}

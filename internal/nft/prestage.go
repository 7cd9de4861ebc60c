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

// prestaged is what Prestage added to the table, until the next apply
// (or Unprestage) consumes it.
type prestaged struct {
	table   string
	objs    []string // counters created
	created bool     // the table too
	took    time.Duration
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

// Prestage creates, in one transaction, the named counters of counters
// the runner's table does not have (and the table, if it has none), ahead
// of the Apply that is to use them; see above. The next Apply consumes
// them, or Unprestage deletes them. An error leaves the table as it was
// (the transaction commits nothing) and the apply creates the counters in
// its stage 1 as usual.
func (r *NetlinkRunner) Prestage(counters []string) error {
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
	seen := make(map[string]bool, len(counters))
	for _, c := range counters {
		if _, ok := old.objs[c]; !ok && !seen[c] {
			seen[c] = true
			add = append(add, c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	table := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	err = r.transact(4096+64*len(add),
		nftPart(func(conn *nftables.Conn) error {
			if !old.exists {
				conn.AddTable(table)
			}
			return nil
		}),
		wirePart(func(w *wire) error {
			for _, c := range add {
				if err := w.newCounter(name, c); err != nil {
					return err
				}
			}
			return nil
		}))
	if err != nil {
		r.known = nil
		return kernelErr("prestage counters", err)
	}
	r.pre = &prestaged{table: name, objs: add, created: !old.exists, took: time.Since(t0)}
	// What the table holds now: the apply diffs against it.
	kt := &kernelTable{name: name, exists: true, chains: old.chains, sets: old.sets,
		objs: make(map[string]nftables.ObjType, len(old.objs)+len(add)), base: old.base}
	for n, t := range old.objs {
		kt.objs[n] = t
	}
	for _, c := range add {
		kt.objs[c] = nftables.ObjTypeCounter
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
// prestaged counters (the chains of a failed apply are unstaged first).
func (r *NetlinkRunner) unprestage() {
	p := r.pre
	if p == nil {
		return
	}
	r.pre = nil
	r.known = nil
	table := &nftables.Table{Name: p.table, Family: nftables.TableFamilyINet}
	err := r.transact(4096+64*len(p.objs),
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
			for _, c := range p.objs {
				w.delObj(p.table, c, nftables.ObjTypeCounter)
			}
			return nil
		}))
	if err != nil {
		r.log.Warn("data plane: removing the counters of a failed apply", "err", fmt.Sprint(err))
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

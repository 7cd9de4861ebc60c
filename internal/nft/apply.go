package nft

import (
	"fmt"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Applying a ruleset: only the difference, in two transactions.
//
// The ruleset's chains and sets are named after their content
// (nameByContent), so a kernel object that has a name the new ruleset uses
// already holds what the new ruleset wants there; the runner keeps it.
// Apply therefore sends the kernel
//
//   - stage 1: every named object (limit, counters), regular chain (with
//     all its rules) and set (with its elements) of the new ruleset that
//     the table does not have yet. Nothing refers to them yet, so
//     committing them changes nothing for packets; they are complete
//     before anything can reach them (interval set elements become visible
//     to lookups only at the end of the transaction that adds them, after
//     the rules of that transaction are; see the package documentation).
//   - stage 2, the switch: the base chains whose rules change are flushed
//     and given their new rules (a base chain the new ruleset does not
//     have, or whose hook changes, is deleted). Every other chain, set and
//     object the new ruleset does not have is then unreachable from the
//     base chains: it decides nothing.
//   - stage 3, after the apply has returned: those are deleted (chains
//     flushed first, then sets, chains and objects deleted, so that no
//     reference is left when they go), in a transaction of their own that
//     the apply does not wait for; the runner's next call waits for it
//     (retire.go).
//
// Each stage is one netlink transaction, which the kernel commits all or
// nothing: packets see the old ruleset or the new one. Re-applying the
// running ruleset sends nothing; a policy that changes one rule sends the
// chains and maps from the classifier's root to that rule's leaves.
//
// What the table holds is remembered from the last apply and checked
// against the kernel's table (its handle and its count of chains, sets and
// objects) before each apply: when anything else changed the table, or
// after a failed apply, the runner lists the table again.

// kernelTable is what the runner knows clusterwall's table holds.
type kernelTable struct {
	name   string
	exists bool
	handle uint64
	use    uint32
	chains map[string]*nftables.Chain // base chains with their hooks
	sets   map[string]bool
	objs   map[string]nftables.ObjType
	// base holds the rules of each base chain as last applied (text);
	// nil when not known (listed, not applied): base chains are then
	// written again.
	base map[string]string
}

// tableInfo is the kernel's table of that name, if any: its handle and
// use count (chains, sets and objects), by one NFT_MSG_GETTABLE.
func (r *NetlinkRunner) tableInfo(name string) (exists bool, handle uint64, use uint32, err error) {
	c, err := r.getRaw()
	if err != nil {
		return false, 0, 0, err
	}
	var w wire
	off := w.msg(unix.NFT_MSG_GETTABLE, 0)
	w.strAttr(unix.NFTA_TABLE_NAME, name)
	w.end(off)
	if err := c.send(w.b); err != nil {
		r.putRaw(c, false)
		return false, 0, 0, kernelErr("get table", err)
	}
	// One answer: the table, or an error.
	var answered bool
	buf := make([]byte, 4096)
	for !answered && err == nil {
		var b []byte
		if b, err = c.recv(buf); err != nil {
			err = kernelErr("get table", err)
			break
		}
		_, err = eachMsg(b, func(m nlMsg) (bool, error) {
			answered = true
			if m.typ == unix.NLMSG_ERROR {
				if errno := m.errno(); errno != 0 && errno != syscall.ENOENT {
					return true, kernelErr("get table", errno)
				}
				return true, nil
			}
			ad, err := m.attributes()
			if ad == nil || err != nil {
				return true, err
			}
			exists = true
			for ad.Next() {
				switch ad.Type() {
				case unix.NFTA_TABLE_USE:
					use = ad.Uint32()
				case nftaTableHandle:
					handle = ad.Uint64()
				}
			}
			return true, ad.Err()
		})
	}
	r.putRaw(c, err == nil)
	if err != nil {
		return false, 0, 0, err
	}
	return exists, handle, use, nil
}

// kernelState returns what the table holds: the remembered state when
// the kernel's table is still the one the last apply left, else a fresh
// listing.
func (r *NetlinkRunner) kernelState(name string) (*kernelTable, error) {
	exists, handle, use, err := r.tableInfo(name)
	if err != nil {
		return nil, err
	}
	if k := r.known; k != nil && k.name == name && k.exists == exists && (!exists || k.handle == handle && k.use == use) {
		return k, nil
	}
	r.known = nil
	kt := &kernelTable{name: name, exists: exists, handle: handle, use: use,
		chains: map[string]*nftables.Chain{}, sets: map[string]bool{}, objs: map[string]nftables.ObjType{}}
	if !exists {
		kt.base = map[string]string{}
		return kt, nil
	}
	chains, err := r.listChains(name)
	if err != nil {
		return nil, err
	}
	for _, ch := range chains {
		kt.chains[ch.Name] = ch
	}
	sets, err := r.listSets(name)
	if err != nil {
		return nil, err
	}
	for _, s := range sets {
		kt.sets[s] = true
	}
	objs, err := r.listObjects(name, 0)
	if err != nil {
		return nil, err
	}
	for n, o := range objs {
		kt.objs[n] = o.typ
	}
	return kt, nil
}

// change is what one apply sends the kernel.
type change struct {
	pl  *plan
	old *kernelTable
	// stage 1
	newObjs   []*nftables.NamedObj
	newChains []*Chain // regular chains to create, with their rules
	newSets   []setPlan
	// stage 2
	delBase     []string // base chains to delete (their hook changes)
	writeBase   []*Chain // base chains to (re)write
	oldChains   []string
	oldSets     []string
	oldObjs     []*nftables.NamedObj
	baseText    map[string]string
	createTable bool
}

// diff computes what applying pl to a table holding old takes.
func diff(pl *plan, old *kernelTable) *change {
	d := &change{pl: pl, old: old, createTable: !old.exists, baseText: map[string]string{}}
	for _, o := range pl.objs {
		if t, ok := old.objs[o.Name]; !ok || t != o.Type {
			d.newObjs = append(d.newObjs, o)
		}
	}
	for _, c := range pl.rs.Chains {
		if c.Hook != HookNone {
			text := chainText(c)
			d.baseText[c.Name] = text
			oc := old.chains[c.Name]
			switch {
			case oc != nil && !sameHook(oc, pl.chMap[c.Name]):
				d.delBase = append(d.delBase, c.Name)
				d.writeBase = append(d.writeBase, c)
			case oc == nil || old.base == nil || old.base[c.Name] != text:
				d.writeBase = append(d.writeBase, c)
			}
			continue
		}
		if old.chains[c.Name] == nil {
			d.newChains = append(d.newChains, c)
		}
	}
	for _, sp := range pl.sets {
		if !old.sets[sp.set.Name] {
			d.newSets = append(d.newSets, sp)
		}
	}
	for name, oc := range old.chains {
		if pl.chMap[name] != nil {
			continue
		}
		if oc.Hooknum != nil {
			d.delBase = append(d.delBase, name)
			continue
		}
		d.oldChains = append(d.oldChains, name)
	}
	for name := range old.sets {
		if pl.setMap[name] == nil {
			d.oldSets = append(d.oldSets, name)
		}
	}
	if len(old.objs) > 0 {
		want := make(map[string]bool, len(pl.objs))
		for _, o := range pl.objs {
			want[o.Name] = true
		}
		for name, t := range old.objs {
			if !want[name] {
				d.oldObjs = append(d.oldObjs, &nftables.NamedObj{Table: pl.table, Name: name, Type: t})
			}
		}
	}
	return d
}

// orderNewSets (called after diff) puts the new sets that the new chains' rules look up most
// first (stable: ties and unreferenced sets keep the ruleset's order). The
// kernel finds a rule's set by name in a walk of the table's list of sets,
// to which new sets are appended in the order they are created: the sets
// most looked up found soonest (the 10,000-rule policy's 4,044 lookups
// into its 707 sets walk 517,180 sets in the ruleset's order, 208,061 in
// this one). The order changes nothing else: a lookup holds its set, not a
// position, and `show` lists sets in the kernel's order, which kept sets
// already make differ from the ruleset's.
func (d *change) orderNewSets() {
	if len(d.newSets) < 2 {
		return
	}
	// A dispatch map is looked up by its dispatch's one rule (a chain
	// named by its content: equal dispatches are one chain); only plain,
	// FQDN and DNAT sets can be looked up by many rules.
	shared := false
	for _, sp := range d.newSets {
		shared = shared || !sp.src.vmap()
	}
	if !shared {
		return
	}
	refs := make(map[string]int, len(d.newSets))
	for _, sp := range d.newSets {
		refs[sp.set.Name] = 0
	}
	for _, c := range d.newChains {
		for _, r := range c.Rules {
			for _, st := range r.Stmts {
				var name string
				switch s := st.(type) {
				case MatchSet:
					name = s.Set
				case VMap:
					name = s.Map
				case DNATMap:
					name = s.Map
				default:
					continue
				}
				if n, ok := refs[name]; ok {
					refs[name] = n + 1
				}
			}
		}
	}
	sort.SliceStable(d.newSets, func(i, j int) bool { return refs[d.newSets[i].set.Name] > refs[d.newSets[j].set.Name] })
}

func chainText(c *Chain) string {
	var b []byte
	b = fmt.Appendf(b, "%s %s %d %s\n", c.Hook, c.Type, c.Priority, c.Policy)
	for _, r := range c.Rules {
		b = append(b, r.String()...)
		b = append(b, '\n')
	}
	return string(b)
}

func (d *change) stage1Empty() bool {
	return !d.createTable && len(d.newObjs) == 0 && len(d.newChains) == 0 && len(d.newSets) == 0
}

// stage1 creates what is new: the table, objects, chains, sets and their
// elements, then the new chains' rules.
func (d *change) stage1() []part {
	return append(d.stage1Objects(), d.stage1Rules())
}

// stage1Rules is the part of stage 1 that writes the new chains' rules;
// stage1Objects the rest (the table, objects, chains, sets and elements),
// which a split stage 1 (splitStage1) sends first.
func (d *change) stage1Rules() part {
	return wirePart(func(w *wire) error { return appendRules(w, d.pl, d.newChains) })
}

func (d *change) stage1Objects() []part {
	t := d.pl.table.Name
	return []part{
		nftPart(func(conn *nftables.Conn) error {
			if d.createTable {
				conn.AddTable(d.pl.table)
			}
			for _, o := range d.newObjs {
				if o.Type != nftables.ObjTypeCounter {
					conn.AddObj(o)
				}
			}
			return nil
		}),
		wirePart(func(w *wire) error {
			for _, o := range d.newObjs {
				if o.Type == nftables.ObjTypeCounter {
					if err := w.newCounter(t, o.Name); err != nil {
						return err
					}
				}
			}
			for _, c := range d.newChains {
				w.newChain(t, c.Name)
			}
			return nil
		}),
		nftPart(func(conn *nftables.Conn) error {
			for _, sp := range d.newSets {
				if err := conn.AddSet(sp.set, nil); err != nil {
					return fmt.Errorf("set %s: %v", sp.set.Name, err)
				}
			}
			return nil
		}),
		wirePart(func(w *wire) error {
			for _, sp := range d.newSets {
				elems, err := d.pl.elems(sp)
				if err != nil {
					return err
				}
				if err := w.setElems(sp.set, elems); err != nil {
					return fmt.Errorf("set %s: %v", sp.set.Name, err)
				}
			}
			return nil
		}),
	}
}

// size1 and size2 estimate the stages' batches (bytes), so that the
// buffer is allocated once.
func (d *change) size1() int {
	n := 4096 + 64*len(d.newObjs) + 64*len(d.newChains)
	for _, c := range d.newChains {
		n += 256 * len(c.Rules)
	}
	for _, sp := range d.newSets {
		n += 128 + 2*80*len(sp.src.Elems)
	}
	return n
}

func (d *change) size2() int {
	n := 4096 + 64*len(d.delBase)
	for _, c := range d.writeBase {
		n += 256 * len(c.Rules)
	}
	return n
}

// stage2 switches: base chains rewritten (or deleted, when the new
// ruleset does not have them or their hook changes). What else the new
// ruleset does not have is then unreachable from the base chains, and
// decides nothing; stage3 (retire.go) deletes it.
func (d *change) stage2() []part {
	t := d.pl.table.Name
	return []part{
		wirePart(func(w *wire) error {
			deleted := map[string]bool{}
			for _, name := range d.delBase {
				w.delChain(t, name)
				deleted[name] = true
			}
			for _, c := range d.writeBase {
				if d.old.chains[c.Name] != nil && !deleted[c.Name] {
					w.flushChain(t, c.Name)
				}
			}
			return nil
		}),
		nftPart(func(conn *nftables.Conn) error {
			for _, c := range d.writeBase {
				conn.AddChain(d.pl.chMap[c.Name]) // creates it, or updates its policy
			}
			return nil
		}),
		wirePart(func(w *wire) error { return appendRules(w, d.pl, d.writeBase) }),
	}
}

// unstage removes what stage 1 made (after a failed stage 2).
func (d *change) unstage() []part {
	t := d.pl.table.Name
	return []part{wirePart(func(w *wire) error {
		for _, c := range d.newChains {
			w.flushChain(t, c.Name)
		}
		for _, sp := range d.newSets {
			w.delSet(t, sp.set.Name)
		}
		for _, c := range d.newChains {
			w.delChain(t, c.Name)
		}
		for _, o := range d.newObjs {
			w.delObj(t, o.Name, o.Type)
		}
		return nil
	})}
}

// after is the table once d is applied.
func (d *change) after() *kernelTable {
	kt := &kernelTable{name: d.pl.table.Name, exists: true,
		chains: make(map[string]*nftables.Chain, len(d.pl.chains)), sets: make(map[string]bool, len(d.pl.sets)),
		objs: make(map[string]nftables.ObjType, len(d.pl.objs)), base: d.baseText}
	for _, c := range d.pl.chains {
		kt.chains[c.Name] = c
	}
	for _, sp := range d.pl.sets {
		kt.sets[sp.set.Name] = true
	}
	for _, o := range d.pl.objs {
		kt.objs[o.Name] = o.Type
	}
	return kt
}

// ApplyStats describe the last apply (NetlinkRunner.LastApply).
type ApplyStats struct {
	// List is the time spent finding out what the table holds (a fresh
	// listing when the runner's memory of it was not current).
	List   time.Duration
	Listed bool
	// Lower is lowering the ruleset and comparing it with the table.
	Lower time.Duration
	// Stage1 and Stage2 are the two transactions (encoding and kernel);
	// Encode1 is the part of Stage1 spent encoding its batch, Wait2 the
	// part of Stage2 spent waiting for its batch's encoding (which runs
	// while the kernel works on stage 1's) and for ApplyOverlapping's
	// during.
	Stage1, Stage2 time.Duration
	Encode1, Wait2 time.Duration
	// Split1 is set when stage 1 was two transactions (applysplit.go);
	// Wait1 is then the time between them spent waiting for the second's
	// encoding.
	Split1 bool
	Wait1  time.Duration
	// After is reading the table's handle and use count after the switch
	// (or starting the deletion of the old ruleset, which reads them).
	After time.Duration
	// Settle is the time the apply waited, before anything else, for the
	// deletion of the previous apply's old ruleset (stage 3, which that
	// apply did not wait for: retire.go); Retire is how long that
	// deletion took (0 when none was left to wait for or account).
	Settle, Retire time.Duration
	// What the apply added and removed.
	NewChains, NewSets, NewObjects, NewRules int
	OldChains, OldSets, OldObjects           int
	BaseChains                               int // base chains written
	// Prestaged is how many of the new objects (counters, the limit,
	// decision chains) a prestage created while the ruleset compiled, in
	// Prestage's wall time (prestage.go).
	Prestaged int
	Prestage  time.Duration
}

// ApplyOverlapping is Apply, calling during, in a goroutine of its own,
// while the apply's first transaction is encoded and the kernel works on
// it (which changes nothing packets see), and waiting for it to return
// before the second transaction, the switch, deletes anything. during is
// given the named counters of rs the table has already (kept by the
// apply: the others it creates, at zero) and a function that reads the
// running ruleset's counters by tag with their generation, as CountersOf
// does (Apply holds the runner's lock: during must read through it). The
// daemon so reads the counters the switch deletes while the kernel is
// busy with the new chains, not before it starts (NFTDataplane). during
// is called only when the apply gets as far as the transactions, and may
// run even when the apply then fails.
func (r *NetlinkRunner) ApplyOverlapping(rs *Ruleset, during func(kept []string, read func([]LogTag) ([]RuleCounter, error))) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applyWith(rs, during)
}

// apply programs rs; r.mu is held.
func (r *NetlinkRunner) apply(rs *Ruleset) error { return r.applyWith(rs, nil) }

// keptOf are the named counters of pl the change d does not create and
// no prestage created (pre, prestage.go).
func keptOf(pl *plan, d *change, pre *prestaged) []string {
	fresh := pre.names()
	if fresh == nil {
		fresh = make(map[string]bool, len(d.newObjs))
	}
	for _, o := range d.newObjs {
		fresh[o.Name] = true
	}
	var kept []string
	for _, o := range pl.objs {
		if o.Type == nftables.ObjTypeCounter && !fresh[o.Name] {
			kept = append(kept, o.Name)
		}
	}
	return kept
}

// applyWith is apply, running during as ApplyOverlapping does; r.mu is
// held. It consumes a pending prestage (prestage.go): its counters stay
// with the applied ruleset (those the ruleset does not have are deleted
// with the old ruleset), or go when the apply fails.
func (r *NetlinkRunner) applyWith(rs *Ruleset, during func(kept []string, read func([]LogTag) ([]RuleCounter, error))) error {
	if r.pre != nil && r.pre.table != rs.Table {
		r.unprestage()
	}
	err := r.applyDiff(rs, during)
	if r.pre != nil {
		if err != nil {
			r.unprestage() // after stage 1's chains, which refer to them, are unstaged
		}
		r.pre = nil
	}
	return err
}

// applyDiff is applyWith but for the prestage.
func (r *NetlinkRunner) applyDiff(rs *Ruleset, during func(kept []string, read func([]LogTag) ([]RuleCounter, error))) error {
	t0 := time.Now()
	// The last apply's old ruleset deleted first (retire.go).
	settled, retired := r.settle()
	t0 = time.Now()
	old, err := r.kernelState(rs.Table)
	if err != nil {
		return err
	}
	st := ApplyStats{List: time.Since(t0), Listed: old != r.known, Settle: t0.Sub(settled), Retire: retired}
	now := r.now()
	pl, err := lower(rs, r.learnedFor(rs, now), now)
	if err != nil {
		return err
	}
	d := diff(pl, old)
	if !r.setOrderOff {
		d.orderNewSets()
	}
	st.Lower = time.Since(t0) - st.List
	st.NewChains, st.NewSets, st.NewObjects = len(d.newChains), len(d.newSets), len(d.newObjs)
	st.OldChains, st.OldSets, st.OldObjects, st.BaseChains = len(d.oldChains), len(d.oldSets), len(d.oldObjs), len(d.writeBase)
	for _, c := range d.newChains {
		st.NewRules += len(c.Rules)
	}
	pre := r.pre      // read by keptOf, also beside the kernel
	var kept []string // keptOf(pl, d, pre): beside the kernel when during runs
	if during == nil {
		kept = keptOf(pl, d, pre)
	}
	if pre != nil {
		st.Prestaged, st.Prestage = pre.count(), pre.took
	}
	t1 := time.Now()
	// during runs while the kernel works on stage 1 (started once stage
	// 1's batch is encoded, so as not to take a processor from the
	// encoding); stage 2 waits for it.
	overlapped, startDuring := func() {}, func() {}
	if during != nil {
		table, paths := r.table(), r.paths() // the running ruleset's
		read := func(tags []LogTag) ([]RuleCounter, error) {
			names := make([]string, len(tags))
			for i, t := range tags {
				names[i] = t.String()
			}
			out, err := r.countersNamedIn(table, paths, names)
			if err != nil {
				return nil, err
			}
			sortCounters(out)
			return out, nil
		}
		done := make(chan struct{})
		startDuring = sync.OnceFunc(func() {
			go func() {
				defer close(done)
				kept = keptOf(pl, d, pre) // read after done
				during(kept, read)
			}()
		})
		overlapped = func() { startDuring(); <-done }
	}
	defer overlapped() // never left running after the apply returns
	// Stage 2's batch is encoded while the kernel works on stage 1's (in
	// our sendmsg, on one processor).
	var (
		w2    *wire
		seq2  uint32
		err2  error
		enc2  = make(chan struct{})
		start = sync.OnceFunc(func() {
			go func() {
				defer close(enc2)
				w2, seq2, err2 = batch(d.size2(), d.stage2()...)
			}()
		})
	)
	if !d.stage1Empty() && r.splitStage1(st.NewRules) {
		st.Split1 = true
		committed, err := r.sendStage1Split(d, &st, t1, func() { start(); startDuring() })
		if err != nil {
			<-enc2
			if committed {
				r.unstageFailed(d)
			}
			return kernelErr("apply ruleset (stage 1: new chains, sets and objects)", err)
		}
	} else if !d.stage1Empty() {
		w1, seq1, err := batch(d.size1(), d.stage1()...)
		st.Encode1 = time.Since(t1)
		if err == nil && w1 != nil {
			start()
			startDuring()
			if err = r.send(w1, seq1); err != nil {
				<-enc2
			}
		}
		if err != nil {
			return kernelErr("apply ruleset (stage 1: new chains, sets and objects)", err)
		}
	}
	t2 := time.Now()
	st.Stage1 = t2.Sub(t1)
	start()
	startDuring()
	<-enc2
	overlapped()
	st.Wait2 = time.Since(t2)
	if err2 == nil && w2 != nil {
		err2 = r.send(w2, seq2)
	}
	if err := err2; err != nil {
		// The running ruleset is untouched; remove what stage 1 made, and
		// list the table at the next apply.
		r.known = nil
		if !d.stage1Empty() {
			if cerr := r.transact(0, d.unstage()...); cerr != nil {
				r.log.Warn("data plane: removing the chains and sets of a failed apply", "err", cerr)
			}
		}
		return kernelErr("apply ruleset", err)
	}
	st.Stage2 = time.Since(t2)
	t3 := time.Now()
	kt := d.after()
	switch {
	case d.retires():
		// The old ruleset deleted after the apply returns; the table's
		// handle and use count read then.
		r.retire(d, kt)
	default:
		// The table's handle and use count, to recognise it next time.
		if exists, handle, use, err := r.tableInfo(rs.Table); err == nil && exists {
			kt.handle, kt.use = handle, use
			r.known = kt
		} else {
			r.known = nil
		}
	}
	st.After = time.Since(t3)
	r.current = rs
	r.last = st
	r.keptCounters = kept
	r.log.Debug("data plane applied", "table", rs.Table, "list", st.List, "listed", st.Listed,
		"stage1", st.Stage1, "stage2", st.Stage2, "new_chains", st.NewChains, "new_sets", st.NewSets,
		"new_objects", st.NewObjects, "new_rules", st.NewRules, "old_chains", st.OldChains, "old_sets", st.OldSets,
		"old_objects", st.OldObjects, "base_chains", st.BaseChains)
	return nil
}

// LastApply describes the last successful apply.
func (r *NetlinkRunner) LastApply() ApplyStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// nftaTableHandle is NFTA_TABLE_HANDLE (not in x/sys/unix).
const nftaTableHandle = 4

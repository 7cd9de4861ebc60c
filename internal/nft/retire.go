package nft

import (
	"time"
)

// Deleting the old ruleset after the switch (stage 3).
//
// At 10,000 rules deleting a replaced ruleset's chains, rules, sets and
// counters is most of the switch's transaction (about 55 of 65 ms; at
// 100,000 rules over a second), though after the switch nothing reaches
// them: the base chains are the new ruleset's. So the switch only
// switches, and the apply returns; a transaction of its own deletes the
// old objects in a goroutine (retire). The runner's next call that
// depends on what the table holds — Apply, Flush, Show, the counter reads
// — first waits for it (settle): an apply so never lists, diffs or adds
// beside a deletion, and no counter read sees a deleted counter (the
// daemon reads those before the switch: ApplyOverlapping) beside the new
// ruleset's of the same rule. AddFQDNAddrs does not wait: it changes only
// the running ruleset's sets, which the deletion does not touch.
//
// A deletion that fails is logged and leaves the runner without memory
// of the table (known nil): the next apply lists it and deletes what the
// failed transaction left, as it does after a restart (a process that
// dies before its deletion leaves the old objects to the next start's
// apply, which finds them unreachable and deletes them the same way).

// retirement is a deletion of an old ruleset under way.
type retirement struct {
	done chan struct{}
	// Set by the goroutine before done is closed.
	kt   *kernelTable // the table after the deletion; nil when unknown
	err  error
	took time.Duration
}

// retires reports whether the change leaves old objects for stage 3.
func (d *change) retires() bool {
	return len(d.oldChains) > 0 || len(d.oldSets) > 0 || len(d.oldObjs) > 0
}

func (d *change) size3() int {
	return 4096 + 2*64*len(d.oldChains) + 64*(len(d.oldSets)+len(d.oldObjs))
}

// stage3 deletes what the switch left unreachable: chains flushed first,
// so that no rule refers to a set, chain or object being deleted.
func (d *change) stage3() []part {
	t := d.pl.table.Name
	return []part{wirePart(func(w *wire) error {
		for _, name := range d.oldChains {
			w.flushChain(t, name)
		}
		for _, name := range d.oldSets {
			w.delSet(t, name)
		}
		for _, name := range d.oldChains {
			w.delChain(t, name)
		}
		for _, o := range d.oldObjs {
			w.delObj(t, o.Name, o.Type)
		}
		return nil
	})}
}

// retire starts stage 3 of d, whose switch is done; kt is the table once
// it is. r.mu is held; the goroutine does not take it (settle collects
// its result).
func (r *NetlinkRunner) retire(d *change, kt *kernelTable) {
	p := &retirement{done: make(chan struct{})}
	r.retiring = p
	r.known = nil // until settled
	before := r.beforeRetire
	go func() {
		defer close(p.done)
		t0 := time.Now()
		if before != nil {
			p.err = before()
		}
		if p.err == nil {
			p.err = r.transact(d.size3(), d.stage3()...)
		}
		if p.err != nil {
			r.log.Warn("data plane: deleting the old ruleset after the switch (the next apply lists the table and deletes what is left)",
				"table", kt.name, "chains", len(d.oldChains), "sets", len(d.oldSets), "objects", len(d.oldObjs),
				"err", kernelErr("delete old ruleset", p.err))
		} else if exists, handle, use, err := r.tableInfo(kt.name); err == nil && exists {
			kt.handle, kt.use = handle, use
			p.kt = kt
		}
		p.took = time.Since(t0)
	}()
}

// settle waits for the deletion retire started, if any, and takes its
// result: the runner's memory of the table, or none. It returns when it
// started waiting and how long the deletion took (0 when there was none).
// r.mu is held.
func (r *NetlinkRunner) settle() (start time.Time, took time.Duration) {
	start = time.Now()
	p := r.retiring
	if p == nil {
		return start, 0
	}
	<-p.done
	r.retiring = nil
	r.known = p.kt
	return start, p.took
}

// Settle waits until the runner is idle: the deletion of the last apply's
// old ruleset, which the apply does not wait for, done. It returns that
// deletion's error, if it failed (the next apply deletes what it left).
func (r *NetlinkRunner) Settle() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.retiring
	r.settle()
	if p != nil {
		return p.err
	}
	return nil
}

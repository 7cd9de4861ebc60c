package nft

import "time"

// A large stage 1 in two transactions.
//
// The kernel works on a batch inside our sendmsg, on one processor: while
// it adds a 10,000-rule policy's objects (some 220 ms), the process has
// nothing to do but wait. So a stage 1 that adds splitRulesMin rules or
// more goes as two transactions: first the table, objects, chains, sets
// and set elements (what the rules refer to), then the chains' rules,
// whose encoding — most of stage 1's — runs while the kernel works on the
// first. Both only add what nothing refers to yet (the switch is stage 2),
// so packets see no difference; a failure of the second removes what the
// first added (change.unstage), as a failure of stage 2 does, and the old
// ruleset stays in force.

// splitRulesMin is the number of new rules from which stage 1 is split.
// Below it the encoding the split hides is a few milliseconds and the
// second transaction's own cost (its commit, a goroutine) would show: a
// one-rule apply of the 10,000-rule policy adds a few dozen rules.
const splitRulesMin = 4096

// splitStage1 reports whether a stage 1 that adds rules rules is sent in
// two transactions.
func (r *NetlinkRunner) splitStage1(rules int) bool {
	min := r.splitMin
	if min <= 0 {
		min = splitRulesMin
	}
	return rules >= min
}

// size1Rules estimates the rules part of stage 1's batch (bytes).
func (d *change) size1Rules() int {
	n := 4096
	for _, c := range d.newChains {
		n += 256 * len(c.Rules)
	}
	return n
}

// sendStage1Split sends stage 1 as two transactions (see above): the
// objects, chains and sets, then the rules, encoded in a goroutine while
// the kernel works on the first. then runs in that goroutine once the
// rules are encoded (the apply's other work beside the kernel: stage 2's
// encoding, ApplyOverlapping's during), and always runs. committed
// reports whether the first transaction was committed: then a failure
// must unstage.
func (r *NetlinkRunner) sendStage1Split(d *change, st *ApplyStats, t1 time.Time, then func()) (committed bool, err error) {
	w1, seq1, err := batch(d.size1()-d.size1Rules()+4096, d.stage1Objects()...)
	st.Encode1 = time.Since(t1)
	if err != nil {
		then()
		return false, err
	}
	var (
		w2   *wire
		seq2 uint32
		err2 error
		enc  = make(chan struct{})
	)
	go func() {
		defer close(enc)
		w2, seq2, err2 = batch(d.size1Rules(), d.stage1Rules())
		then()
	}()
	if w1 != nil {
		if err := r.send(w1, seq1); err != nil {
			<-enc
			return false, err
		}
		committed = true
	}
	t := time.Now()
	<-enc
	st.Wait1 = time.Since(t)
	if err2 == nil && w2 != nil {
		err2 = r.send(w2, seq2)
	}
	return committed, err2
}

// unstageFailed removes what the first transaction of a split stage 1
// made, after the second failed; the table is listed at the next apply.
func (r *NetlinkRunner) unstageFailed(d *change) {
	r.known = nil
	if err := r.transact(0, d.unstage()...); err != nil {
		r.log.Warn("data plane: removing the chains and sets of a failed apply", "err", err)
	}
}

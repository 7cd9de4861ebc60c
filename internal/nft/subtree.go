package nft

import (
	"encoding/binary"
	"strings"
)

// Subtrees of a classifier tree taken whole from the last compile.
//
// When one rule changes, its family and protocol's tree is built again
// (treecache.go), but every node of it whose entries are the last build's
// (the same entries in the same order, by everything the node's subtree
// is made from: entry.eid, the fields already dispatched on and the
// tree's head) has the same subtree: the same dispatch maps, leaves,
// sequence chains and decision chains, under the same final names. A
// build that meets such a node replays the last build's record of it
// (subRec) instead of cutting, partitioning and naming it again: it puts
// the record's objects in the ruleset in the order building would, and
// makes the classifier's memos (memo, leaves, seqs), costs and the
// ruleset's Stats what building would have made them, so that
// CompileCached stays Compile (TestCompileCachedEqualsCompile); the
// namer takes the objects' final names as they are (compiler.reused).
// Only the nodes on the path from the root to the changed rule's entries
// are built.
//
// A record holds every object its subtree refers to, also those an
// earlier part of the tree made first (a rule's decision chain, a leaf or
// a sequence that the node's build found in the memos): a replay puts
// them where building the subtree alone would, and the namer keeps the
// first of each name, as it does for a built tree.

// subtreeMax is the most entries of a tree whose subtrees are recorded:
// the records of a larger one cost its build more than a change saves
// (the flat 100,000-rule policy's tree: about 40 % more CPU and 50 MB
// more per compile, docs/benchmarks.md, branch onerule).
const subtreeMax = 1 << 15

// recordSubs reports whether the build of the tree of entries l records
// its subtrees: when the tree is not too large and at least half of the
// compile's network rules are the last compile's (ruleRec), as in an
// apply that changes a few rules. A first compile or one that replaces
// the policy records nothing (recording costs a build of the 10,000-rule
// policy about 15 % more CPU); the first small change builds the records
// for the next.
func (c *compiler) recordSubs(l []*entry) bool {
	return len(l) <= subtreeMax && c.ruleHits > 0 && 2*c.ruleHits >= len(c.ruleRecs)
}

// Kinds of record.
const (
	recDecision = iota + 1 // a rule's decision chain (one entry, nothing left to test)
	recLeaf                // a leaf (classifier.leaf)
	recDispatch            // a dispatch map and its chain
	recSegs                // consecutive segments
)

// subRec is the record of a node's build: what it made, and the records
// of its children.
type subRec struct {
	kind uint8
	bad  bool   // incomplete (something was not recorded): not kept
	key  string // dispatch and segments: the node's key (classifier.subtree)
	sh   *shape // dispatch and segments
	kids []*subRec
	seqs []*Chain // dispatch: per piece, its sequence chain (nil: one chain)
	ch   *Chain   // decision chain, dispatch chain
	set  *Set     // dispatch map
	// leaf: its key in classifier.leaves, in the leaf cache, and the
	// leaf (bl until the compile's keep makes it l).
	ckey, full string
	bl         *builtLeaf
	l          *cachedLeaf
	sums       []nameSum // the final names and sums of ch, set and seqs
}

func (cl *classifier) recording() bool { return cl.memoRec != nil }

// recDecision records the decision chain the build of a one-entry node
// returned.
func (cl *classifier) recDecision(ch *Chain) {
	if !cl.recording() {
		return
	}
	r := &subRec{kind: recDecision, ch: ch, bad: ch == nil}
	cl.c.building.recs = append(cl.c.building.recs, r)
	cl.last = r
}

// leafRecOf is the record of the leaf of key ckey (classifier.leaves).
func (cl *classifier) leafRecOf(ckey string) *subRec {
	if !cl.recording() {
		return nil
	}
	return cl.leafRec[ckey]
}

// recLeaf records a leaf, built (bl) or taken from the leaf cache (l).
func (cl *classifier) recLeaf(ckey, full string, bl *builtLeaf, l *cachedLeaf) {
	if !cl.recording() {
		return
	}
	r := &subRec{kind: recLeaf, ckey: ckey, full: full, bl: bl, l: l}
	cl.leafRec[ckey] = r
	cl.c.building.recs = append(cl.c.building.recs, r)
	cl.last = r
}

// recKids starts the record of a node of n children (pieces or
// segments).
func (cl *classifier) recKids(n int) *subRec {
	if !cl.recording() {
		return nil
	}
	return &subRec{kids: make([]*subRec, n)}
}

// recKid records child i of r, whose build returned n chains.
func (cl *classifier) recKid(r *subRec, i, n int) {
	if r == nil {
		return
	}
	k := cl.last
	switch {
	case n > 0 && k == nil:
		r.bad = true
	case k != nil && k.bad:
		r.bad = true
	}
	if n > 0 {
		r.kids[i] = k
	}
}

// recSeq records the sequence chain of piece i's chains (names).
func (cl *classifier) recSeq(r *subRec, i int, names []string) {
	if r == nil {
		return
	}
	if r.seqs == nil {
		r.seqs = make([]*Chain, len(r.kids))
	}
	ch := cl.seqObj[strings.Join(names, ",")]
	if ch == nil {
		r.bad = true
	}
	r.seqs[i] = ch
}

// recDispatch completes the record of a dispatch.
func (cl *classifier) recDispatch(r *subRec, ch *Chain, set *Set) {
	if r == nil {
		return
	}
	r.kind, r.ch, r.set = recDispatch, ch, set
	cl.c.building.recs = append(cl.c.building.recs, r)
	cl.last = r
}

// recNode completes the record of the node just built (cl.last: a
// dispatch or segments) with its shape and key.
func (cl *classifier) recNode(key string, sh *shape) {
	r := cl.last
	if !cl.recording() || r == nil {
		return
	}
	if r.kind == 0 {
		r.kind = recSegs
		cl.c.building.recs = append(cl.c.building.recs, r)
	}
	r.sh, r.key = sh, key
	if key != "" {
		cl.c.building.newSubs = append(cl.c.building.newSubs, r)
	}
}

// subtree returns the key of the node of es (used: the fields dispatched
// on) and the last build's record of that key, if any.
func (cl *classifier) subtree(es []*entry, used uint8) (string, *subRec) {
	bt := cl.c.building
	if !cl.recording() || bt == nil {
		return "", nil
	}
	b := make([]byte, 0, len(cl.c.leafHead)+1+3*len(es))
	b = append(append(b, cl.c.leafHead...), used)
	for _, e := range es {
		b = binary.AppendUvarint(b, uint64(e.eid))
	}
	key := string(b)
	r := bt.oldSubs[key]
	if r != nil {
		cl.c.cache.mu.Lock()
		cl.c.cache.subHits++
		cl.c.cache.mu.Unlock()
	}
	return key, r
}

// replayBuild is build of es with the record r of the same node.
func (cl *classifier) replayBuild(r *subRec, es []*entry, used uint8) []string {
	cl.last = nil
	es = cl.prune(es, used)
	if len(es) == 0 {
		return nil
	}
	if r.kind == recDecision {
		c := cl.c
		c.rs.Chains = append(c.rs.Chains, r.ch)
		c.addSums(r.sums)
		cl.cost[r.ch.Name] = 1
		cl.last = r
		return []string{r.ch.Name}
	}
	key := memoKey(used, es)
	if out, ok := cl.memo[key]; ok {
		cl.last = cl.memoRec[key]
		return out
	}
	out := cl.replayNode(r, es, used)
	cl.memo[key] = out
	cl.memoRec[key] = r
	cl.last = r
	return out
}

// replayNode is the part of build after the memo for a node of record r
// (a leaf, dispatch or segments).
func (cl *classifier) replayNode(r *subRec, es []*entry, used uint8) []string {
	c := cl.c
	var out []string
	switch r.kind {
	case recLeaf:
		if name, ok := cl.leaves[r.ckey]; ok {
			cl.last = cl.leafRec[r.ckey]
			return []string{name}
		}
		l := r.l
		c.rs.Sets = append(c.rs.Sets, l.sets...)
		c.rs.Chains = append(append(c.rs.Chains, l.chains...), l.chain)
		c.addSums(l.sums)
		c.building.hit = append(c.building.hit, keyedLeaf{r.full, l})
		cl.leaves[r.ckey] = l.chain.Name
		cl.leafRec[r.ckey] = r
		c.rs.Stats.Leaves += len(es)
		cl.cost[l.chain.Name] = len(es)
		cl.last = r
		return []string{l.chain.Name}
	case recDispatch:
		worst := 0
		f := r.sh.f
		for i, p := range r.sh.piecesOf(es) {
			k := r.kids[i]
			if k == nil {
				continue
			}
			kids := cl.replayBuild(k, p.members, used|1<<f)
			var target string
			switch len(kids) {
			case 0:
				continue
			case 1:
				target = kids[0]
			default:
				target = cl.replaySeq(r.seqs[i], kids)
			}
			worst = max(worst, cl.cost[target])
		}
		c.rs.Chains = append(c.rs.Chains, r.ch)
		c.rs.Sets = append(c.rs.Sets, r.set)
		c.addSums(r.sums)
		c.rs.Stats.DispatchMaps++
		c.rs.Stats.MapElements += len(r.set.Elems)
		cl.cost[r.ch.Name] = worst
		out = []string{r.ch.Name}
	case recSegs:
		start := 0
		for i, end := range r.sh.segs {
			if k := r.kids[i]; k != nil {
				out = append(out, cl.replayBuild(k, es[start:end], used)...)
			}
			start = end
		}
	}
	if r.key != "" {
		c.building.hitSubs = append(c.building.hitSubs, r)
	}
	cl.last = r
	return out
}

// replaySeq is seqChain of names, with ch the record's chain for them.
func (cl *classifier) replaySeq(ch *Chain, names []string) string {
	key := strings.Join(names, ",")
	if n, ok := cl.seqs[key]; ok {
		return n
	}
	cl.c.rs.Chains = append(cl.c.rs.Chains, ch)
	sum := 0
	for _, n := range names {
		sum += cl.cost[n]
	}
	cl.cost[ch.Name] = sum
	cl.seqs[key] = ch.Name
	cl.seqObj[key] = ch
	return ch.Name
}

// addSums makes the final names of s known to the namer as final.
func (c *compiler) addSums(s []nameSum) {
	c.reusing()
	for _, x := range s {
		c.reused[x.name] = x.sum
	}
}

// reusing makes c.reused, as large as the last compile's.
func (c *compiler) reusing() {
	if c.reused == nil {
		c.cache.mu.Lock()
		n := c.cache.reusedLen
		c.cache.mu.Unlock()
		c.reused = make(map[string][hashSize]byte, n)
	}
}

// entryIDs gives the entries of a tree about to be built their eid: the
// id of their intervals' ids, rule, FQDN set and decision (what
// appendDecisionKey says) in the cache's map, which is emptied with the
// interval ids (the eids of the last compile mean nothing after) or when
// it grows past ivIDsMax.
func (c *compiler) entryIDs(l []*entry) {
	c.cache.mu.Lock()
	defer c.cache.mu.Unlock()
	if c.cache.eids == nil || c.cache.eidIV != c.cache.ivEpoch || len(c.cache.eids) > ivIDsMax(c.nEntries) {
		c.cache.eids = make(map[string]uint32, len(l))
		c.cache.eidIV = c.cache.ivEpoch
		c.cache.eidGen++
	}
	epoch := c.cache.subEpoch()
	var b []byte
	for _, e := range l {
		gen := c.tag(e.tag).Gen
		var fqdnc string
		if e.fqdnSet != "" {
			fqdnc = c.fqdnComments[e.fqdnSet]
		}
		if e.eidEpoch == epoch && e.eidLogGen == gen && e.eidFQDN == fqdnc {
			continue // an entry of the last compile (ruleRec) with the same decision
		}
		e.eidEpoch, e.eidLogGen, e.eidFQDN = epoch, gen, fqdnc
		b = b[:0]
		for f := range numFields {
			b = binary.AppendUvarint(b, uint64(e.fid[f]))
		}
		b = binary.AppendUvarint(b, uint64(e.rule))
		b = appendStr(b, e.fqdnSet)
		b = c.appendDecisionKey(b, e)
		id, ok := c.cache.eids[string(b)]
		if !ok {
			id = uint32(len(c.cache.eids) + 1)
			c.cache.eids[string(b)] = id
		}
		e.eid = id
	}
}

// subEpoch identifies the cache's entry ids: records of another epoch
// are not looked up.
func (c *Cache) subEpoch() uint64 { return uint64(c.ivEpoch)<<32 | uint64(c.eidGen) }

// keepSubs finishes the records of the tree b built (their leaves and
// the final names and sums of their objects, n having named the ruleset)
// and returns the tree's records by key for the next compile.
func keepSubs(b *builtTree, n *namer) map[string]*subRec {
	for _, r := range b.recs { // children before their parents
		switch r.kind {
		case recDecision:
			if r.ch != nil {
				r.sums = []nameSum{n.nameSum(r.ch.Name)}
			}
		case recLeaf:
			if r.l == nil && r.bl != nil {
				r.l = r.bl.cached
			}
			r.bl = nil
			if r.l == nil {
				r.bad = true
			}
		case recDispatch:
			r.sums = append(r.sums[:0], n.nameSum(r.ch.Name), n.nameSum(r.set.Name))
			for _, s := range r.seqs {
				if s != nil {
					r.sums = append(r.sums, n.nameSum(s.Name))
				}
			}
		}
		for _, k := range r.kids {
			if k != nil && k.bad {
				r.bad = true
			}
		}
	}
	subs := make(map[string]*subRec, len(b.newSubs)+len(b.hitSubs))
	for _, r := range b.hitSubs {
		subs[r.key] = r
	}
	for _, r := range b.newSubs {
		if !r.bad && r.sh != nil {
			subs[r.key] = r
		}
	}
	return subs
}

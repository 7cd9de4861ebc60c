package nft

import (
	"encoding/binary"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The classifier finds, for a new flow of one family and protocol, the
// first network rule (in policy order) that matches it, without testing
// the rules one after the other.
//
// It is a decision tree built from the rules' normalized sets and made of
// ordinary nftables objects:
//
//   - a dispatch node is a chain with one rule, `<field> vmap @map`, where
//     the map is an interval map over one field (source address,
//     destination address or destination port). The field's value space is
//     cut into elementary intervals at every rule's interval boundaries;
//     each interval maps (goto) to the child built from exactly the rules
//     that cover it, in policy order. A rule that covers the interval needs
//     no further test of that field, so children drop it; rules that do not
//     cover it cannot match there, so children do not hold them. Children
//     with the same rules are shared.
//   - a leaf is a chain that tests its few rules in order, each with the
//     fields not dispatched on yet (one comparison, or a lookup in a named
//     interval set), then the rule's decision: counter, log, verdict. A
//     child that is one rule with nothing left to test is the rule's
//     decision chain, rule_<i>, itself.
//   - a sequence is a chain of `jump` rules, used only when the rules of a
//     node cannot be dispatched on any field without copying them too
//     often (see below): its parts are classified separately and tried in
//     policy order.
//
// The field of a node is the one whose largest child is smallest, among
// those whose copies stay within budget (dupFactor times the rules, plus
// dupSlack): a rule that is a wildcard in the field, or that spans many
// intervals, lands in many children. When no field is within budget the
// rules are cut into consecutive segments (greedily, by an estimate of the
// copies) or, failing that, halves. First-match order is kept exactly: a
// child holds its rules in policy order, segments are tried in policy
// order, and a rule after one that matches everything left is dropped.
//
// A lookup in an interval map (the kernel's rbtree set) grows with the
// logarithm of its size (a map of single values is a hash map instead,
// pointElems), so a new flow meets a few map lookups and a short leaf
// however many rules the policy has; Stats.MaxSequential reports the
// longest path (the number of rules a flow can be tested against).
type classifier struct {
	c      *compiler
	fam    family
	proto  uint8
	fields []field
	prefix string
	memo   map[string][]string
	seqs   map[string]string
	leaves map[string]string // leaf content -> chain
	keyBuf []byte            // leaf's key
	// partition's buffers (its events, the port sort's, its pieces, its
	// sort keys)
	evBuf, portBuf []event
	pieceBuf       []shapePiece
	keyEvBuf       []uint64
	all            []*entry               // the tree's entries (by id)
	ranks          [numFields]*fieldRanks // by field, made on first use
	cost           map[string]int         // chain -> largest number of leaf rules a flow meets in it
	// With a cache: the record of the node build (or leaf) made last,
	// and those of the nodes memo and leaves hold, with the sequence
	// chains by key (subtree.go).
	last    *subRec
	memoRec map[string]*subRec
	leafRec map[string]*subRec
	seqObj  map[string]*Chain
}

// entry is one rule of the classifier: a network rule for one family and
// protocol, with its intervals per field (nil: any value) and, for a rule's
// destinationFqdns, the FQDN set its destination is looked up in.
type entry struct {
	rule    int // index in RulesOf(KindNetwork)
	tag     LogTag
	deny    bool
	comment string
	iv      [numFields][]ivl
	fqdnSet string
	id      int               // position in the classifier's list
	fid     [numFields]uint32 // its intervals' ids per field in the cache's shapes (treecache.go); 0 without a cache
	// fidEpoch is the Cache.ivEpoch of fid (0: none).
	fidEpoch uint32
	// eid is the id of everything a subtree is built from of the entry
	// (its intervals' ids, rule, FQDN set and decision; subtree.go).
	eid uint32
	// What eid was made from that can change without the entry: the
	// cache's subEpoch, its log generation and its FQDN set's content.
	eidEpoch  uint64
	eidLogGen uint32
	eidFQDN   string
}

// Tuning of the classifier, measured on the 10,000-rule policy of the
// tests (bigPolicy): a larger dupFactor shortens the worst path (3 gives
// 76 rules, 6 gives 4) but makes the ruleset bigger and its apply slower.
const (
	leafMax   = 4  // a node of this many entries is a leaf
	dupFactor = 3  // a dispatch may copy entries up to this many times
	dupSlack  = 16 // ... plus this many
)

func budget(n int) int { return dupFactor*n + dupSlack }

// newClassifier makes the classifier of n entries of a family and protocol.
func newClassifier(c *compiler, fam family, proto uint8, n int) *classifier {
	cl := &classifier{c: c, fam: fam, proto: proto, memo: make(map[string][]string, n), seqs: map[string]string{},
		leaves: make(map[string]string, n), cost: make(map[string]int, n)}
	cl.fields = []field{fieldSrc, fieldDst, fieldPort}
	if proto == protoICMP || proto == protoICMPv6 {
		cl.fields = cl.fields[:2]
	}
	cl.prefix = protoName(proto)
	if proto == protoICMPv6 {
		cl.prefix = "icmp"
	}
	cl.prefix += strconv.Itoa(int(fam))
	return cl
}

// root classifies the entries and returns the chain to jump to.
func (cl *classifier) root(l []*entry) string {
	for k, e := range l {
		e.id = k
	}
	cl.all = l
	seq := cl.build(l, 0)
	switch len(seq) {
	case 0:
		return ""
	case 1:
		return seq[0]
	}
	return cl.seqChain(seq)
}

func (cl *classifier) maxSeq() int {
	m := 0
	for _, v := range cl.cost {
		m = max(m, v)
	}
	return m
}

// prune drops the entries after the first one that matches every flow
// reaching this node.
func (cl *classifier) prune(es []*entry, used uint8) []*entry {
	for k, e := range es {
		if cl.full(e, used) {
			return es[:k+1]
		}
	}
	return es
}

// full reports whether e matches every flow that reaches a node where the
// fields in used were dispatched on.
func (cl *classifier) full(e *entry, used uint8) bool {
	if e.fqdnSet != "" {
		return false
	}
	for _, f := range cl.fields {
		if used&(1<<f) == 0 && e.iv[f] != nil {
			return false
		}
	}
	return true
}

func memoKey(used uint8, es []*entry) string {
	b := make([]byte, 0, 1+3*len(es))
	b = append(b, used)
	for _, e := range es {
		b = binary.AppendUvarint(b, uint64(e.id))
	}
	return string(b)
}

// build returns the chains that, tried in order, classify es.
func (cl *classifier) build(es []*entry, used uint8) []string {
	cl.last = nil
	es = cl.prune(es, used)
	if len(es) == 0 {
		return nil
	}
	if len(es) == 1 && cl.full(es[0], used) {
		// Nothing left to test: go straight to the rule's decision.
		ch := cl.c.decisionChainOf(es[0], cl.proto)
		cl.cost[ch.Name] = 1
		cl.recDecision(ch) // subtree.go
		return []string{ch.Name}
	}
	key := memoKey(used, es)
	if r, ok := cl.memo[key]; ok {
		cl.last = cl.memoRec[key]
		return r
	}
	var out []string
	switch {
	case len(es) <= leafMax:
		out = []string{cl.leaf(es, used)}
	default:
		// The last compile's subtree of the same entries, taken as it
		// was (subtree.go).
		sub, r := cl.subtree(es, used)
		if r != nil {
			out = cl.replayNode(r, es, used)
			break
		}
		// How es is cut: the last compile's cut of the same intervals
		// (treecache.go), else found now.
		sk, sh := cl.c.shape(cl, es, used)
		if sh == nil {
			sh = cl.cut(es, used)
			cl.c.keepShape(sk, sh)
		}
		switch {
		case sh.pieces != nil:
			out = []string{cl.dispatch(sh.f, sh.piecesOf(es), used)}
			cl.recNode(sub, sh)
		case sh.segs != nil:
			start := 0
			kids := cl.recKids(len(sh.segs))
			for i, end := range sh.segs {
				part := cl.build(es[start:end], used)
				out = append(out, part...)
				cl.recKid(kids, i, len(part))
				start = end
			}
			cl.last = kids
			cl.recNode(sub, sh)
		default:
			out = []string{cl.leaf(es, used)}
		}
	}
	cl.memo[key] = out
	if cl.memoRec != nil {
		cl.memoRec[key] = cl.last
	}
	return out
}

// shape is how a node of more than leafMax entries is classified: a
// dispatch on field f into pieces (each an interval and the positions in
// the node's entries of its members), consecutive segments (the end
// position of each), or, when both are nil, a leaf. It depends only on the
// entries' intervals, the fields already dispatched on and the tree's
// family and protocol, so a compile can take the last one's (Cache).
type shape struct {
	f      field
	pieces []shapePiece
	segs   []int
}

type shapePiece struct {
	iv      ivl
	members []int32
}

// cut finds the shape of es.
func (cl *classifier) cut(es []*entry, used uint8) *shape {
	if f, pieces := cl.bestDispatch(es, used); pieces != nil {
		return &shape{f: f, pieces: pieces}
	}
	segs := cl.segment(es, used)
	if segs == nil {
		return &shape{}
	}
	sh := &shape{segs: make([]int, len(segs))}
	end := 0
	for i, s := range segs {
		end += len(s)
		sh.segs[i] = end
	}
	return sh
}

// piecesOf are sh's pieces of es.
func (sh *shape) piecesOf(es []*entry) []piece {
	out := make([]piece, len(sh.pieces))
	for i, p := range sh.pieces {
		m := make([]*entry, len(p.members))
		for j, k := range p.members {
			m[j] = es[k]
		}
		out[i] = piece{p.iv, m}
	}
	return out
}

func (cl *classifier) newChain(kind string) *Chain {
	return cl.c.chain(cl.c.name(cl.prefix + kind))
}

func (cl *classifier) leaf(es []*entry, used uint8) string {
	// The key is made in one reused buffer after the tree's head (with a
	// cache), and the full key (appendLeafDecisions) after it: one string for both
	// (the keys were a tenth of a large compile's allocation).
	b := cl.keyBuf[:0]
	withCache := cl.c.cache != nil && cl.c.building != nil
	if withCache {
		b = append(b, cl.c.leafHead...)
	}
	head := len(b)
	// What the rules test and do: their rules, and their intervals in
	// the fields still tested.
	for _, e := range es {
		b = strconv.AppendInt(b, int64(e.rule), 10)
		b = append(append(b, '/'), e.fqdnSet...)
		for _, f := range cl.fields {
			if used&(1<<f) == 0 {
				for _, iv := range e.iv[f] {
					b = appendIvl(append(b, '/'), iv)
				}
			}
			b = append(b, '|')
		}
		b = append(b, '\n')
	}
	end := len(b)
	cl.keyBuf = b
	// Leaves with the same rules (the copies of one rule made by expand,
	// once the field they differ in was dispatched on) are one chain.
	if name, ok := cl.leaves[string(b[head:end])]; ok {
		cl.last = nil // leafRecOf, without making the key a string when not recording
		if cl.recording() {
			cl.last = cl.leafRec[string(b[head:end])]
		}
		return name
	}
	var full, key string
	if withCache {
		b = cl.c.appendLeafDecisions(b, es) // treecache.go
		cl.keyBuf = b
		full = string(b)
		key = full[head:end]
	} else {
		key = string(b[head:end])
	}
	if name := cl.c.reuseLeaf(full); name != "" {
		cl.leaves[key] = name
		cl.c.rs.Stats.Leaves += len(es)
		cl.cost[name] = len(es)
		cl.recLeaf(key, full, nil, cl.c.building.hit[len(cl.c.building.hit)-1].l)
		return name
	}
	rules := make([]*Rule, 0, len(es))
	for _, e := range es {
		var stmts []Stmt
		for _, f := range cl.fields {
			if f == fieldDst && e.fqdnSet != "" {
				stmts = append(stmts, MatchSet{Family: cl.fam, Field: fieldDst, Set: e.fqdnSet})
				continue
			}
			if used&(1<<f) != 0 || e.iv[f] == nil {
				continue
			}
			stmts = append(stmts, cl.c.matchIn(cl.c.treeInterned, cl.fam, f, e.iv[f]))
		}
		if len(es) == 1 {
			if fused := cl.c.fusedLeaf(e, cl.proto, stmts); fused != nil {
				rules = fused
				break
			}
		}
		rules = append(rules, &Rule{Comment: e.comment, Stmts: append(stmts, cl.c.decision(e, cl.proto)...)})
	}
	ch := cl.newChain("_leaf")
	ch.Rules = rules
	cl.leaves[key] = ch.Name
	cl.c.rs.Stats.Leaves += len(es)
	cl.cost[ch.Name] = len(es)
	cl.c.builtLeaf(full, ch)
	if full != "" {
		cl.recLeaf(key, full, cl.c.building.leaves[len(cl.c.building.leaves)-1].l, nil)
	}
	return ch.Name
}

func (cl *classifier) seqChain(names []string) string {
	key := strings.Join(names, ",")
	if n, ok := cl.seqs[key]; ok {
		return n
	}
	ch := cl.newChain("_seq")
	sum := 0
	for _, n := range names {
		ch.add("", Verdict{Kind: VerdictJump, Chain: n})
		sum += cl.cost[n]
	}
	cl.cost[ch.Name] = sum
	cl.seqs[key] = ch.Name
	if cl.seqObj != nil {
		cl.seqObj[key] = ch
	}
	return ch.Name
}

func (cl *classifier) dispatch(f field, pieces []piece, used uint8) string {
	if ck, ok := cl.foldKey(f, pieces, used); ok && !noFold {
		return cl.foldedDispatch(f, ck, pieces, used)
	}
	mapName := cl.c.name(cl.prefix + "_map")
	set := &Set{Name: mapName, Kind: SetVMap, Family: cl.fam, Field: f}
	if f == fieldPort {
		set.Family = 0
	}
	worst := 0
	rec := cl.recKids(len(pieces))
	for i, p := range pieces {
		kids := cl.build(p.members, used|1<<f)
		cl.recKid(rec, i, len(kids))
		var target string
		switch len(kids) {
		case 0:
			continue
		case 1:
			target = kids[0]
		default:
			target = cl.seqChain(kids)
			cl.recSeq(rec, i, kids)
		}
		worst = max(worst, cl.cost[target])
		set.Elems = append(set.Elems, Elem{iv: p.iv, Chain: target})
	}
	if elems, ok := pointElems(set.Elems); ok {
		set.Kind, set.Elems = SetVMapHash, elems
	}
	ch := cl.newChain("_by_" + f.String())
	ch.add("", VMap{Family: set.Family, Field: f, Map: mapName})
	cl.c.rs.Sets = append(cl.c.rs.Sets, set)
	cl.c.rs.Stats.DispatchMaps++
	cl.c.rs.Stats.MapElements += len(set.Elems)
	cl.cost[ch.Name] = worst
	cl.recDispatch(rec, ch, set)
	return ch.Name
}

// foldKey reports whether a dispatch on f into pieces folds its children
// into its map's key, and the fields it adds to the key. It does when the
// map would be a hash map (pointElems: every piece a few single values)
// and every piece's child is one entry (a leaf of one rule: no FQDN set,
// some field left to test) whose fields left to test are each a wildcard
// or one exact value or, for an address, one prefix, the same fields with
// the same prefix lengths in every child. The leaf of such a child is
//
//	ip saddr . th dport != 10.1.2.0/24 . 443 return
//	<the rule's decision>
//
// and the fold makes the map's key `ip daddr . ip saddr & 255.255.255.0
// . th dport`, each element the child's value of f and of those fields
// going straight to the rule's decision chain: a flow meets one hash
// lookup where it met a lookup and a comparison, and the kernel holds per
// rule the decision chain where it held a leaf of one rule more and twice
// the expressions (docs/benchmarks.md, branch concatkey).
//
// It is exact: a flow that reaches the node has one value of f, so at
// most one child (the one whose piece holds it) can match it, and it
// does so if and only if its remaining fields are the child's entry's
// (a prefix: the flow's value masked to its length is the prefix's first
// address), which is what the element's key says. A flow no element
// matches goes on after the dispatch, as one that failed the leaf's
// comparison and returned.
func (cl *classifier) foldKey(f field, pieces []piece, used uint8) (catKey, bool) {
	var ck catKey
	values := 0
	for i, p := range pieces {
		if len(p.members) != 1 {
			return catKey{}, false
		}
		values += int(p.iv.hi.lo-p.iv.lo.lo) + 1
		if p.iv.lo.hi != p.iv.hi.hi || p.iv.hi.lo-p.iv.lo.lo >= 2 || values > 2*len(pieces) {
			return catKey{}, false // not a hash map (pointElems)
		}
		e := p.members[0]
		if e.fqdnSet != "" {
			return catKey{}, false
		}
		var k catKey
		for _, g := range cl.fields {
			if g == f || used&(1<<g) != 0 || e.iv[g] == nil {
				continue
			}
			if len(e.iv[g]) != 1 || int(k.n) == maxCat {
				return catKey{}, false
			}
			iv := e.iv[g][0]
			bits := fieldWidth(cl.fam, g)
			if iv.lo != iv.hi {
				b, ok := prefixLen(cl.fam, g, iv)
				if !ok || b == 0 {
					return catKey{}, false
				}
				bits = b
			}
			k.f[k.n], k.bits[k.n] = g, uint8(bits)
			k.n++
		}
		if k.n == 0 || (i > 0 && k != ck) {
			return catKey{}, false
		}
		ck = k
	}
	return ck, len(pieces) > 0
}

// noFold turns foldKey's folding off: for BenchmarkKernelBigPolicyFlowCost,
// which compares a new flow's cost through folded keys and through the
// leaves they replace in one run.
var noFold bool

// foldedDispatch is the dispatch on f into pieces whose children fold
// into the map's key (foldKey: ck).
func (cl *classifier) foldedDispatch(f field, ck catKey, pieces []piece, used uint8) string {
	mapName := cl.c.name(cl.prefix + "_map")
	set := &Set{Name: mapName, Kind: SetVMapHash, Family: cl.fam, Field: f, Cat: ck}
	rec := cl.recKids(len(pieces))
	for i, p := range pieces {
		e := p.members[0]
		// What build does for a child with nothing left to test.
		ch := cl.c.decisionChainOf(e, cl.proto)
		cl.cost[ch.Name] = 1
		cl.recDecision(ch) // subtree.go
		cl.recKid(rec, i, 1)
		vals := new([maxCat]u128)
		for k := range int(ck.n) {
			vals[k] = e.iv[ck.f[k]][0].lo
		}
		for v := p.iv.lo; ; v = v.next() {
			set.Elems = append(set.Elems, Elem{iv: ivl{v, v}, Chain: ch.Name, cat: vals})
			if v == p.iv.hi {
				break
			}
		}
	}
	ch := cl.newChain("_by_" + f.String())
	ch.add("", VMap{Family: cl.fam, Field: f, Map: mapName, Cat: ck})
	cl.c.rs.Sets = append(cl.c.rs.Sets, set)
	cl.c.rs.Stats.DispatchMaps++
	cl.c.rs.Stats.MapElements += len(set.Elems)
	cl.cost[ch.Name] = 1
	cl.recDispatch(rec, ch, set)
	return ch.Name
}

// pointElems returns a dispatch map's elements as single values, when that
// takes no more kernel elements than the intervals do (an interval is a
// start and an end element): the map is then a hash table (SetVMapHash),
// one hashed lookup for a new flow where an interval map is a binary
// search (docs/benchmarks.md, "The new flow's path in the kernel"). A
// value in no interval is in no element either way.
func pointElems(elems []Elem) ([]Elem, bool) {
	limit := 2 * len(elems)
	out := make([]Elem, 0, len(elems))
	for _, e := range elems {
		for v := e.iv.lo; ; v = v.next() {
			if len(out) == limit {
				return nil, false
			}
			out = append(out, Elem{iv: ivl{v, v}, Chain: e.Chain})
			if v == e.iv.hi {
				break
			}
		}
	}
	return out, true
}

// piece is an interval of a field and the entries (in order) covering it.
type piece struct {
	iv      ivl
	members []*entry
}

// bestDispatch picks the field to dispatch es on, or returns nil pieces
// when no field stays within the copy budget.
func (cl *classifier) bestDispatch(es []*entry, used uint8) (field, []shapePiece) {
	var (
		bestF      field
		best       []shapePiece
		bestMax    int
		bestCost   int
		bestPieces int
	)
	for _, f := range cl.fields {
		if used&(1<<f) != 0 {
			continue
		}
		if allWild(es, f) {
			continue // a dispatch on f would not narrow anything
		}
		pt := cl.c.partitionOf(cl, es, f) // treecache.go: the last compile's, else cl.partition's
		pieces, cost, maxSize, ok := pt.pieces, pt.cost, pt.maxSize, pt.ok
		if !ok || len(pieces) == 0 {
			continue
		}
		if best == nil || maxSize < bestMax || (maxSize == bestMax && (cost < bestCost || (cost == bestCost && len(pieces) < bestPieces))) {
			bestF, best, bestMax, bestCost, bestPieces = f, pieces, maxSize, cost, len(pieces)
		}
	}
	return bestF, best
}

type event struct {
	pos u128
	add bool
	k   int
}

// partitioned is a partition of entries on a field: its pieces (intervals
// and the positions of their members in the entries), the number of
// entries in distinct children (cost), the largest child, and ok false
// when cost exceeded the limit.
type partitioned struct {
	pieces        []shapePiece
	cost, maxSize int
	ok            bool
}

// partition cuts field f's value space at the entries' interval bounds.
// cost is the number of entries in distinct children; ok is false when it
// exceeds limit.
func (cl *classifier) partition(es []*entry, f field, limit int) (pieces []shapePiece, cost, maxSize int, ok bool) {
	fmax := fieldMax(cl.fam, f)
	n := 0
	for _, e := range es {
		n += 2 * max(1, len(e.iv[f]))
	}
	var evs []event
	if f == fieldPort && n >= portSortMin {
		evs, cl.portBuf = portEvents(es, fmax, n, cl.evBuf, cl.portBuf)
		cl.evBuf = evs
	} else {
		evs = cl.rankedEvents(es, f, n)
	}
	// The pieces are made in a reused buffer and copied once to a slice
	// of their size (the partitions were a tenth of a large compile's
	// allocation, most of it the growing of the pieces).
	pieces = cl.pieceBuf[:0]
	var active []int
	distinct := map[string]bool{}
	materialized := 0
	for i := 0; i < len(evs); {
		pos := evs[i].pos
		for ; i < len(evs) && evs[i].pos == pos; i++ {
			k := evs[i].k
			at := sort.SearchInts(active, k)
			if evs[i].add {
				active = append(active, 0)
				copy(active[at+1:], active[at:])
				active[at] = k
			} else if at < len(active) && active[at] == k {
				active = append(active[:at], active[at+1:]...)
			}
		}
		if len(active) == 0 {
			continue
		}
		hi := fmax
		if i < len(evs) {
			hi = evs[i].pos.prev()
		}
		if n := len(pieces); n > 0 && pieces[n-1].iv.hi.next() == pos && sameMembers(pieces[n-1].members, active) {
			pieces[n-1].iv.hi = hi
			continue
		}
		members := make([]int32, len(active))
		for j, k := range active {
			members[j] = int32(k)
		}
		pieces = append(pieces, shapePiece{ivl{pos, hi}, members})
		materialized += len(members)
		maxSize = max(maxSize, len(members))
		key := positionsKey(members)
		if !distinct[key] {
			distinct[key] = true
			cost += len(members)
		}
		if cost > limit || materialized > 8*limit {
			cl.pieceBuf = pieces[:0]
			return nil, 0, 0, false
		}
	}
	cl.pieceBuf = pieces[:0]
	if len(pieces) == 0 {
		return nil, cost, maxSize, true
	}
	return slices.Clone(pieces), cost, maxSize, true
}

// fieldRanks are the positions of the events of a tree's entries on one
// field (each interval's start, and the value after its end unless that
// is the field's last), sorted and numbered once per tree: a node's
// events are then sorted as integers (rankedEvents).
type fieldRanks struct {
	vals []u128   // the distinct positions (the first is 0), by rank
	off  []int32  // entry id -> its intervals' start in ev (off[id+1]: end)
	ev   []uint32 // per interval: the rank of its start, of its end's next value (noEnd: none)
}

const noEnd = ^uint32(0)

func cmpU128(a, b u128) int { return a.num().Compare(b.num()) }

// ranksOf is the fieldRanks of the tree's entries on f.
func (cl *classifier) ranksOf(f field) *fieldRanks {
	if r := cl.ranks[f]; r != nil {
		return r
	}
	fmax := fieldMax(cl.fam, f)
	vals := []u128{{}}
	for _, e := range cl.all {
		for _, iv := range e.iv[f] {
			vals = append(vals, iv.lo)
			if iv.hi != fmax {
				vals = append(vals, iv.hi.next())
			}
		}
	}
	slices.SortFunc(vals, cmpU128)
	vals = slices.Compact(vals)
	r := &fieldRanks{vals: vals, off: make([]int32, len(cl.all)+1), ev: make([]uint32, 0, 2*len(cl.all))}
	rank := func(v u128) uint32 {
		i, _ := slices.BinarySearchFunc(vals, v, cmpU128)
		return uint32(i)
	} // (IPv6 only: IPv4 addresses and ports are their own ranks)
	for id, e := range cl.all {
		r.off[id] = int32(len(r.ev))
		if e.iv[f] == nil {
			r.ev = append(r.ev, 0, noEnd)
			continue
		}
		for _, iv := range e.iv[f] {
			end := noEnd
			if iv.hi != fmax {
				end = rank(iv.hi.next())
			}
			r.ev = append(r.ev, rank(iv.lo), end)
		}
	}
	r.off[len(cl.all)] = int32(len(r.ev))
	cl.ranks[f] = r
	return r
}

// rankedEvents are the events of es (a node's entries, at most n events)
// on f in partition's order: at one position, removals first, then
// additions; removals by falling index and additions by rising one, so
// that the sorted list of active entries changes at its end (many rules
// share a port). The order is eventCmp's, found by sorting integers — a
// position's rank in the tree, then the kind and index — instead of
// comparing events (TestRankedEvents; the comparison sort was a tenth of
// a 10,000-rule compile's CPU).
func (cl *classifier) rankedEvents(es []*entry, f field, n int) []event {
	const addBit = 1 << 31
	keys := slices.Grow(cl.keyEvBuf[:0], n)
	var vals []u128
	if fmax := fieldMax(cl.fam, f); fmax.hi == 0 && fmax.lo <= 1<<32-1 {
		// A port or an IPv4 address is its own rank.
		for k, e := range es {
			if e.iv[f] == nil {
				keys = append(keys, addBit|uint64(k))
				continue
			}
			for _, iv := range e.iv[f] {
				keys = append(keys, iv.lo.lo<<32|addBit|uint64(k))
				if iv.hi != fmax {
					keys = append(keys, (iv.hi.lo+1)<<32|uint64(addBit-1-k))
				}
			}
		}
	} else {
		r := cl.ranksOf(f)
		vals = r.vals
		for k, e := range es {
			ev := r.ev[r.off[e.id]:r.off[e.id+1]]
			for j := 0; j < len(ev); j += 2 {
				keys = append(keys, uint64(ev[j])<<32|addBit|uint64(k))
				if ev[j+1] != noEnd {
					keys = append(keys, uint64(ev[j+1])<<32|uint64(addBit-1-k))
				}
			}
		}
	}
	slices.Sort(keys)
	cl.keyEvBuf = keys
	evs := slices.Grow(cl.evBuf[:0], len(keys))
	for _, key := range keys {
		pos := u128{0, key >> 32}
		if vals != nil {
			pos = vals[key>>32]
		}
		low := int(key & (1<<32 - 1))
		if low&addBit != 0 {
			evs = append(evs, event{pos, true, low &^ addBit})
		} else {
			evs = append(evs, event{pos, false, addBit - 1 - low})
		}
	}
	cl.evBuf = evs
	return evs
}

// eventCmp is partition's order of events.
func eventCmp(a, b event) int {
	switch {
	case a.pos != b.pos:
		if a.pos.less(b.pos) {
			return -1
		}
		return 1
	case a.add != b.add:
		if !a.add {
			return -1
		}
		return 1
	case a.add:
		return a.k - b.k
	}
	return b.k - a.k
}

// portSortMin is the least number of port events sorted by portEvents.
const portSortMin = 2048

// portEvents are the events of es on the port field in partition's order,
// by a stable counting sort on the port: the events put in first as the
// comparator orders those of one position — removals by falling index,
// then additions by rising one — stay so within each port. (For the
// root of a large tree the comparison sort was most of a one-rule
// compile's partitions.)
//
// buf and in are buffers for the events (the result) and the unsorted
// events; it returns the result and in.
func portEvents(es []*entry, fmax u128, n int, buf, in []event) ([]event, []event) {
	in = slices.Grow(in[:0], n)
	for k := len(es) - 1; k >= 0; k-- {
		for _, iv := range es[k].iv[fieldPort] {
			if iv.hi != fmax {
				in = append(in, event{iv.hi.next(), false, k})
			}
		}
	}
	for k, e := range es {
		if e.iv[fieldPort] == nil {
			in = append(in, event{u128{}, true, k})
			continue
		}
		for _, iv := range e.iv[fieldPort] {
			in = append(in, event{iv.lo, true, k})
		}
	}
	start := make([]int32, int(fmax.lo)+2)
	for _, ev := range in {
		start[ev.pos.lo+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	out := slices.Grow(buf[:0], len(in))[:len(in)]
	for _, ev := range in {
		out[start[ev.pos.lo]] = ev
		start[ev.pos.lo]++
	}
	return out, in
}

func sameMembers(m []int32, active []int) bool {
	if len(m) != len(active) {
		return false
	}
	for j, k := range active {
		if int(m[j]) != k {
			return false
		}
	}
	return true
}

// positionsKey is a key of a set of positions (memoKey's encoding).
func positionsKey(m []int32) string {
	b := make([]byte, 0, 3*len(m))
	for _, k := range m {
		b = binary.AppendUvarint(b, uint64(k))
	}
	return string(b)
}

// segment cuts es into consecutive parts that can each be dispatched
// within budget, by estimate; nil when es is too small to cut.
func (cl *classifier) segment(es []*entry, used uint8) [][]*entry {
	if len(es) <= 2*leafMax {
		return nil
	}
	free := false
	for _, f := range cl.fields {
		if used&(1<<f) == 0 && !allWild(es, f) {
			free = true
		}
	}
	if !free {
		return nil // no field can tell these rules apart: test them in order
	}
	var segs [][]*entry
	start := 0
	var wild, spec [numFields]int
	for k, e := range es {
		var w, s [numFields]int
		ok := false
		for _, f := range cl.fields {
			if used&(1<<f) != 0 {
				continue
			}
			w[f], s[f] = wild[f], spec[f]
			if e.iv[f] == nil {
				w[f]++
			} else {
				s[f] += len(e.iv[f])
			}
			if s[f]*(1+w[f])+w[f] <= budget(k-start+1) {
				ok = true
			}
		}
		if !ok && k > start {
			segs = append(segs, es[start:k])
			start = k
			wild, spec = [numFields]int{}, [numFields]int{}
			for _, f := range cl.fields {
				if e.iv[f] == nil {
					wild[f]++
				} else {
					spec[f] += len(e.iv[f])
				}
			}
			continue
		}
		wild, spec = w, s
	}
	segs = append(segs, es[start:])
	if len(segs) == 1 {
		h := len(es) / 2
		return [][]*entry{es[:h], es[h:]}
	}
	return segs
}

func allWild(es []*entry, f field) bool {
	for _, e := range es {
		if e.iv[f] != nil {
			return false
		}
	}
	return true
}

package nft

import (
	"encoding/binary"
	"slices"
	"sync"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// Cache keeps the classifier trees (one per family and protocol, see
// classifier) of the last compile that used it, with their chains and sets
// under their final names, and everything each was built from: its family
// and protocol, its entries in order (rule, log tag with its generation,
// action, comment, intervals, FQDN set and that set's content) and the
// config the decisions depend on. A compile whose tree is built from the
// same (sameTree) takes the tree's objects as they are instead of
// classifying and naming them again: when one rule changes, only the trees
// of its families and protocols are built. Within a tree that is built
// again, a leaf whose key (its entries' rules, intervals and decisions,
// and the tree's) it had before is taken as it was, with the interned sets
// and decision chains building it would make first (cachedLeaf).
//
// A tree is built as if it were the only one (its decision chains and
// interned sets are its own; the namer makes the copies across trees one,
// keeping the first), so a reused tree puts the same objects in the same
// places as a built one, and CompileCached's result is Compile's
// (TestCompileCachedEqualsCompile).
//
// The zero value is an empty cache. A Cache may be shared by compiles that
// do not run at the same time; the chains and sets it hands out are those
// of earlier rulesets (they are not changed after a compile).
type Cache struct {
	mu     sync.Mutex
	trees  map[famProto]*cachedTree
	leaves map[string]*cachedLeaf

	// The shapes (classifier.cut) of the last build of each family and
	// protocol's tree, by the intervals of the node's entries (their ids
	// in ivIDs) and the fields already dispatched on: a tree built again
	// takes the cuts of its unchanged nodes instead of partitioning them.
	shapes map[famProto]*shapeCache
	ivIDs  map[string]uint32 // a field and an entry's intervals in it -> id, from 1
	// ivEpoch counts the ivIDs maps made: an entry's ids are those of
	// the map of its fidEpoch.
	ivEpoch uint32

	// The entries of each network rule of the last compile (by index),
	// with what they were made from: a rule made from the same takes
	// them as they were (and a tree of such entries compares them by
	// pointer, sameTree).
	rules []*ruleRec

	// The ids of entries by what their subtrees are made from
	// (entryIDs, subtree.go), emptied with ivIDs; eidIV is the ivEpoch
	// they were made in, eidGen counts the maps made.
	eids          map[string]uint32
	eidIV, eidGen uint32
	subHits       int // subtrees replayed: for the tests
	reusedLen     int // the size of the last compile's compiler.reused

	hits, built, leafHits, shapeHits, partHits, ruleHits int // trees reused and built, leaves, shapes, partitions and rules' entries reused: for the tests
}

// shapeCache is what a tree's build keeps for the next: the shapes of its
// nodes, and the partitions on each field of its large nodes (a node whose
// entries changed is cut again, but its partitions on the fields where
// its entries' intervals did not change are the last ones: when one rule's
// ports change, the root's partitions on the addresses).
type shapeCache struct {
	shapes map[string]*shape
	parts  map[string]*partitioned
}

// partMin is the least number of entries of a node whose partitions are
// kept (smaller ones cost little to partition again).
const partMin = 256

type famProto struct {
	fam   family
	proto uint8
}

type cachedTree struct {
	// What the tree was built from (sameTree): the tree's head
	// (treeHead), its entries and their log generations, and the
	// content of the FQDN set of each (its comment; "" for none).
	head    []byte
	entries []*entry
	gens    []uint32
	fqdnc   []string

	chains []*Chain // in the order the tree made them, final names
	sets   []*Set
	root   string
	sums   []nameSum // final names and the namer's sums
	stats  treeStats
	leaves []keyedLeaf // the leaves built in it, or taken from the cache
	// The records of its nodes by key (subtree.go), of the cache's
	// subEpoch subsEpoch.
	subs      map[string]*subRec
	subsEpoch uint64
}

// cachedLeaf is a classifier leaf of the last compile: its chain and what
// building it again would make before it (its interned sets and decision
// chains), under their final names, and the sums of all the names it
// refers to. A tree that is built again takes the leaves whose key it
// finds (appendLeafDecisions) instead of making and naming them.
type cachedLeaf struct {
	chain  *Chain
	sets   []*Set
	chains []*Chain
	sums   []nameSum
}

// nameSum is a final name and its sum (namer.sums).
type nameSum struct {
	name string
	sum  [hashSize]byte
}

func (n *namer) nameSum(name string) nameSum {
	sum, ok := n.sums[name]
	if !ok {
		sum = n.named[name]
	}
	return nameSum{name, sum}
}

type treeStats struct {
	leaves, maps, elems, maxSeq int
}

// builtLeaf is a leaf made by the compile under way: its chain and the
// provisional names of the chains and sets its rules refer to.
type builtLeaf struct {
	chain        *Chain
	chains, sets []string
	cached       *cachedLeaf // what keep made of it
}

// builtTree is a tree of the compile under way.
type builtTree struct {
	fp     famProto
	head   []byte   // treeHead
	l      []*entry // the entries it is built from
	chains []*Chain // provisional names until naming
	sets   []*Set
	root   string
	stats  treeStats
	reused *cachedTree
	leaves []keyedBuilt // built here
	hit    []keyedLeaf  // taken from the cache
	// The last build's shapes of this family and protocol, and those this
	// build used or found.
	old, now *shapeCache
	// Its nodes' records (subtree.go): every record made, children
	// first; those of nodes made (keyed) and replayed; the last build's.
	recs, newSubs, hitSubs []*subRec
	oldSubs                map[string]*subRec
	subsEpoch              uint64 // the cache's subEpoch the records' keys are of
}

// tree classifies the entries l of a family and protocol, or takes the
// cache's tree for them; it returns the chain to jump to and the tree's
// longest path (classifier.maxSeq).
func (c *compiler) tree(fam family, proto uint8, l []*entry) (string, int) {
	fp := famProto{fam, proto}
	var head []byte
	var last *cachedTree
	if c.cache != nil {
		head = c.treeHead(fam, proto)
		c.cache.mu.Lock()
		t := c.cache.trees[fp]
		c.cache.mu.Unlock()
		last = t
		if t != nil && !c.sameTree(t, head, l) {
			t = nil
		}
		c.cache.mu.Lock()
		if t != nil {
			c.cache.hits++
		} else {
			c.cache.built++
		}
		c.cache.mu.Unlock()
		if t != nil {
			c.rs.Chains = append(c.rs.Chains, t.chains...)
			c.rs.Sets = append(c.rs.Sets, t.sets...)
			c.reusing() // subtree.go
			for _, x := range t.sums {
				c.reused[x.name] = x.sum
			}
			c.rs.Stats.Leaves += t.stats.leaves
			c.rs.Stats.DispatchMaps += t.stats.maps
			c.rs.Stats.MapElements += t.stats.elems
			c.trees = append(c.trees, &builtTree{fp: fp, reused: t})
			return t.root, t.stats.maxSeq
		}
	}
	before := c.rs.Stats
	nc, ns := len(c.rs.Chains), len(c.rs.Sets)
	bt := &builtTree{fp: fp, head: head, l: l}
	c.building = bt
	if c.cache != nil {
		c.leafHead = head
		c.shapeIDs(fam, proto, l, bt)
		if c.recordSubs(l) {
			c.entryIDs(l) // subtree.go
			bt.subsEpoch = c.cache.subEpoch()
			if last != nil && last.subsEpoch == c.cache.subEpoch() {
				bt.oldSubs = last.subs
			}
		}
	}
	c.decided = make(map[string]*Chain, len(l))
	c.treeInterned = map[string]string{}
	cl := newClassifier(c, fam, proto, len(l))
	if c.cache != nil && c.recordSubs(l) {
		cl.memoRec = make(map[string]*subRec, len(l))
		cl.leafRec = make(map[string]*subRec, len(l))
		cl.seqObj = map[string]*Chain{}
	}
	root := cl.root(l)
	st := treeStats{
		leaves: c.rs.Stats.Leaves - before.Leaves,
		maps:   c.rs.Stats.DispatchMaps - before.DispatchMaps,
		elems:  c.rs.Stats.MapElements - before.MapElements,
		maxSeq: cl.maxSeq(),
	}
	c.building = nil
	if c.cache != nil {
		c.cache.mu.Lock()
		c.cache.shapes[famProto{fam, proto}] = bt.now
		c.cache.mu.Unlock()
		bt.now, bt.old = nil, nil
	}
	if c.cache != nil && root != "" {
		bt.root, bt.stats = root, st
		bt.chains = append([]*Chain(nil), c.rs.Chains[nc:]...)
		bt.sets = append([]*Set(nil), c.rs.Sets[ns:]...)
		c.trees = append(c.trees, bt)
	}
	return root, st.maxSeq
}

// keep makes the cache hold this compile's trees (and only them), once n
// has named the ruleset. The cache's map of leaves is changed in place:
// the leaves of the last compile's trees this one did not reuse go, the
// leaves of the trees it built come (a compile that changes one tree
// does not copy every leaf of the others).
func (c *compiler) keep(n *namer) {
	if c.cache == nil {
		return
	}
	trees := make(map[famProto]*cachedTree, len(c.trees))
	c.cache.mu.Lock()
	old, leaves := c.cache.trees, c.cache.leaves
	c.cache.mu.Unlock()
	reused := make(map[*cachedTree]bool, len(c.trees))
	built := 0
	for _, b := range c.trees {
		if b.reused != nil {
			reused[b.reused] = true
		} else {
			built += len(b.leaves) + len(b.hit)
		}
	}
	for _, t := range old {
		if !reused[t] {
			for _, x := range t.leaves {
				delete(leaves, x.key)
			}
		}
	}
	if leaves == nil {
		leaves = make(map[string]*cachedLeaf, built)
	}
	for _, b := range c.trees {
		if b.reused != nil {
			trees[b.fp] = b.reused
			continue
		}
		t := &cachedTree{head: b.head, entries: b.l, gens: make([]uint32, len(b.l)),
			chains: b.chains, sets: b.sets, root: n.chainName(b.root), stats: b.stats,
			sums:   make([]nameSum, 0, len(b.chains)+len(b.sets)),
			leaves: make([]keyedLeaf, 0, len(b.leaves)+len(b.hit))}
		for _, ch := range b.chains {
			t.sums = append(t.sums, n.nameSum(ch.Name))
		}
		for _, s := range b.sets {
			t.sums = append(t.sums, n.nameSum(s.Name))
		}
		t.leaves = append(t.leaves, b.hit...)
		for _, x := range b.leaves {
			bl := x.l
			ch := bl.chain // renamed by n
			l := &cachedLeaf{chain: ch, sums: make([]nameSum, 1, 1+len(bl.sets)+len(bl.chains))}
			l.sums[0] = n.nameSum(ch.Name)
			for _, name := range bl.sets {
				s := n.setRec(name).set
				l.sums = append(l.sums, n.nameSum(s.Name))
				if s.Kind == SetPlain { // interned; FQDN sets are not the tree's
					l.sets = append(l.sets, s)
				}
			}
			for _, name := range bl.chains {
				d := n.chainRec(name).chain
				l.sums = append(l.sums, n.nameSum(d.Name))
				l.chains = append(l.chains, d)
			}
			t.leaves = append(t.leaves, keyedLeaf{x.key, l})
			bl.cached = l
		}
		t.subs, t.subsEpoch = keepSubs(b, n), b.subsEpoch // subtree.go
		for _, x := range t.leaves {
			leaves[x.key] = x.l
		}
		for i, e := range b.l {
			t.gens[i] = c.tag(e.tag).Gen
			if e.fqdnSet != "" {
				if t.fqdnc == nil {
					t.fqdnc = make([]string, len(b.l))
				}
				t.fqdnc[i] = c.fqdnComments[e.fqdnSet]
			}
		}
		trees[b.fp] = t
	}
	c.cache.mu.Lock()
	c.cache.trees = trees
	c.cache.leaves = leaves
	c.cache.reusedLen = len(c.reused)
	c.cache.rules = c.ruleRecs
	c.cache.ruleHits += c.ruleHits
	c.cache.mu.Unlock()
}

// ruleRec is what a network rule's entries (compiler.network) were made
// from — its action (with its index, the log tag), protocols, ports,
// sources, destinations, whether it has FQDNs, and its path (the
// comment) — and the entries: es, in the order they were made, by
// family and protocol (lists), and the families whose FQDN set it made,
// in order (the sets' content is made again: its names may differ).
type ruleRec struct {
	action            policy.Action
	protocols         policy.Proto
	ports             []policy.PortRange
	srcAny, dstAny    bool
	src, dst          []policy.AddrRange
	fqdns             bool
	group, coll, name string
	comment           string
	es                []*entry
	lists             []ruleList
	fqdnFams          []family
}

// ruleList is how many of a ruleRec's entries went to a family and
// protocol's list.
type ruleList struct {
	fam   family
	proto uint8
	n     int
}

// recArena allocates a compile's ruleRecs and what they hold in blocks
// (a record per rule and four slices each were as many allocations).
type recArena struct {
	recs   []ruleRec
	ports  []policy.PortRange
	ranges []policy.AddrRange
	es     []*entry
	lists  []ruleList
}

// grab returns n elements of *block (len n, cap n), a new block when it
// has too few left: twice the last one's size (from 16, at most limit; a
// compile that changes one rule records one).
func grab[T any](block *[]T, n, limit int) []T {
	if n == 0 {
		return nil
	}
	if len(*block)+n > cap(*block) {
		*block = make([]T, 0, max(min(max(16, 2*cap(*block)), limit), n))
	}
	at := len(*block)
	*block = (*block)[:at+n]
	return (*block)[at : at+n : at+n]
}

// newRuleRec records what r's entries are made from (copies: a policy
// may be changed in place between compiles).
func (a *recArena) newRuleRec(r *match.Rule) *ruleRec {
	x := &grab(&a.recs, 1, 1024)[0]
	*x = ruleRec{action: r.Action, protocols: r.Protocols,
		srcAny: r.Source.Any, dstAny: r.Destination.Any, fqdns: len(r.FQDNs) > 0}
	x.ports = grab(&a.ports, len(r.Ports), 4096)
	copy(x.ports, r.Ports)
	x.src = grab(&a.ranges, len(r.Source.Ranges), 4096)
	copy(x.src, r.Source.Ranges)
	x.dst = grab(&a.ranges, len(r.Destination.Ranges), 4096)
	copy(x.dst, r.Destination.Ranges)
	x.group, x.coll, x.name = r.Policy.Collection.Group.Name, r.Policy.Collection.Name, r.Policy.Name
	return x
}

// done gives x its entries and lists (copied into the arena's blocks).
func (a *recArena) done(x *ruleRec, es []*entry, lists []ruleList) {
	x.es = grab(&a.es, len(es), 4096)
	copy(x.es, es)
	x.lists = grab(&a.lists, len(lists), 1024)
	copy(x.lists, lists)
}

// same reports whether r's entries are made from what x's were (its
// index is x's: the caller's).
func (x *ruleRec) same(r *match.Rule) bool {
	return x != nil && x.action == r.Action && x.protocols == r.Protocols && x.fqdns == (len(r.FQDNs) > 0) &&
		x.srcAny == r.Source.Any && x.dstAny == r.Destination.Any &&
		slices.Equal(x.ports, r.Ports) && slices.Equal(x.src, r.Source.Ranges) && slices.Equal(x.dst, r.Destination.Ranges) &&
		x.name == r.Policy.Name && x.coll == r.Policy.Collection.Name && x.group == r.Policy.Collection.Group.Name
}

// keyedLeaf is a cached leaf and its key (appendLeafDecisions).
type keyedLeaf struct {
	key string
	l   *cachedLeaf
}

// keyedBuilt is a leaf built by this compile and its key.
type keyedBuilt struct {
	key string
	l   *builtLeaf
}

// treeHead is what every leaf of a tree is built from besides its entries.
func (c *compiler) treeHead(fam family, proto uint8) []byte {
	lim := byte(0)
	if c.cfg.LimitRuleLogs {
		lim = 1
	}
	b := append([]byte(nil), byte(fam), proto, lim)
	b = binary.BigEndian.AppendUint16(b, c.cfg.LogGroup)
	return appendStr(b, c.rs.LogLimit.Name())
}

// appendLeafDecisions appends to b, the tree's head (treeHead) and a
// leaf's key within the tree (classifier.leaf), what its entries'
// decisions say: everything a leaf of the tree being built is made from
// (its full key, the cache's key of the leaf).
func (c *compiler) appendLeafDecisions(b []byte, es []*entry) []byte {
	for _, e := range es {
		b = c.appendDecisionKey(b, e)
	}
	return b
}

// appendDecisionKey appends what e's decision and comments are made of.
func (c *compiler) appendDecisionKey(b []byte, e *entry) []byte {
	t := c.tag(e.tag) // what its String is made of
	b = binary.AppendUvarint(append(b, byte(t.Kind)), uint64(t.Index))
	b = binary.AppendUvarint(b, uint64(t.Gen))
	if e.deny {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendStr(b, e.comment)
	if e.fqdnSet != "" {
		b = appendStr(b, c.fqdnComments[e.fqdnSet])
	}
	return b
}

// reuseLeaf puts the last compile's leaf of key full (appendLeafDecisions) and what
// comes before it in the ruleset and returns its name; "" when there is
// none.
func (c *compiler) reuseLeaf(full string) string {
	if full == "" {
		return ""
	}
	c.cache.mu.Lock()
	l := c.cache.leaves[full]
	if l != nil {
		c.cache.leafHits++
	}
	c.cache.mu.Unlock()
	if l == nil {
		return ""
	}
	c.rs.Sets = append(c.rs.Sets, l.sets...)
	c.rs.Chains = append(append(c.rs.Chains, l.chains...), l.chain)
	c.reusing() // subtree.go
	for _, x := range l.sums {
		c.reused[x.name] = x.sum
	}
	c.building.hit = append(c.building.hit, keyedLeaf{full, l})
	return l.chain.Name
}

// builtLeaf records a leaf made by this compile.
func (c *compiler) builtLeaf(full string, ch *Chain) {
	if full != "" {
		bl := &builtLeaf{chain: ch}
		for _, r := range ch.Rules {
			for _, st := range r.Stmts {
				switch x := st.(type) {
				case MatchSet:
					bl.sets = append(bl.sets, x.Set)
				case Verdict:
					if x.Chain != "" {
						bl.chains = append(bl.chains, x.Chain)
					}
				}
			}
		}
		c.building.leaves = append(c.building.leaves, keyedBuilt{full, bl})
	}
}

// sameTree reports whether the cached tree t was built from what the tree
// of l is built from: the same head (treeHead: family, protocol and the
// config the decisions depend on) and the same entries in order — rule,
// log tag with its generation, action, comment, FQDN set and that set's
// content, intervals in every field (nil, any value, is not an empty
// list). The entries are compared one by one with those t was built from
// (a tree of 10,000 rules was hashed, megabytes of key, in every compile).
func (c *compiler) sameTree(t *cachedTree, head []byte, l []*entry) bool {
	if len(t.entries) != len(l) || string(t.head) != string(head) {
		return false
	}
	for i, e := range l {
		o := t.entries[i]
		if o == e {
			// The same entry (ruleRec): only its log generation and its
			// FQDN set's content can differ.
		} else if o.rule != e.rule || o.tag.Kind != e.tag.Kind || o.tag.Index != e.tag.Index || o.deny != e.deny ||
			o.fqdnSet != e.fqdnSet || o.comment != e.comment {
			return false
		} else {
			for f := range numFields {
				if !sameIvls(o.iv[f], e.iv[f]) {
					return false
				}
			}
		}
		if t.gens[i] != c.tag(e.tag).Gen {
			return false
		}
		if e.fqdnSet != "" && t.fqdnc[i] != c.fqdnComments[e.fqdnSet] {
			return false
		}
	}
	return true
}

// sameIvls reports whether a and b are the same intervals (nil, any
// value, is not an empty list).
func sameIvls(a, b []ivl) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Reset empties the cache (the next compile builds every tree).
func (c *Cache) Reset() {
	c.mu.Lock()
	c.trees, c.leaves = nil, nil
	c.shapes, c.ivIDs = nil, nil
	c.rules = nil
	c.eids = nil
	c.mu.Unlock()
}

// ivIDsMax is how many interval ids the cache keeps for a compile of n
// entries (a variable for the tests).
var ivIDsMax = func(n int) int { return 4*int(numFields)*n + 1<<16 }

// shapeIDs gives the entries of the tree of fam and proto about to be
// built their intervals' ids (entry.fid), and bt the tree's last shapes.
func (c *compiler) shapeIDs(fam family, proto uint8, l []*entry, bt *builtTree) {
	c.cache.mu.Lock()
	defer c.cache.mu.Unlock()
	if c.cache.shapes == nil {
		c.cache.shapes = map[famProto]*shapeCache{}
	}
	// The ids of intervals no entry has any more are kept (a rule changed
	// back finds its shapes); past a few times what this compile's entries
	// can have they are all dropped, with the shapes that refer to them.
	if len(c.cache.ivIDs) > ivIDsMax(c.nEntries) {
		c.cache.ivIDs = nil
		clear(c.cache.shapes)
	}
	if c.cache.ivIDs == nil {
		c.cache.ivIDs = make(map[string]uint32, len(l))
		c.cache.ivEpoch++ // the ids start again from 1
	}
	var b []byte
	for _, e := range l {
		if e.fidEpoch == c.cache.ivEpoch {
			continue // an entry of the last compile (ruleRec): its ids are of this map
		}
		e.fidEpoch = c.cache.ivEpoch
		for f := range numFields {
			b = append(b[:0], byte(f))
			if e.iv[f] != nil {
				b = binary.AppendUvarint(b, uint64(len(e.iv[f])))
				for _, iv := range e.iv[f] {
					b = appendIvl(b, iv)
				}
			}
			id, ok := c.cache.ivIDs[string(b)]
			if !ok {
				id = uint32(len(c.cache.ivIDs) + 1)
				c.cache.ivIDs[string(b)] = id
			}
			e.fid[f] = id
		}
	}
	bt.old = c.cache.shapes[famProto{fam, proto}]
	if bt.old == nil {
		bt.old = &shapeCache{}
	}
	bt.now = &shapeCache{shapes: make(map[string]*shape, len(bt.old.shapes)), parts: map[string]*partitioned{}}
}

// shape returns the key of the shape of es in the tree being built and
// the last build's shape of that key (nil: none, or no cache).
func (c *compiler) shape(cl *classifier, es []*entry, used uint8) (string, *shape) {
	bt := c.building
	if c.cache == nil || bt == nil || bt.now == nil {
		return "", nil
	}
	b := make([]byte, 0, 1+3*len(cl.fields)*len(es))
	b = append(b, used)
	for _, e := range es {
		for _, f := range cl.fields {
			b = binary.AppendUvarint(b, uint64(e.fid[f]))
		}
	}
	key := string(b)
	sh := bt.now.shapes[key]
	if sh == nil {
		if sh = bt.old.shapes[key]; sh != nil {
			bt.now.shapes[key] = sh
			c.cache.mu.Lock()
			c.cache.shapeHits++
			c.cache.mu.Unlock()
		}
	}
	return key, sh
}

// keepShape records the shape sh of key, found in this build.
func (c *compiler) keepShape(key string, sh *shape) {
	if key != "" {
		c.building.now.shapes[key] = sh
	}
}

// partitionOf is cl.partition of es on f within its budget, or the last
// build's partition of the same intervals on f.
func (c *compiler) partitionOf(cl *classifier, es []*entry, f field) partitioned {
	bt := c.building
	var key string
	if c.cache != nil && bt != nil && bt.now != nil && len(es) >= partMin {
		b := make([]byte, 0, 1+3*len(es))
		b = append(b, byte(f))
		for _, e := range es {
			b = binary.AppendUvarint(b, uint64(e.fid[f]))
		}
		key = string(b)
		if pt := bt.now.parts[key]; pt != nil {
			return *pt
		}
		if pt := bt.old.parts[key]; pt != nil {
			bt.now.parts[key] = pt
			c.cache.mu.Lock()
			c.cache.partHits++
			c.cache.mu.Unlock()
			return *pt
		}
	}
	var pt partitioned
	pt.pieces, pt.cost, pt.maxSize, pt.ok = cl.partition(es, f, budget(len(es)))
	if key != "" {
		bt.now.parts[key] = &pt
	}
	return pt
}

// ChangedRules reports, for each network rule of m, whether the last
// compile with c had no rule of its index built from the same (ruleRec):
// with a Cache the compile builds again the trees of such rules. Every
// rule is changed after Reset. The daemon so tells an apply that replaces
// the policy from one that changes a few rules.
func (c *Cache) ChangedRules(m *match.Matcher) []bool {
	c.mu.Lock()
	prev := c.rules
	c.mu.Unlock()
	rules := m.Rules(policy.KindNetwork)
	out := make([]bool, len(rules))
	for i := range rules {
		out[i] = i >= len(prev) || !prev[i].same(&rules[i])
	}
	return out
}

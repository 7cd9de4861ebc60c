package match

import (
	"encoding/binary"
	"math/bits"
	"slices"
	"sort"

	"github.com/clusterwall/clusterwall/internal/iprange"
)

// addrIndex indexes the destination address ranges of DNAT or network rules:
// one multibit trie per family with a stride of 8 bits (4 levels for IPv4,
// 16 for IPv6). A slot at level k lists the rules whose destination covers
// every address below the slot but not the whole parent slot, so on the path
// of an address each rule appears at most once, and the rules covering the
// address are exactly the union of the lists on its path.
//
// Nodes are compressed as in Poptrie: a 256-bit bitmap says which slots have
// a child (children are stored contiguously), another marks where the slot
// list changes (runs of equal lists share one leaf), and a popcount turns a
// byte into an array offset. Two common shapes skip the leaf bitmap and keep
// their leaves inline: a node whose slots all hold the same leaf (most inner
// nodes) and a node where at most two ranges of slots hold rules (most last
// levels). A node is 64 bytes, one cache line, and a lookup usually touches
// nothing else of it.
//
// Leaves are ruleLists leaves; equal lists are stored once.
type addrIndex struct {
	nodes    []trieNode
	leafBits [][4]uint64 // run starts of the nodes that are not uniform
	leaves   []uint32    // one leaf per run
	ruleLists
	root4 int32 // node index of the IPv4 root, -1 when no IPv4 ranges
	root6 int32
}

const (
	leafSingle = 1 << 31 // the leaf is one rule index
	// Values of trieNode.bits that are not an index into leafBits.
	uniform = ^uint32(0)
	sparse  = ^uint32(1)
)

type trieNode struct {
	childBits [4]uint64
	childCum  [4]uint8 // set bits of childBits in the words before
	childBase uint32   // node index of the first child
	bits      uint32   // index into leafBits, uniform or sparse
	leafCum   [4]uint8 // set bits of leafBits[bits] in the words before
	leafBase  uint32   // index into leaves of the first run; the leaf when uniform
	// sparse: slots spLo[i]..spHi[i] hold spLeaf[i], all others nothing
	spLeaf [2]uint32
	spLo   [2]uint8
	spHi   [2]uint8
}

// lookup returns the lowest rule index below best whose destination holds
// f.dst and whose protocol, port and source match f (best when none).
// f.dst must be valid.
//
// It walks the trie first, collecting the (at most 16) non-empty leaves on
// the path, then merges them by rule index, checking candidates in
// evaluation order: the first that matches is the answer, and no rule
// after it is looked at.
func (x *addrIndex) lookup(rules *ruleTable, f *flowKey, best int32) int32 {
	a := f.dst.v6
	k, ni := 0, x.root6
	if f.dst.is4 {
		k, ni = 12, x.root4
	}
	// A cursor's head is its next candidate; lists[p:e] follow it.
	type cursor struct {
		head int32
		p, e uint32
	}
	var (
		cur [16]cursor
		nc  int
	)
	for ni >= 0 {
		n := &x.nodes[ni]
		b := a.Byte(k)
		w := b >> 6
		sh := 63 - (b & 63)
		var leaf uint32
		switch n.bits {
		case uniform:
			leaf = n.leafBase
		case sparse:
			if n.spLo[0] <= b && b <= n.spHi[0] {
				leaf = n.spLeaf[0]
			} else if n.spLo[1] <= b && b <= n.spHi[1] {
				leaf = n.spLeaf[1]
			}
		default:
			leaf = x.leaves[n.leafBase+uint32(n.leafCum[w])+uint32(bits.OnesCount64(x.leafBits[n.bits][w]<<sh))-1]
		}
		switch {
		case leaf == 0:
		case leaf&leafSingle != 0:
			cur[nc] = cursor{head: int32(leaf &^ leafSingle)}
			nc++
		default:
			p := x.listOff[leaf]
			cur[nc] = cursor{x.lists[p], p + 1, x.listOff[leaf+1]}
			nc++
		}
		cb := n.childBits[w] << sh
		if cb>>63 == 0 || k == 15 {
			break
		}
		ni = int32(n.childBase + uint32(n.childCum[w]) + uint32(bits.OnesCount64(cb)) - 1)
		k++
	}
	for nc > 0 {
		mi, mv := 0, cur[0].head
		for j := 1; j < nc; j++ {
			if v := cur[j].head; v < mv {
				mi, mv = j, v
			}
		}
		if mv >= best {
			break
		}
		if rules.matchNet(mv, f) {
			return mv
		}
		if c := &cur[mi]; c.p < c.e {
			c.head = x.lists[c.p]
			c.p++
		} else {
			nc--
			cur[mi] = cur[nc]
		}
	}
	return best
}

// trieBuilder collects ranges in uncompressed nodes.
type trieBuilder struct {
	root4, root6 *bnode
}

type bnode struct {
	entries []bentry // in increasing rule order
	// Children: a short list while there are few, a full table after.
	keys []byte
	kids []*bnode
	full *[256]*bnode
}

// bentry puts rule ri on slots lo..hi.
type bentry struct {
	lo, hi uint8
	ri     int32
}

// kid returns the child for slot b, creating it.
func (n *bnode) kid(b byte) *bnode {
	if n.full != nil {
		if n.full[b] == nil {
			n.full[b] = &bnode{}
		}
		return n.full[b]
	}
	for i, k := range n.keys {
		if k == b {
			return n.kids[i]
		}
	}
	c := &bnode{}
	n.keys = append(n.keys, b)
	n.kids = append(n.kids, c)
	if len(n.keys) > 16 {
		n.full = new([256]*bnode)
		for i, k := range n.keys {
			n.full[k] = n.kids[i]
		}
		n.keys, n.kids = nil, nil
	}
	return c
}

// children returns the children in slot order.
func (n *bnode) children(keys []byte, kids []*bnode) ([]byte, []*bnode) {
	if n.full != nil {
		for k, c := range n.full {
			if c != nil {
				keys, kids = append(keys, byte(k)), append(kids, c)
			}
		}
		return keys, kids
	}
	keys, kids = append(keys, n.keys...), append(kids, n.kids...)
	for i := 1; i < len(keys); i++ { // insertion sort: at most 16
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
			kids[j], kids[j-1] = kids[j-1], kids[j]
		}
	}
	return keys, kids
}

// add indexes the addresses of s for rule ri. Rules must be added in
// evaluation order.
func (b *trieBuilder) add(s *addrSet, ri int32) {
	if s.any {
		s = &addrSet{v4: []range4{{0, ^uint32(0)}}, v6: []range6{{Lo: iprange.U128{}, Hi: iprange.Max}}}
	}
	for _, r := range s.v4 {
		if b.root4 == nil {
			b.root4 = &bnode{}
		}
		var lo, hi [16]byte
		binary.BigEndian.PutUint32(lo[12:], r.lo)
		binary.BigEndian.PutUint32(hi[12:], r.hi)
		insertRange(b.root4, lo, hi, 12, ri)
	}
	for _, r := range s.v6 {
		if b.root6 == nil {
			b.root6 = &bnode{}
		}
		insertRange(b.root6, r.Lo.Addr6().As16(), r.Hi.Addr6().As16(), 0, ri)
	}
}

// insertRange puts lo..hi (which agree on the bytes before k) below n: the
// slots of n that the range covers completely get the rule, the partly
// covered slots at either end recurse.
func insertRange(n *bnode, lo, hi [16]byte, k int, ri int32) {
	loFull, hiFull := true, true
	for j := k + 1; j < 16; j++ {
		loFull = loFull && lo[j] == 0
		hiFull = hiFull && hi[j] == 0xff
	}
	sa, sb := lo[k], hi[k]
	if sa == sb {
		if loFull && hiFull {
			n.entries = append(n.entries, bentry{sa, sa, ri})
		} else {
			insertRange(n.kid(sa), lo, hi, k+1, ri)
		}
		return
	}
	first, last := int(sa), int(sb)
	if !loFull {
		end := lo
		for j := k + 1; j < 16; j++ {
			end[j] = 0xff
		}
		insertRange(n.kid(sa), lo, end, k+1, ri)
		first++
	}
	if !hiFull {
		start := hi
		for j := k + 1; j < 16; j++ {
			start[j] = 0
		}
		insertRange(n.kid(sb), start, hi, k+1, ri)
		last--
	}
	if first <= last {
		n.entries = append(n.entries, bentry{uint8(first), uint8(last), ri})
	}
}

// build compresses the collected nodes breadth first, so that the children
// of each node are contiguous.
func (b *trieBuilder) build() addrIndex {
	x := addrIndex{root4: -1, root6: -1, ruleLists: newRuleLists()}
	type item struct {
		n   *bnode
		idx int32
	}
	total := countNodes(b.root4) + countNodes(b.root6)
	x.nodes = make([]trieNode, 0, total)
	x.leaves = make([]uint32, 0, total)
	queue := make([]item, 0, total)
	for _, r := range []struct {
		n   *bnode
		dst *int32
	}{{b.root4, &x.root4}, {b.root6, &x.root6}} {
		if r.n != nil {
			*r.dst = int32(len(x.nodes))
			x.nodes = append(x.nodes, trieNode{})
			queue = append(queue, item{r.n, *r.dst})
		}
	}
	in := interner{ids: map[string]uint32{}}
	var (
		bounds  []int
		members [][]int32
		keys    []byte
		kids    []*bnode
	)
	for qi := 0; qi < len(queue); qi++ {
		it := queue[qi]
		var tn trieNode

		// Leaves: cut 0..255 into segments at every entry boundary, list
		// the rules of each segment, and start a run where the list changes.
		var runs [4]uint64
		bounds = append(bounds[:0], 0)
		for _, e := range it.n.entries {
			bounds = append(bounds, int(e.lo), int(e.hi)+1)
		}
		slices.Sort(bounds)
		bounds = slices.Compact(bounds)
		if bounds[len(bounds)-1] == 256 {
			bounds = bounds[:len(bounds)-1]
		}
		for len(members) < len(bounds) {
			members = append(members, nil)
		}
		for i := range bounds {
			members[i] = members[i][:0]
		}
		for _, e := range it.n.entries {
			for s := sort.SearchInts(bounds, int(e.lo)); s < len(bounds) && bounds[s] <= int(e.hi); s++ {
				members[s] = append(members[s], e.ri)
			}
		}
		prev, nruns, nonEmpty := ^uint32(0), 0, 0
		start0 := len(x.leaves)
		for i, start := range bounds {
			leaf := in.intern(&x.ruleLists, members[i])
			if leaf != prev {
				runs[start>>6] |= 1 << (start & 63)
				x.leaves = append(x.leaves, leaf)
				prev = leaf
				nruns++
				if leaf != 0 {
					nonEmpty++
				}
			}
		}
		switch {
		case nruns == 1:
			tn.bits, tn.leafBase = uniform, x.leaves[start0]
			x.leaves = x.leaves[:start0]
		case nonEmpty <= 2:
			tn.bits = sparse
			tn.spLo, tn.spHi = [2]uint8{1, 1}, [2]uint8{0, 0} // empty ranges
			j, r := 0, 0
			for s := 0; s < 256; s++ {
				if runs[s>>6]&(1<<(s&63)) == 0 {
					continue
				}
				if leaf := x.leaves[start0+r]; leaf != 0 {
					end := 255
					for e := s + 1; e < 256; e++ {
						if runs[e>>6]&(1<<(e&63)) != 0 {
							end = e - 1
							break
						}
					}
					tn.spLo[j], tn.spHi[j], tn.spLeaf[j] = uint8(s), uint8(end), leaf
					j++
				}
				r++
			}
			x.leaves = x.leaves[:start0]
			runs = [4]uint64{}
		default:
			tn.bits, tn.leafBase = uint32(len(x.leafBits)), uint32(start0)
			x.leafBits = append(x.leafBits, runs)
		}

		// Children, in slot order.
		keys, kids = it.n.children(keys[:0], kids[:0])
		tn.childBase = uint32(len(x.nodes))
		for i, k := range keys {
			tn.childBits[k>>6] |= 1 << (k & 63)
			queue = append(queue, item{kids[i], int32(len(x.nodes))})
			x.nodes = append(x.nodes, trieNode{})
		}
		for w := 1; w < 4; w++ {
			tn.childCum[w] = tn.childCum[w-1] + uint8(bits.OnesCount64(tn.childBits[w-1]))
			tn.leafCum[w] = tn.leafCum[w-1] + uint8(bits.OnesCount64(runs[w-1]))
		}
		x.nodes[it.idx] = tn
		queue[qi].n = nil // let the builder node go
	}
	return x
}

func countNodes(n *bnode) int {
	if n == nil {
		return 0
	}
	c := 1
	for _, k := range n.kids {
		c += countNodes(k)
	}
	if n.full != nil {
		for _, k := range n.full {
			c += countNodes(k)
		}
	}
	return c
}

// ruleLists stores lists of rule indices for the indexes' leaves. A leaf
// is 0 (no rule), a single rule index tagged with leafSingle, or the ID of
// a stored list.
type ruleLists struct {
	lists   []int32  // all lists, each sorted
	listOff []uint32 // list i is lists[listOff[i]:listOff[i+1]]; list 0 is empty
}

func newRuleLists() ruleLists { return ruleLists{listOff: []uint32{0, 0}} }

// leaf stores l (sorted) and returns its leaf.
func (s *ruleLists) leaf(l []int32) uint32 {
	switch len(l) {
	case 0:
		return 0
	case 1:
		return leafSingle | uint32(l[0])
	}
	id := uint32(len(s.listOff) - 1)
	s.lists = append(s.lists, l...)
	s.listOff = append(s.listOff, uint32(len(s.lists)))
	return id
}

// interner stores each distinct list once.
type interner struct {
	ids map[string]uint32
	key []byte
}

// intern returns the leaf for list l.
func (in *interner) intern(s *ruleLists, l []int32) uint32 {
	if len(l) < 2 {
		return s.leaf(l)
	}
	in.key = in.key[:0]
	for _, ri := range l {
		in.key = binary.LittleEndian.AppendUint32(in.key, uint32(ri))
	}
	if id, ok := in.ids[string(in.key)]; ok {
		return id
	}
	id := s.leaf(l)
	in.ids[string(in.key)] = id
	return id
}

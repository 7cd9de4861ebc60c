package match

import (
	"strings"

	"github.com/clusterwall/clusterwall/internal/ascii"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// nameIndex indexes the target FQDNs of application rules in a trie of
// reversed, lower-cased labels: "api.contoso.com" is root → com → contoso →
// api. Every list holds rule indices in evaluation order.
//
//   - "*" lists the rule at the root (any non-empty name);
//   - "contoso.com" at contoso's node, in exact: the name ends there;
//   - "*.contoso.com" at contoso's node, in sub: more labels follow;
//   - "*contoso.com" (a suffix not on a label boundary) at com's node as a
//     suffix entry "contoso": it matches when the next label of the name
//     ends with "contoso", whatever comes before.
//
// The nodes below the root live in one open-addressing hash table keyed by
// (parent, label): a node is the 64-byte slot it hashes to, holding its
// label (inline up to 38 bytes) and its leaves. A step down the trie hashes
// the label while finding its start (one pass from the end, lower casing on
// the fly), usually reads one slot — one cache line — and allocates
// nothing.
//
// Suffix entries live in a second table keyed by (node, label hash). The
// running hash over the last k bytes of a label is exactly the hash of that
// k-byte suffix, so while reading a label the lookup probes the table at
// each k that is the length of some suffix entry of the node (a 64-bit mask
// per node): at most one probe per byte, whatever the number of entries.
type nameIndex struct {
	rootSufLens uint64
	rootKids    bool
	slots       []nameSlot // len is a power of two, at most half full
	mask        uint32
	sufs        []suffixSlot // len is a power of two, at most half full
	sufMask     uint32
	long        map[int32]string // labels longer than nameSlot.short, by slot
	any         uint32           // leaf of the '*' rules
	ruleLists
}

// nameSlot is one node below the root (or an empty slot: n == 0). exact
// and sub are ruleLists leaves.
type nameSlot struct {
	hash    uint32 // labelHash(label)
	parent  int32  // slot of the parent, rootSlot for the root
	exact   uint32
	sub     uint32
	sufLens uint64 // bit k: the node has a suffix entry of length k
	n       uint8  // label length; labels are never empty
	kids    bool
	short   [38]byte
}

// rootSlot stands for the root where a slot index is expected.
const rootSlot = -1

// suffixSlot is the suffix entry "*<label>.<node's name>" (or an empty
// slot: rules == 0).
type suffixSlot struct {
	hash  uint32 // labelHash(label)
	node  int32
	rules uint32 // leaf
	label string // lower case, non-empty
}

const fnvOffset, fnvPrime = 2166136261, 16777619

// labelHash is FNV-1a over the ASCII-lower-cased bytes of label, last byte
// first (the order lookup reads a name in).
func labelHash(label string) uint32 {
	h := uint32(fnvOffset)
	for i := len(label) - 1; i >= 0; i-- {
		c := ascii.Lower(label[i])
		h = (h ^ uint32(c)) * fnvPrime
	}
	return h
}

func slotHash(parent int32, h uint32) uint32 {
	x := h ^ uint32(parent)*0x9e3779b1
	x ^= x >> 15
	x *= 0x2c1b3c6d
	x ^= x >> 12
	return x
}

// child returns the slot of parent's child for label (any case, hash h),
// or -1.
func (x *nameIndex) child(parent int32, label string, h uint32) int32 {
	for i := slotHash(parent, h) & x.mask; ; i = (i + 1) & x.mask {
		s := &x.slots[i]
		if s.n == 0 {
			return -1
		}
		if s.hash == h && s.parent == parent && x.hasLabel(int32(i), s, label) {
			return int32(i)
		}
	}
}

// suffix returns the leaf of node's suffix entry for suffix (any case, hash
// h), or 0.
func (x *nameIndex) suffix(node int32, h uint32, suffix string) uint32 {
	for i := slotHash(node, h) & x.sufMask; ; i = (i + 1) & x.sufMask {
		s := &x.sufs[i]
		if s.rules == 0 {
			return 0
		}
		if s.hash == h && s.node == node && ascii.EqualFoldLower(suffix, s.label) {
			return s.rules
		}
	}
}

// hasLabel reports whether slot i's label is l (any case).
func (x *nameIndex) hasLabel(i int32, s *nameSlot, l string) bool {
	if int(s.n) != len(l) {
		return false
	}
	if len(l) > len(s.short) {
		return ascii.EqualFoldLower(l, x.long[i])
	}
	for j := 0; j < len(l); j++ {
		c := ascii.Lower(l[j])
		if c != s.short[j] {
			return false
		}
	}
	return true
}

// lookup returns the lowest index of an application rule whose target FQDNs
// match name and whose (scheme, port) and source match f; none when no rule
// does.
func (x *nameIndex) lookup(rules *ruleTable, f *flowKey, name string, scheme policy.Scheme) int32 {
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	if name == "" {
		return none
	}
	best := x.scan(rules, x.any, none, f, scheme)
	node := int32(rootSlot)
	sufLens, kids := x.rootSufLens, x.rootKids
	end := len(name)
	for {
		// Find the label before end and hash it on the way; where the
		// suffix read so far has the length of one of the node's suffix
		// entries, look that entry up.
		h := uint32(fnvOffset)
		i := end - 1
		for ; i >= 0; i-- {
			c := ascii.Lower(name[i])
			if c == '.' {
				break
			}
			h = (h ^ uint32(c)) * fnvPrime
			if k := end - i; k < 64 && sufLens&(1<<k) != 0 {
				if leaf := x.suffix(node, h, name[i:end]); leaf != 0 {
					best = x.scan(rules, leaf, best, f, scheme)
				}
			}
		}
		label := name[i+1 : end]
		if !kids {
			break
		}
		if node = x.child(node, label, h); node < 0 {
			break
		}
		s := &x.slots[node]
		if i < 0 {
			best = x.scan(rules, s.exact, best, f, scheme)
			break
		}
		if i > 0 {
			// name is X + "." + this node's name with X non-empty.
			best = x.scan(rules, s.sub, best, f, scheme)
		}
		sufLens, kids = s.sufLens, s.kids
		end = i
	}
	return best
}

// scan returns the first rule of leaf below best that matches f, or best.
func (x *nameIndex) scan(rules *ruleTable, leaf uint32, best int32, f *flowKey, scheme policy.Scheme) int32 {
	switch {
	case leaf == 0:
		return best
	case leaf&leafSingle != 0:
		if ri := int32(leaf &^ leafSingle); ri < best && rules.matchApp(ri, f, scheme) {
			return ri
		}
		return best
	}
	for _, ri := range x.lists[x.listOff[leaf]:x.listOff[leaf+1]] {
		if ri >= best {
			break
		}
		if rules.matchApp(ri, f, scheme) {
			return ri
		}
	}
	return best
}

type edgeKey struct {
	parent int32
	label  string
}

// buildNode is a node under construction; node 0 is the root, and a parent
// is always created before its children.
type buildNode struct {
	parent     int32
	label      string
	exact, sub []int32
	suffixes   []buildSuffix
	kids       bool
}

type buildSuffix struct {
	label string
	rules []int32
}

type nameBuilder struct {
	nodes  []buildNode
	any    []int32
	edges  map[edgeKey]int32 // (parent, label) -> child
	sufIdx map[edgeKey]int   // (node, label) -> index in the node's suffixes
}

// init sizes the builder for about n patterns.
func (b *nameBuilder) init(n int) {
	b.nodes = make([]buildNode, 1, n+16)
	b.edges = make(map[edgeKey]int32, n+16)
	b.sufIdx = map[edgeKey]int{}
}

// add indexes a normalised (lower-case) pattern for rule ri. Rules must be
// added in evaluation order.
func (b *nameBuilder) add(p policy.FQDNPattern, ri int32) {
	switch p.Kind {
	case policy.FQDNAny:
		b.any = appendRule(b.any, ri)
	case policy.FQDNExact:
		n := &b.nodes[b.node(p.Name)]
		n.exact = appendRule(n.exact, ri)
	case policy.FQDNSubdomains:
		n := &b.nodes[b.node(p.Name)]
		n.sub = appendRule(n.sub, ri)
	case policy.FQDNSuffix:
		if b.nodes == nil {
			b.init(0)
		}
		first, rest, _ := strings.Cut(p.Name, ".")
		id := b.node(rest)
		n := &b.nodes[id]
		k := edgeKey{id, first}
		if i, ok := b.sufIdx[k]; ok {
			n.suffixes[i].rules = appendRule(n.suffixes[i].rules, ri)
			return
		}
		b.sufIdx[k] = len(n.suffixes)
		n.suffixes = append(n.suffixes, buildSuffix{label: first, rules: []int32{ri}})
	}
}

// node returns the node of name (the root for ""), creating the path.
func (b *nameBuilder) node(name string) int32 {
	if b.nodes == nil {
		b.init(0)
	}
	n := int32(0)
	for name != "" {
		var label string
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			label, name = name[i+1:], name[:i]
		} else {
			label, name = name, ""
		}
		k := edgeKey{n, label}
		c, ok := b.edges[k]
		if !ok {
			c = int32(len(b.nodes))
			b.nodes = append(b.nodes, buildNode{parent: n, label: label})
			b.nodes[n].kids = true
			b.edges[k] = c
		}
		n = c
	}
	return n
}

// appendRule appends ri unless the list already ends with it (a rule with
// two patterns that land in the same list).
func appendRule(l []int32, ri int32) []int32 {
	if n := len(l); n > 0 && l[n-1] == ri {
		return l
	}
	return append(l, ri)
}

func (b *nameBuilder) build() nameIndex {
	if b.nodes == nil {
		b.init(0)
	}
	x := nameIndex{ruleLists: newRuleLists()}
	x.any = x.leaf(b.any)
	x.rootKids = b.nodes[0].kids

	size, nsuf := 2, 0
	for size < 2*len(b.nodes) {
		size *= 2
	}
	x.slots = make([]nameSlot, size)
	x.mask = uint32(size - 1)
	slotOf := make([]int32, len(b.nodes))
	slotOf[0] = rootSlot
	for id := 1; id < len(b.nodes); id++ { // parents come before children
		bn := &b.nodes[id]
		parent := slotOf[bn.parent]
		h := labelHash(bn.label)
		i := slotHash(parent, h) & x.mask
		for x.slots[i].n != 0 {
			i = (i + 1) & x.mask
		}
		slotOf[id] = int32(i)
		s := nameSlot{hash: h, parent: parent, exact: x.leaf(bn.exact), sub: x.leaf(bn.sub), n: uint8(len(bn.label)), kids: bn.kids}
		if len(bn.label) > len(s.short) {
			if x.long == nil {
				x.long = map[int32]string{}
			}
			x.long[int32(i)] = bn.label
		} else {
			copy(s.short[:], bn.label)
		}
		x.slots[i] = s
		nsuf += len(bn.suffixes)
	}
	nsuf += len(b.nodes[0].suffixes)

	size = 2
	for size < 2*nsuf {
		size *= 2
	}
	x.sufs = make([]suffixSlot, size)
	x.sufMask = uint32(size - 1)
	for id := range b.nodes {
		bn := &b.nodes[id]
		node := slotOf[id]
		for _, se := range bn.suffixes {
			if id == 0 {
				x.rootSufLens |= 1 << len(se.label)
			} else {
				x.slots[node].sufLens |= 1 << len(se.label)
			}
			h := labelHash(se.label)
			i := slotHash(node, h) & x.sufMask
			for x.sufs[i].rules != 0 {
				i = (i + 1) & x.sufMask
			}
			x.sufs[i] = suffixSlot{hash: h, node: node, rules: x.leaf(se.rules), label: se.label}
		}
	}
	*b = nameBuilder{}
	return x
}

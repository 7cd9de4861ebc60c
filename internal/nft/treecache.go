package nft

import (
	"encoding/binary"
	"sync"
)

// Cache keeps the classifier trees (one per family and protocol, see
// classifier) of the last compile that used it, with their chains and sets
// under their final names, keyed by everything a tree is built from: its
// family and protocol, its entries in order (rule, log tag with its
// generation, action, comment, intervals, FQDN set and that set's
// content) and the config the decisions depend on. A compile whose tree
// has the same key takes the tree's objects as they are instead of
// classifying and naming them again: when one rule changes, only the trees
// of its families and protocols are built.
//
// A tree is built as if it were the only one (its decision chains and
// interned sets are its own; the namer makes the copies across trees one,
// keeping the first), so a reused tree puts the same objects in the same
// places as a built one, and CompileCached's result is Compile's.
//
// The zero value is an empty cache. A Cache may be shared by compiles that
// do not run at the same time; the chains and sets it hands out are those
// of earlier rulesets (they are not changed after a compile).
type Cache struct {
	mu    sync.Mutex
	trees map[string]*cachedTree

	hits, built int // trees reused and built, for the tests
}

type cachedTree struct {
	chains []*Chain // in the order the tree made them, final names
	sets   []*Set
	root   string
	sums   map[string][hashSize]byte // final names -> the namer's sums
	stats  treeStats
}

type treeStats struct {
	leaves, maps, elems, maxSeq int
}

// builtTree is a tree of the compile under way.
type builtTree struct {
	key    string
	chains []*Chain // provisional names until naming
	sets   []*Set
	root   string
	stats  treeStats
	reused *cachedTree
}

// tree classifies the entries l of a family and protocol, or takes the
// cache's tree for them; it returns the chain to jump to and the tree's
// longest path (classifier.maxSeq).
func (c *compiler) tree(fam family, proto uint8, l []*entry) (string, int) {
	var key string
	if c.cache != nil {
		key = c.treeKey(fam, proto, l)
		c.cache.mu.Lock()
		t := c.cache.trees[key]
		if t != nil {
			c.cache.hits++
		} else {
			c.cache.built++
		}
		c.cache.mu.Unlock()
		if t != nil {
			c.rs.Chains = append(c.rs.Chains, t.chains...)
			c.rs.Sets = append(c.rs.Sets, t.sets...)
			if c.reused == nil {
				c.reused = make(map[string][hashSize]byte, len(t.sums))
			}
			for k, v := range t.sums {
				c.reused[k] = v
			}
			c.rs.Stats.Leaves += t.stats.leaves
			c.rs.Stats.DispatchMaps += t.stats.maps
			c.rs.Stats.MapElements += t.stats.elems
			c.trees = append(c.trees, &builtTree{key: key, reused: t})
			return t.root, t.stats.maxSeq
		}
	}
	before := c.rs.Stats
	nc, ns := len(c.rs.Chains), len(c.rs.Sets)
	c.decided = map[string]string{}
	c.treeInterned = map[string]string{}
	cl := newClassifier(c, fam, proto, len(l))
	root := cl.root(l)
	st := treeStats{
		leaves: c.rs.Stats.Leaves - before.Leaves,
		maps:   c.rs.Stats.DispatchMaps - before.DispatchMaps,
		elems:  c.rs.Stats.MapElements - before.MapElements,
		maxSeq: cl.maxSeq(),
	}
	if c.cache != nil && root != "" {
		c.trees = append(c.trees, &builtTree{key: key, root: root, stats: st,
			chains: append([]*Chain(nil), c.rs.Chains[nc:]...),
			sets:   append([]*Set(nil), c.rs.Sets[ns:]...)})
	}
	return root, st.maxSeq
}

// keep makes the cache hold this compile's trees (and only them), once n
// has named the ruleset.
func (c *compiler) keep(n *namer) {
	if c.cache == nil {
		return
	}
	trees := make(map[string]*cachedTree, len(c.trees))
	for _, b := range c.trees {
		if b.reused != nil {
			trees[b.key] = b.reused
			continue
		}
		t := &cachedTree{chains: b.chains, sets: b.sets, root: n.chainTo[b.root], stats: b.stats,
			sums: make(map[string][hashSize]byte, len(b.chains)+len(b.sets))}
		for _, ch := range b.chains {
			t.sums[ch.Name] = n.sums[ch.Name]
		}
		for _, s := range b.sets {
			t.sums[s.Name] = n.sums[s.Name]
		}
		trees[b.key] = t
	}
	c.cache.mu.Lock()
	c.cache.trees = trees
	c.cache.mu.Unlock()
}

// treeKey is everything the tree of l is built from.
func (c *compiler) treeKey(fam family, proto uint8, l []*entry) string {
	b := make([]byte, 0, 96*len(l))
	lim := byte(0)
	if c.cfg.LimitRuleLogs {
		lim = 1
	}
	b = append(b, byte(fam), proto, lim)
	b = binary.BigEndian.AppendUint16(b, c.cfg.LogGroup)
	b = appendStr(b, c.rs.LogLimit.Name())
	for _, e := range l {
		b = binary.AppendUvarint(b, uint64(e.rule))
		t := c.tag(e.tag) // what its String is made of
		b = binary.AppendUvarint(append(b, byte(t.Kind)), uint64(t.Index))
		b = binary.AppendUvarint(b, uint64(t.Gen))
		if e.deny {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
		b = appendStr(b, e.comment)
		b = appendStr(b, e.fqdnSet)
		if e.fqdnSet != "" {
			b = appendStr(b, c.fqdnComments[e.fqdnSet])
		}
		for f := range numFields {
			if e.iv[f] == nil {
				b = append(b, 0)
				continue
			}
			b = binary.AppendUvarint(b, uint64(len(e.iv[f])+1))
			for _, iv := range e.iv[f] {
				b = appendIvl(b, iv)
			}
		}
	}
	return string(b)
}

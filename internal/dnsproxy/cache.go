package dnsproxy

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/clusterwall/clusterwall/internal/recovery"
)

// cacheKey identifies a cached answer: the canonical name, type and class,
// and the DO and CD bits (they change what upstreams return).
type cacheKey struct {
	name   string
	qtype  uint16
	qclass uint16
	bits   uint8
}

const (
	keyDO = 1 << iota
	keyCD
)

func keyOf(q *query) cacheKey {
	k := cacheKey{name: q.name, qtype: q.qtype, qclass: q.qclass}
	if q.do {
		k.bits |= keyDO
	}
	if q.cd() {
		k.bits |= keyCD
	}
	return k
}

const cacheShards = 16

// cache is a bounded answer cache: a fixed number of shards, each a map
// plus a CLOCK ring (second-chance approximation of LRU: a hit only sets a
// bit, so lookups take a read lock). Entries are bounded in number and in
// bytes; expired entries are misses and are the first to be replaced.
type cache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
	hits   atomic.Uint64
	misses atomic.Uint64
	evicts atomic.Uint64
}

type cacheShard struct {
	mu       sync.RWMutex
	index    map[cacheKey]int
	slots    []cacheSlot
	hand     int
	bytes    int
	maxItems int
	maxBytes int
}

type cacheSlot struct {
	key  cacheKey
	resp *response
	ref  atomic.Bool
}

func newCache(items, bytes int) *cache {
	c := &cache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].index = make(map[cacheKey]int)
	}
	c.resize(items, bytes)
	return c
}

// resize sets the bounds; a smaller cache shrinks as entries are replaced.
func (c *cache) resize(items, bytes int) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.maxItems = max(1, items/cacheShards)
		s.maxBytes = max(4096, bytes/cacheShards)
		s.mu.Unlock()
	}
}

func (c *cache) shard(k *cacheKey) *cacheShard {
	h := maphash.String(c.seed, k.name)
	return &c.shards[(h^uint64(k.qtype))%cacheShards]
}

// get returns the live entry for k, or nil.
func (c *cache) get(k cacheKey, now int64) *response {
	s := c.shard(&k)
	s.mu.RLock()
	i, ok := s.index[k]
	var r *response
	if ok {
		slot := &s.slots[i]
		if slot.resp.expires > now {
			r = slot.resp
			if !slot.ref.Load() {
				slot.ref.Store(true)
			}
		}
	}
	s.mu.RUnlock()
	if r == nil {
		c.misses.Add(1)
	} else {
		c.hits.Add(1)
	}
	return r
}

// put stores r under k.
func (c *cache) put(k cacheKey, r *response, now int64) {
	size := len(r.wire) + len(k.name) + 64
	s := c.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	defer recovery.Critical("dns cache") // a half-done put leaves the shard inconsistent
	if size > s.maxBytes {
		return
	}
	if i, ok := s.index[k]; ok {
		slot := &s.slots[i]
		s.bytes += size - slotSize(slot)
		slot.resp = r
		slot.ref.Store(false)
		return
	}
	for len(s.slots) > 0 && (len(s.slots) >= s.maxItems || s.bytes+size > s.maxBytes) {
		// Replace in place when the ring is full by count; otherwise (full
		// by bytes) evict and compact.
		i := s.victim(now)
		old := &s.slots[i]
		delete(s.index, old.key)
		s.bytes -= slotSize(old)
		c.evicts.Add(1)
		if len(s.slots) <= s.maxItems && s.bytes+size <= s.maxBytes {
			old.key, old.resp = k, r
			old.ref.Store(false)
			s.index[k] = i
			s.bytes += size
			return
		}
		last := len(s.slots) - 1
		if i != last {
			s.slots[i].key = s.slots[last].key
			s.slots[i].resp = s.slots[last].resp
			s.slots[i].ref.Store(s.slots[last].ref.Load())
			s.index[s.slots[i].key] = i
		}
		s.slots[last] = cacheSlot{}
		s.slots = s.slots[:last]
		if s.hand >= len(s.slots) {
			s.hand = 0
		}
	}
	s.slots = append(s.slots, cacheSlot{key: k, resp: r})
	s.index[k] = len(s.slots) - 1
	s.bytes += size
}

func slotSize(s *cacheSlot) int { return len(s.resp.wire) + len(s.key.name) + 64 }

// victim advances the clock hand to an entry to replace: an expired one, or
// one not used since the hand last passed.
func (s *cacheShard) victim(now int64) int {
	for range 2*len(s.slots) + 1 {
		i := s.hand
		s.hand = (s.hand + 1) % len(s.slots)
		slot := &s.slots[i]
		if slot.resp.expires <= now || !slot.ref.Load() {
			return i
		}
		slot.ref.Store(false)
	}
	return s.hand
}

// fill returns the entries (live or expired) and their bytes.
func (c *cache) fill() (entries, bytes int) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		entries += len(s.slots)
		bytes += s.bytes
		s.mu.RUnlock()
	}
	return entries, bytes
}

// len returns the number of entries (live or expired).
func (c *cache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.slots)
		s.mu.RUnlock()
	}
	return n
}

// peek returns the live entry for k without counting a hit or a miss and
// without marking it used.
func (c *cache) peek(k cacheKey, now int64) *response {
	s := c.shard(&k)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if i, ok := s.index[k]; ok && s.slots[i].resp.expires > now {
		return s.slots[i].resp
	}
	return nil
}

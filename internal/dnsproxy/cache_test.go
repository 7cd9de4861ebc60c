package dnsproxy

import (
	"fmt"
	"testing"
	"time"
)

func testResp(size int, expires int64) *response {
	return &response{wire: make([]byte, size), expires: expires}
}

func TestCacheBounds(t *testing.T) {
	now := time.Now().UnixNano()
	later := now + int64(time.Hour)
	tests := []struct {
		name      string
		items     int
		bytes     int
		respSize  int
		maxItems  int
		maxBytesT int
	}{
		{"by count", 160, 1 << 30, 100, 160, 1 << 30},
		{"by bytes", 1 << 20, 160 * 1024, 1000, 1 << 20, 160 * 1024},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(tc.items, tc.bytes)
			for i := range 10_000 {
				c.put(cacheKey{name: fmt.Sprintf("n%d.example", i), qtype: 1, qclass: 1}, testResp(tc.respSize, later), now)
			}
			if n := c.len(); n > tc.maxItems {
				t.Errorf("%d entries, bound %d", n, tc.maxItems)
			}
			total := 0
			for i := range c.shards {
				total += c.shards[i].bytes
			}
			if total > tc.maxBytesT {
				t.Errorf("%d bytes, bound %d", total, tc.maxBytesT)
			}
			if c.evicts.Load() == 0 {
				t.Error("no evictions")
			}
			// Every index entry points at its slot.
			for i := range c.shards {
				s := &c.shards[i]
				if len(s.index) != len(s.slots) {
					t.Fatalf("shard %d: index %d slots %d", i, len(s.index), len(s.slots))
				}
				for k, j := range s.index {
					if s.slots[j].key != k {
						t.Fatalf("shard %d: index for %v points at %v", i, k, s.slots[j].key)
					}
				}
			}
		})
	}
}

func TestCacheClockKeepsHotEntries(t *testing.T) {
	now := time.Now().UnixNano()
	later := now + int64(time.Hour)
	c := newCache(16*8, 1<<30) // 8 per shard
	hot := cacheKey{name: "hot.example", qtype: 1, qclass: 1}
	c.put(hot, testResp(10, later), now)
	for i := range 1000 {
		if c.get(hot, now) == nil {
			t.Fatalf("hot entry evicted after %d inserts", i)
		}
		c.put(cacheKey{name: fmt.Sprintf("cold%d.example", i), qtype: 1, qclass: 1}, testResp(10, later), now)
	}
}

func TestCacheExpiredIsMissAndReplacedFirst(t *testing.T) {
	now := time.Now().UnixNano()
	c := newCache(16, 1<<30) // 1 per shard
	k := cacheKey{name: "a.example", qtype: 1, qclass: 1}
	c.put(k, testResp(10, now+int64(time.Second)), now)
	if c.get(k, now) == nil {
		t.Fatal("live entry missing")
	}
	if c.get(k, now+int64(time.Second)) != nil {
		t.Fatal("expired entry returned")
	}
	if c.peek(k, now) == nil || c.hits.Load() != 1 || c.misses.Load() != 1 {
		t.Errorf("peek or counters wrong: hits %d misses %d", c.hits.Load(), c.misses.Load())
	}
}

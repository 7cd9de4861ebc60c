package match

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/iprange"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// flowAddr is an address of a flow, unmapped and without zone, as
// integers: v6 is the 128-bit value (an IPv4 address in its 4-in-6 form,
// which the trie walk reads bytes 12..15 of), v4 the IPv4 address.
type flowAddr struct {
	v6    iprange.U128
	v4    uint32
	is4   bool
	valid bool
}

// as4 and as6 convert without unmapping: a 4-in-6 range stays IPv6.
func as4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func as6(a netip.Addr) iprange.U128 { return iprange.From(a) }

// set stores a, unmapping a 4-in-6 address and ignoring the zone. (IPv4
// goes through As4: copying As16's array costs a store-forwarding stall.)
func (fa *flowAddr) set(a netip.Addr) {
	switch {
	case a.Is4() || a.Is4In6():
		b := a.Unmap().As4()
		fa.v4 = binary.BigEndian.Uint32(b[:])
		fa.v6 = iprange.U128{Lo: 0xffff<<32 | uint64(fa.v4)}
		fa.is4, fa.valid = true, true
	case a.IsValid():
		b := a.As16()
		fa.v6 = iprange.U128{Hi: binary.BigEndian.Uint64(b[:8]), Lo: binary.BigEndian.Uint64(b[8:])}
		fa.v4, fa.is4, fa.valid = 0, false, true
	default:
		*fa = flowAddr{}
	}
}

// addrSet is a policy.AddrSet split by family into integer ranges, for
// membership tests without netip comparisons. It holds the same addresses:
// policy.AddrSet never merges ranges across families, and a 4-in-6 range
// (from a "::ffff:a.b.c.d/n" CIDR) stays IPv6, which no unmapped flow
// address is in.
type addrSet struct {
	any bool
	v4  []range4
	v6  []range6
}

type range4 struct{ lo, hi uint32 }
type range6 = iprange.Range

func newAddrSet(s *policy.AddrSet) (addrSet, error) {
	return (*rangeBlocks)(nil).addrSet(s)
}

// rangeBlocks hands out the ranges of many addrSets from a few blocks
// (a compile makes two sets per rule: 20,000 small slices at 10,000
// rules, grown one range at a time, were half of the matcher's build).
// A nil *rangeBlocks allocates each set's own.
type rangeBlocks struct {
	v4 []range4
	v6 []range6
}

// take returns an empty slice of capacity n cut from *blk (a new block
// when it has less left).
func take[T any](blk *[]T, n int) []T {
	if n == 0 {
		return nil
	}
	if len(*blk) < n {
		*blk = make([]T, max(n, 1024))
	}
	out := (*blk)[:0:n]
	*blk = (*blk)[n:]
	return out
}

// addrSet is newAddrSet with the ranges cut from b's blocks.
func (b *rangeBlocks) addrSet(s *policy.AddrSet) (addrSet, error) {
	if s.Any {
		return addrSet{any: true}, nil
	}
	var out addrSet
	if b != nil {
		n4 := 0
		for i := range s.Ranges {
			if s.Ranges[i].From.Is4() {
				n4++
			}
		}
		out.v4 = take(&b.v4, n4)
		out.v6 = take(&b.v6, len(s.Ranges)-n4)
	}
	for i, r := range s.Ranges {
		if !r.From.IsValid() || !r.To.IsValid() || r.From.Is4() != r.To.Is4() || r.To.Less(r.From) ||
			r.From.Zone() != "" || r.To.Zone() != "" {
			return out, fmt.Errorf("bad address range %v-%v", r.From, r.To)
		}
		if i > 0 && !s.Ranges[i-1].To.Less(r.From) {
			return out, fmt.Errorf("address ranges are not sorted and disjoint (%v after %v)", r.From, s.Ranges[i-1].To)
		}
		if r.From.Is4() {
			out.v4 = append(out.v4, range4{as4(r.From), as4(r.To)})
		} else {
			out.v6 = append(out.v6, range6{Lo: as6(r.From), Hi: as6(r.To)})
		}
	}
	return out, nil
}

// contains reports whether a is in the set. It does not allocate.
func (s *addrSet) contains(a *flowAddr) bool {
	if s.any {
		return a.valid
	}
	if a.is4 {
		r := s.v4
		if len(r) == 1 {
			return r[0].lo <= a.v4 && a.v4 <= r[0].hi
		}
		lo, hi := 0, len(r)
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if r[m].hi < a.v4 {
				lo = m + 1
			} else {
				hi = m
			}
		}
		return lo < len(r) && r[lo].lo <= a.v4
	}
	if !a.valid {
		return false
	}
	r := s.v6
	lo, hi := 0, len(r)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r[m].Hi.Less(a.v6) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(r) && !a.v6.Less(r[lo].Lo)
}

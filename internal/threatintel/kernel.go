package threatintel

import (
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// BlockedRanges returns the listed addresses that are not allowlisted, as
// sorted, disjoint, non-adjacent ranges, IPv4 and IPv6 separately: what a
// kernel data plane puts in its interval sets so that it drops (or logs)
// exactly the addresses LookupAddr reports. A nil Set has none.
func (s *Set) BlockedRanges() (v4, v6 []policy.AddrRange) {
	if s == nil {
		return nil, nil
	}
	r4 := make([]rng, 0, len(s.v4))
	for _, sp := range s.v4 {
		r4 = appendMerged(r4, rng{lo: u128{0, uint64(sp.lo)}, hi: u128{0, uint64(sp.hi)}})
	}
	r6 := make([]rng, 0, len(s.v6))
	for _, sp := range s.v6 {
		r6 = appendMerged(r6, rng{lo: sp.lo, hi: sp.hi})
	}
	if s.allowAddrs.Any {
		return nil, nil
	}
	var a4, a6 []rng
	for _, ar := range s.allowAddrs.Ranges {
		from, to := ar.From.Unmap(), ar.To.Unmap()
		if from.Is4() {
			a4 = append(a4, rng{lo: u128From(from), hi: u128From(to)})
		} else {
			a6 = append(a6, rng{lo: u128From(from), hi: u128From(to)})
		}
	}
	for _, r := range subtract(r4, a4) {
		v4 = append(v4, policy.AddrRange{From: r.lo.addr4(), To: r.hi.addr4()})
	}
	for _, r := range subtract(r6, a6) {
		v6 = append(v6, policy.AddrRange{From: r.lo.addr6(), To: r.hi.addr6()})
	}
	return v4, v6
}

func (u u128) addr4() netip.Addr {
	x := uint32(u.lo)
	return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
}

// appendMerged appends r to sorted rs, merging it with the last range when
// they touch.
func appendMerged(rs []rng, r rng) []rng {
	if n := len(rs); n > 0 && !rs[n-1].hi.add1().less(r.lo) && !(rs[n-1].hi == u128Ones(128)) {
		if rs[n-1].hi.less(r.hi) {
			rs[n-1].hi = r.hi
		}
		return rs
	}
	return append(rs, r)
}

// subtract removes the ranges of del (sorted, disjoint) from rs (sorted,
// disjoint).
func subtract(rs, del []rng) []rng {
	if len(del) == 0 {
		return rs
	}
	out := make([]rng, 0, len(rs))
	j := 0
	for _, r := range rs {
		for j < len(del) && del[j].hi.less(r.lo) {
			j++
		}
		lo := r.lo
		k := j
		done := false
		for k < len(del) && !r.hi.less(del[k].lo) {
			d := del[k]
			if lo.less(d.lo) {
				out = append(out, rng{lo: lo, hi: d.lo.sub1()})
			}
			if !d.hi.less(r.hi) {
				done = true
				break
			}
			lo = d.hi.add1()
			k++
		}
		if !done && !r.hi.less(lo) {
			out = append(out, rng{lo: lo, hi: r.hi})
		}
	}
	return out
}

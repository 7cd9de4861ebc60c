package threatintel

import (
	"github.com/clusterwall/clusterwall/internal/iprange"
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
	r4 := make([]iprange.Range, 0, len(s.v4))
	for _, sp := range s.v4 {
		r4 = append(r4, iprange.Range{Lo: iprange.U128{Lo: uint64(sp.lo)}, Hi: iprange.U128{Lo: uint64(sp.hi)}})
	}
	r6 := make([]iprange.Range, 0, len(s.v6))
	for _, sp := range s.v6 {
		r6 = append(r6, iprange.Range{Lo: sp.lo, Hi: sp.hi})
	}
	if s.allowAddrs.Any {
		return nil, nil
	}
	var a4, a6 []iprange.Range
	for _, ar := range s.allowAddrs.Ranges {
		from, to := ar.From.Unmap(), ar.To.Unmap()
		if from.Is4() {
			a4 = append(a4, iprange.Range{Lo: iprange.From(from), Hi: iprange.From(to)})
		} else {
			a6 = append(a6, iprange.Range{Lo: iprange.From(from), Hi: iprange.From(to)})
		}
	}
	for _, r := range iprange.Subtract(iprange.Merge(r4), iprange.Merge(a4)) {
		v4 = append(v4, policy.AddrRange{From: r.Lo.Addr4(), To: r.Hi.Addr4()})
	}
	for _, r := range iprange.Subtract(iprange.Merge(r6), iprange.Merge(a6)) {
		v6 = append(v6, policy.AddrRange{From: r.Lo.Addr6(), To: r.Hi.Addr6()})
	}
	return v4, v6
}

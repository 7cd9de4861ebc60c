// Package iprange is the project's one 128-bit number and its range
// arithmetic. IPv4 and IPv6 addresses and ports are unsigned 128-bit
// numbers (an IPv4 address or a port in the low bits); a Range is an
// inclusive interval of them. The matcher's address sets, the kernel
// compiler's intervals, threat intelligence's lists and the policy's
// address sets all compute with it, so that "the next address", "the last
// address of a prefix" and "merge touching ranges" mean one thing.
//
// Every operation is a few integer instructions: no allocation, inlined on
// the matcher's hot path.
package iprange

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
)

// U128 is an unsigned 128-bit number.
type U128 struct{ Hi, Lo uint64 }

// Max is the largest U128 (every bit set).
var Max = U128{^uint64(0), ^uint64(0)}

// From returns a as a number: an IPv4 address in the low 32 bits, an IPv6
// address (a 4-in-6 one too: it is not unmapped) in all 128.
func From(a netip.Addr) U128 {
	if a.Is4() {
		b := a.As4()
		return U128{Lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return U128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// Addr4 is the IPv4 address in the low 32 bits of u.
func (u U128) Addr4() netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(u.Lo))
	return netip.AddrFrom4(b)
}

// Addr6 is u as an IPv6 address.
func (u U128) Addr6() netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.Hi)
	binary.BigEndian.PutUint64(b[8:], u.Lo)
	return netip.AddrFrom16(b)
}

// Addr is u as an address of the family is4 says.
func (u U128) Addr(is4 bool) netip.Addr {
	if is4 {
		return u.Addr4()
	}
	return u.Addr6()
}

// Less reports whether u < v.
func (u U128) Less(v U128) bool { return u.Hi < v.Hi || u.Hi == v.Hi && u.Lo < v.Lo }

// Compare returns -1, 0 or +1 as u is less than, equal to or greater than v.
func (u U128) Compare(v U128) int {
	switch {
	case u.Less(v):
		return -1
	case v.Less(u):
		return 1
	}
	return 0
}

// Next is u+1 (Max+1 wraps to 0).
func (u U128) Next() U128 {
	lo, carry := bits.Add64(u.Lo, 1, 0)
	return U128{u.Hi + carry, lo}
}

// Prev is u-1 (0-1 wraps to Max).
func (u U128) Prev() U128 {
	lo, borrow := bits.Sub64(u.Lo, 1, 0)
	return U128{u.Hi - borrow, lo}
}

// Sub is u-v (modulo 2^128).
func (u U128) Sub(v U128) U128 {
	lo, borrow := bits.Sub64(u.Lo, v.Lo, 0)
	return U128{u.Hi - v.Hi - borrow, lo}
}

// Or is u|v.
func (u U128) Or(v U128) U128 { return U128{u.Hi | v.Hi, u.Lo | v.Lo} }

// AndNot is u&^v.
func (u U128) AndNot(v U128) U128 { return U128{u.Hi &^ v.Hi, u.Lo &^ v.Lo} }

// Byte returns byte k (0..15, most significant first) of u.
func (u U128) Byte(k int) byte {
	if k < 8 {
		return byte(u.Hi >> (56 - 8*k))
	}
	return byte(u.Lo >> (56 - 8*(k-8)))
}

// Ones has the low n bits set (n from 0 to 128).
func Ones(n int) U128 {
	switch {
	case n <= 0:
		return U128{}
	case n >= 128:
		return Max
	case n >= 64:
		return U128{^uint64(0) >> (128 - n), ^uint64(0)}
	}
	return U128{0, ^uint64(0) >> (64 - n)}
}

// Range is an inclusive range of numbers, Lo <= Hi.
type Range struct{ Lo, Hi U128 }

// Contains reports whether v is in r.
func (r Range) Contains(v U128) bool { return !v.Less(r.Lo) && !r.Hi.Less(v) }

// Merge sorts rs by Lo and merges the ranges that overlap or touch (Hi+1 ==
// the next Lo); it reuses rs's storage.
func Merge(rs []Range) []Range {
	slices.SortFunc(rs, func(a, b Range) int { return a.Lo.Compare(b.Lo) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].Hi == Max || !out[n-1].Hi.Next().Less(r.Lo)) {
			if out[n-1].Hi.Less(r.Hi) {
				out[n-1].Hi = r.Hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// Subtract returns the numbers of rs that are not in del; both are sorted
// and disjoint (Merge's output), and so is the result.
func Subtract(rs, del []Range) []Range {
	if len(del) == 0 {
		return rs
	}
	out := make([]Range, 0, len(rs))
	j := 0
	for _, r := range rs {
		for j < len(del) && del[j].Hi.Less(r.Lo) {
			j++
		}
		lo, done := r.Lo, false
		for k := j; k < len(del) && !r.Hi.Less(del[k].Lo); k++ {
			d := del[k]
			if lo.Less(d.Lo) {
				out = append(out, Range{lo, d.Lo.Prev()})
			}
			if !d.Hi.Less(r.Hi) {
				done = true
				break
			}
			lo = d.Hi.Next()
		}
		if !done && !r.Hi.Less(lo) {
			out = append(out, Range{lo, r.Hi})
		}
	}
	return out
}

// OfPrefix is the range of addresses of p (of p's family: an IPv4 prefix
// in the low 32 bits).
func OfPrefix(p netip.Prefix) Range {
	lo := From(p.Masked().Addr())
	return Range{lo, lo.Or(Ones(p.Addr().BitLen() - p.Bits()))}
}

// PrefixBits reports whether r is exactly one prefix of a family whose
// addresses are width bits wide (32 or 128), and the prefix's length.
func (r Range) PrefixBits(width int) (int, bool) {
	// size = Hi - Lo + 1 must be a power of two, 2^k, and Lo aligned to it:
	// Hi - Lo is k ones, and Lo's low k bits are zero.
	diff := r.Hi.Sub(r.Lo)
	if r.Hi.Less(r.Lo) || diff.Next().AndNot(diff) != diff.Next() {
		return 0, false
	}
	k := bits.OnesCount64(diff.Hi) + bits.OnesCount64(diff.Lo)
	if r.Lo.Or(diff) != r.Hi || k > width {
		return 0, false
	}
	return width - k, true
}

// LastAddr is the last address of prefix p.
func LastAddr(p netip.Prefix) netip.Addr {
	return OfPrefix(p).Hi.Addr(p.Addr().Is4())
}

// AppendPrefixes appends the fewest prefixes that cover exactly the
// addresses from..to (one family, from <= to).
func AppendPrefixes(out []netip.Prefix, from, to netip.Addr) []netip.Prefix {
	is4 := from.Is4()
	width := from.BitLen()
	lo, hi := From(from), From(to)
	for {
		// The largest block that starts at lo (its low bits are zero) and
		// ends at or before hi.
		host := trailingZeros(lo, width)
		for host > 0 && hi.Less(lo.Or(Ones(host))) {
			host--
		}
		out = append(out, netip.PrefixFrom(lo.Addr(is4), width-host))
		last := lo.Or(Ones(host))
		if !last.Less(hi) {
			return out
		}
		lo = last.Next()
	}
}

// trailingZeros counts the zero bits at the low end of u, at most width.
func trailingZeros(u U128, width int) int {
	n := bits.TrailingZeros64(u.Lo)
	if n == 64 {
		n += bits.TrailingZeros64(u.Hi)
	}
	return min(n, width)
}

package nft

import (
	"encoding/binary"
	"math/bits"
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// u128 is an unsigned 128-bit number: an IPv4 address, an IPv6 address or a
// port, so that the classifier can treat every field alike.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

func (a u128) next() u128 {
	lo, carry := bits.Add64(a.lo, 1, 0)
	return u128{a.hi + carry, lo}
}

func (a u128) prev() u128 {
	lo, borrow := bits.Sub64(a.lo, 1, 0)
	return u128{a.hi - borrow, lo}
}

// ivl is an inclusive interval of field values.
type ivl struct{ lo, hi u128 }

// field is one dimension the classifier matches on.
type field uint8

const (
	fieldSrc field = iota
	fieldDst
	fieldPort
	numFields
)

func (f field) String() string {
	switch f {
	case fieldSrc:
		return "saddr"
	case fieldDst:
		return "daddr"
	}
	return "dport"
}

// family is an IP family of the data plane.
type family uint8

const (
	ipv4 family = 4
	ipv6 family = 6
)

func (f family) String() string {
	if f == ipv4 {
		return "ip"
	}
	return "ip6"
}

// nfproto returns the family as `meta nfproto` names it.
func (f family) nfproto() string {
	if f == ipv4 {
		return "ipv4"
	}
	return "ipv6"
}

// fieldMax is the largest value of a field.
func fieldMax(fam family, f field) u128 {
	switch {
	case f == fieldPort:
		return u128{0, 0xffff}
	case fam == ipv4:
		return u128{0, 0xffffffff}
	}
	return u128{^uint64(0), ^uint64(0)}
}

func addrVal(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func valAddr(fam family, v u128) netip.Addr {
	if fam == ipv4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

// valBytes is the kernel's (network byte order) encoding of a field value.
func valBytes(fam family, f field, v u128) []byte {
	switch {
	case f == fieldPort:
		return binary.BigEndian.AppendUint16(nil, uint16(v.lo))
	case fam == ipv4:
		return binary.BigEndian.AppendUint32(nil, uint32(v.lo))
	}
	b := binary.BigEndian.AppendUint64(nil, v.hi)
	return binary.BigEndian.AppendUint64(b, v.lo)
}

// addrIntervals returns the addresses of one family in s as intervals; nil
// when s holds every address of the family (a wildcard), and an empty,
// non-nil slice when it holds none.
func addrIntervals(s *policy.AddrSet, fam family) []ivl {
	if s.Any {
		return nil
	}
	out := []ivl{}
	for _, r := range s.Ranges {
		if r.From.Is4() != (fam == ipv4) {
			continue
		}
		out = append(out, ivl{addrVal(r.From), addrVal(r.To)})
	}
	if len(out) == 1 && out[0].lo == (u128{}) && out[0].hi == fieldMax(fam, fieldSrc) {
		return nil
	}
	return out
}

// portIntervals returns the ports as intervals (never a wildcard: port 0 is
// not in "*").
func portIntervals(ps []policy.PortRange) []ivl {
	out := make([]ivl, 0, len(ps))
	for _, p := range ps {
		out = append(out, ivl{u128{0, uint64(p.Lo)}, u128{0, uint64(p.Hi)}})
	}
	return out
}

// prefixLen reports whether iv is exactly one CIDR prefix and its length.
func prefixLen(fam family, f field, iv ivl) (int, bool) {
	width := 128
	switch {
	case f == fieldPort:
		return 0, false
	case fam == ipv4:
		width = 32
	}
	// size = hi - lo + 1 must be a power of two 2^k and lo aligned to it.
	diff := u128{iv.hi.hi - iv.lo.hi, 0}
	var borrow uint64
	diff.lo, borrow = bits.Sub64(iv.hi.lo, iv.lo.lo, 0)
	diff.hi -= borrow
	// diff+1 must be a power of two: diff is of the form 0..01..1.
	k := 0
	switch {
	case diff.hi == 0:
		if diff.lo&(diff.lo+1) != 0 {
			return 0, false
		}
		k = bits.OnesCount64(diff.lo)
	default:
		if diff.lo != ^uint64(0) || diff.hi&(diff.hi+1) != 0 {
			return 0, false
		}
		k = 64 + bits.OnesCount64(diff.hi)
	}
	// Alignment: the low k bits of lo are zero.
	switch {
	case k == 0:
	case k < 64:
		if iv.lo.lo&(1<<k-1) != 0 {
			return 0, false
		}
	case k == 64:
		if iv.lo.lo != 0 {
			return 0, false
		}
	case k < 128:
		if iv.lo.lo != 0 || iv.lo.hi&(1<<(k-64)-1) != 0 {
			return 0, false
		}
	default:
		if iv.lo != (u128{}) {
			return 0, false
		}
	}
	if k > width {
		return 0, false
	}
	return width - k, true
}

func bytesAddr(b []byte) (netip.Addr, bool) {
	return netip.AddrFromSlice(b)
}

package nft

import (
	"encoding/binary"
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/iprange"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// u128 is a field value: an IPv4 address, an IPv6 address or a port, so
// that the classifier can treat every field alike. Its arithmetic is the
// project's one 128-bit number's (iprange.U128), under the names the
// compiler uses.
type u128 struct{ hi, lo uint64 }

func (a u128) num() iprange.U128 { return iprange.U128{Hi: a.hi, Lo: a.lo} }
func ofNum(n iprange.U128) u128  { return u128{n.Hi, n.Lo} }

func (a u128) less(b u128) bool { return a.num().Less(b.num()) }
func (a u128) next() u128       { return ofNum(a.num().Next()) }
func (a u128) prev() u128       { return ofNum(a.num().Prev()) }

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

func addrVal(a netip.Addr) u128 { return ofNum(iprange.From(a)) }

func valAddr(fam family, v u128) netip.Addr { return v.num().Addr(fam == ipv4) }

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
	return iprange.Range{Lo: iv.lo.num(), Hi: iv.hi.num()}.PrefixBits(width)
}

func bytesAddr(b []byte) (netip.Addr, bool) {
	return netip.AddrFromSlice(b)
}

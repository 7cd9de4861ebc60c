package policy

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/clusterwall/clusterwall/internal/iprange"
)

// AddrSet is a set of IPv4 and IPv6 addresses, kept as sorted, disjoint,
// merged ranges. The zero value is the empty set.
type AddrSet struct {
	// Any is true for "*": every address of both families.
	Any bool
	// Ranges are sorted, disjoint and not adjacent; IPv4 sorts before IPv6.
	Ranges []AddrRange
}

// Contains reports whether a is in the set. It does not allocate.
func (s *AddrSet) Contains(a netip.Addr) bool {
	if s.Any {
		return a.IsValid()
	}
	a = a.Unmap()
	r := s.Ranges
	// Binary search for the first range whose To >= a.
	lo, hi := 0, len(r)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r[m].To.Less(a) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(r) && r[lo].From.Compare(a) <= 0
}

// Empty reports whether the set holds no address.
func (s *AddrSet) Empty() bool { return !s.Any && len(s.Ranges) == 0 }

// Prefixes returns the set as a minimal list of prefixes (for the kernel).
func (s *AddrSet) Prefixes() []netip.Prefix {
	if s.Any {
		return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	var out []netip.Prefix
	for _, r := range s.Ranges {
		out = iprange.AppendPrefixes(out, r.From, r.To)
	}
	return out
}

// String renders the set compactly (for logs and explain).
func (s *AddrSet) String() string {
	if s.Any {
		return "*"
	}
	var parts []string
	for _, p := range s.Prefixes() {
		if p.IsSingleIP() {
			parts = append(parts, p.Addr().String())
		} else {
			parts = append(parts, p.String())
		}
	}
	return strings.Join(parts, ",")
}

// AddrSetBuilder accumulates ranges and produces a normalised AddrSet.
type AddrSetBuilder struct {
	any    bool
	ranges []AddrRange
}

// AddAny makes the set the universal set.
func (b *AddrSetBuilder) AddAny() { b.any = true }

// AddPrefix adds every address of p.
func (b *AddrSetBuilder) AddPrefix(p netip.Prefix) {
	p = p.Masked()
	b.ranges = append(b.ranges, AddrRange{p.Addr(), iprange.LastAddr(p)})
}

// AddRange adds from..to inclusive; both must be of the same family and from <= to.
func (b *AddrSetBuilder) AddRange(from, to netip.Addr) {
	b.ranges = append(b.ranges, AddrRange{from.Unmap(), to.Unmap()})
}

// AddSet adds every address of s.
func (b *AddrSetBuilder) AddSet(s *AddrSet) {
	if s.Any {
		b.any = true
	}
	b.ranges = append(b.ranges, s.Ranges...)
}

// Build returns the normalised set: sorted, disjoint ranges, touching ones
// merged, IPv4 before IPv6 and never merged across families.
func (b *AddrSetBuilder) Build() AddrSet {
	if b.any {
		return AddrSet{Any: true}
	}
	var v4, v6 []iprange.Range
	for _, r := range b.ranges {
		x := iprange.Range{Lo: iprange.From(r.From), Hi: iprange.From(r.To)}
		if r.From.Is4() {
			v4 = append(v4, x)
		} else {
			v6 = append(v6, x)
		}
	}
	var out []AddrRange
	for _, r := range iprange.Merge(v4) {
		out = append(out, AddrRange{r.Lo.Addr4(), r.Hi.Addr4()})
	}
	for _, r := range iprange.Merge(v6) {
		out = append(out, AddrRange{r.Lo.Addr6(), r.Hi.Addr6()})
	}
	return AddrSet{Ranges: out}
}

// AddrToken classifies one address token of a rule.
type AddrToken uint8

const (
	TokenInvalid AddrToken = iota
	TokenAny
	TokenIP
	TokenCIDR
	TokenRange
	TokenName // a service tag (or, where allowed, an IP group name)
)

// ParseAddrToken parses "*", an IP, a CIDR or a range "a-b" into b. Anything
// else that looks like a name returns TokenName and adds nothing; the caller
// resolves it. An error explains a malformed address.
func ParseAddrToken(tok string, b *AddrSetBuilder) (AddrToken, error) {
	tok = strings.TrimSpace(tok)
	switch {
	case tok == "":
		return TokenInvalid, fmt.Errorf("empty address")
	case tok == "*" || tok == "Any" || tok == "any":
		b.AddAny()
		return TokenAny, nil
	case strings.Contains(tok, "/"):
		p, err := netip.ParsePrefix(tok)
		if err != nil {
			return TokenInvalid, fmt.Errorf("bad CIDR %q: %v", tok, trimNetipErr(err))
		}
		if p.Addr().Zone() != "" {
			return TokenInvalid, fmt.Errorf("bad CIDR %q: zones are not allowed", tok)
		}
		b.AddPrefix(p.Masked())
		return TokenCIDR, nil
	case strings.Contains(tok, "-") && looksNumeric(tok):
		from, to, ok := strings.Cut(tok, "-")
		a1, err1 := netip.ParseAddr(strings.TrimSpace(from))
		a2, err2 := netip.ParseAddr(strings.TrimSpace(to))
		if err1 != nil || err2 != nil {
			return TokenInvalid, fmt.Errorf("bad address range %q", tok)
		}
		a1, a2 = a1.Unmap(), a2.Unmap()
		if !ok || a1.Is4() != a2.Is4() {
			return TokenInvalid, fmt.Errorf("bad address range %q: both ends must be of one family", tok)
		}
		if a2.Less(a1) {
			return TokenInvalid, fmt.Errorf("bad address range %q: start is after end", tok)
		}
		b.AddRange(a1, a2)
		return TokenRange, nil
	case looksNumeric(tok):
		a, err := netip.ParseAddr(tok)
		if err != nil {
			return TokenInvalid, fmt.Errorf("bad IP address %q: %v", tok, trimNetipErr(err))
		}
		if a.Zone() != "" {
			return TokenInvalid, fmt.Errorf("bad IP address %q: zones are not allowed", tok)
		}
		b.AddRange(a.Unmap(), a.Unmap())
		return TokenIP, nil
	}
	if !validTagName(tok) {
		return TokenInvalid, fmt.Errorf("bad address %q: not an IP, CIDR, range, '*' or service tag", tok)
	}
	return TokenName, nil
}

// looksNumeric reports whether s is made of the characters of IP literals,
// so that "10.0.0.300" is reported as a bad IP rather than an unknown tag.
func looksNumeric(s string) bool {
	digits := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits = true
		case c == '.' || c == ':' || c == '-' || c == ' ':
		case (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'):
			if !strings.Contains(s, ":") {
				return false
			}
		default:
			return false
		}
	}
	return digits || strings.Contains(s, ":")
}

func validTagName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}

func trimNetipErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

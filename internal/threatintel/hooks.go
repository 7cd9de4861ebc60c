package threatintel

import (
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// CheckThreat is Check in the form of match.ThreatIntel, the matcher's
// threat-intelligence stage: the mode's action and the ThreatDescription
// of the first listed of dst, name and src. It does not allocate.
//
// It is Check without the Verdict: the lookups return indexes, and only a
// hit reads its Match, so the common case (nothing listed) copies no
// strings.
func (e *Engine) CheckThreat(src, dst netip.Addr, name string) (policy.Action, string) {
	if e == nil {
		return policy.ActionInvalid, ""
	}
	st := e.cur.Load()
	s := st.set
	if st.mode == policy.ActionInvalid || s == nil {
		return policy.ActionInvalid, ""
	}
	m := int32(-1)
	if s.maybeListed(dst) {
		m = s.addrIndex(dst)
	}
	if m < 0 && name != "" {
		m = s.nameIndex(name)
	}
	if m < 0 && s.maybeListed(src) {
		m = s.addrIndex(src)
	}
	if m < 0 {
		return policy.ActionInvalid, ""
	}
	return st.mode, s.matches[m].Description
}

// maybeListed is the inlined first step of addrIndex for the common case:
// an IPv4 address in a /24 block no entry touches is not listed.
func (s *Set) maybeListed(a netip.Addr) bool {
	if !a.Is4() {
		return a.IsValid() // IPv6 or IPv4-mapped: ask addrIndex
	}
	b := a.As4()
	return s.maybeListed4(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
}

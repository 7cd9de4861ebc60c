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
	m := s.addrIndex(dst)
	if m < 0 && name != "" {
		m = s.nameIndex(name)
	}
	if m < 0 {
		m = s.addrIndex(src)
	}
	if m < 0 {
		return policy.ActionInvalid, ""
	}
	return st.mode, s.matches[m].Description
}

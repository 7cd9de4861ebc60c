package threatintel

import (
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// CheckThreat is Check in the form of match.ThreatIntel, the matcher's
// threat-intelligence stage: the mode's action and the ThreatDescription
// of the first listed of dst, name and src. It does not allocate.
func (e *Engine) CheckThreat(src, dst netip.Addr, name string) (policy.Action, string) {
	v := e.Check(src, dst, name)
	return v.Action, v.Description
}

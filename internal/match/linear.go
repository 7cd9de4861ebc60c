package match

import (
	"net/netip"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// The reference matcher: Matcher.DecideLinear runs Decide's steps with
// the rules walked in evaluation order and checked with the policy
// package's reference semantics (AddrSet.Contains, PortRange.Contains,
// FQDNPattern.Match) instead of the indexes. Its cost grows with the
// number of rules; it is the benchmark baseline and the oracle the indexes
// are tested against.

// linearNet returns the index (DNAT rules first, then network rules) of
// the first DNAT or network rule below limit that matches f, or none.
func (m *Matcher) linearNet(f *Flow, k *flowKey, limit int32) int32 {
	if !k.noDNAT {
		for i, r := range m.norm[policy.KindDNAT] {
			if int32(i) >= limit {
				return none
			}
			if linearProto(r.Protocols, f) && portIn(r.Ports, f.Port) &&
				r.Source.Contains(f.Src) && r.Destination.Contains(f.Dst) {
				if r.TranslatedFQDN != "" {
					if _, ok := m.net.translated(int32(i), k.dst.is4); !ok {
						continue
					}
				}
				return int32(i)
			}
		}
	}
	for i, r := range m.norm[policy.KindNetwork] {
		ri := m.ndnat + int32(i)
		if ri >= limit {
			return none
		}
		if !linearProto(r.Protocols, f) || !r.Source.Contains(f.Src) {
			continue
		}
		if f.Proto != policy.ProtoICMP && !portIn(r.Ports, f.Port) {
			continue
		}
		if r.Destination.Contains(f.Dst) || linearResolved(m.resolver, r.FQDNs, f.Dst) {
			return ri
		}
	}
	return none
}

// linearApp returns the index of the first application rule that matches
// f, or none.
func (m *Matcher) linearApp(f *Flow, _ *flowKey) int32 {
	if strings.TrimSuffix(f.Name, ".") == "" {
		return none
	}
	for i, r := range m.norm[policy.KindApplication] {
		if linearAppRule(&r, f) {
			return int32(i)
		}
	}
	return none
}

// linearProto: the flow's protocol (normally one bit) is one of the rule's.
func linearProto(p policy.Proto, f *Flow) bool {
	return f.Proto != 0 && f.Proto&p == f.Proto
}

func portIn(rs []policy.PortRange, p uint16) bool {
	for _, r := range rs {
		if r.Contains(p) {
			return true
		}
	}
	return false
}

func linearResolved(r FQDNResolver, names []string, dst netip.Addr) bool {
	if r == nil || !dst.IsValid() {
		return false
	}
	for _, n := range names {
		if r.Resolved(n, dst) {
			return true
		}
	}
	return false
}

func linearAppRule(r *Rule, f *Flow) bool {
	proto := false
	for _, ap := range r.AppProtocols {
		if ap.Scheme == f.Scheme && ap.Port == f.Port {
			proto = true
			break
		}
	}
	if !proto || !r.Source.Contains(f.Src) {
		return false
	}
	for _, pat := range r.Policy.TargetFQDNs {
		if pat.Match(f.Name) {
			return true
		}
	}
	return false
}

package match

import (
	"net/netip"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// DecideLinear is the reference matcher: it walks the rules of each kind in
// evaluation order (the order of Policy.RulesOf, without building the
// slice) and checks each with the policy package's reference semantics
// (AddrSet.Contains, FQDNPattern.Match). Its cost grows with the number of
// rules; it is the benchmark baseline and the oracle the compiled Matcher is
// tested against. r may be nil.
func DecideLinear(p *policy.Policy, r FQDNResolver, f Flow) Decision {
	normalizeFlow(&f)
	for _, g := range p.Groups {
		if g == nil {
			continue
		}
		for _, c := range g.Collections {
			if c == nil || c.Kind != policy.KindDNAT {
				continue
			}
			for _, rule := range c.Rules {
				if linearProto(rule, f) && portIn(rule.DestinationPorts, f.Port) &&
					rule.Source.Contains(f.Src) && rule.Destination.Contains(f.Dst) {
					return Decision{
						Action: policy.ActionDNAT, Kind: policy.KindDNAT, Rule: rule, Reason: ReasonRuleMatched,
						TranslatedAddr: rule.TranslatedAddress, TranslatedPort: rule.TranslatedPort, TranslatedFQDN: rule.TranslatedFQDN,
					}
				}
			}
		}
	}
	for _, g := range p.Groups {
		if g == nil {
			continue
		}
		for _, c := range g.Collections {
			if c == nil || c.Kind != policy.KindNetwork {
				continue
			}
			for _, rule := range c.Rules {
				if !linearProto(rule, f) || !rule.Source.Contains(f.Src) {
					continue
				}
				if f.Proto != policy.ProtoICMP && !portIn(rule.DestinationPorts, f.Port) {
					continue
				}
				if rule.Destination.Contains(f.Dst) || linearResolved(r, rule.DestinationFQDNs, f.Dst) {
					return Decision{Action: c.Action, Kind: policy.KindNetwork, Rule: rule, Reason: ReasonRuleMatched}
				}
			}
		}
	}
	if f.Scheme != policy.SchemeNone && f.Proto == policy.ProtoTCP && strings.TrimSuffix(f.Name, ".") != "" {
		for _, g := range p.Groups {
			if g == nil {
				continue
			}
			for _, c := range g.Collections {
				if c == nil || c.Kind != policy.KindApplication {
					continue
				}
				for _, rule := range c.Rules {
					if linearApp(rule, f) {
						return Decision{Action: c.Action, Kind: policy.KindApplication, Rule: rule, Reason: ReasonRuleMatched}
					}
				}
			}
		}
	}
	return Decision{Action: policy.ActionDeny, Kind: policy.KindInvalid, Reason: ReasonNoRuleMatched}
}

// linearProto: the flow's protocol (normally one bit) is one of the rule's.
func linearProto(rule *policy.Rule, f Flow) bool {
	return f.Proto != 0 && f.Proto&rule.Protocols == f.Proto
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

func linearApp(rule *policy.Rule, f Flow) bool {
	proto := false
	for _, ap := range rule.AppProtocols {
		if ap.Scheme == f.Scheme && ap.Port == f.Port {
			proto = true
			break
		}
	}
	if !proto || !rule.Source.Contains(f.Src) {
		return false
	}
	for _, pat := range rule.TargetFQDNs {
		if pat.Match(f.Name) {
			return true
		}
	}
	return false
}

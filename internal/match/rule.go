package match

import (
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Rule is a rule in the matcher's normalised form: the one description
// of what a rule matches that every enforcement point is built from. The
// matcher's indexes are built from it, and so is the kernel's ruleset
// (nft.Compile reads Matcher.Rules, never the policy), so both agree on
// the order, the protocols, the ports and what a translation does.
//
// What a rule matches, per kind:
//
//   - DNAT: a new flow from the outside (Side) of one of Protocols (TCP,
//     UDP; Any means both: validation removes ICMP) to one of Ports on an
//     address of Destination (public IPs of the firewall), from an
//     address of Source. It is translated to TranslatedAddr, or to the
//     lowest address of the flow's family that the firewall currently
//     resolves TranslatedFQDN to (no address: the rule does not match),
//     and TranslatedPort.
//   - Network: a new flow of one of Protocols from Source to Destination
//     or to an address resolved for one of FQDNs, to one of Ports; ICMP
//     flows ignore the ports.
//   - Application: a flow the L7 proxy decides (PathProxy) whose scheme
//     and port are one of AppProtocols, from Source, whose name matches
//     one of Targets.
type Rule struct {
	// Policy is the rule as written; its Collection and Collection.Group
	// give the collection and group.
	Policy *policy.Rule
	Kind   policy.Kind
	// Index is the rule's position among the rules of its kind in
	// evaluation order, from 0: the kernel's log prefixes name rules by
	// it (nft.LogTag).
	Index int
	// Action is Allow or Deny, DNAT for DNAT rules.
	Action policy.Action
	// Protocols of a DNAT or network rule.
	Protocols policy.Proto
	// Ports of a DNAT or network rule, sorted and merged.
	Ports []policy.PortRange
	// Source and Destination are the rule's address sets (sorted, disjoint
	// ranges; a range never mixes families). Destination is empty for an
	// application rule and for a network rule with only FQDNs.
	Source, Destination *policy.AddrSet
	// FQDNs are a network rule's destinationFqdns (lower case).
	FQDNs []string
	// The translation of a DNAT rule: TranslatedAddr or TranslatedFQDN.
	TranslatedAddr netip.Addr
	TranslatedFQDN string
	TranslatedPort uint16
	// AppProtocols and Targets of an application rule (Targets in the
	// normal form of policy.ParseFQDNPattern, lower case).
	AppProtocols []policy.AppProtocol
	Targets      []policy.FQDNPattern
}

// Rules returns the rules of kind k in evaluation order (group priority,
// collection priority, rule order), in normalised form. The slice is
// shared: do not modify it.
func (m *Matcher) Rules(k policy.Kind) []Rule {
	if k < policy.KindDNAT || k > policy.KindApplication {
		return nil
	}
	rs := m.norm[k]
	return rs[:len(rs):len(rs)]
}

// Gateway returns the gateway the matcher was compiled for (nil when
// Options.Gateway was nil), in normal form. Do not modify it.
func (m *Matcher) Gateway() *Gateway { return m.gw }

// SteeredPorts returns the TCP ports the kernel redirects from the inside
// to the L7 proxy: every port an application rule names (none when the
// gateway has no proxy), sorted and merged.
func (m *Matcher) SteeredPorts() []policy.PortRange {
	return m.steer[:len(m.steer):len(m.steer)]
}

// FQDNs returns the names whose addresses the firewall must keep
// resolved for this policy: network rules' destinationFqdns and DNAT
// rules' translatedFqdn, lower case, each once, in rule order.
func (m *Matcher) FQDNs() []string {
	var out []string
	seen := map[string]bool{}
	add := func(n string) {
		if n != "" && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, r := range m.norm[policy.KindDNAT] {
		add(r.TranslatedFQDN)
	}
	for _, r := range m.norm[policy.KindNetwork] {
		for _, n := range r.FQDNs {
			add(n)
		}
	}
	return out
}

// AddrLister is implemented by resolvers (Options.Resolver) that can list
// the addresses the firewall resolved for a name: DNAT rules with
// translatedFqdn need it. Without it such rules never match (and the
// kernel, which has no addresses to translate to, does not translate).
type AddrLister interface {
	Addrs(name string) []netip.Addr
}

// TranslateFQDN returns the address a translatedFqdn DNAT rule translates
// a flow of v6's family to: the lowest address of the family among addrs,
// the addresses the firewall resolved for the name. The kernel data plane
// picks the same one.
func TranslateFQDN(addrs []netip.Addr, v6 bool) (netip.Addr, bool) {
	var best netip.Addr
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if !a.IsValid() || a.Is6() != v6 {
			continue
		}
		if !best.IsValid() || a.Less(best) {
			best = a
		}
	}
	return best, best.IsValid()
}

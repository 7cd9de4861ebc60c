// Package match is clusterwall's one decision function. Every enforcement
// point — the kernel compiler, the L7 proxy, the DNS proxy and
// `clusterwall explain` — asks the same compiled Matcher. Nothing else in
// the tree matches rules.
//
// Azure Firewall's documented semantics: default deny, first match wins;
// kinds are evaluated in a fixed order (threat intel, DNAT, Network,
// Application) whatever their priorities; inside a kind, rule collection
// group priority, then collection priority, then rule order. If any network
// rule matches (Allow or Deny), application rules are not consulted.
//
// Compile normalises the rules once (Rule, Matcher.Rules): the matcher's
// indexes and the kernel's ruleset (internal/nft) are both built from
// that form. Decide also answers what the gateway does around the rules
// (Side, Path, Gateway): DNAT only for flows from the outside, application
// rules only for TCP the kernel redirects from the inside to the L7 proxy,
// and the firewall's own services for flows to its addresses. Matcher.Decide
// documents the order, which the kernel follows.
package match

import (
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Flow describes one new connection (or the first packet of one) as an
// enforcement point sees it.
type Flow struct {
	Src   netip.Addr
	Dst   netip.Addr // may be invalid when only Name is known
	Proto policy.Proto
	Port  uint16 // destination port; 0 for ICMP
	// Name is the destination name when one is known: the TLS SNI, the HTTP
	// Host (without port), or the name explain was asked about.
	Name string
	// Scheme is set by the L7 proxy (or explain) when the flow is HTTP or
	// HTTPS; application rules only apply to such flows.
	Scheme policy.Scheme
	// From is the side of the firewall the flow arrives on (see Side);
	// FromAny when the caller cannot tell.
	From Side
}

// Decision is the outcome of Decide. The zero value (ActionInvalid) is never
// returned by Decide and never means Allow.
//
// A decision is what the firewall does with the flow's first packet: an
// Allow or a DNAT lets the connection be established, a Deny drops it (or,
// for a network rule's Deny of TCP, answers with a reset).
type Decision struct {
	Action policy.Action
	// Kind is the kind of the deciding rule; KindInvalid for a default deny.
	Kind policy.Kind
	// Rule is the deciding rule (its Collection and Collection.Group give the
	// collection and group); nil for a default deny.
	Rule *policy.Rule
	// Reason says why, e.g. "no rule matched".
	Reason string
	// TranslatedAddr and TranslatedPort are set for DNAT.
	TranslatedAddr netip.Addr
	TranslatedPort uint16
	// TranslatedFQDN is set for a DNAT rule that translates to a name
	// (translatedFqdn) instead of an address.
	TranslatedFQDN string
	// ThreatIntel is set when threat intelligence listed the flow's
	// destination, name or source: ActionDeny when it denied the flow
	// (then Action is ActionDeny, Kind KindInvalid, Rule nil and Reason
	// ReasonThreatIntel), ActionAlert when it only reports the hit and the
	// rules decided. ThreatDescription is the AZFWThreatIntel
	// ThreatDescription ("FEED: INDICATOR (COMMENT)").
	ThreatIntel       policy.Action
	ThreatDescription string
	// Path is the part of the firewall that decides the flow (see Path).
	Path Path
	// Service names the firewall's own service that accepted a flow to one
	// of its addresses (Path PathFirewall, Action Allow).
	Service string
}

// Reasons used in decisions.
const (
	ReasonNoRuleMatched = "no rule matched"
	ReasonRuleMatched   = "rule matched"
	// ReasonThreatIntel: denied by threat intelligence before any rule.
	ReasonThreatIntel = "threat intelligence"
	// ReasonService: a flow to the firewall itself that one of its
	// services accepts (Decision.Service names it).
	ReasonService = "service of the firewall"
	// ReasonNoService: a flow to the firewall itself that none of its
	// services accepts.
	ReasonNoService = "to the firewall itself, where no service accepts it"
)

// ThreatIntel is the threat-intelligence stage that Decide runs before
// every rule, as Azure Firewall does (threatintel.Engine implements it).
// CheckThreat reports the mode's action (ActionDeny or ActionAlert) and
// the ThreatDescription when src, dst (either may be invalid) or name
// (may be empty) is listed and not allowlisted, and ActionInvalid
// otherwise (also in mode Off). It is on the hot path: it must not
// allocate and must be safe for concurrent use.
type ThreatIntel interface {
	CheckThreat(src, dst netip.Addr, name string) (policy.Action, string)
}

// FQDNResolver answers whether addr is one of the addresses the firewall
// resolved for name (a network rule's destinationFqdns entry). The daemon
// answers from the DNS proxy's table; explain from --resolve or the system
// resolver. Implementations used on the hot path must not allocate.
type FQDNResolver interface {
	Resolved(name string, addr netip.Addr) bool
}

// Package policy is clusterwall's policy model: the YAML wire format, loading
// from files with positions for every error, validation, and the validated
// runtime form that every enforcement point compiles from.
//
// The model follows Azure Firewall Policy: a policy holds rule collection
// groups, a group holds rule collections, a collection holds rules of one
// kind (DNAT, Network or Application) and one action.
package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// Kind is the kind of a rule collection. The zero value is invalid.
type Kind uint8

const (
	KindInvalid Kind = iota
	KindDNAT
	KindNetwork
	KindApplication
)

func (k Kind) String() string {
	switch k {
	case KindDNAT:
		return "DNAT"
	case KindNetwork:
		return "Network"
	case KindApplication:
		return "Application"
	}
	return "Invalid"
}

// ParseKind accepts DNAT, NAT, Network, Application (case-insensitive).
func ParseKind(s string) (Kind, bool) {
	switch strings.ToLower(s) {
	case "dnat", "nat":
		return KindDNAT, true
	case "network":
		return KindNetwork, true
	case "application":
		return KindApplication, true
	}
	return KindInvalid, false
}

// Action is what a rule collection does with a match. The zero value is
// invalid, so a forgotten decision never means Allow.
type Action uint8

const (
	ActionInvalid Action = iota
	ActionAllow
	ActionDeny
	ActionDNAT
	// ActionAlert is used by threat intelligence in Alert mode: the flow
	// goes on to the rules, but the match is logged.
	ActionAlert
)

func (a Action) String() string {
	switch a {
	case ActionAllow:
		return "Allow"
	case ActionDeny:
		return "Deny"
	case ActionDNAT:
		return "DNAT"
	case ActionAlert:
		return "Alert"
	}
	return "Invalid"
}

// ParseAction accepts Allow, Deny, DNAT/Dnat (case-insensitive).
func ParseAction(s string) (Action, bool) {
	switch strings.ToLower(s) {
	case "allow":
		return ActionAllow, true
	case "deny":
		return ActionDeny, true
	case "dnat":
		return ActionDNAT, true
	}
	return ActionInvalid, false
}

// Proto is a set of IP protocols a network or DNAT rule names.
type Proto uint8

const (
	ProtoTCP Proto = 1 << iota
	ProtoUDP
	ProtoICMP // ICMP for IPv4 and ICMPv6 for IPv6
	ProtoAny  = ProtoTCP | ProtoUDP | ProtoICMP
)

func (p Proto) String() string {
	if p == ProtoAny {
		return "Any"
	}
	var parts []string
	if p&ProtoTCP != 0 {
		parts = append(parts, "TCP")
	}
	if p&ProtoUDP != 0 {
		parts = append(parts, "UDP")
	}
	if p&ProtoICMP != 0 {
		parts = append(parts, "ICMP")
	}
	return strings.Join(parts, ",")
}

// ParseProto parses one protocol name: TCP, UDP, ICMP or Any.
func ParseProto(s string) (Proto, bool) {
	switch strings.ToLower(s) {
	case "tcp":
		return ProtoTCP, true
	case "udp":
		return ProtoUDP, true
	case "icmp", "icmpv6":
		return ProtoICMP, true
	case "any", "*":
		return ProtoAny, true
	}
	return 0, false
}

// Scheme is an application protocol of an application rule.
type Scheme uint8

const (
	SchemeNone Scheme = iota
	SchemeHTTP
	SchemeHTTPS
	SchemeMSSQL
)

func (s Scheme) String() string {
	switch s {
	case SchemeHTTP:
		return "Http"
	case SchemeHTTPS:
		return "Https"
	case SchemeMSSQL:
		return "Mssql"
	}
	return "None"
}

// ParseScheme parses http, https or mssql (case-insensitive).
func ParseScheme(s string) (Scheme, bool) {
	switch strings.ToLower(s) {
	case "http":
		return SchemeHTTP, true
	case "https":
		return SchemeHTTPS, true
	case "mssql":
		return SchemeMSSQL, true
	}
	return SchemeNone, false
}

// AppProtocol is one protocol:port pair of an application rule.
type AppProtocol struct {
	Scheme Scheme
	Port   uint16
}

func (a AppProtocol) String() string { return fmt.Sprintf("%s:%d", a.Scheme, a.Port) }

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return fmt.Sprint(r.Lo)
	}
	if r.Lo == 0 && r.Hi == 65535 {
		return "*"
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Contains reports whether p is inside the range.
func (r PortRange) Contains(p uint16) bool { return r.Lo <= p && p <= r.Hi }

// AddrRange is an inclusive range of addresses of one family.
type AddrRange struct{ From, To netip.Addr }

// Policy is a validated policy. It is immutable once built: enforcement
// points compile it and swap the compiled form atomically.
type Policy struct {
	Name     string
	Location string
	// File is the path the policy was loaded from, if any.
	File string
	// Groups are sorted by priority (100 first).
	Groups []*Group
	// ThreatIntel holds the threat-intelligence settings.
	ThreatIntel ThreatIntel
	// DNS holds the DNS proxy settings.
	DNS DNSSettings
	// FQDNTags is the effective FQDN tag table (built-in merged with the policy's).
	FQDNTags map[string][]string
	// IPGroups is the policy's IP groups, resolved.
	IPGroups map[string]*AddrSet
	// Warnings are problems that do not stop the policy from loading but
	// that its author should know about (e.g. a source that can never
	// match), with positions like errors.
	Warnings ErrorList
	// Base is the base (parent) policy this one inherits from, validated
	// on its own, or nil.
	Base *Policy

	tags    ServiceTags     // every service tag the policy's rules may use
	tagDefs map[string]bool // serviceTagDefinitions of the policy and its bases (lower case)
}

// ThreatIntel is the threat-intelligence part of a policy.
type ThreatIntel struct {
	Mode           Action // ActionInvalid when Off, ActionAlert or ActionDeny
	AllowAddresses AddrSet
	AllowFQDNs     []FQDNPattern
	Feeds          []Feed
}

// Feed is one threat-intelligence source.
type Feed struct {
	Name   string
	Path   string // resolved relative to the policy file
	URL    string
	Format string // plain, drop, hosts
}

// DNSSettings is the DNS proxy part of a policy.
type DNSSettings struct {
	EnableProxy bool
	Servers     []netip.AddrPort
}

// Group is a rule collection group.
type Group struct {
	Name        string
	Priority    int
	Collections []*Collection // sorted by priority
	Pos         Pos
	// Policy is the name of the policy that defines the group.
	Policy string
	// Inherited is set for a group of a base policy: Azure processes
	// them before the policy's own groups, whatever their priorities.
	Inherited bool
}

// Collection is a rule collection.
type Collection struct {
	Name     string
	Kind     Kind
	Priority int
	Action   Action
	Rules    []*Rule // in file order
	Group    *Group
	Pos      Pos
}

// Rule is a validated rule. Which fields are set depends on the kind of its
// collection.
type Rule struct {
	Name        string
	Description string
	Collection  *Collection
	Pos         Pos

	// Network and DNAT rules.
	Protocols        Proto
	Destination      AddrSet
	DestinationFQDNs []string // lower case, no trailing dot
	DestinationPorts []PortRange

	// All kinds.
	Source AddrSet

	// Application rules.
	AppProtocols []AppProtocol
	TargetFQDNs  []FQDNPattern // including the expansion of FQDNTags
	FQDNTags     []string

	// DNAT rules.
	TranslatedAddress netip.Addr
	TranslatedFQDN    string
	TranslatedPort    uint16
}

// Kind is the kind of the rule's collection.
func (r *Rule) Kind() Kind { return r.Collection.Kind }

// Action is the action of the rule's collection.
func (r *Rule) Action() Action { return r.Collection.Action }

// Path names the rule as group/collection/rule.
func (r *Rule) Path() string {
	return r.Collection.Group.Name + "/" + r.Collection.Name + "/" + r.Name
}

// RulesOf returns the rules of one kind in evaluation order: group priority,
// then collection priority, then rule order.
func (p *Policy) RulesOf(k Kind) []*Rule {
	var out []*Rule
	for _, g := range p.Groups {
		for _, c := range g.Collections {
			if c.Kind != k {
				continue
			}
			out = append(out, c.Rules...)
		}
	}
	return out
}

// Pos is a position in a source file. Line and Column start at 1; zero
// means unknown.
type Pos struct {
	File   string
	Line   int
	Column int
}

func (p Pos) String() string {
	switch {
	case p.File == "" && p.Line == 0:
		return ""
	case p.Line == 0:
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

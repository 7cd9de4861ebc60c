package match

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Options configure Compile.
type Options struct {
	// Resolver answers destinationFqdns of network rules. When nil, a
	// network rule's destinationFqdns never match (its addresses still do).
	Resolver FQDNResolver
	// ThreatIntel, when set, is asked before every rule (see ThreatIntel).
	ThreatIntel ThreatIntel
}

// Matcher is a compiled policy. It is immutable: Decide is safe for
// concurrent use, and a new policy is applied by compiling a new Matcher
// and swapping the pointer.
//
// Every rule gets an index in evaluation order (DNAT rules first, then
// network rules; application rules separately), and a decision is the
// lowest index that matches. DNAT and network destinations are indexed in
// a multibit trie (addrIndex), application target FQDNs in a reversed-label
// trie (nameIndex); both yield a few short candidate lists, checked in index
// order against the per-rule protocol, port and source (ruleTable), so the
// cost of Decide does not grow with the number of rules. Two things are
// scanned linearly: rules that cover the same destination or name (e.g.
// many rules to '*'), and, when a Resolver is set, the network rules with
// destinationFqdns that pass the cheap checks.
type Matcher struct {
	pol      *policy.Policy
	resolver FQDNResolver
	ti       ThreatIntel
	rules    [policy.KindApplication + 1][]*policy.Rule

	// DNAT and network rules share one index: DNAT rules take indices
	// 0..ndnat-1 and network rules follow, so "lowest index wins" also
	// puts DNAT before network.
	net      ruleTable
	ndnat    int32
	dst      addrIndex
	netFQDNs []int32 // network rules with destinationFqdns, in order
	app      ruleTable
	appNames nameIndex
}

// none is larger than every rule index: "no candidate yet".
const none = int32(math.MaxInt32)

// flowKey is a normalised Flow in the forms the indexes use.
type flowKey struct {
	src, dst flowAddr
	proto    policy.Proto
	port     uint16
	icmp     bool // ICMP flows ignore the ports of network rules
}

// Compile builds the indexes for p. It fails on a rule the matcher cannot
// index (only possible for a Policy not built by policy.Validate); the
// error names the rule.
func Compile(p *policy.Policy, opts Options) (*Matcher, error) {
	if p == nil {
		return nil, errors.New("match: nil policy")
	}
	m := &Matcher{pol: p, resolver: opts.Resolver, ti: opts.ThreatIntel}
	var actions [policy.KindApplication + 1][]policy.Action
	for _, g := range p.Groups {
		if g == nil {
			continue
		}
		for _, c := range g.Collections {
			if c == nil || c.Kind < policy.KindDNAT || c.Kind > policy.KindApplication {
				continue
			}
			for _, r := range c.Rules {
				if r == nil {
					return nil, fmt.Errorf("match: collection %q: nil rule", c.Name)
				}
				m.rules[c.Kind] = append(m.rules[c.Kind], r)
				actions[c.Kind] = append(actions[c.Kind], c.Action)
			}
		}
	}
	dnat, net := m.rules[policy.KindDNAT], m.rules[policy.KindNetwork]
	if len(dnat)+len(net) >= int(none) || len(m.rules[policy.KindApplication]) >= int(none) {
		return nil, errors.New("match: too many rules")
	}

	var b trieBuilder
	m.ndnat = int32(len(dnat))
	m.net.init(len(dnat) + len(net))
	for i, r := range append(dnat[:len(dnat):len(dnat)], net...) {
		isDNAT := i < len(dnat)
		action := policy.ActionDNAT
		if !isDNAT {
			action = actions[policy.KindNetwork][i-len(dnat)]
		}
		src, err := newAddrSet(&r.Source)
		if err != nil {
			return nil, fmt.Errorf("match: %s: source: %v", where(r), err)
		}
		dst, err := newAddrSet(&r.Destination)
		if err != nil {
			return nil, fmt.Errorf("match: %s: destination: %v", where(r), err)
		}
		m.net.add(r, action, src, isDNAT)
		if !isDNAT && len(r.DestinationFQDNs) > 0 {
			m.net.cold[i].fqdns = r.DestinationFQDNs
			m.netFQDNs = append(m.netFQDNs, int32(i))
		}
		b.add(&dst, int32(i))
	}
	m.dst = b.build()

	var nb nameBuilder
	npat := 0
	for _, r := range m.rules[policy.KindApplication] {
		npat += len(r.TargetFQDNs)
	}
	nb.init(npat)
	m.app.init(len(m.rules[policy.KindApplication]))
	for i, r := range m.rules[policy.KindApplication] {
		src, err := newAddrSet(&r.Source)
		if err != nil {
			return nil, fmt.Errorf("match: %s: source: %v", where(r), err)
		}
		m.app.add(r, actions[policy.KindApplication][i], src, false)
		for j, pat := range r.TargetFQDNs {
			norm, err := normalizePattern(pat)
			if err != nil {
				return nil, fmt.Errorf("match: %s: targetFqdns[%d]: %v", where(r), j, err)
			}
			nb.add(norm, int32(i))
		}
	}
	m.appNames = nb.build()
	return m, nil
}

// where names a rule for errors: position (when known) and path.
func where(r *policy.Rule) string {
	name := "rule " + strconv.Quote(r.Name)
	if c := r.Collection; c != nil && c.Group != nil {
		name = "rule " + r.Path()
	}
	if pos := r.Pos.String(); pos != "" {
		return pos + ": " + name
	}
	return name
}

// normalizePattern checks that pat is in the form policy.ParseFQDNPattern
// produces (so that the label index and FQDNPattern.Match agree) and
// returns it lower-cased.
func normalizePattern(pat policy.FQDNPattern) (policy.FQDNPattern, error) {
	if pat.Kind == policy.FQDNAny {
		return policy.FQDNPattern{Kind: policy.FQDNAny}, nil
	}
	switch pat.Kind {
	case policy.FQDNExact, policy.FQDNSubdomains, policy.FQDNSuffix:
	default:
		return pat, fmt.Errorf("invalid FQDN pattern kind %d", pat.Kind)
	}
	norm, err := policy.ParseFQDNPattern(pat.String())
	if err != nil {
		return pat, err
	}
	if norm.Kind != pat.Kind || !strings.EqualFold(norm.Name, pat.Name) {
		return pat, fmt.Errorf("FQDN pattern %q is not in normal form", pat.String())
	}
	return norm, nil
}

// Policy returns the policy the matcher was compiled from.
func (m *Matcher) Policy() *policy.Policy { return m.pol }

// Rules returns the rules of kind k in evaluation order (group priority,
// collection priority, rule order). The slice is shared: do not modify it.
func (m *Matcher) Rules(k policy.Kind) []*policy.Rule {
	if k < policy.KindDNAT || k > policy.KindApplication {
		return nil
	}
	rs := m.rules[k]
	return rs[:len(rs):len(rs)]
}

// normalizeFlow unmaps 4-in-6 addresses and drops zones (the linear
// matcher's equivalent of what Decide does when it builds its flowKey).
func normalizeFlow(f *Flow) {
	f.Src = f.Src.Unmap().WithZone("")
	f.Dst = f.Dst.Unmap().WithZone("")
}

// Decide returns the decision for f. It does not allocate and is safe for
// concurrent use. Its cost depends on the shape of f (address length, name
// labels) and on how many rules share f's destination or name, not on the
// number of rules in the policy.
func (m *Matcher) Decide(f Flow) Decision {
	// Threat intelligence comes before every rule kind, as in Azure: in
	// Deny mode a listed destination, name or source denies the flow; in
	// Alert mode the hit is reported with the rules' decision.
	if m.ti != nil {
		if a, desc := m.ti.CheckThreat(f.Src, f.Dst, f.Name); a != policy.ActionInvalid {
			if a == policy.ActionDeny {
				return Decision{Action: policy.ActionDeny, Kind: policy.KindInvalid, Reason: ReasonThreatIntel,
					ThreatIntel: policy.ActionDeny, ThreatDescription: desc}
			}
			d := m.decideRules(&f)
			d.ThreatIntel, d.ThreatDescription = a, desc
			return d
		}
	}
	return m.decideRules(&f)
}

// decideRules is Decide after threat intelligence: DNAT, network and
// application rules.
func (m *Matcher) decideRules(f *Flow) Decision {
	var k flowKey
	k.src.set(f.Src)
	k.dst.set(f.Dst)
	k.proto, k.port, k.icmp = f.Proto, f.Port, f.Proto == policy.ProtoICMP

	// DNAT, then network rules: one walk of the destination index. A DNAT
	// match ends evaluation, and so does any network match (Allow or Deny).
	if k.proto != 0 && k.dst.valid {
		best := m.dst.lookup(&m.net, &k, none)
		if m.resolver != nil {
			for _, ri := range m.netFQDNs {
				if ri >= best {
					break
				}
				if m.net.matchNet(ri, &k) && m.resolvedAny(m.net.cold[ri].fqdns, f.Dst.Unmap().WithZone("")) {
					best = ri
					break
				}
			}
		}
		if best != none {
			r := &m.net.hot[best]
			if best < m.ndnat {
				return Decision{
					Action: policy.ActionDNAT, Kind: policy.KindDNAT, Rule: r.rule, Reason: ReasonRuleMatched,
					TranslatedAddr: r.rule.TranslatedAddress, TranslatedPort: r.rule.TranslatedPort, TranslatedFQDN: r.rule.TranslatedFQDN,
				}
			}
			return Decision{Action: r.action, Kind: policy.KindNetwork, Rule: r.rule, Reason: ReasonRuleMatched}
		}
	}

	// Application rules: HTTP(S)/MSSQL over TCP with a name.
	if f.Scheme != policy.SchemeNone && f.Proto == policy.ProtoTCP {
		if ri := m.appNames.lookup(&m.app, &k, f.Name, f.Scheme); ri != none {
			r := &m.app.hot[ri]
			return Decision{Action: r.action, Kind: policy.KindApplication, Rule: r.rule, Reason: ReasonRuleMatched}
		}
	}
	return Decision{Action: policy.ActionDeny, Kind: policy.KindInvalid, Reason: ReasonNoRuleMatched}
}

func (m *Matcher) resolvedAny(names []string, dst netip.Addr) bool {
	for _, n := range names {
		if m.resolver.Resolved(n, dst) {
			return true
		}
	}
	return false
}

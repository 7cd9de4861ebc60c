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
	// If it also implements AddrLister, DNAT rules with translatedFqdn
	// translate to the addresses it lists; otherwise they never match.
	Resolver FQDNResolver
	// ThreatIntel, when set, is asked before every rule (see ThreatIntel).
	ThreatIntel ThreatIntel
	// Gateway, when set, describes the firewall itself (see Gateway):
	// Decide then answers flows of a known side to the firewall's own
	// addresses as its services do, and application rules only when the
	// L7 proxy runs. When nil, the proxy is taken to run and flows to the
	// firewall's addresses are decided by the rules.
	Gateway *Gateway
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
	gw       *Gateway
	norm     [policy.KindApplication + 1][]Rule
	steer    []policy.PortRange // SteeredPorts

	// DNAT and network rules share one index: DNAT rules take indices
	// 0..ndnat-1 and network rules follow, so "lowest index wins" also
	// puts DNAT before network.
	net      ruleTable
	ndnat    int32
	dst      addrIndex
	netFQDNs []int32 // network rules with destinationFqdns, in order
	app      ruleTable
	appNames nameIndex

	// built is closed when the indexes above are built (CompileStaged
	// builds them in the background); buildErr is then the build's error.
	built    chan struct{}
	buildErr error
}

// none is larger than every rule index: "no candidate yet".
const none = int32(math.MaxInt32)

// flowKey is a normalised Flow in the forms the indexes use.
type flowKey struct {
	src, dst flowAddr
	proto    policy.Proto
	port     uint16
	icmp     bool // ICMP flows ignore the ports of network rules
	noDNAT   bool // DNAT rules do not apply (a flow from the inside)
}

// Compile normalises p's rules and builds the indexes. It fails on a rule
// the matcher cannot index (only possible for a Policy not built by
// policy.Validate) and, with a Gateway that has public IPs, on a DNAT rule
// whose destination is not one of them; the error names the rule.
func Compile(p *policy.Policy, opts Options) (*Matcher, error) {
	m, err := CompileStaged(p, opts)
	if err != nil {
		return nil, err
	}
	if err := m.Built(); err != nil {
		return nil, err
	}
	return m, nil
}

// CompileStaged is Compile in two stages: it normalises p's rules (what
// Rules, Policy, Gateway, SteeredPorts and FQDNs answer) and returns,
// and builds the indexes that Decide and the other decisions use in a
// goroutine of its own, on another core if there is one. Built waits for
// that build and returns its error: nothing may ask m for a decision
// before Built has returned nil, and a Matcher whose Built fails must be
// dropped as a failed Compile would be. The daemon compiles the kernel's
// ruleset from the normalised rules meanwhile.
func CompileStaged(p *policy.Policy, opts Options) (*Matcher, error) {
	if p == nil {
		return nil, errors.New("match: nil policy")
	}
	m := &Matcher{pol: p, resolver: opts.Resolver, ti: opts.ThreatIntel}
	if opts.Gateway != nil {
		gw, err := opts.Gateway.Normalize()
		if err != nil {
			return nil, err
		}
		m.gw = gw
	}
	// The normalized rules' lists made at their size (grown, they were a
	// third of a 10,000-rule compile).
	var sizes [policy.KindApplication + 1]int
	for _, g := range p.Groups {
		if g == nil {
			continue
		}
		for _, c := range g.Collections {
			if c != nil && c.Kind >= policy.KindDNAT && c.Kind <= policy.KindApplication {
				sizes[c.Kind] += len(c.Rules)
			}
		}
	}
	for k, n := range sizes {
		if n > 0 {
			m.norm[k] = make([]Rule, 0, n)
		}
	}
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
				nr := Rule{Policy: r, Kind: c.Kind, Index: len(m.norm[c.Kind]), Action: c.Action,
					Protocols: r.Protocols, Source: &r.Source, Destination: &r.Destination}
				switch c.Kind {
				case policy.KindDNAT:
					nr.Action = policy.ActionDNAT
					nr.Protocols &^= policy.ProtoICMP
					nr.Ports = sortedPorts(r.DestinationPorts)
					nr.TranslatedAddr, nr.TranslatedPort = r.TranslatedAddress.Unmap(), r.TranslatedPort
					if !nr.TranslatedAddr.IsValid() {
						nr.TranslatedFQDN = strings.ToLower(strings.TrimSuffix(r.TranslatedFQDN, "."))
					}
					if err := m.checkDNAT(r); err != nil {
						return nil, err
					}
				case policy.KindNetwork:
					nr.Ports = sortedPorts(r.DestinationPorts)
					for _, n := range r.DestinationFQDNs {
						nr.FQDNs = append(nr.FQDNs, strings.ToLower(strings.TrimSuffix(n, ".")))
					}
				case policy.KindApplication:
					nr.Protocols = 0
					nr.AppProtocols = r.AppProtocols
					for j, pat := range r.TargetFQDNs {
						norm, err := normalizePattern(pat)
						if err != nil {
							return nil, fmt.Errorf("match: %s: targetFqdns[%d]: %v", where(r), j, err)
						}
						nr.Targets = append(nr.Targets, norm)
					}
				}
				m.norm[c.Kind] = append(m.norm[c.Kind], nr)
			}
		}
	}
	dnat, net := m.norm[policy.KindDNAT], m.norm[policy.KindNetwork]
	if len(dnat)+len(net) >= int(none) || len(m.norm[policy.KindApplication]) >= int(none) {
		return nil, errors.New("match: too many rules")
	}
	if m.gw == nil || m.gw.Proxy {
		var ports []policy.PortRange
		for _, r := range m.norm[policy.KindApplication] {
			for _, ap := range r.AppProtocols {
				ports = append(ports, policy.PortRange{Lo: ap.Port, Hi: ap.Port})
			}
		}
		m.steer = sortedPorts(ports)
	}

	m.built = make(chan struct{})
	go func() {
		defer close(m.built)
		defer func() {
			// A panic in the build fails the compile (the apply keeps the
			// running policy) instead of the process.
			if r := recover(); r != nil {
				m.buildErr = fmt.Errorf("match: building the indexes: %v", r)
			}
		}()
		m.buildErr = m.buildIndexes(opts)
	}()
	return m, nil
}

// Built waits until m's indexes are built (at once for a Matcher of
// Compile) and returns the build's error.
func (m *Matcher) Built() error {
	if m.built == nil {
		return nil
	}
	<-m.built
	return m.buildErr
}

// buildIndexes builds the indexes of m's normalised rules.
func (m *Matcher) buildIndexes(opts Options) error {
	dnat, net := m.norm[policy.KindDNAT], m.norm[policy.KindNetwork]
	var b trieBuilder
	var blocks rangeBlocks
	m.ndnat = int32(len(dnat))
	m.net.init(len(dnat) + len(net))
	if l, ok := opts.Resolver.(AddrLister); ok {
		m.net.lister = l
	}
	for i := range len(dnat) + len(net) {
		var r *Rule
		if i < len(dnat) {
			r = &dnat[i]
		} else {
			r = &net[i-len(dnat)]
		}
		src, err := blocks.addrSet(r.Source)
		if err != nil {
			return fmt.Errorf("match: %s: source: %v", where(r.Policy), err)
		}
		dst, err := blocks.addrSet(r.Destination)
		if err != nil {
			return fmt.Errorf("match: %s: destination: %v", where(r.Policy), err)
		}
		m.net.add(r.Policy, r.Action, src, r.Kind == policy.KindDNAT)
		if len(r.FQDNs) > 0 {
			m.net.cold[i].fqdns = r.FQDNs
			m.netFQDNs = append(m.netFQDNs, int32(i))
		}
		b.add(&dst, int32(i))
	}
	m.dst = b.build()

	var nb nameBuilder
	npat := 0
	for _, r := range m.norm[policy.KindApplication] {
		npat += len(r.Targets)
	}
	nb.init(npat)
	m.app.init(len(m.norm[policy.KindApplication]))
	for i, r := range m.norm[policy.KindApplication] {
		src, err := blocks.addrSet(r.Source)
		if err != nil {
			return fmt.Errorf("match: %s: source: %v", where(r.Policy), err)
		}
		m.app.add(r.Policy, r.Action, src, false)
		for _, pat := range r.Targets {
			nb.add(pat, int32(i))
		}
	}
	m.appNames = nb.build()
	return nil
}

// checkDNAT checks that a DNAT rule's destinations are public IPs of the
// gateway (when it has any): traffic to another address never reaches the
// rule from the outside.
func (m *Matcher) checkDNAT(r *policy.Rule) error {
	if m.gw == nil || len(m.gw.PublicIPs) == 0 {
		return nil
	}
	for _, d := range r.Destination.Ranges {
		// Every address of the range must be public: a range has at most
		// len(PublicIPs) of them, so this stops early.
		for a := d.From; ; a = a.Next() {
			if !m.gw.IsPublic(a) {
				return fmt.Errorf("%s: DNAT rule %s: destination %s is not a public IP of the firewall (%s)", r.Pos, r.Path(), a, addrList(m.gw.PublicIPs))
			}
			if a == d.To {
				break
			}
		}
	}
	if r.Destination.Any {
		return fmt.Errorf("%s: DNAT rule %s: destination '*' is not a public IP of the firewall (%s)", r.Pos, r.Path(), addrList(m.gw.PublicIPs))
	}
	return nil
}

func addrList(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
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

// normalizeFlow unmaps 4-in-6 addresses and drops zones (what Decide does
// when it builds its flowKey).
func normalizeFlow(f *Flow) {
	f.Src = f.Src.Unmap().WithZone("")
	f.Dst = f.Dst.Unmap().WithZone("")
}

// Decide returns the decision for f. It does not allocate (a DNAT rule
// with translatedFqdn asks the resolver's Addrs, which may) and is safe
// for concurrent use. Its cost depends on the shape of f (address length,
// name labels) and on how many rules share f's destination or name, not
// on the number of rules in the policy.
//
// The order of evaluation is the kernel's (nft.Compile builds the same):
//
//  1. threat intelligence, for every flow (in mode Deny a listed
//     destination, name or source denies it);
//  2. DNAT rules, for a flow from the outside (or FromAny);
//  3. the path (Decision.Path): TCP from the inside to a port of an
//     application rule is redirected to the L7 proxy (PathProxy); else a
//     flow of a known side to an address of the Gateway is for the
//     firewall itself (PathFirewall); else it is forwarded (PathForward);
//  4. PathForward and PathProxy: network rules; any match (Allow or Deny)
//     decides. PathProxy: then application rules (they need the flow's
//     Scheme and Name). PathFirewall: the Gateway's services;
//  5. the default deny.
func (m *Matcher) Decide(f Flow) Decision {
	return m.decide(&f, false)
}

// DecideLinear is Decide with the rules walked one by one in evaluation
// order (the reference the indexes are tested against; its cost grows
// with the number of rules).
func (m *Matcher) DecideLinear(f Flow) Decision {
	normalizeFlow(&f)
	return m.decide(&f, true)
}

func (m *Matcher) decide(f *Flow, linear bool) Decision {
	var k flowKey
	k.src.set(f.Src)
	k.dst.set(f.Dst)
	k.proto, k.port, k.icmp = f.Proto, f.Port, f.Proto == policy.ProtoICMP
	k.noDNAT = f.From == FromInside
	path := m.path(f, &k)
	// Threat intelligence comes before every rule kind, as in Azure: in
	// Deny mode a listed destination, name or source denies the flow; in
	// Alert mode the hit is reported with the rules' decision.
	if m.ti != nil {
		if a, desc := m.ti.CheckThreat(f.Src, f.Dst, f.Name); a != policy.ActionInvalid {
			if a == policy.ActionDeny {
				return Decision{Action: policy.ActionDeny, Kind: policy.KindInvalid, Reason: ReasonThreatIntel,
					ThreatIntel: policy.ActionDeny, ThreatDescription: desc, Path: path}
			}
			d := m.decideRules(f, &k, path, linear)
			d.ThreatIntel, d.ThreatDescription = a, desc
			return d
		}
	}
	return m.decideRules(f, &k, path, linear)
}

// path is step 3 of Decide.
func (m *Matcher) path(f *Flow, k *flowKey) Path {
	if f.From != FromOutside && f.Proto == policy.ProtoTCP && len(m.steer) > 0 && portsContain(m.steer, f.Port) {
		return PathProxy
	}
	if m.gw != nil && f.From != FromAny && k.dst.valid && m.gw.IsLocal(f.Dst) {
		return PathFirewall
	}
	return PathForward
}

// decideRules is Decide after threat intelligence.
func (m *Matcher) decideRules(f *Flow, k *flowKey, path Path, linear bool) Decision {
	// DNAT, then network rules: one walk of the destination index. A DNAT
	// match ends evaluation, and so does any network match (Allow or
	// Deny). On the firewall's own path only DNAT rules apply.
	if k.proto != 0 && k.dst.valid {
		limit := none
		if path == PathFirewall {
			limit = m.ndnat
		}
		var best int32
		if linear {
			best = m.linearNet(f, k, limit)
		} else {
			best = m.dst.lookup(&m.net, k, limit)
			if m.resolver != nil && limit == none {
				for _, ri := range m.netFQDNs {
					if ri >= best {
						break
					}
					if m.net.matchNet(ri, k) && m.resolvedAny(m.net.cold[ri].fqdns, f.Dst.Unmap().WithZone("")) {
						best = ri
						break
					}
				}
			}
		}
		if best < limit {
			r := &m.net.hot[best]
			if best < m.ndnat {
				d := Decision{
					Action: policy.ActionDNAT, Kind: policy.KindDNAT, Rule: r.rule, Reason: ReasonRuleMatched,
					TranslatedPort: r.rule.TranslatedPort, TranslatedFQDN: m.net.cold[best].toFQDN, Path: PathForward,
				}
				d.TranslatedAddr, _ = m.net.translated(best, k.dst.is4)
				return d
			}
			return Decision{Action: r.action, Kind: policy.KindNetwork, Rule: r.rule, Reason: ReasonRuleMatched, Path: path}
		}
	}
	switch path {
	case PathFirewall:
		if s := m.gw.service(f, f.Dst.Unmap().WithZone("")); s != nil {
			return Decision{Action: policy.ActionAllow, Kind: policy.KindInvalid, Reason: ReasonService, Path: path, Service: s.Name}
		}
		return Decision{Action: policy.ActionDeny, Kind: policy.KindInvalid, Reason: ReasonNoService, Path: path}
	case PathProxy:
		// Application rules: HTTP(S)/MSSQL with a name.
		if f.Scheme != policy.SchemeNone {
			ri := none
			if linear {
				ri = m.linearApp(f, k)
			} else {
				ri = m.appNames.lookup(&m.app, k, f.Name, f.Scheme)
			}
			if ri != none {
				r := &m.app.hot[ri]
				return Decision{Action: r.action, Kind: policy.KindApplication, Rule: r.rule, Reason: ReasonRuleMatched, Path: path}
			}
		}
	}
	return Decision{Action: policy.ActionDeny, Kind: policy.KindInvalid, Reason: ReasonNoRuleMatched, Path: path}
}

func (m *Matcher) resolvedAny(names []string, dst netip.Addr) bool {
	for _, n := range names {
		if m.resolver.Resolved(n, dst) {
			return true
		}
	}
	return false
}

package logquery

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// SuggestOptions tune Suggest.
type SuggestOptions struct {
	// Policy is the running policy (optional). With it, flows it already
	// allows are left out, its IP groups and rule sources are the prefixes
	// sources collapse into, and the new group gets a free name and
	// priority.
	Policy *policy.Policy
	// MinCount leaves out destinations denied fewer times (default 1).
	MinCount int
	// WildcardMin is how many distinct denied names (or narrower
	// wildcards) below one domain make a "*.domain" (default 2).
	WildcardMin int
	// ClusterCIDRs are more prefixes sources collapse into (--cluster-cidr).
	ClusterCIDRs []netip.Prefix
	// ExactSources keeps every source address as it was seen.
	ExactSources bool
	// GroupName names the new rule collection group (default "suggested").
	GroupName string
}

// Collector gathers the evidence Suggest works from: denied flows, and
// what threat intelligence flagged (never to be allowed).
type Collector struct {
	app     map[appKey]*evidence
	net     map[netKey]*evidence
	tiNames map[string]int
	tiAddrs map[netip.Addr]int
	// skipped counts denied records Suggest cannot turn into an allow rule,
	// by reason.
	skipped     map[string]int
	explicit    map[string]int // rule path -> denied flows
	first, last time.Time
	denied      int
}

type appKey struct {
	name string
	ap   policy.AppProtocol
}

type netKey struct {
	proto policy.Proto
	dst   netip.Addr
	port  uint16
}

type evidence struct {
	count   int
	sources map[netip.Addr]int
	dsts    map[netip.Addr]bool // application flows: the addresses the client connected to
}

// NewCollector makes an empty collector.
func NewCollector() *Collector {
	return &Collector{app: map[appKey]*evidence{}, net: map[netKey]*evidence{}, tiNames: map[string]int{},
		tiAddrs: map[netip.Addr]int{}, skipped: map[string]int{}, explicit: map[string]int{}}
}

func isThreatIntelReason(s string) bool {
	return strings.HasPrefix(strings.ToLower(s), "threat intel")
}

// Add takes one record into account.
func (c *Collector) Add(r *telemetry.Record) {
	// Whatever threat intelligence flagged (Deny or Alert) is never allowed.
	if r.Category == telemetry.CategoryThreatIntel || isThreatIntelReason(r.ActionReason) {
		if n := RecordName(r); n != "" {
			c.tiNames[strings.ToLower(n)]++
		}
		if a, err := netip.ParseAddr(r.DestinationIp); err == nil {
			c.tiAddrs[a.Unmap()]++
		}
		if strings.EqualFold(r.Action, "Deny") {
			c.note(r)
			c.skipped["denied by threat intelligence (never suggested)"]++
		}
		return
	}
	if !strings.EqualFold(r.Action, "Deny") {
		return
	}
	c.note(r)
	switch {
	case r.Category == telemetry.CategoryWAF:
		c.skipped["blocked by the WAF (inbound requests: tune the WAF, not the egress rules)"]++
		return
	case r.Category == telemetry.CategoryDNSQuery:
		c.skipped["DNS queries refused"]++
		return
	case strings.HasPrefix(r.ActionReason, telemetry.ReasonPolicyChanged):
		// The operator's own change ended it: not a flow to allow.
		c.skipped["open connections closed by a policy change"]++
		return
	case r.Rule != "":
		c.explicit[r.RuleCollectionGroup+"/"+r.RuleCollection+"/"+r.Rule]++
		return
	case !strings.Contains(r.ActionReason, match.ReasonNoRuleMatched):
		reason := r.ActionReason
		if reason == "" {
			reason = "no reason logged"
		}
		c.skipped["denied for another reason: "+reason]++
		return
	}
	src, err := netip.ParseAddr(r.SourceIp)
	if err != nil {
		c.skipped["no source address"]++
		return
	}
	src = src.Unmap()
	switch r.Category {
	case telemetry.CategoryApplicationRule:
		name := strings.ToLower(RecordName(r))
		scheme, ok := policy.ParseScheme(r.Protocol)
		if name == "" || !ok || r.DestinationPort <= 0 || r.DestinationPort > 65535 {
			c.skipped["application flows without a name (SNI/Host) or protocol"]++
			return
		}
		if _, err := policy.NormalizeFQDN(name); err != nil {
			c.skipped["application flows to an invalid name"]++
			return
		}
		e := c.app[appKey{name, policy.AppProtocol{Scheme: scheme, Port: uint16(r.DestinationPort)}}]
		if e == nil {
			e = &evidence{sources: map[netip.Addr]int{}, dsts: map[netip.Addr]bool{}}
			c.app[appKey{name, policy.AppProtocol{Scheme: scheme, Port: uint16(r.DestinationPort)}}] = e
		}
		e.count++
		e.sources[src]++
		if d, err := netip.ParseAddr(r.OriginalDestinationIp); err == nil {
			e.dsts[d.Unmap()] = true
		}
	case telemetry.CategoryNetworkRule:
		dst, err := netip.ParseAddr(r.DestinationIp)
		proto, ok := policy.ParseProto(r.Protocol)
		if err != nil || !ok || proto == policy.ProtoAny {
			c.skipped["network flows without a destination or protocol"]++
			return
		}
		if strings.Contains(r.ActionReason, "input chain") {
			c.skipped["connections to the firewall itself"]++
			return
		}
		k := netKey{proto: proto, dst: dst.Unmap()}
		if proto != policy.ProtoICMP {
			if r.DestinationPort <= 0 || r.DestinationPort > 65535 {
				c.skipped["network flows without a destination port"]++
				return
			}
			k.port = uint16(r.DestinationPort)
		}
		e := c.net[k]
		if e == nil {
			e = &evidence{sources: map[netip.Addr]int{}}
			c.net[k] = e
		}
		e.count++
		e.sources[src]++
	default:
		c.skipped["category "+r.Category]++
	}
}

func (c *Collector) note(r *telemetry.Record) {
	c.denied++
	if c.first.IsZero() || r.Time.Before(c.first) {
		c.first = r.Time
	}
	if r.Time.After(c.last) {
		c.last = r.Time
	}
}

// Suggestion is a proposed rule collection group that allows the denied
// flows of the evidence.
type Suggestion struct {
	PolicyName string
	Group      string
	Priority   int
	Network    []*SuggestedRule
	App        []*SuggestedRule
	// IPGroups are the policy's IP groups the rules name (for the
	// standalone document).
	IPGroups map[string][]string
	// Notes are the comments at the top: evidence left out, and why.
	Notes []string
	// Flows is how many denied flows the rules allow.
	Flows int
	// Denied is how many denied records the evidence had.
	Denied      int
	First, Last time.Time
}

// SuggestedRule is one proposed rule with its evidence.
type SuggestedRule struct {
	Name string
	// Network: protocols, destinations and ports; Application: protocols
	// ("Https:443") and target FQDNs.
	Protocols     []string
	SourceAddrs   []string
	SourceGroups  []string
	Destinations  []string
	Ports         []string
	TargetFQDNs   []string
	Count         int
	Comment       string   // evidence summary
	ItemComments  []string // per destination / target FQDN
	SourceComment string
}

// Suggest turns the evidence into the smallest set of rules that allows
// every denied flow seen at least MinCount times (per destination), except
// what threat intelligence flagged, what an explicit Deny rule denied, and
// what the policy already allows. docs/logs.md describes the method.
func (c *Collector) Suggest(o SuggestOptions) (*Suggestion, error) {
	if o.MinCount <= 0 {
		o.MinCount = 1
	}
	if o.WildcardMin < 2 {
		o.WildcardMin = 2
	}
	if o.GroupName == "" {
		o.GroupName = "suggested"
	}
	s := &Suggestion{Denied: c.denied, First: c.first, Last: c.last, IPGroups: map[string][]string{}}
	var m *match.Matcher
	if o.Policy != nil {
		s.PolicyName = o.Policy.Name
		var err error
		if m, err = match.Compile(o.Policy, match.Options{}); err != nil {
			return nil, err
		}
	}
	s.Group, s.Priority = freeGroup(o.Policy, o.GroupName)
	cov := newCoverer(o)

	skipped := map[string]int{}
	for k, v := range c.skipped {
		skipped[k] = v
	}
	var tiLeft []string

	// Application evidence: per name, the protocols and sources.
	names := map[string]*nameEv{}
	for k, e := range c.app {
		if c.threatName(k.name) {
			tiLeft = append(tiLeft, k.name)
			skipped["flows to names threat intelligence flagged (never suggested)"] += e.count
			continue
		}
		if m != nil && c.allowedNow(m, k, e) {
			skipped["flows the current policy already allows (logged before a reload)"] += e.count
			continue
		}
		n := names[k.name]
		if n == nil {
			n = &nameEv{protos: map[policy.AppProtocol]int{}, sources: map[netip.Addr]int{}}
			names[k.name] = n
		}
		n.protos[k.ap] += e.count
		n.count += e.count
		for a, cnt := range e.sources {
			n.sources[a] += cnt
		}
	}
	for name, n := range names {
		if n.count < o.MinCount {
			skipped[fmt.Sprintf("destinations denied fewer than %d times (--min-count)", o.MinCount)] += n.count
			delete(names, name)
		}
	}
	// FQDN items: names collapsed into wildcards.
	items := collapse(names, c.threatUnder, o.WildcardMin)
	// Group items with the same sources and protocols into one rule.
	appRules := map[string]*SuggestedRule{}
	var appOrder []string
	for _, it := range items {
		srcs, sgroups, scomment := cov.cover(it.sources)
		protos := appProtocols(it.protos)
		key := strings.Join(srcs, ",") + "|" + strings.Join(sgroups, ",") + "|" + strings.Join(protos, ",")
		r := appRules[key]
		if r == nil {
			r = &SuggestedRule{Protocols: protos, SourceAddrs: srcs, SourceGroups: sgroups, SourceComment: scomment}
			appRules[key] = r
			appOrder = append(appOrder, key)
		}
		r.TargetFQDNs = append(r.TargetFQDNs, it.pattern)
		r.ItemComments = append(r.ItemComments, it.comment())
		r.Count += it.count
		for _, g := range sgroups {
			s.IPGroups[g] = cov.groupText(g)
		}
	}
	for _, k := range appOrder {
		r := appRules[k]
		r.Name = ruleName("allow", r.TargetFQDNs[0], s.App)
		r.Comment = fmt.Sprintf("%s (%s)", flows(r.Count), strings.Join(r.Protocols, ", "))
		s.App = append(s.App, r)
		s.Flows += r.Count
	}

	// Network evidence: per (protocol, destination) the ports and sources.
	type dstEv struct {
		ports   map[uint16]int
		sources map[netip.Addr]int
		count   int
	}
	type pd struct {
		proto policy.Proto
		dst   netip.Addr
	}
	dsts := map[pd]*dstEv{}
	for k, e := range c.net {
		if c.tiAddrs[k.dst] > 0 {
			tiLeft = append(tiLeft, k.dst.String())
			skipped["flows to addresses threat intelligence flagged (never suggested)"] += e.count
			continue
		}
		if m != nil {
			allowed := true
			for src := range e.sources {
				d := m.Decide(match.Flow{Src: src, Dst: k.dst, Proto: k.proto, Port: k.port})
				if d.Action != policy.ActionAllow {
					allowed = false
					break
				}
			}
			if allowed {
				skipped["flows the current policy already allows (logged before a reload)"] += e.count
				continue
			}
		}
		d := dsts[pd{k.proto, k.dst}]
		if d == nil {
			d = &dstEv{ports: map[uint16]int{}, sources: map[netip.Addr]int{}}
			dsts[pd{k.proto, k.dst}] = d
		}
		d.ports[k.port] += e.count
		d.count += e.count
		for a, cnt := range e.sources {
			d.sources[a] += cnt
		}
	}
	// Group destinations with the same sources, protocol and ports; then
	// rules that differ only in protocol.
	type netGroup struct {
		srcs, sgroups []string
		scomment      string
		protos        policy.Proto
		ports         []string
		dsts          []netip.Addr
		dstCounts     map[netip.Addr]int
		count         int
	}
	groups := map[string]*netGroup{}
	var order []string
	var pds []pd
	for k := range dsts {
		pds = append(pds, k)
	}
	sort.Slice(pds, func(i, j int) bool {
		if pds[i].dst != pds[j].dst {
			return pds[i].dst.Less(pds[j].dst)
		}
		return pds[i].proto < pds[j].proto
	})
	for _, k := range pds {
		d := dsts[k]
		if d.count < o.MinCount {
			skipped[fmt.Sprintf("destinations denied fewer than %d times (--min-count)", o.MinCount)] += d.count
			continue
		}
		srcs, sgroups, scomment := cov.cover(d.sources)
		ports := portList(d.ports, k.proto)
		key := strings.Join(srcs, ",") + "|" + strings.Join(sgroups, ",") + "|" + strconv.Itoa(int(k.proto)) + "|" + strings.Join(ports, ",")
		g := groups[key]
		if g == nil {
			g = &netGroup{srcs: srcs, sgroups: sgroups, scomment: scomment, protos: k.proto, ports: ports, dstCounts: map[netip.Addr]int{}}
			groups[key] = g
			order = append(order, key)
		}
		g.dsts = append(g.dsts, k.dst)
		g.dstCounts[k.dst] += d.count
		g.count += d.count
		for _, gname := range sgroups {
			s.IPGroups[gname] = cov.groupText(gname)
		}
	}
	// Merge groups that differ only in protocol (TCP and UDP to the same
	// ports and destinations).
	merged := map[string]*netGroup{}
	var morder []string
	for _, key := range order {
		g := groups[key]
		dk := strings.Join(g.srcs, ",") + "|" + strings.Join(g.sgroups, ",") + "|" + strings.Join(g.ports, ",") + "|" + fmt.Sprint(g.dsts)
		if h := merged[dk]; h != nil && g.protos != policy.ProtoICMP && h.protos&policy.ProtoICMP == 0 {
			h.protos |= g.protos
			h.count += g.count
			for a, n := range g.dstCounts {
				h.dstCounts[a] += n
			}
			continue
		}
		merged[dk] = g
		morder = append(morder, dk)
	}
	for _, dk := range morder {
		g := merged[dk]
		var b policy.AddrSetBuilder
		for _, a := range g.dsts {
			b.AddPrefix(netip.PrefixFrom(a, a.BitLen()))
		}
		set := b.Build()
		r := &SuggestedRule{SourceAddrs: g.srcs, SourceGroups: g.sgroups, SourceComment: g.scomment, Ports: g.ports, Count: g.count}
		for _, p := range []policy.Proto{policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP} {
			if g.protos&p != 0 {
				r.Protocols = append(r.Protocols, p.String())
			}
		}
		for _, p := range set.Prefixes() {
			r.Destinations = append(r.Destinations, prefixText(p))
			var parts []string
			for _, a := range g.dsts {
				if p.Contains(a) {
					parts = append(parts, fmt.Sprintf("%s (%d)", a, g.dstCounts[a]))
				}
			}
			r.ItemComments = append(r.ItemComments, strings.Join(parts, ", "))
		}
		hint := strings.Join(g.ports, "-")
		if g.protos == policy.ProtoICMP {
			hint = ""
		}
		r.Name = ruleName("allow-"+strings.ToLower(strings.Join(r.Protocols, "-")), hint, s.Network)
		r.Comment = flows(r.Count)
		s.Network = append(s.Network, r)
		s.Flows += r.Count
	}

	// Notes.
	if len(tiLeft) > 0 {
		sort.Strings(tiLeft)
		tiLeft = dedupe(tiLeft)
		s.Notes = append(s.Notes, "Never suggested: threat intelligence flagged "+strings.Join(limit(tiLeft, 10), ", ")+
			" — allow them only after investigating, and with a threatIntel allowlist entry.")
	}
	var expl []string
	for p, n := range c.explicit {
		expl = append(expl, fmt.Sprintf("%s (%d)", p, n))
	}
	sort.Strings(expl)
	if len(expl) > 0 {
		s.Notes = append(s.Notes, "Denied by explicit Deny rules (not overridden here): "+strings.Join(limit(expl, 10), ", "))
	}
	var sk []string
	for reason, n := range skipped {
		sk = append(sk, fmt.Sprintf("%s: %d", reason, n))
	}
	sort.Strings(sk)
	for _, x := range sk {
		s.Notes = append(s.Notes, "Left out — "+x)
	}
	return s, nil
}

// allowedNow reports whether m already allows the application flow from
// every source.
func (c *Collector) allowedNow(m *match.Matcher, k appKey, e *evidence) bool {
	for src := range e.sources {
		var dst netip.Addr
		for d := range e.dsts {
			dst = d
			break
		}
		d := m.Decide(match.Flow{Src: src, Dst: dst, Proto: policy.ProtoTCP, Port: k.ap.Port, Name: k.name, Scheme: k.ap.Scheme})
		if d.Action != policy.ActionAllow {
			return false
		}
	}
	return true
}

// threatName reports whether threat intelligence flagged name, or a
// domain name is under (feeds list domains).
func (c *Collector) threatName(name string) bool {
	for n := name; n != ""; {
		if c.tiNames[n] > 0 {
			return true
		}
		i := strings.IndexByte(n, '.')
		if i < 0 {
			break
		}
		n = n[i+1:]
	}
	return false
}

// fqdnItem is one target FQDN entry: an exact name or a wildcard.
type fqdnItem struct {
	pattern string // "api.example.com" or "*.example.com"
	base    string // the name, or the domain below which the wildcard matches
	members []string
	counts  map[string]int
	protos  map[policy.AppProtocol]int
	sources map[netip.Addr]int
	count   int
}

func (it *fqdnItem) comment() string {
	if len(it.members) == 1 && it.members[0] == it.pattern {
		return fmt.Sprintf("%d denied", it.count)
	}
	var parts []string
	for _, m := range it.members {
		parts = append(parts, fmt.Sprintf("%s (%d)", m, it.counts[m]))
	}
	return fmt.Sprintf("%d denied: %s", it.count, strings.Join(limit(parts, 8), ", "))
}

type nameEv struct {
	protos  map[policy.AppProtocol]int
	sources map[netip.Addr]int
	count   int
}

// collapse turns denied names into target FQDN entries: below each
// registrable domain (public suffix + one label, from the Public Suffix
// List including its private section, via golang.org/x/net/publicsuffix),
// the deepest domain with at least min distinct names (or narrower
// wildcards) strictly below it becomes "*.domain", repeatedly up to the
// registrable domain itself. A wildcard is never made at or above a public
// suffix (no "*.com", "*.co.uk", "*.blob.core.windows.net"), and never
// over a domain with a name threat intelligence flagged.
func collapse(names map[string]*nameEv, blocked func(domain string) bool, min int) []*fqdnItem {
	var items []*fqdnItem
	byRD := map[string][]*fqdnItem{}
	for name, n := range names {
		it := &fqdnItem{pattern: name, base: name, members: []string{name}, counts: map[string]int{name: n.count},
			protos: n.protos, sources: n.sources, count: n.count}
		rd, err := publicsuffix.EffectiveTLDPlusOne(name)
		if err != nil || !strings.Contains(name, ".") {
			items = append(items, it)
			continue
		}
		byRD[rd] = append(byRD[rd], it)
	}
	for rd, list := range byRD {
		// Candidate domains: every strict ancestor of a name, down to rd.
		cands := map[string]bool{}
		for _, it := range list {
			for d := parent(it.base); d != "" && (d == rd || strings.HasSuffix(d, "."+rd)); d = parent(d) {
				cands[d] = true
			}
		}
		var order []string
		for d := range cands {
			order = append(order, d)
		}
		// Deepest first (more labels), then by name for determinism.
		sort.Slice(order, func(i, j int) bool {
			li, lj := strings.Count(order[i], "."), strings.Count(order[j], ".")
			if li != lj {
				return li > lj
			}
			return order[i] < order[j]
		})
		for _, d := range order {
			var below, rest []*fqdnItem
			for _, it := range list {
				if strings.HasSuffix(it.base, "."+d) {
					below = append(below, it)
				} else {
					rest = append(rest, it)
				}
			}
			if len(below) < min || blocked(d) {
				continue
			}
			w := &fqdnItem{pattern: "*." + d, base: d, counts: map[string]int{},
				protos: map[policy.AppProtocol]int{}, sources: map[netip.Addr]int{}}
			for _, it := range below {
				w.members = append(w.members, it.members...)
				for k, v := range it.counts {
					w.counts[k] += v
				}
				for k, v := range it.protos {
					w.protos[k] += v
				}
				for k, v := range it.sources {
					w.sources[k] += v
				}
				w.count += it.count
			}
			sort.Strings(w.members)
			list = append(rest, w)
		}
		items = append(items, list...)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].pattern < items[j].pattern })
	return items
}

// threatUnder reports whether threat intelligence flagged domain, a domain
// above it, or any name below it: "*.domain" would allow it.
func (c *Collector) threatUnder(domain string) bool {
	if c.threatName(domain) {
		return true
	}
	for n := range c.tiNames {
		if strings.HasSuffix(n, "."+domain) {
			return true
		}
	}
	return false
}

func parent(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 {
		return ""
	}
	return name[i+1:]
}

package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/clusterwall/clusterwall/internal/iprange"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// Compile turns a validated policy into the data plane's ruleset. It does
// not touch the kernel; a Runner applies the result. Compile is
// deterministic: the same policy and config give the same ruleset, names
// included.
func Compile(p *policy.Policy, cfg Config) (*Ruleset, error) {
	if p == nil {
		return nil, fmt.Errorf("compile: no policy")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &compiler{
		cfg: cfg,
		p:   p,
		rs: &Ruleset{
			Table:    cfg.Table,
			LogGroup: cfg.LogGroup,
			LogLimit: LimitSpec{Rate: cfg.LogRate, Burst: cfg.LogBurst},
			fqdnSets: map[string][]string{},
		},
		interned: map[string]string{},
		counters: map[string]int{},
	}
	pre := c.baseChain("prerouting", HookPrerouting, "nat", -100, "accept")
	// The filter chains end with an explicit drop rule and have policy
	// accept: a base chain's hook is live from the moment a batch creates
	// it (the first apply, or a change of hook or priority), before the
	// commit gives it its rules; with policy drop it would drop everything
	// in the meantime. Later applies keep the base chains (see plan).
	input := c.baseChain("input", HookInput, "filter", 0, "accept")
	fwd := c.baseChain("forward", HookForward, "filter", 0, "accept")
	var post *Chain
	if cfg.SNAT != SNATOff {
		post = c.baseChain("postrouting", HookPostrouting, "nat", 100, "accept")
	}

	if err := c.threatIntel(pre); err != nil {
		return nil, err
	}
	c.steer(pre)
	c.input(input)
	fwd.add("", MatchCtState{CtStateEstablished | CtStateRelated}, Verdict{Kind: VerdictAccept})
	fwd.add("", MatchCtState{CtStateInvalid}, Counter{}, Verdict{Kind: VerdictDrop})
	c.threatIntelForward(fwd)
	if err := c.dnat(pre, fwd); err != nil {
		return nil, err
	}
	c.network(fwd)
	fwd.add(LogTag{Kind: LogDefaultDeny}.String()+" no rule matched", Counter{}, c.limitedLog(LogTag{Kind: LogDefaultDeny}))
	fwd.add("", Verdict{Kind: VerdictDrop})
	if post != nil {
		c.snat(post)
	}
	return c.rs, nil
}

type compiler struct {
	cfg      Config
	p        *policy.Policy
	rs       *Ruleset
	interned map[string]string // set contents -> set name
	counters map[string]int    // name prefix -> next number
}

func (c *compiler) name(prefix string) string {
	n := c.counters[prefix]
	c.counters[prefix] = n + 1
	return prefix + "_" + strconv.Itoa(n)
}

func (c *compiler) baseChain(name string, hook Hook, typ string, prio int, pol string) *Chain {
	ch := &Chain{Name: name, Hook: hook, Type: typ, Priority: prio, Policy: pol}
	c.rs.Chains = append(c.rs.Chains, ch)
	return ch
}

func (c *compiler) chain(name string) *Chain {
	ch := &Chain{Name: name}
	c.rs.Chains = append(c.rs.Chains, ch)
	return ch
}

func (ch *Chain) add(comment string, stmts ...Stmt) {
	ch.Rules = append(ch.Rules, &Rule{Comment: truncComment(comment), Stmts: stmts})
}

// limitedLog logs under the shared rate limit (default deny and input
// drops: what floods and scans hit).
func (c *compiler) limitedLog(t LogTag) Log {
	t.Gen = c.cfg.LogGeneration
	return Log{Prefix: t.String(), Group: c.cfg.LogGroup, Limit: true}
}

// truncComment keeps a comment within the kernel's userdata limit (one
// TLV of at most 255 bytes with its NUL), cutting at a rune boundary.
func truncComment(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && s[cut]&0xc0 == 0x80 {
		cut--
	}
	return s[:cut]
}

// input protects the firewall itself.
func (c *compiler) input(ch *Chain) {
	ch.add("", MatchCtState{CtStateEstablished | CtStateRelated}, Verdict{Kind: VerdictAccept})
	ch.add("loopback (the admin API listens here)", MatchIfName{Name: "lo"}, Verdict{Kind: VerdictAccept})
	ch.add("", MatchNFProto{ipv4}, MatchL4Proto{protoICMP}, Verdict{Kind: VerdictAccept})
	ch.add("ICMPv6 including neighbour discovery", MatchNFProto{ipv6}, MatchL4Proto{protoICMPv6}, Verdict{Kind: VerdictAccept})
	ch.add("", MatchCtState{CtStateInvalid}, Verdict{Kind: VerdictDrop})
	for _, proto := range []uint8{protoUDP, protoTCP} {
		dns := ivl{u128{0, 53}, u128{0, 53}}
		if len(c.cfg.PrivateIPs) == 0 {
			ch.add("DNS from the inside", MatchIfName{Name: c.cfg.Inside}, MatchL4Proto{proto},
				MatchRange{Field: fieldPort, iv: dns}, Verdict{Kind: VerdictAccept})
			continue
		}
		for _, a := range c.cfg.PrivateIPs {
			fam := famOf(a)
			v := addrVal(a.Unmap())
			ch.add("DNS from the inside", MatchIfName{Name: c.cfg.Inside}, MatchNFProto{fam},
				MatchRange{Family: fam, Field: fieldDst, iv: ivl{v, v}}, MatchL4Proto{proto},
				MatchRange{Field: fieldPort, iv: dns}, Verdict{Kind: VerdictAccept})
		}
	}
	if len(c.cfg.InsideTCPPorts) > 0 {
		var ports []policy.PortRange
		for _, p := range c.cfg.InsideTCPPorts {
			ports = append(ports, policy.PortRange{Lo: p, Hi: p})
		}
		sort.Slice(ports, func(i, j int) bool { return ports[i].Lo < ports[j].Lo })
		ch.add("services of the firewall", MatchIfName{Name: c.cfg.Inside}, MatchL4Proto{protoTCP},
			c.match(0, fieldPort, mergeIntervals(portIntervals(ports))), Verdict{Kind: VerdictAccept})
	}
	c.outsideServices(ch)
	t := LogTag{Kind: LogInputDrop}
	ch.add(t.String()+" to the firewall itself", Counter{}, c.limitedLog(t))
	ch.add("", Verdict{Kind: VerdictDrop})
}

// mergeIntervals sorts intervals and merges those that overlap or touch
// (iprange.Merge).
func mergeIntervals(in []ivl) []ivl {
	rs := make([]iprange.Range, len(in))
	for i, iv := range in {
		rs[i] = iprange.Range{Lo: iv.lo.num(), Hi: iv.hi.num()}
	}
	rs = iprange.Merge(rs)
	out := make([]ivl, len(rs))
	for i, r := range rs {
		out[i] = ivl{ofNum(r.Lo), ofNum(r.Hi)}
	}
	return out
}

func famOf(a netip.Addr) family {
	if a.Unmap().Is4() {
		return ipv4
	}
	return ipv6
}

// dnat compiles the DNAT rules: a translation in prerouting for each, and
// the accept of translated flows in forward.
func (c *compiler) dnat(pre, fwd *Chain) error {
	rules := c.p.RulesOf(policy.KindDNAT)
	c.rs.Stats.DNATRules = len(rules)
	var accept *Chain
	for j, r := range rules {
		tag := LogTag{Kind: LogDNAT, Index: j}
		comment := tag.String() + " " + r.Path()
		if !r.TranslatedAddress.IsValid() {
			c.rs.Warnings = append(c.rs.Warnings, fmt.Sprintf("DNAT rule %s: translatedFqdn %q is not supported by the kernel data plane yet; the rule is not installed", r.Path(), r.TranslatedFQDN))
			continue
		}
		t := r.TranslatedAddress.Unmap()
		fam := famOf(t)
		var dsts []ivl
		for _, d := range r.Destination.Ranges {
			for a := d.From; ; a = a.Next() {
				if len(c.cfg.PublicIPs) > 0 && !c.cfg.isPublic(a) {
					return fmt.Errorf("%s: DNAT rule %s: destination %s is not a public IP of the firewall (%s)", r.Pos, r.Path(), a, addrList(c.cfg.PublicIPs))
				}
				if a == d.To {
					break
				}
			}
			if famOf(d.From) == fam {
				dsts = append(dsts, ivl{addrVal(d.From), addrVal(d.To)})
			}
		}
		srcs := addrIntervals(&r.Source, fam)
		if len(dsts) == 0 || (srcs != nil && len(srcs) == 0) {
			c.rs.Warnings = append(c.rs.Warnings, fmt.Sprintf("DNAT rule %s: no %s source or destination; the rule is not installed", r.Path(), fam.nfproto()))
			continue
		}
		ports := portIntervals(r.DestinationPorts)
		target := c.chain("dnat_" + strconv.Itoa(j))
		target.add(comment, Counter{}, c.limitedLog(tag))
		target.add(comment, DNAT{Addr: t, Port: r.TranslatedPort})
		if accept == nil {
			accept = c.chain("dnat_accept")
			fwd.add("flows translated by a DNAT rule", MatchCtDNAT{}, Verdict{Kind: VerdictJump, Chain: accept.Name})
		}
		tv := addrVal(t)
		tp := u128{0, uint64(r.TranslatedPort)}
		for _, proto := range []uint8{protoTCP, protoUDP} {
			if (proto == protoTCP && r.Protocols&policy.ProtoTCP == 0) || (proto == protoUDP && r.Protocols&policy.ProtoUDP == 0) {
				continue
			}
			stmts := []Stmt{MatchIfName{Name: c.cfg.Outside}, MatchNFProto{fam}, c.match(fam, fieldDst, dsts), MatchL4Proto{proto}, c.match(fam, fieldPort, ports)}
			if srcs != nil {
				stmts = append(stmts, c.match(fam, fieldSrc, srcs))
			}
			pre.add(comment, append(stmts, Verdict{Kind: VerdictGoto, Chain: target.Name})...)
			accept.add(comment, MatchNFProto{fam}, MatchL4Proto{proto}, MatchRange{Family: fam, Field: fieldDst, iv: ivl{tv, tv}},
				MatchRange{Field: fieldPort, iv: ivl{tp, tp}}, Verdict{Kind: VerdictAccept})
		}
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

// snat compiles the source translation of outbound flows.
func (c *compiler) snat(ch *Chain) {
	out := MatchIfName{Out: true, Name: c.cfg.Outside}
	ch.add("inbound DNAT keeps the client's address", out, MatchCtDNAT{}, Verdict{Kind: VerdictAccept})
	for _, fam := range []family{ipv4, ipv6} {
		var to netip.Addr
		if c.cfg.SNAT == SNATFixed {
			for _, a := range c.cfg.PublicIPs {
				if famOf(a) == fam {
					to = a.Unmap()
					break
				}
			}
		}
		if to.IsValid() {
			ch.add("", out, MatchNFProto{fam}, SNAT{Addr: to})
		} else {
			ch.add("", out, MatchNFProto{fam}, Masquerade{})
		}
	}
}

// steer redirects cluster TCP to application rules' ports to the L7 proxy.
func (c *compiler) steer(pre *Chain) {
	if c.cfg.ProxyPort == 0 {
		return
	}
	var ports []policy.PortRange
	for _, r := range c.p.RulesOf(policy.KindApplication) {
		for _, ap := range r.AppProtocols {
			ports = append(ports, policy.PortRange{Lo: ap.Port, Hi: ap.Port})
		}
	}
	if len(ports) == 0 {
		return
	}
	merged := policy.MergePorts(ports)
	c.cfg.InsideTCPPorts = append(c.cfg.InsideTCPPorts, c.cfg.ProxyPort)
	pre.add("application rules' ports to the L7 proxy", MatchIfName{Name: c.cfg.Inside}, MatchL4Proto{protoTCP},
		c.match(0, fieldPort, portIntervals(merged)), Redirect{Port: c.cfg.ProxyPort})
}

// match returns the statement that matches field f against ivs: a single
// comparison for one interval, else a lookup in an interned named set.
func (c *compiler) match(fam family, f field, ivs []ivl) Stmt {
	if f == fieldPort {
		fam = 0 // ports do not depend on the family
	}
	if len(ivs) == 1 {
		return MatchRange{Family: fam, Field: f, iv: ivs[0]}
	}
	var key strings.Builder
	fmt.Fprintf(&key, "%d/%d", fam, f)
	for _, iv := range ivs {
		fmt.Fprintf(&key, "/%x.%x-%x.%x", iv.lo.hi, iv.lo.lo, iv.hi.hi, iv.hi.lo)
	}
	name, ok := c.interned[key.String()]
	if !ok {
		prefix := "p"
		switch {
		case f == fieldPort:
		case fam == ipv4:
			prefix = "a4"
		default:
			prefix = "a6"
		}
		name = c.name(prefix)
		s := &Set{Name: name, Kind: SetPlain, Family: fam, Field: f}
		for _, iv := range ivs {
			s.Elems = append(s.Elems, Elem{iv: iv})
		}
		c.rs.Sets = append(c.rs.Sets, s)
		c.interned[key.String()] = name
	}
	return MatchSet{Family: fam, Field: f, Set: name}
}

// network compiles the network rules: for each family and protocol, a
// classifier that finds the first rule a new flow matches and there counts,
// logs and decides.
func (c *compiler) network(fwd *Chain) {
	rules := c.p.RulesOf(policy.KindNetwork)
	c.rs.Stats.NetworkRules = len(rules)
	type key struct {
		fam   family
		proto uint8
	}
	lists := map[key][]*entry{}
	for i, r := range rules {
		deny := r.Action() == policy.ActionDeny
		tag := LogTag{Kind: LogAllow, Index: i}
		if deny {
			tag.Kind = LogDeny
		}
		comment := truncComment(tag.String() + " " + r.Path())
		for _, fam := range []family{ipv4, ipv6} {
			src := addrIntervals(&r.Source, fam)
			if src != nil && len(src) == 0 {
				continue
			}
			dst := addrIntervals(&r.Destination, fam)
			fqdnSet := ""
			for _, proto := range []uint8{protoTCP, protoUDP, protoICMP} {
				var ports []ivl
				switch proto {
				case protoTCP, protoUDP:
					if (proto == protoTCP && r.Protocols&policy.ProtoTCP == 0) || (proto == protoUDP && r.Protocols&policy.ProtoUDP == 0) {
						continue
					}
					ports = portIntervals(r.DestinationPorts)
					if len(ports) == 0 {
						continue
					}
				case protoICMP:
					if r.Protocols&policy.ProtoICMP == 0 {
						continue
					}
				}
				k := key{fam, proto}
				if proto == protoICMP && fam == ipv6 {
					k.proto = protoICMPv6
				}
				e := entry{rule: i, tag: tag, deny: deny, comment: comment}
				if dst == nil || len(dst) > 0 {
					e.iv = [numFields][]ivl{src, dst, ports}
					lists[k] = append(lists[k], expand(e)...)
				}
				if len(r.DestinationFQDNs) > 0 {
					if fqdnSet == "" {
						fqdnSet = c.fqdnSet(i, fam, comment, r.DestinationFQDNs)
					}
					e.iv = [numFields][]ivl{src, nil, ports}
					e.fqdnSet = fqdnSet
					lists[k] = append(lists[k], expand(e)...)
				}
			}
		}
	}
	for _, fam := range []family{ipv4, ipv6} {
		protos := []uint8{protoTCP, protoUDP, protoICMP}
		if fam == ipv6 {
			protos[2] = protoICMPv6
		}
		for _, proto := range protos {
			l := lists[key{fam, proto}]
			if len(l) == 0 {
				continue
			}
			c.rs.Stats.Entries += len(l)
			cl := newClassifier(c, fam, proto)
			root := cl.root(l)
			if root == "" {
				continue
			}
			fwd.add("", MatchNFProto{fam}, MatchL4Proto{proto}, Verdict{Kind: VerdictJump, Chain: root})
			if n := cl.maxSeq(); n > c.rs.Stats.MaxSequential {
				c.rs.Stats.MaxSequential = n
			}
		}
	}
}

// maxExpand bounds how many entries expand makes of one.
const maxExpand = 6

// expand splits an entry whose fields hold a few intervals into
// consecutive entries of one interval per field, as long as that makes at
// most maxExpand entries. Consecutive entries of one rule match exactly
// what the rule matches, in the same place in the order; single intervals
// dispatch better and need no named set, and named sets are what makes a
// large batch slow in the kernel (a lookup expression finds its set by a
// linear search of the table's sets).
func expand(e entry) []*entry {
	n := 1
	var split [numFields]bool
	for f := fieldSrc; f < numFields; f++ {
		if k := len(e.iv[f]); k > 1 && n*k <= maxExpand {
			split[f] = true
			n *= k
		}
	}
	out := []*entry{&e}
	for f := fieldSrc; f < numFields; f++ {
		if !split[f] {
			continue
		}
		var next []*entry
		for _, x := range out {
			for _, iv := range x.iv[f] {
				y := *x
				y.iv[f] = []ivl{iv}
				next = append(next, &y)
			}
		}
		out = next
	}
	return out
}

// decision returns the statements that count, log and carry out a network
// rule's action for a flow of protocol proto. A Deny answers TCP with a
// reset (the client fails fast and sees a policy decision) and drops
// anything else.
func (c *compiler) decision(e *entry, proto uint8) []Stmt {
	tag := e.tag
	tag.Gen = c.cfg.LogGeneration
	out := []Stmt{Counter{}, Log{Prefix: tag.String(), Group: c.cfg.LogGroup}}
	switch {
	case !e.deny:
		return append(out, Verdict{Kind: VerdictAccept})
	case proto == protoTCP:
		return append(out, RejectTCPReset{})
	}
	return append(out, Verdict{Kind: VerdictDrop})
}

// decisionChain returns a chain that holds only e's decision, for a
// classifier node where nothing is left to test.
func (c *compiler) decisionChain(e *entry, proto uint8) string {
	name := "rule_" + strconv.Itoa(e.rule)
	if e.deny && proto == protoTCP {
		name += "_tcp"
	}
	if c.rs.Chain(name) == nil {
		ch := c.chain(name)
		ch.add(e.comment, c.decision(e, proto)...)
	}
	return name
}

// FQDNSetName is the name of the set that holds the addresses of family
// ip ("v4" or "v6") resolved for network rule index's destinationFqdns.
func FQDNSetName(index int, v6 bool) string {
	if v6 {
		return "fqdn_" + strconv.Itoa(index) + "_v6"
	}
	return "fqdn_" + strconv.Itoa(index) + "_v4"
}

func (c *compiler) fqdnSet(i int, fam family, comment string, names []string) string {
	name := FQDNSetName(i, fam == ipv6)
	c.rs.Sets = append(c.rs.Sets, &Set{Name: name, Kind: SetFQDN, Family: fam, Field: fieldDst,
		Comment: truncComment(comment + " fqdns: " + strings.Join(names, ","))})
	for _, n := range names {
		l := c.rs.fqdnSets[n]
		if !slices.Contains(l, name) {
			l = append(l, name)
			sort.Strings(l)
		}
		c.rs.fqdnSets[n] = l
	}
	return name
}

// outsideServices accepts TCP from the internet to OutsideTCPPorts on the
// public IPs, or only on OutsideTCPAddrs when set (to any address of the
// outside interface when there are none): the firewall's own services
// there, such as the ingress WAF.
func (c *compiler) outsideServices(ch *Chain) {
	if len(c.cfg.OutsideTCPPorts) == 0 {
		return
	}
	var ports []policy.PortRange
	for _, p := range c.cfg.OutsideTCPPorts {
		ports = append(ports, policy.PortRange{Lo: p, Hi: p})
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i].Lo < ports[j].Lo })
	pm := c.match(0, fieldPort, mergeIntervals(portIntervals(ports)))
	const comment = "services of the firewall to the internet (ingress WAF)"
	if len(c.cfg.PublicIPs) == 0 {
		ch.add(comment, MatchIfName{Name: c.cfg.Outside}, MatchL4Proto{protoTCP}, pm, Verdict{Kind: VerdictAccept})
		return
	}
	addrs := c.cfg.PublicIPs
	if len(c.cfg.OutsideTCPAddrs) > 0 {
		addrs = c.cfg.OutsideTCPAddrs
	}
	for _, fam := range []family{ipv4, ipv6} {
		var dsts []ivl
		for _, a := range addrs {
			if famOf(a) == fam {
				v := addrVal(a.Unmap())
				dsts = append(dsts, ivl{v, v})
			}
		}
		if len(dsts) == 0 {
			continue
		}
		sort.Slice(dsts, func(i, j int) bool { return dsts[i].lo.less(dsts[j].lo) })
		ch.add(comment, MatchIfName{Name: c.cfg.Outside}, MatchNFProto{fam}, c.match(fam, fieldDst, mergeIntervals(dsts)),
			MatchL4Proto{protoTCP}, pm, Verdict{Kind: VerdictAccept})
	}
}

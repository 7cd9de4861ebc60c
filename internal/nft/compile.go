package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/clusterwall/clusterwall/internal/iprange"
	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// Compile turns a compiled matcher into the data plane's ruleset: the
// kernel is a compiled form of the matcher. Every rule comes from
// m.Rules (the matcher's normalised rules, in its evaluation order), the
// ports redirected to the L7 proxy from m.SteeredPorts, and the firewall's
// own services from m.Gateway, which must be cfg.Gateway(): compile the
// matcher with match.Options{Gateway: cfg.Gateway()}. Nothing here reads
// the policy's rules a second time. Compile does not touch the kernel; a
// Runner applies the result. It is deterministic: the same matcher and
// config give the same ruleset, names included.
func Compile(m *match.Matcher, cfg Config) (*Ruleset, error) {
	return CompileCached(m, cfg, nil)
}

// CompileCached is Compile with a cache of the classifier trees of the
// previous compile (see Cache); its result is the same as Compile's. A nil
// cache is Compile.
func CompileCached(m *match.Matcher, cfg Config, cache *Cache) (*Ruleset, error) {
	if m == nil {
		return nil, fmt.Errorf("compile: no matcher")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	gw := cfg.Gateway()
	if m.Gateway() == nil {
		return nil, fmt.Errorf("compile: the matcher was compiled without a gateway: compile it with match.Options{Gateway: cfg.Gateway()}")
	}
	if !m.Gateway().Equal(gw) {
		return nil, fmt.Errorf("compile: the matcher was compiled for another gateway than the data plane's config describes")
	}
	cfg = cfg.withDefaults()
	c := &compiler{
		cfg: cfg,
		m:   m,
		gw:  gw,
		rs: &Ruleset{
			Table:    cfg.Table,
			LogGroup: cfg.LogGroup,
			LogLimit: LimitSpec{Rate: cfg.LogRate, Burst: cfg.LogBurst},
			fqdnSets: map[string][]string{},
			dnatMaps: map[string][]string{},
		},
		interned: map[string]string{},
		cache:    cache,
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

	// prerouting sees the first packet of every new flow (a nat chain):
	// threat intelligence, the L7 proxy's redirect, DNAT, in the order
	// match.Decide documents.
	ti, err := c.threatIntel()
	if err != nil {
		return nil, err
	}
	if ti != nil && ti.deny {
		pre.add("threat intelligence before every rule (mode Deny)", Verdict{Kind: VerdictJump, Chain: ThreatChain})
	}
	c.steer(pre)
	if ti != nil && !ti.deny {
		pre.add("threat intelligence before every rule (mode Alert; the L7 proxy reports what it decides)", Verdict{Kind: VerdictJump, Chain: ThreatChain})
	}
	accept, err := c.dnat(pre)
	if err != nil {
		return nil, err
	}
	c.input(input, accept)
	fwd.add("", MatchCtState{CtStateEstablished | CtStateRelated}, Verdict{Kind: VerdictAccept})
	fwd.add("", MatchCtState{CtStateInvalid}, Counter{}, Verdict{Kind: VerdictDrop})
	c.haForward(fwd) // ha.go
	if accept != nil {
		fwd.add("flows translated by a DNAT rule", MatchCtDNAT{}, Verdict{Kind: VerdictJump, Chain: accept.Name})
	}
	c.network(fwd)
	dd := c.tag(LogTag{Kind: LogDefaultDeny})
	fwd.add(LogTag{Kind: LogDefaultDeny}.String()+" no rule matched", Counter{Name: dd.String()}, c.limitedLog(dd))
	fwd.add("", Verdict{Kind: VerdictDrop})
	if post != nil {
		c.haPostrouting(post) // ha.go
		c.snat(post)
	}
	if len(pre.Rules) == 0 {
		// No threat intelligence, L7 redirect or DNAT: no prerouting
		// chain. A nat chain, even empty, registers the kernel's NAT hooks,
		// which give every new flow a null binding at prerouting and
		// postrouting (about 1.4 µs of a flow's CPU, docs/benchmarks.md,
		// "The new flow's path in the kernel"); with SNAT off nothing else
		// needs them.
		c.dropChain(pre)
	}
	n, err := nameRuleset(c.rs, c.reused) // names.go
	if err != nil {
		return nil, err
	}
	c.keep(n) // treecache.go
	return c.rs, nil
}

type compiler struct {
	cfg      Config
	m        *match.Matcher
	gw       *match.Gateway
	rs       *Ruleset
	interned map[string]string // set contents -> set name
	nameSeq  int               // the number of the last name made by name

	// The classifier tree being built: its decision chains and interned
	// sets are its own (a tree is built as if it were the only one, so
	// that Cache can reuse it; the namer makes duplicates one).
	decided      map[string]*Chain // decision chain's prefix -> the chain (provisional name)
	treeInterned map[string]string

	fqdnComments map[string]string // FQDN set -> its comment (its content)
	entries      []entry           // the block newEntry allocates in
	nEntries     int               // the classifier's entries of every family and protocol
	decisions    map[decisionKey][]Stmt

	cache    *Cache
	ruleRecs []*ruleRec                // this compile's network rules' entries (treecache.go)
	ruleHits int                       // rules whose entries are the last compile's
	building *builtTree                // the tree under way
	leafHead []byte                    // its treeHead
	trees    []*builtTree              // the trees of this compile (treecache.go)
	reused   map[string][hashSize]byte // final names of reused trees' objects -> their sums

	limitName  string       // rs.LogLimit.Name(), made once (logLimit)
	fusedRules []Rule       // the block fusedLeaf allocates its rules in
	fusedPtrs  []*Rule      // the lists of them
	fusedStmts []Stmt       // their statements
	fusedMs    []MatchRange // and their matches
}

// name returns a new name that starts with prefix. It is provisional:
// nameByContent gives every chain and set its final name, and replaces
// what follows the prefix (provisionalSep and a number) with the hash.
// The number is the compile's, not the prefix's, and the prefix is found
// again in the name, not in a map (two map operations per chain, each a
// cache miss at 100,000 rules, were 4 % of a large compile's CPU).
func (c *compiler) name(prefix string) string {
	c.nameSeq++
	return prefix + provisionalSep + strconv.Itoa(c.nameSeq)
}

// tag returns t with the generation of its log prefix
// (Config.LogGenerations, else Config.LogGeneration).
func (c *compiler) tag(t LogTag) LogTag { return c.cfg.cfgTag(t) }

func (c *compiler) baseChain(name string, hook Hook, typ string, prio int, pol string) *Chain {
	ch := &Chain{Name: name, Hook: hook, Type: typ, Priority: prio, Policy: pol}
	c.rs.Chains = append(c.rs.Chains, ch)
	return ch
}

// dropChain takes ch (the last chain of its name) out of the ruleset.
func (c *compiler) dropChain(ch *Chain) {
	c.rs.Chains = slices.DeleteFunc(c.rs.Chains, func(x *Chain) bool { return x == ch })
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
// drops: what floods and scans hit); t carries its generation (tag).
func (c *compiler) limitedLog(t LogTag) Log {
	return c.limitedLogAs(t.String())
}

// limitedLogAs is limitedLog with the tag's text made already.
func (c *compiler) limitedLogAs(prefix string) Log {
	return Log{Prefix: prefix, Group: c.cfg.LogGroup, Limit: c.logLimit()}
}

// logLimit is the name of the shared log limit (rs.LogLimit.Name(), made
// once).
func (c *compiler) logLimit() string {
	if c.limitName == "" {
		c.limitName = c.rs.LogLimit.Name()
	}
	return c.limitName
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

// input protects the firewall itself: new flows to its own addresses are
// accepted by its services (the gateway's, match.Service) and dropped
// otherwise, as match.Decide answers for PathFirewall. Flows a DNAT rule
// translated to one of its addresses are accepted like forwarded ones.
func (c *compiler) input(ch *Chain, dnatAccept *Chain) {
	ch.add("", MatchCtState{CtStateEstablished | CtStateRelated}, Verdict{Kind: VerdictAccept})
	ch.add("loopback (the admin API listens here)", MatchIfName{Name: "lo"}, Verdict{Kind: VerdictAccept})
	// ICMP first: ICMPv6 neighbour discovery has no conntrack entry (its
	// ct state is invalid).
	for _, s := range c.gw.Services {
		if s.Proto == policy.ProtoICMP {
			c.service(ch, s)
		}
	}
	ch.add("", MatchCtState{CtStateInvalid}, Verdict{Kind: VerdictDrop})
	if dnatAccept != nil {
		ch.add("flows translated by a DNAT rule", MatchCtDNAT{}, Verdict{Kind: VerdictJump, Chain: dnatAccept.Name})
	}
	for _, s := range c.gw.Services {
		if s.Proto != policy.ProtoICMP {
			c.service(ch, s)
		}
	}
	c.haInput(ch) // ha.go
	t := c.tag(LogTag{Kind: LogInputDrop})
	ch.add(LogTag{Kind: LogInputDrop}.String()+" to the firewall itself", Counter{Name: t.String()}, c.limitedLog(t))
	ch.add("", Verdict{Kind: VerdictDrop})
}

// service accepts what one service of the firewall serves.
func (c *compiler) service(ch *Chain, s match.Service) {
	comment := "service of the firewall: " + s.Name
	var side []Stmt
	switch s.From {
	case match.FromInside:
		side = []Stmt{MatchIfName{Name: c.cfg.Inside}}
	case match.FromOutside:
		side = []Stmt{MatchIfName{Name: c.cfg.Outside}}
	}
	ports := mergeIntervals(portIntervals(s.Ports))
	for _, fam := range []family{ipv4, ipv6} {
		var head []Stmt
		if s.Addrs != nil {
			var dsts []ivl
			for _, a := range s.Addrs {
				if famOf(a) == fam {
					v := addrVal(a)
					dsts = append(dsts, ivl{v, v})
				}
			}
			if len(dsts) == 0 {
				continue
			}
			sort.Slice(dsts, func(i, j int) bool { return dsts[i].lo.less(dsts[j].lo) })
			head = []Stmt{MatchNFProto{fam}, c.match(fam, fieldDst, mergeIntervals(dsts))}
		}
		for _, p := range []policy.Proto{policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP} {
			if s.Proto&p == 0 {
				continue
			}
			stmts := append(append([]Stmt(nil), side...), head...)
			switch p {
			case policy.ProtoTCP, policy.ProtoUDP:
				l4 := protoTCP
				if p == policy.ProtoUDP {
					l4 = protoUDP
				}
				if s.Addrs == nil && fam == ipv6 {
					continue // one rule for both families
				}
				stmts = append(stmts, MatchL4Proto{l4}, c.match(0, fieldPort, ports))
			case policy.ProtoICMP:
				l4 := protoICMP
				if fam == ipv6 {
					l4 = protoICMPv6
				}
				if s.Addrs == nil {
					stmts = append(stmts, MatchNFProto{fam})
				}
				stmts = append(stmts, MatchL4Proto{l4})
			}
			ch.add(comment, append(stmts, Verdict{Kind: VerdictAccept})...)
		}
	}
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

// dnat compiles the DNAT rules (m.Rules(KindDNAT)) into prerouting: a
// translation for each, on packets from the outside. It returns the chain
// that accepts translated flows (jumped to from forward and input), nil
// when there is no DNAT rule.
//
// A rule with translatedFqdn translates through maps, dnat_fqdn_<i>_v4
// and _v6 (DNATMapName), from the rule's public IPs to the address the
// firewall resolved for the name (the lowest of the family,
// match.TranslateFQDN), which the runner keeps up to date from
// Runner.AddFQDNAddrs; while it has none the rule does not match.
func (c *compiler) dnat(pre *Chain) (*Chain, error) {
	rules := c.m.Rules(policy.KindDNAT)
	c.rs.Stats.DNATRules = len(rules)
	var accept *Chain
	for _, r := range rules {
		j := r.Index
		tag := LogTag{Kind: LogDNAT, Index: j}
		comment := tag.String() + " " + r.Policy.Path()
		var fams []family
		if r.TranslatedAddr.IsValid() {
			fams = []family{famOf(r.TranslatedAddr)}
		} else {
			fams = []family{ipv4, ipv6}
		}
		var target *Chain
		installed := false
		for _, fam := range fams {
			var dsts []ivl
			for _, d := range r.Destination.Ranges {
				if famOf(d.From) == fam {
					dsts = append(dsts, ivl{addrVal(d.From), addrVal(d.To)})
				}
			}
			srcs := addrIntervals(r.Source, fam)
			if len(dsts) == 0 || (srcs != nil && len(srcs) == 0) {
				continue
			}
			installed = true
			if target == nil {
				target = c.chain("dnat_" + strconv.Itoa(j))
				t := c.tag(tag)
				target.add(comment, Counter{Name: t.String()}, c.limitedLog(t))
			}
			if accept == nil {
				accept = c.chain("dnat_accept")
			}
			var mapName string
			if r.TranslatedAddr.IsValid() {
				target.add(comment, DNAT{Addr: r.TranslatedAddr, Port: r.TranslatedPort})
			} else {
				mapName = c.dnatMap(j, fam, comment, r.TranslatedFQDN, r.Destination)
				target.add(comment, MatchNFProto{fam}, DNATMap{Family: fam, Map: mapName, Port: r.TranslatedPort})
			}
			ports := portIntervals(r.Ports)
			tp := u128{0, uint64(r.TranslatedPort)}
			for _, proto := range []uint8{protoTCP, protoUDP} {
				if (proto == protoTCP && r.Protocols&policy.ProtoTCP == 0) || (proto == protoUDP && r.Protocols&policy.ProtoUDP == 0) {
					continue
				}
				stmts := []Stmt{MatchIfName{Name: c.cfg.Outside}, MatchNFProto{fam}, c.match(fam, fieldDst, dsts), MatchL4Proto{proto}, c.match(fam, fieldPort, ports)}
				if srcs != nil {
					stmts = append(stmts, c.match(fam, fieldSrc, srcs))
				}
				if mapName != "" {
					// Only while the name resolves (the map has the key).
					stmts = append(stmts, MatchSet{Family: fam, Field: fieldDst, Set: mapName})
				}
				pre.add(comment, append(stmts, Verdict{Kind: VerdictGoto, Chain: target.Name})...)
				acc := []Stmt{MatchNFProto{fam}, MatchL4Proto{proto}}
				if r.TranslatedAddr.IsValid() {
					tv := addrVal(r.TranslatedAddr)
					acc = append(acc, MatchRange{Family: fam, Field: fieldDst, iv: ivl{tv, tv}})
				}
				// A translatedFqdn's address changes with the name: its
				// flows are accepted by the translated port (only our
				// prerouting translates: the flow was DNAT-ed here).
				accept.add(comment, append(acc, MatchRange{Field: fieldPort, iv: ivl{tp, tp}}, Verdict{Kind: VerdictAccept})...)
			}
		}
		if !installed {
			c.rs.Warnings = append(c.rs.Warnings, fmt.Sprintf("DNAT rule %s: no source or destination of the translation's family; the rule is not installed", r.Policy.Path()))
		}
	}
	return accept, nil
}

// DNATMapName is the name of the map that translates the public IPs of
// DNAT rule index (a translatedFqdn rule) to the address of family ip
// ("v4" or "v6") the firewall resolved for the name.
func DNATMapName(index int, v6 bool) string {
	if v6 {
		return "dnat_fqdn_" + strconv.Itoa(index) + "_v6"
	}
	return "dnat_fqdn_" + strconv.Itoa(index) + "_v4"
}

func (c *compiler) dnatMap(j int, fam family, comment, fqdn string, dsts *policy.AddrSet) string {
	name := DNATMapName(j, fam == ipv6)
	s := &Set{Name: name, Kind: SetDNATFQDN, Family: fam, Field: fieldDst, FQDN: fqdn,
		Comment: truncComment(comment + " translatedFqdn: " + fqdn)}
	for _, d := range dsts.Ranges {
		if famOf(d.From) != fam {
			continue
		}
		for a := d.From; ; a = a.Next() {
			v := addrVal(a)
			s.Elems = append(s.Elems, Elem{iv: ivl{v, v}})
			if a == d.To || len(s.Elems) > 1<<16 {
				break
			}
		}
	}
	c.rs.Sets = append(c.rs.Sets, s)
	c.rs.dnatMaps[fqdn] = append(c.rs.dnatMaps[fqdn], name)
	return name
}

// snat compiles the source translation of outbound flows.
func (c *compiler) snat(ch *Chain) {
	out := MatchIfName{Out: true, Name: c.cfg.Outside}
	ch.add("inbound DNAT keeps the client's address", out, MatchCtDNAT{}, Verdict{Kind: VerdictAccept})
	if c.cfg.SNAT == SNATPool {
		c.snatPool(ch) // snatpool.go
		return
	}
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

// steer redirects TCP from the inside to the ports of application rules
// (m.SteeredPorts) to the L7 proxy, which decides them with the matcher.
func (c *compiler) steer(pre *Chain) {
	ports := c.m.SteeredPorts()
	if c.cfg.ProxyPort == 0 || len(ports) == 0 {
		return
	}
	pre.add("application rules' ports to the L7 proxy", MatchIfName{Name: c.cfg.Inside}, MatchL4Proto{protoTCP},
		c.match(0, fieldPort, portIntervals(ports)), Redirect{Port: c.cfg.ProxyPort})
}

// match returns the statement that matches field f against ivs: a single
// comparison for one interval, else a lookup in an interned named set.
func (c *compiler) match(fam family, f field, ivs []ivl) Stmt {
	return c.matchIn(c.interned, fam, f, ivs)
}

// matchIn is match with the interned sets of interned.
func (c *compiler) matchIn(interned map[string]string, fam family, f field, ivs []ivl) Stmt {
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
	name, ok := interned[key.String()]
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
		interned[key.String()] = name
	}
	return MatchSet{Family: fam, Field: f, Set: name}
}

// network compiles the network rules: for each family and protocol, a
// classifier that finds the first rule a new flow matches and there counts,
// logs and decides.
func (c *compiler) network(fwd *Chain) {
	rules := c.m.Rules(policy.KindNetwork)
	c.rs.Stats.NetworkRules = len(rules)
	type key struct {
		fam   family
		proto uint8
	}
	lists := map[key][]*entry{}
	var (
		prev     []*ruleRec
		arena    recArena
		recEs    []*entry
		recLists []ruleList
	)
	if c.cache != nil {
		c.cache.mu.Lock()
		prev = c.cache.rules
		c.cache.mu.Unlock()
		c.ruleRecs = make([]*ruleRec, len(rules))
	}
	for _, r := range rules {
		i := r.Index
		// A rule built from what the last compile's rule of the same
		// index was built from has the same entries (treecache.go).
		if i < len(prev) && prev[i].same(&r) {
			x := prev[i]
			for _, fam := range x.fqdnFams {
				c.fqdnSet(i, fam, x.comment, r.FQDNs)
			}
			at := 0
			for _, l := range x.lists {
				k := key{l.fam, l.proto}
				lists[k] = append(lists[k], x.es[at:at+l.n]...)
				at += l.n
			}
			c.ruleRecs[i] = x
			c.ruleHits++
			continue
		}
		var rec *ruleRec
		if c.cache != nil {
			rec = arena.newRuleRec(&r)
			c.ruleRecs[i] = rec
			recEs, recLists = recEs[:0], recLists[:0]
		}
		deny := r.Action == policy.ActionDeny
		tag, comment := ruleTag(&r), ruleComment(&r)
		if rec != nil {
			rec.comment = comment
		}
		for _, fam := range []family{ipv4, ipv6} {
			src := addrIntervals(r.Source, fam)
			if src != nil && len(src) == 0 {
				continue
			}
			dst := addrIntervals(r.Destination, fam)
			fqdnSet := ""
			for _, proto := range []uint8{protoTCP, protoUDP, protoICMP} {
				var ports []ivl
				switch proto {
				case protoTCP, protoUDP:
					if (proto == protoTCP && r.Protocols&policy.ProtoTCP == 0) || (proto == protoUDP && r.Protocols&policy.ProtoUDP == 0) {
						continue
					}
					ports = portIntervals(r.Ports)
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
				n := len(lists[k])
				e := entry{rule: i, tag: tag, deny: deny, comment: comment}
				if dst == nil || len(dst) > 0 {
					e.iv = [numFields][]ivl{src, dst, ports}
					lists[k] = c.expand(lists[k], e)
				}
				if len(r.FQDNs) > 0 {
					if fqdnSet == "" {
						fqdnSet = c.fqdnSet(i, fam, comment, r.FQDNs)
						if rec != nil {
							rec.fqdnFams = append(rec.fqdnFams, fam)
						}
					}
					e.iv = [numFields][]ivl{src, nil, ports}
					e.fqdnSet = fqdnSet
					lists[k] = c.expand(lists[k], e)
				}
				if rec != nil && len(lists[k]) > n {
					recEs = append(recEs, lists[k][n:]...)
					recLists = append(recLists, ruleList{k.fam, k.proto, len(lists[k]) - n})
				}
			}
		}
		if rec != nil {
			arena.done(rec, recEs, recLists)
		}
	}
	for _, l := range lists {
		c.nEntries += len(l)
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
			root, maxSeq := c.tree(fam, proto, l) // treecache.go
			if root == "" {
				continue
			}
			fwd.add("", MatchNFProto{fam}, MatchL4Proto{proto}, Verdict{Kind: VerdictJump, Chain: root})
			if maxSeq > c.rs.Stats.MaxSequential {
				c.rs.Stats.MaxSequential = maxSeq
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
func (c *compiler) expand(out []*entry, e entry) []*entry {
	n := 1
	var split [numFields]bool
	for f := fieldSrc; f < numFields; f++ {
		if k := len(e.iv[f]); k > 1 && n*k <= maxExpand {
			split[f] = true
			n *= k
		}
	}
	// The entries of a compile are allocated in blocks, and a split
	// field's single intervals are subslices of the rule's (they are not
	// changed): building the entries was a tenth of a compile's CPU. The
	// entries come in the order of splitting the fields one after the
	// other (source outermost), each made once.
	var k [numFields]int
	for f := range numFields {
		k[f] = 1
		if split[f] {
			k[f] = len(e.iv[f])
		}
	}
	for i := range k[fieldSrc] {
		for j := range k[fieldDst] {
			for l := range k[fieldPort] {
				y := c.newEntry(e)
				for f, at := range [numFields]int{i, j, l} {
					if split[f] {
						y.iv[f] = e.iv[f][at : at+1 : at+1]
					}
				}
				out = append(out, y)
			}
		}
	}
	return out
}

// newEntry returns a copy of e allocated in the compiler's current block.
func (c *compiler) newEntry(e entry) *entry {
	if len(c.entries) == cap(c.entries) {
		c.entries = make([]entry, 0, 256)
	}
	c.entries = append(c.entries, e)
	return &c.entries[len(c.entries)-1]
}

// decision returns the statements of a classifier leaf rule that count,
// log and carry out a network rule's action for a flow of protocol proto.
// A Deny answers TCP with a reset (the client fails fast and sees a policy
// decision) and drops anything else.
//
// Without Config.LimitRuleLogs that is one rule's statements: counter,
// log, verdict. With it, the log is behind the shared limit, and a limit
// that is over ends its rule: the leaf rule goes to the rule's decision
// chain (decisionChain), where the counter (before the limit: it counts
// every flow) and the limited log are one rule and the verdict the next.
func (c *compiler) decision(e *entry, proto uint8) []Stmt {
	if c.cfg.LimitRuleLogs {
		return []Stmt{Verdict{Kind: VerdictGoto, Chain: c.decisionChain(e, proto)}}
	}
	// The same for every leaf rule of e's rule and a protocol as
	// verdictOf tells them apart (callers copy the statements).
	k := decisionKey{e.rule, e.deny && proto == protoTCP}
	if st, ok := c.decisions[k]; ok {
		return st
	}
	tag := c.tag(e.tag).String()
	st := []Stmt{Counter{Name: tag}, Log{Prefix: tag, Group: c.cfg.LogGroup}, verdictOf(e, proto)}
	if c.decisions == nil {
		c.decisions = map[decisionKey][]Stmt{}
	}
	c.decisions[k] = st
	return st
}

type decisionKey struct {
	rule  int
	reset bool // a Deny of TCP (verdictOf)
}

// verdictOf is what a network rule does with a flow of protocol proto.
func verdictOf(e *entry, proto uint8) Stmt {
	return ruleVerdict(e.deny, e.deny && proto == protoTCP)
}

// ruleVerdict is what a network rule does (deny: its action is Deny)
// with a flow: reset, a Deny's TCP flow.
func ruleVerdict(deny, reset bool) Stmt {
	switch {
	case !deny:
		return Verdict{Kind: VerdictAccept}
	case reset:
		return RejectTCPReset{}
	}
	return Verdict{Kind: VerdictDrop}
}

// ruleTag is the log tag of network rule r's decisions (without its
// generation: compiler.tag).
func ruleTag(r *match.Rule) LogTag {
	t := LogTag{Kind: LogAllow, Index: r.Index}
	if r.Action == policy.ActionDeny {
		t.Kind = LogDeny
	}
	return t
}

// ruleComment is the comment of network rule r's kernel rules.
func ruleComment(r *match.Rule) string {
	return truncComment(ruleTag(r).String() + " " + r.Policy.Path())
}

// decisionPrefix is what the name of rule index's decision chain starts
// with (reset: a Deny's chain for TCP); the namer adds its hash.
func decisionPrefix(index int, reset bool) string {
	prefix := "rule_" + strconv.Itoa(index)
	if reset {
		prefix += "_tcp"
	}
	return prefix
}

// limitedDecision fills ch, a decision chain with Config.LimitRuleLogs:
// the counter (before the limit: it counts every flow) and the limited
// log under the shared limit limit, then the verdict v. tag carries its
// generation. PlannedDecisionChains makes the same chains.
func limitedDecision(ch *Chain, comment string, tag LogTag, group uint16, limit string, v Stmt) {
	t := tag.String()
	ch.add(comment, Counter{Name: t}, Log{Prefix: t, Group: group, Limit: limit})
	ch.add(comment, v)
}

// decisionChain returns a chain that holds only e's decision: where a
// classifier node has nothing left to test, and, with
// Config.LimitRuleLogs, what every leaf rule of e goes to. One chain per
// rule (and, for a Deny, TCP or not), shared by all its leaves; named by
// content like the others (rule_<i>_<hash>).
func (c *compiler) decisionChain(e *entry, proto uint8) string {
	return c.decisionChainOf(e, proto).Name
}

// decisionChainOf is decisionChain's chain (subtree.go records it; the
// compiler keeps no map of every chain by name).
func (c *compiler) decisionChainOf(e *entry, proto uint8) *Chain {
	prefix := decisionPrefix(e.rule, e.deny && proto == protoTCP)
	ch, ok := c.decided[prefix]
	if !ok {
		ch = c.chain(c.name(prefix))
		c.decided[prefix] = ch
		if c.cfg.LimitRuleLogs {
			limitedDecision(ch, e.comment, c.tag(e.tag), c.cfg.LogGroup, c.logLimit(), verdictOf(e, proto))
		} else {
			ch.add(e.comment, slices.Clone(c.decision(e, proto))...)
		}
	}
	return ch
}

// fusedLeaf returns the rules of a leaf of the one entry e whose matches
// are stmts, with e's decision in the leaf itself, or nil when the leaf
// goes to e's decision chain instead. With Config.LimitRuleLogs a leaf
// rule goes to its rule's decision chain (decisionChain: the counter and
// the limited log, then the verdict); a leaf of one rule whose matches the
// kernel can compare with one != is instead
//
//	ip saddr . th dport != 10.1.2.0/24 . 443 return
//	counter name … limit name … log …
//	verdict
//
// one chain where there were two, for the same three rules and
// expressions (a flow that fails the match returns, as it would at the
// end of the leaf; one that matches is counted, logged and decided as in
// the decision chain). The kernel's cost per network rule to add and to
// remove it is lower (docs/benchmarks.md, branch kobjects); the flat
// policies, where every rule has a leaf of its own, are made of them. It
// depends only on the leaf's content, as a chain's name does (names.go).
func (c *compiler) fusedLeaf(e *entry, proto uint8, stmts []Stmt) []*Rule {
	if !c.cfg.LimitRuleLogs || e.fqdnSet != "" || len(stmts) == 0 {
		return nil
	}
	for _, st := range stmts {
		if _, ok := st.(MatchRange); !ok {
			return nil
		}
	}
	if len(c.fusedMs) < len(stmts) {
		c.fusedMs = make([]MatchRange, max(len(stmts), 2*64))
	}
	ms := c.fusedMs[:len(stmts):len(stmts)]
	for i, st := range stmts {
		ms[i] = st.(MatchRange)
	}
	not, ok := notAllOf(ms)
	if !ok {
		return nil
	}
	c.fusedMs = c.fusedMs[len(ms):]
	tag := c.tag(e.tag).String()
	// The rules and statements of a flat policy's 100,000 leaves in
	// blocks (each statement slice at its capacity: a rewrite copies).
	if len(c.fusedRules) < 3 {
		c.fusedRules = make([]Rule, 3*64)
		c.fusedPtrs = make([]*Rule, 3*64)
		c.fusedStmts = make([]Stmt, 5*64)
	}
	rules, ptrs, st := c.fusedRules[:3:3], c.fusedPtrs[:3:3], c.fusedStmts[:5:5]
	c.fusedRules, c.fusedPtrs, c.fusedStmts = c.fusedRules[3:], c.fusedPtrs[3:], c.fusedStmts[5:]
	st[0], st[1] = not, Verdict{Kind: VerdictReturn}
	st[2], st[3] = Counter{Name: tag}, c.limitedLogAs(tag)
	st[4] = verdictOf(e, proto)
	rules[0] = Rule{Comment: e.comment, Stmts: st[0:2:2]}
	rules[1] = Rule{Comment: e.comment, Stmts: st[2:4:4]}
	rules[2] = Rule{Comment: e.comment, Stmts: st[4:5:5]}
	ptrs[0], ptrs[1], ptrs[2] = &rules[0], &rules[1], &rules[2]
	return ptrs
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
	s := &Set{Name: name, Kind: SetFQDN, Family: fam, Field: fieldDst,
		Comment: truncComment(comment + " fqdns: " + strings.Join(names, ","))}
	c.rs.Sets = append(c.rs.Sets, s)
	if c.fqdnComments == nil {
		c.fqdnComments = map[string]string{}
	}
	c.fqdnComments[name] = s.Comment
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

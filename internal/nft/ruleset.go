package nft

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Ruleset is a compiled data plane: one inet table with its chains, sets and
// stateful objects, described in a form that tests can read and a Runner can
// program. String renders it in nft's syntax (for golden files and
// `clusterwall dataplane show --compiled`), but nothing ever feeds that text
// to nft: the netlink Runner lowers the statements to expressions itself.
type Ruleset struct {
	// Table is the name of the inet table; clusterwall owns it alone.
	Table string
	// LogGroup is the NFLOG group of every log statement.
	LogGroup uint16
	// LogLimit is the shared rate limit (a named limit object) in front of
	// every log statement.
	LogLimit LimitSpec
	Sets     []*Set
	Chains   []*Chain
	// Warnings are policy parts the kernel data plane does not enforce
	// (always failing closed), e.g. a DNAT rule whose sources are all of
	// another family than its translation.
	Warnings []string
	Stats    Stats

	fqdnSets map[string][]string // FQDN -> names of the sets that hold its addresses
	dnatMaps map[string][]string // FQDN -> names of the DNAT maps that translate to it
	threat   *threatState        // nil without threat intelligence
	counters []string            // Counters, found by nameByContent
}

// LimitSpec is a packet rate limit.
type LimitSpec struct {
	Rate  uint64 // packets per second
	Burst uint32
}

// Name is the name of the limit object: LogLimitName, the rate and the
// burst ("cw_log_200_400"), so that a ruleset with another limit has
// another object (objects are not changed in place; see nameByContent).
func (l LimitSpec) Name() string {
	return LogLimitName + "_" + strconv.FormatUint(l.Rate, 10) + "_" + strconv.FormatUint(uint64(l.Burst), 10)
}

// Stats counts what Compile produced.
type Stats struct {
	NetworkRules int // network rules of the policy
	DNATRules    int
	// Entries is the number of (family, protocol, rule) classifier entries.
	Entries int
	// Leaves is the number of classifier rules (entries, counting the copies
	// a dispatch makes); DispatchMaps the verdict maps of the classifier and
	// MapElements their intervals.
	Leaves       int
	DispatchMaps int
	MapElements  int
	// MaxSequential is the largest number of classifier rules that one new
	// flow can be tested against, over all paths through the classifier
	// (a measure of the worst-case per-flow cost).
	MaxSequential int
}

// LogLimitName starts the name of the shared limit object of the log
// statements (LimitSpec.Name).
const LogLimitName = "cw_log"

// Hook is where a base chain is attached; "" for a regular chain.
type Hook string

// Hooks used by clusterwall.
const (
	HookNone        Hook = ""
	HookPrerouting  Hook = "prerouting"
	HookInput       Hook = "input"
	HookForward     Hook = "forward"
	HookPostrouting Hook = "postrouting"
)

// Chain is a chain of the table.
type Chain struct {
	Name string
	// Hook, Type, Priority and Policy are set for base chains.
	Hook     Hook
	Type     string // "filter" or "nat"
	Priority int
	Policy   string // "accept" or "drop"
	Rules    []*Rule

	// cnts are the names of the named counters Rules use, in the order
	// of their first use, once findCounters has read them (cntsDone): a
	// chain a later compile reuses (a cached classifier tree's, whose
	// content its name fixes) is not walked again. Only a chain whose
	// Rules are final (named) is memoised.
	cnts     []string
	cntsDone bool
	// named: Name is the final name of this content (nameRuleset named
	// the chain); a later compile that reuses the chain does not look
	// its name up again (names.go).
	named bool
}

// Rule is a rule: statements in order, and a comment (stored as the rule's
// userdata) that names what it enforces.
type Rule struct {
	Comment string
	Stmts   []Stmt
}

// SetKind says what a set is for.
type SetKind uint8

const (
	// SetPlain is a constant interval set of addresses or ports.
	SetPlain SetKind = iota + 1
	// SetVMap is an interval verdict map of the classifier.
	SetVMap
	// SetFQDN is a set with per-element timeouts that the DNS proxy fills
	// with the addresses it resolved for a network rule's destinationFqdns.
	SetFQDN
	// SetDNATFQDN is a map with per-element timeouts from the public IPs of
	// a DNAT rule with translatedFqdn (Elems: the keys) to the address the
	// rule translates to, which the runner fills from the addresses
	// resolved for FQDN.
	SetDNATFQDN
	// SetVMapHash is a verdict map of the classifier whose elements are
	// single values: a hash table in the kernel (one lookup, where an
	// interval map is a binary search).
	SetVMapHash
)

// vmap reports whether s is a verdict map of the classifier.
func (s *Set) vmap() bool { return s.Kind == SetVMap || s.Kind == SetVMapHash }

// Set is a named set or verdict map.
type Set struct {
	Name    string
	Kind    SetKind
	Family  family
	Field   field // key type: an address of Family or a port
	Comment string
	Elems   []Elem
	// FQDN is the name a SetDNATFQDN map translates to.
	FQDN string
	// Cat is, for a SetVMapHash of the classifier, the fields its key
	// has after Field (catKey; none: a key of Field alone).
	Cat catKey
	// named: as Chain.named.
	named bool
}

// Elem is an interval of a set; for a verdict map, with the chain it goes to.
type Elem struct {
	iv    ivl
	Chain string
	// cat are the values of the set's Cat fields (nil without).
	cat *[maxCat]u128
}

// maxCat is the most fields a dispatch map's key has after its own.
const maxCat = 2

// catKey is the fields of a concatenated dispatch key after the map's own
// field, in order (n of them), each compared on its first bits bits (the
// field's width: the whole value; fewer: a prefix, the packet's value
// masked). A dispatch whose children are each one rule that compares
// these fields with exact values or prefixes looks them up with its own
// field in one hash map (classifier.fold).
type catKey struct {
	n    uint8
	f    [maxCat]field
	bits [maxCat]uint8
}

// fieldWidth is the number of bits of a field's values.
func fieldWidth(fam family, f field) int {
	switch {
	case f == fieldPort:
		return 16
	case fam == ipv4:
		return 32
	}
	return 128
}

// keyTypeName is a field's key type in nft's words.
func keyTypeName(fam family, f field) string {
	switch {
	case f == fieldPort:
		return "inet_service"
	case fam == ipv4:
		return "ipv4_addr"
	}
	return "ipv6_addr"
}

// KeyType is the set's key type in nft's words.
func (s *Set) KeyType() string {
	t := keyTypeName(s.Family, s.Field)
	for i := range int(s.Cat.n) {
		t += " . " + keyTypeName(s.Family, s.Cat.f[i])
	}
	return t
}

// dynamic reports whether the set's elements are filled at run time
// (FQDN sets and DNAT maps: hash sets with timeouts).
func (s *Set) dynamic() bool { return s.Kind == SetFQDN || s.Kind == SetDNATFQDN }

func (s *Set) elemString(e Elem) string {
	t := fmtInterval(s.Family, s.Field, e.iv)
	for i := range int(s.Cat.n) {
		t += " . " + fmtInterval(s.Family, s.Cat.f[i], ivl{e.cat[i], e.cat[i]})
	}
	if e.Chain != "" {
		t += " : goto " + e.Chain
	}
	return t
}

// Stmt is one statement of a rule.
type Stmt interface {
	String() string
	stmt()
}

// MatchNFProto matches the IP family (`meta nfproto ipv4`).
type MatchNFProto struct{ Family family }

// MatchL4Proto matches the transport protocol (`meta l4proto tcp`).
type MatchL4Proto struct{ Proto uint8 }

// MatchIfName matches the input or output interface by name.
type MatchIfName struct {
	Out  bool
	Name string
}

// MatchCtState matches connection tracking states (a bit mask of CtState*).
type MatchCtState struct{ States uint32 }

// MatchCtDNAT matches connections that were (or, Negate, were not) DNAT-ed.
type MatchCtDNAT struct{ Negate bool }

// MatchRange matches one field against a single interval (an address, a
// prefix, a range, a port or a port range).
type MatchRange struct {
	Family family
	Field  field
	iv     ivl
}

// MatchNotAll matches a packet that fails at least one of Ms: the kernel
// compares the fields' bytes, loaded as one concatenation, with != (`ip
// saddr . th dport != 10.0.0.0/24 . 443`). Ms are whole-byte matches
// (wholeLoad) that fit one comparison (concatLoads), or one such match;
// notAllOf builds it. A classifier leaf of one rule with a decision of its
// own is `MatchNotAll return`, then the decision's rules, in one chain
// (classifier.leaf).
type MatchNotAll struct{ Ms []MatchRange }

// MatchSet looks a field up in a named set.
type MatchSet struct {
	Family family
	Field  field
	Set    string
}

// VMap looks a field (and, with Cat, more fields: a concatenation) up in
// a verdict map and takes the verdict it holds.
type VMap struct {
	Family family
	Field  field
	Map    string
	Cat    catKey
}

// Counter counts packets and bytes: in the rule itself, or, with Name, in
// the named counter object Name, which every rule that counts a policy
// decision shares (Name is the decision's log tag: one counter per rule,
// however many classifier leaves hold a copy of it).
type Counter struct{ Name string }

// Log sends the packet to NFLOG group Group with Prefix. With Limit (the
// name of the shared limit object, LimitSpec.Name), the limit comes first:
// over the limit, the rule stops there.
type Log struct {
	Prefix string
	Group  uint16
	Limit  string
}

// VerdictKind is a verdict of a rule.
type VerdictKind uint8

const (
	VerdictAccept VerdictKind = iota + 1
	VerdictDrop
	VerdictJump
	VerdictGoto
	VerdictReturn
)

// Verdict ends (accept, drop) or redirects (jump, goto) evaluation.
type Verdict struct {
	Kind  VerdictKind
	Chain string
}

// RejectTCPReset answers a TCP packet with a reset.
type RejectTCPReset struct{}

// DNAT rewrites the destination to Addr:Port.
type DNAT struct {
	Addr netip.Addr
	Port uint16
}

// DNATMap rewrites the destination to the address that Map (a
// SetDNATFQDN map) holds for it, and the port to Port.
type DNATMap struct {
	Family family
	Map    string
	Port   uint16
}

// SNAT rewrites the source to Addr.
type SNAT struct{ Addr netip.Addr }

// Masquerade rewrites the source to the output interface's address.
type Masquerade struct{}

// Redirect sends the packet to a local port (the L7 proxy).
type Redirect struct{ Port uint16 }

func (MatchNFProto) stmt()   {}
func (MatchL4Proto) stmt()   {}
func (MatchIfName) stmt()    {}
func (MatchCtState) stmt()   {}
func (MatchCtDNAT) stmt()    {}
func (MatchNotAll) stmt()    {}
func (MatchRange) stmt()     {}
func (MatchSet) stmt()       {}
func (VMap) stmt()           {}
func (Counter) stmt()        {}
func (Log) stmt()            {}
func (Verdict) stmt()        {}
func (RejectTCPReset) stmt() {}
func (DNAT) stmt()           {}
func (DNATMap) stmt()        {}
func (SNAT) stmt()           {}
func (Masquerade) stmt()     {}
func (Redirect) stmt()       {}

// Connection tracking states (the kernel's bits).
const (
	CtStateInvalid     uint32 = 1
	CtStateEstablished uint32 = 2
	CtStateRelated     uint32 = 4
	CtStateNew         uint32 = 8
)

// IP protocol numbers.
const (
	protoICMP   uint8 = 1
	protoTCP    uint8 = 6
	protoUDP    uint8 = 17
	protoICMPv6 uint8 = 58
)

func protoName(p uint8) string {
	switch p {
	case protoICMP:
		return "icmp"
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case protoICMPv6:
		return "ipv6-icmp"
	}
	return strconv.Itoa(int(p))
}

func (m MatchNFProto) String() string { return "meta nfproto " + m.Family.nfproto() }
func (m MatchL4Proto) String() string { return "meta l4proto " + protoName(m.Proto) }
func (m MatchIfName) String() string {
	if m.Out {
		return "oifname " + strconv.Quote(m.Name)
	}
	return "iifname " + strconv.Quote(m.Name)
}
func (m MatchCtState) String() string {
	var s []string
	for _, x := range []struct {
		bit  uint32
		name string
	}{{CtStateEstablished, "established"}, {CtStateRelated, "related"}, {CtStateNew, "new"}, {CtStateInvalid, "invalid"}} {
		if m.States&x.bit != 0 {
			s = append(s, x.name)
		}
	}
	return "ct state " + strings.Join(s, ",")
}
func (m MatchCtDNAT) String() string {
	if m.Negate {
		return "ct status ! dnat"
	}
	return "ct status dnat"
}

func fieldExpr(fam family, f field) string {
	if f == fieldPort {
		return "th dport"
	}
	return fam.String() + " " + f.String()
}

// appendFieldExpr appends fieldExpr(fam, f).
func appendFieldExpr(b []byte, fam family, f field) []byte {
	if f == fieldPort {
		return append(b, "th dport"...)
	}
	return append(append(append(b, fam.String()...), ' '), f.String()...)
}

func (m MatchRange) String() string {
	return fieldExpr(m.Family, m.Field) + " " + fmtInterval(m.Family, m.Field, m.iv)
}
func (m MatchNotAll) String() string { return string(m.appendText(nil)) }

// appendText appends m's text (String) to b: a fused leaf's content
// hash reads it for every rule of a large ruleset (names.go).
func (m MatchNotAll) appendText(b []byte) []byte {
	for i, x := range m.Ms {
		if i > 0 {
			b = append(b, " . "...)
		}
		b = appendFieldExpr(b, x.Family, x.Field)
	}
	b = append(b, " != "...)
	for i, x := range m.Ms {
		if i > 0 {
			b = append(b, " . "...)
		}
		b = appendInterval(b, x.Family, x.Field, x.iv)
	}
	return b
}
func (m MatchSet) String() string { return fieldExpr(m.Family, m.Field) + " @" + m.Set }
func (m VMap) String() string {
	t := fieldExpr(m.Family, m.Field)
	for i := range int(m.Cat.n) {
		f, bits := m.Cat.f[i], int(m.Cat.bits[i])
		t += " . " + fieldExpr(m.Family, f)
		if bits < fieldWidth(m.Family, f) {
			mask, _ := valAddr(m.Family, fieldMax(m.Family, f)).Prefix(bits)
			t += " & " + mask.Addr().String()
		}
	}
	return t + " vmap @" + m.Map
}
func (c Counter) String() string {
	if c.Name != "" {
		return "counter name " + strconv.Quote(c.Name)
	}
	return "counter"
}
func (m Log) String() string {
	s := fmt.Sprintf("log prefix %q group %d", m.Prefix, m.Group)
	if m.Limit != "" {
		s = fmt.Sprintf("limit name %q ", m.Limit) + s
	}
	return s
}
func (v Verdict) String() string {
	switch v.Kind {
	case VerdictAccept:
		return "accept"
	case VerdictDrop:
		return "drop"
	case VerdictJump:
		return "jump " + v.Chain
	case VerdictGoto:
		return "goto " + v.Chain
	case VerdictReturn:
		return "return"
	}
	return "verdict?"
}
func (RejectTCPReset) String() string { return "reject with tcp reset" }
func (d DNAT) String() string {
	if d.Addr.Is4() {
		return fmt.Sprintf("dnat ip to %s:%d", d.Addr, d.Port)
	}
	return fmt.Sprintf("dnat ip6 to [%s]:%d", d.Addr, d.Port)
}
func (d DNATMap) String() string {
	return fmt.Sprintf("dnat %s to %s daddr map @%s port %d", d.Family, d.Family, d.Map, d.Port)
}
func (s SNAT) String() string {
	if s.Addr.Is4() {
		return "snat ip to " + s.Addr.String()
	}
	return "snat ip6 to " + s.Addr.String()
}
func (Masquerade) String() string { return "masquerade" }
func (r Redirect) String() string { return fmt.Sprintf("redirect to :%d", r.Port) }

// fmtInterval renders an interval as nft would: a value, a prefix or a range.
func fmtInterval(fam family, f field, iv ivl) string {
	return string(appendInterval(nil, fam, f, iv))
}

// appendInterval appends fmtInterval(fam, f, iv) to b.
func appendInterval(b []byte, fam family, f field, iv ivl) []byte {
	if f == fieldPort {
		b = strconv.AppendUint(b, iv.lo.lo, 10)
		if iv.lo == iv.hi {
			return b
		}
		return strconv.AppendUint(append(b, '-'), iv.hi.lo, 10)
	}
	lo := valAddr(fam, iv.lo)
	if iv.lo == iv.hi {
		return lo.AppendTo(b)
	}
	if bits, ok := prefixLen(fam, f, iv); ok {
		return netip.PrefixFrom(lo, bits).AppendTo(b)
	}
	return valAddr(fam, iv.hi).AppendTo(append(lo.AppendTo(b), '-'))
}

func (r *Rule) String() string {
	parts := make([]string, 0, len(r.Stmts)+1)
	for _, s := range r.Stmts {
		parts = append(parts, s.String())
	}
	if r.Comment != "" {
		parts = append(parts, "comment "+strconv.Quote(r.Comment))
	}
	return strings.Join(parts, " ")
}

// String renders the ruleset in nft's syntax.
func (rs *Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", rs.Table)
	fmt.Fprintf(&b, "\tlimit %s {\n\t\trate %d/second burst %d packets\n\t}\n", rs.LogLimit.Name(), rs.LogLimit.Rate, rs.LogLimit.Burst)
	for _, n := range rs.Counters() {
		fmt.Fprintf(&b, "\tcounter %s {\n\t}\n", strconv.Quote(n))
	}
	for _, s := range rs.Sets {
		fmt.Fprintf(&b, "\n\t%s %s {\n", map[bool]string{true: "map", false: "set"}[s.vmap() || s.Kind == SetDNATFQDN], s.Name)
		switch s.Kind {
		case SetVMap:
			fmt.Fprintf(&b, "\t\ttype %s : verdict\n\t\tflags interval\n", s.KeyType())
		case SetVMapHash:
			fmt.Fprintf(&b, "\t\ttype %s : verdict\n", s.KeyType())
		case SetDNATFQDN:
			fmt.Fprintf(&b, "\t\ttype %s : %s\n\t\tflags timeout\n", s.KeyType(), s.KeyType())
		default:
			fmt.Fprintf(&b, "\t\ttype %s\n", s.KeyType())
			if s.Kind == SetFQDN {
				b.WriteString("\t\tflags timeout\n")
			} else {
				b.WriteString("\t\tflags interval\n")
			}
		}
		if s.Comment != "" {
			fmt.Fprintf(&b, "\t\tcomment %q\n", s.Comment)
		}
		if s.Kind == SetDNATFQDN {
			els := make([]string, len(s.Elems))
			for i, e := range s.Elems {
				els[i] = s.elemString(e) + " : <" + s.FQDN + ">"
			}
			fmt.Fprintf(&b, "\t\t# elements = { %s } while %s resolves\n", strings.Join(els, ", "), s.FQDN)
		} else if len(s.Elems) > 0 {
			els := make([]string, len(s.Elems))
			for i, e := range s.Elems {
				els[i] = s.elemString(e)
			}
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(els, ", "))
		}
		b.WriteString("\t}\n")
	}
	for _, c := range rs.Chains {
		fmt.Fprintf(&b, "\n\tchain %s {\n", c.Name)
		if c.Hook != HookNone {
			fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy %s;\n", c.Type, c.Hook, c.Priority, c.Policy)
		}
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// FQDNSets returns the names of the sets that must hold the addresses of
// name (a network rule's destinationFqdns entry, lower case), sorted.
func (rs *Ruleset) FQDNSets(name string) []string {
	return rs.fqdnSets[strings.ToLower(strings.TrimSuffix(name, "."))]
}

// DNATMaps returns the names of the DNAT maps that translate to name (a
// DNAT rule's translatedFqdn, lower case).
func (rs *Ruleset) DNATMaps(name string) []string {
	return rs.dnatMaps[strings.ToLower(strings.TrimSuffix(name, "."))]
}

// FQDNs returns every name that has sets or DNAT maps, sorted.
func (rs *Ruleset) FQDNs() []string {
	out := make([]string, 0, len(rs.fqdnSets)+len(rs.dnatMaps))
	for n := range rs.fqdnSets {
		out = append(out, n)
	}
	for n := range rs.dnatMaps {
		if _, dup := rs.fqdnSets[n]; !dup {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// ThreatRanges is the number of address ranges in the threat-intel sets
// (both families); 0 without threat intelligence.
func (rs *Ruleset) ThreatRanges() int {
	n := 0
	if rs.threat != nil {
		for _, name := range rs.threat.sets {
			if s := rs.Set(name); s != nil {
				n += len(s.Elems)
			}
		}
	}
	return n
}

// Counters returns the names of the named counters (Counter.Name) the
// rules use, in the order of their first use.
func (rs *Ruleset) Counters() []string {
	if rs.counters != nil {
		return rs.counters
	}
	return rs.findCounters()
}

func (rs *Ruleset) findCounters() []string {
	out := []string{}
	seen := make(map[string]struct{}, rs.Stats.NetworkRules+rs.Stats.DNATRules+8)
	var block []string // the memos of the chains read now, in one array
	for _, c := range rs.Chains {
		for _, name := range c.counterNames(&block) {
			if _, ok := seen[name]; !ok {
				seen[name] = struct{}{}
				out = append(out, name)
			}
		}
	}
	return out
}

// counterNames are the names of the named counters c's rules use, in the
// order of their first use (with repeats). They are read once per chain
// and kept (Chain.cnts): findCounters runs after the chain's rules are
// final, and a chain is not changed afterwards (a later compile that
// reuses it reuses its content). A chain read now keeps its names in
// *block (one array for the chains one call reads, not one each: a
// first compile reads every chain).
func (c *Chain) counterNames(block *[]string) []string {
	if c.cntsDone {
		return c.cnts
	}
	start := len(*block)
	for _, r := range c.Rules {
		for _, st := range r.Stmts {
			if cnt, ok := st.(Counter); ok && cnt.Name != "" {
				*block = append(*block, cnt.Name)
			}
		}
	}
	end := len(*block)
	c.cnts, c.cntsDone = (*block)[start:end:end], true
	return c.cnts
}

// Set returns the set named name, or nil.
func (rs *Ruleset) Set(name string) *Set {
	for _, s := range rs.Sets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Chain returns the chain named name, or nil.
func (rs *Ruleset) Chain(name string) *Chain {
	for _, c := range rs.Chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

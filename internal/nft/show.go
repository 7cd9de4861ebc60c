package nft

import (
	"encoding/binary"
	"fmt"
	"io"
	stdbits "math/bits"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// State is clusterwall's table as the kernel holds it.
type State struct {
	Table   string
	Present bool
	Chains  []ChainState
	Sets    []SetState
}

// ChainState is one chain read back from the kernel.
type ChainState struct {
	Name     string
	Hook     string // "" for a regular chain
	Type     string
	Priority int
	Policy   string
	Rules    []RuleState
	// Unreachable: no base chain leads to the chain (through jumps, gotos
	// and verdict maps). Such a chain decides nothing: it belongs to a
	// replaced ruleset whose deletion, after the switch, is under way
	// (docs/dataplane.md); its counters are not counted.
	Unreachable bool
}

// RuleState is one rule read back from the kernel. Text renders its
// expressions in the syntax of Rule.String (without the comment).
type RuleState struct {
	Handle     uint64
	Comment    string
	Text       string
	HasCounter bool
	// CounterName is the rule's named counter (shared by every rule of a
	// policy decision), "" for a counter of its own.
	CounterName string
	Packets     uint64
	Bytes       uint64
}

// SetState is one set or map read back from the kernel.
type SetState struct {
	Name     string
	KeyType  string
	Map      bool
	Interval bool
	Timeout  bool
	Elements int // interval sets count start and end elements
	Comment  string
}

// RuleCounter is the counter of one policy decision: a network or DNAT
// rule, the default deny or the input drop.
type RuleCounter struct {
	Tag     string // the log prefix, e.g. "cw:A:3"
	Path    string // group/collection/rule; the reason for default deny and input drops
	Packets uint64
	Bytes   uint64
}

// Counters returns the decision counters: one per tag, summing the rules
// that carry it (a network rule can sit in several classifier leaves).
// Sorted: input drops, default deny, DNAT rules, network rules by index.
func (s *State) Counters() []RuleCounter {
	byTag := map[string]*RuleCounter{}
	var out []*RuleCounter
	named := map[string]bool{}
	for _, c := range s.Chains {
		if c.Unreachable {
			continue
		}
		for _, r := range c.Rules {
			if !r.HasCounter || !strings.HasPrefix(r.Comment, "cw:") {
				continue
			}
			if r.CounterName != "" {
				if named[r.CounterName] {
					continue // counted with the first rule that shares it
				}
				named[r.CounterName] = true
			}
			tag, path, _ := strings.Cut(r.Comment, " ")
			rc := byTag[tag]
			if rc == nil {
				rc = &RuleCounter{Tag: tag, Path: path}
				byTag[tag] = rc
				out = append(out, rc)
			}
			rc.Packets += r.Packets
			rc.Bytes += r.Bytes
		}
	}
	res := make([]RuleCounter, len(out))
	for i, rc := range out {
		res[i] = *rc
	}
	sortCounters(res)
	return res
}

// Chain returns the chain named name, or nil.
func (s *State) Chain(name string) *ChainState {
	for i := range s.Chains {
		if s.Chains[i].Name == name {
			return &s.Chains[i]
		}
	}
	return nil
}

// Format writes the state for people: the base chains rule by rule, the
// decision counters, and a summary of the classifier. With all, every
// chain and set.
func (s *State) Format(w io.Writer, all bool) error {
	if !s.Present {
		_, err := fmt.Fprintf(w, "table inet %s: not present (nothing is filtered by clusterwall)\n", s.Table)
		return err
	}
	fmt.Fprintf(w, "table inet %s\n", s.Table)
	others, otherRules := 0, 0
	for _, c := range s.Chains {
		if c.Hook == "" && !all {
			others++
			otherRules += len(c.Rules)
			continue
		}
		switch {
		case c.Hook != "":
			fmt.Fprintf(w, "\nchain %s (type %s hook %s priority %d policy %s)\n", c.Name, c.Type, c.Hook, c.Priority, c.Policy)
		case c.Unreachable:
			fmt.Fprintf(w, "\nchain %s (unreachable: a replaced ruleset's, being deleted)\n", c.Name)
		default:
			fmt.Fprintf(w, "\nchain %s\n", c.Name)
		}
		for _, r := range c.Rules {
			fmt.Fprintf(w, "  %s", r.Text)
			if r.HasCounter {
				fmt.Fprintf(w, "  [packets %d bytes %d]", r.Packets, r.Bytes)
			}
			if r.Comment != "" {
				fmt.Fprintf(w, "  # %s", r.Comment)
			}
			fmt.Fprintln(w)
		}
	}
	if all {
		for _, st := range s.Sets {
			kind := "set"
			if st.Map {
				kind = "map"
			}
			fmt.Fprintf(w, "\n%s %s: type %s, %d elements", kind, st.Name, st.KeyType, st.Elements)
			if st.Comment != "" {
				fmt.Fprintf(w, "  # %s", st.Comment)
			}
			fmt.Fprintln(w)
		}
	} else {
		fmt.Fprintf(w, "\n(%d more chains with %d rules and %d sets: the classifier and the per-rule chains; --all lists them)\n", others, otherRules, len(s.Sets))
	}
	fmt.Fprintln(w, "\ndecision counters (new flows):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "PACKETS\tBYTES\t TAG\t RULE\t")
	for _, rc := range s.Counters() {
		fmt.Fprintf(tw, "%d\t%d\t %s\t %s\t\n", rc.Packets, rc.Bytes, rc.Tag, rc.Path)
	}
	return tw.Flush()
}

func readState(c *nftables.Conn, name string) (*State, error) {
	st := &State{Table: name}
	table, chains, err := tableAndChains(c, name)
	if err != nil {
		return nil, err
	}
	if table == nil {
		return st, nil
	}
	st.Present = true
	counters, err := counterObjects(c, table)
	if err != nil {
		return nil, err
	}
	// What each chain and verdict map leads to (chains by name, maps by
	// "@" and name), to find the chains no base chain reaches.
	leads := map[string][]string{}
	for _, ch := range chains {
		cs := ChainState{Name: ch.Name, Type: string(ch.Type)}
		if ch.Hooknum != nil {
			cs.Hook = hookName(*ch.Hooknum)
			if ch.Priority != nil {
				cs.Priority = int(*ch.Priority)
			}
			cs.Policy = "accept"
			if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
				cs.Policy = "drop"
			}
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return nil, kernelErr("list rules of "+ch.Name, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				switch x := e.(type) {
				case *expr.Verdict:
					if x.Chain != "" {
						leads[ch.Name] = append(leads[ch.Name], x.Chain)
					}
				case *expr.Lookup:
					if x.IsDestRegSet && x.DestRegister == 0 {
						leads[ch.Name] = append(leads[ch.Name], "@"+x.SetName)
					}
				}
			}
			rs := RuleState{Handle: r.Handle}
			if cm, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
				rs.Comment = cm
			}
			var cnt *expr.Counter
			rs.Text, cnt, rs.CounterName = exprTextNamed(r.Exprs)
			switch {
			case cnt != nil:
				rs.HasCounter, rs.Packets, rs.Bytes = true, cnt.Packets, cnt.Bytes
			case rs.CounterName != "":
				rs.HasCounter = true
				if o := counters[rs.CounterName]; o != nil {
					rs.Packets, rs.Bytes = o.Packets, o.Bytes
				}
			}
			cs.Rules = append(cs.Rules, rs)
		}
		st.Chains = append(st.Chains, cs)
	}
	// Base chains first, in hook order, then the rest in kernel order.
	order := map[string]int{"prerouting": 1, "input": 2, "forward": 3, "output": 4, "postrouting": 5}
	sort.SliceStable(st.Chains, func(i, j int) bool {
		a, b := order[st.Chains[i].Hook], order[st.Chains[j].Hook]
		if a == 0 {
			a = 100
		}
		if b == 0 {
			b = 100
		}
		return a < b
	})
	sets, err := c.GetSets(table)
	if err != nil {
		return nil, kernelErr("list sets", err)
	}
	for _, s := range sets {
		ss := SetState{Name: s.Name, KeyType: s.KeyType.Name, Map: s.IsMap, Interval: s.Interval, Timeout: s.HasTimeout, Comment: s.Comment}
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, kernelErr("list elements of "+s.Name, err)
		}
		ss.Elements = len(els)
		st.Sets = append(st.Sets, ss)
		if s.IsMap {
			for _, e := range els {
				if to := verdictChain(e); to != "" {
					leads["@"+s.Name] = append(leads["@"+s.Name], to)
				}
			}
		}
	}
	reached := map[string]bool{}
	var next []string
	for _, ch := range st.Chains {
		if ch.Hook != "" {
			reached[ch.Name] = true
			next = append(next, ch.Name)
		}
	}
	for len(next) > 0 {
		n := next[len(next)-1]
		next = next[:len(next)-1]
		for _, to := range leads[n] {
			if !reached[to] {
				reached[to] = true
				next = append(next, to)
			}
		}
	}
	for i := range st.Chains {
		st.Chains[i].Unreachable = !reached[st.Chains[i].Name]
	}
	return st, nil
}

// verdictChain is the chain a verdict map's element jumps or goes to, if
// any: google/nftables leaves the verdict undecoded in Val (nested
// NFTA_DATA_VERDICT attributes) unless it knows the map's data type.
func verdictChain(e nftables.SetElement) string {
	if e.VerdictData != nil {
		return e.VerdictData.Chain
	}
	if len(e.Val) == 0 {
		return ""
	}
	ad, err := netlink.NewAttributeDecoder(e.Val)
	if err != nil {
		return ""
	}
	var chain string
	for ad.Next() {
		if ad.Type() == unix.NFTA_VERDICT_CHAIN {
			chain = ad.String()
		}
	}
	if ad.Err() != nil {
		return ""
	}
	return chain
}

func hookName(h nftables.ChainHook) string {
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	}
	return "hook" + strconv.Itoa(int(h))
}

// exprText renders expressions in the syntax of Rule.String. It knows the
// expressions clusterwall generates and names others by type.
func exprText(exprs []expr.Any) (string, *expr.Counter) {
	t, c, _ := exprTextNamed(exprs)
	return t, c
}

// exprTextNamed is exprText that also returns the name of the rule's named
// counter, if it has one.
func exprTextNamed(exprs []expr.Any) (string, *expr.Counter, string) {
	var (
		named   string
		parts   []string
		counter *expr.Counter
		load    func(val, mask []byte, op expr.CmpOp) string
		loadFam family
		loadFld field
		mask    []byte
		imm     = map[uint32][]byte{}
		mapped  = map[uint32]DNATMap{} // registers loaded from a DNAT map
		loads   = map[uint32]*expr.Payload{}
		masks   = map[uint32][]byte{}
	)
	for i := 0; i < len(exprs); i++ {
		e := exprs[i]
		if s, n, ok := haExprText(e, exprs[i+1:]); ok { // ha.go, snatpool.go
			parts = append(parts, s)
			i += n
			continue
		}
		switch x := e.(type) {
		case *expr.Payload:
			mask = nil
			loadFam, loadFld = payloadField(x)
			loads[reg32(x.DestRegister)] = x
			p := x
			load = func(val, mask []byte, _ expr.CmpOp) string { return payloadMatchText(p, val, mask) }
		case *expr.Meta:
			mask = nil
			clear(loads)
			key := x.Key
			load = func(val, _ []byte, _ expr.CmpOp) string {
				switch key {
				case expr.MetaKeyNFPROTO:
					if len(val) == 1 && val[0] == unix.NFPROTO_IPV6 {
						return MatchNFProto{ipv6}.String()
					}
					return MatchNFProto{ipv4}.String()
				case expr.MetaKeyL4PROTO:
					return MatchL4Proto{val[0]}.String()
				case expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME:
					return MatchIfName{Out: key == expr.MetaKeyOIFNAME, Name: strings.TrimRight(string(val), "\x00")}.String()
				}
				return fmt.Sprintf("meta %d %x", key, val)
			}
		case *expr.Ct:
			mask = nil
			clear(loads)
			key := x.Key
			load = func(val, mask []byte, op expr.CmpOp) string {
				m := uint32(0)
				if len(mask) == 4 {
					m = binaryutil.NativeEndian.Uint32(mask)
				}
				switch key {
				case expr.CtKeySTATE:
					return MatchCtState{m}.String()
				case expr.CtKeySTATUS:
					if m == ipsDstNAT {
						return MatchCtDNAT{Negate: op == expr.CmpOpEq}.String()
					}
				}
				return fmt.Sprintf("ct %d & %#x", key, m)
			}
		case *expr.Bitwise:
			mask = x.Mask
			masks[reg32(x.DestRegister)] = x.Mask
		case *expr.Cmp:
			if p := loads[reg32(x.Register)]; p != nil && x.Op == expr.CmpOpNeq && mask == nil {
				parts = append(parts, notAllText(loads, x))
				continue
			}
			if p := loads[reg32(x.Register)]; p != nil && len(x.Data) > int(p.Len) {
				parts = append(parts, concatText(loads, x)...)
				continue
			}
			if load == nil {
				parts = append(parts, "cmp?")
				continue
			}
			parts = append(parts, load(x.Data, mask, x.Op))
		case *expr.Range:
			parts = append(parts, MatchRange{Family: loadFam, Field: loadFld, iv: ivl{bytesVal(x.FromData), bytesVal(x.ToData)}}.String())
		case *expr.Lookup:
			if x.IsDestRegSet && x.DestRegister != 0 {
				mapped[x.DestRegister] = DNATMap{Family: loadFam, Map: x.SetName}
				continue
			}
			if x.IsDestRegSet && reg32(x.SourceRegister) == reg32First && loads[reg32First] != nil {
				// (The kernel lists reg32First as NFT_REG_1: reg32.)
				parts = append(parts, catVMap(loads, masks, x.SetName).String())
			} else if x.IsDestRegSet {
				parts = append(parts, VMap{Family: loadFam, Field: loadFld, Map: x.SetName}.String())
			} else {
				parts = append(parts, MatchSet{Family: loadFam, Field: loadFld, Set: x.SetName}.String())
			}
		case *expr.Counter:
			counter = x
			parts = append(parts, "counter")
		case *expr.Objref:
			switch x.Type {
			case int(nftables.ObjTypeLimit):
				parts = append(parts, fmt.Sprintf("limit name %q", x.Name))
			case int(nftables.ObjTypeCounter):
				named = x.Name
				parts = append(parts, Counter{Name: x.Name}.String())
			default:
				parts = append(parts, fmt.Sprintf("objref %d %q", x.Type, x.Name))
			}
		case *expr.Log:
			parts = append(parts, fmt.Sprintf("log prefix %q group %d", string(x.Data), x.Group))
		case *expr.Verdict:
			switch x.Kind {
			case expr.VerdictAccept:
				parts = append(parts, "accept")
			case expr.VerdictDrop:
				parts = append(parts, "drop")
			case expr.VerdictJump:
				parts = append(parts, "jump "+x.Chain)
			case expr.VerdictGoto:
				parts = append(parts, "goto "+x.Chain)
			case expr.VerdictReturn:
				parts = append(parts, "return")
			default:
				parts = append(parts, fmt.Sprintf("verdict %d", x.Kind))
			}
		case *expr.Reject:
			if x.Type == unix.NFT_REJECT_TCP_RST {
				parts = append(parts, RejectTCPReset{}.String())
			} else {
				parts = append(parts, fmt.Sprintf("reject type %d code %d", x.Type, x.Code))
			}
		case *expr.Immediate:
			imm[x.Register] = x.Data
		case *expr.NAT:
			addr, _ := bytesAddr(imm[x.RegAddrMin])
			switch x.Type {
			case expr.NATTypeDestNAT:
				port := uint16(0)
				if p := imm[x.RegProtoMin]; len(p) >= 2 {
					port = binary.BigEndian.Uint16(p)
				}
				if dm, ok := mapped[x.RegAddrMin]; ok {
					dm.Port = port
					parts = append(parts, dm.String())
					continue
				}
				parts = append(parts, DNAT{Addr: addr, Port: port}.String())
			default:
				parts = append(parts, SNAT{Addr: addr}.String())
			}
		case *expr.Masq:
			parts = append(parts, Masquerade{}.String())
		case *expr.Redir:
			port := uint16(0)
			if p := imm[x.RegisterProtoMin]; len(p) >= 2 {
				port = binary.BigEndian.Uint16(p)
			}
			parts = append(parts, Redirect{Port: port}.String())
		default:
			parts = append(parts, fmt.Sprintf("<%T>", e))
		}
	}
	return strings.Join(parts, " "), counter, named
}

// payloadMatchText renders the match of a payload load p compared with
// val (under mask, if any).
func payloadMatchText(p *expr.Payload, val, mask []byte) string {
	return payloadMatch(p, val, mask).String()
}

// payloadMatch is the match of a payload load p compared with val (under
// mask, if any).
func payloadMatch(p *expr.Payload, val, mask []byte) MatchRange {
	fam, fld := payloadField(p)
	if width := len(valBytes(fam, fld, u128{})); len(val) < width && mask == nil {
		// A prefix on a byte boundary loads only its bytes.
		mask = make([]byte, width)
		for i := range val {
			mask[i] = 0xff
		}
		val = append(append([]byte(nil), val...), make([]byte, width-len(val))...)
	}
	lo := bytesVal(val)
	hi := lo
	if mask != nil {
		hi = bytesVal(orNot(val, mask))
	}
	return MatchRange{Family: fam, Field: fld, iv: ivl{lo, hi}}
}

// reg32 is the 32-bit register a register number names: the kernel
// reports NFT_REG32_00 as NFT_REG_1 (they are the same bytes), and so on.
func reg32(r uint32) uint32 {
	if r >= 1 && r <= 4 {
		return reg32First + (r-1)*4
	}
	return r
}

// concatText renders a concatenated comparison (concatLoads): the loads
// into consecutive registers from c's, each compared with its bytes.
// notAllText renders a != comparison of one payload load or of a
// concatenation (MatchNotAll).
func notAllText(loads map[uint32]*expr.Payload, c *expr.Cmp) string {
	var ms []MatchRange
	reg, data := reg32(c.Register), c.Data
	for len(data) > 0 {
		p := loads[reg]
		if p == nil || int(p.Len) > len(data) {
			return "cmp? !="
		}
		ms = append(ms, payloadMatch(p, data[:p.Len], nil))
		n := int(p.Len+3) / 4 * 4
		data = data[min(n, len(data)):]
		reg += uint32(n / 4)
	}
	return MatchNotAll{ms}.String()
}

func concatText(loads map[uint32]*expr.Payload, c *expr.Cmp) []string {
	var out []string
	reg, data := reg32(c.Register), c.Data
	for len(data) > 0 {
		p := loads[reg]
		if p == nil || int(p.Len) > len(data) {
			return append(out, "cmp?")
		}
		out = append(out, payloadMatchText(p, data[:p.Len], nil))
		n := int(p.Len+3) / 4 * 4
		data = data[min(n, len(data)):]
		reg += uint32(n / 4)
	}
	return out
}

// catVMap is the lookup of a concatenated key (catLoads) in map name:
// the loads into consecutive registers from reg32First, each field's
// prefix length from its mask or its load's length.
func catVMap(loads map[uint32]*expr.Payload, masks map[uint32][]byte, name string) VMap {
	fam, f := payloadField(loads[reg32First])
	m := VMap{Field: f, Map: name}
	reg := reg32First + (loads[reg32First].Len+3)/4
	for m.Cat.n < maxCat && loads[reg] != nil {
		p := loads[reg]
		pf, g := payloadField(p)
		if g != fieldPort {
			fam = pf
		}
		width := fieldWidth(pf, g)
		bits := 8 * int(p.Len)
		if mk := masks[reg]; mk != nil {
			bits = 0
			for _, c := range mk {
				bits += stdbits.OnesCount8(c)
			}
		}
		m.Cat.f[m.Cat.n], m.Cat.bits[m.Cat.n] = g, uint8(min(bits, width))
		m.Cat.n++
		reg += uint32(width/8+3) / 4
	}
	if f != fieldPort || fam != 0 {
		m.Family = fam
	}
	return m
}

func payloadField(p *expr.Payload) (family, field) {
	switch {
	case p.Base == expr.PayloadBaseTransportHeader && p.Offset == 2:
		return 0, fieldPort
	// The start of the field says which (a prefix on a byte boundary
	// loads fewer bytes).
	case p.Offset == 12 && p.Len <= 4:
		return ipv4, fieldSrc
	case p.Offset == 16 && p.Len <= 4:
		return ipv4, fieldDst
	case p.Offset == 8 && p.Len <= 16:
		return ipv6, fieldSrc
	}
	return ipv6, fieldDst
}

func bytesVal(b []byte) u128 {
	switch len(b) {
	case 2:
		return u128{0, uint64(binary.BigEndian.Uint16(b))}
	case 4:
		return u128{0, uint64(binary.BigEndian.Uint32(b))}
	case 16:
		return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
	}
	var v u128
	for _, c := range b {
		v = u128{v.hi<<8 | v.lo>>56, v.lo<<8 | uint64(c)}
	}
	return v
}

func orNot(val, mask []byte) []byte {
	out := make([]byte, len(val))
	for i := range val {
		m := byte(0)
		if i < len(mask) {
			m = mask[i]
		}
		out[i] = val[i] | ^m
	}
	return out
}

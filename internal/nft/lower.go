package nft

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/match"
)

// plan is a Ruleset lowered to google/nftables objects, under the
// ruleset's names (which are the kernel's: see nameByContent).
type plan struct {
	table  *nftables.Table
	objs   []*nftables.NamedObj // the limit, then the named counters
	chains []*nftables.Chain    // in ruleset order
	sets   []setPlan
	setMap map[string]*nftables.Set   // by name
	chMap  map[string]*nftables.Chain // by name
	rs     *Ruleset
	// fqdnElems gives the FQDN sets' elements (learned addresses) at now.
	fqdnElems func(set string) []FQDNAddr
	now       time.Time
}

type setPlan struct {
	set *nftables.Set
	src *Set
}

// maxElemsPerMsg keeps one NEWSETELEM message well below netlink's 64 KiB
// attribute limit (an IPv6 interval with a verdict takes about 100 bytes).
const maxElemsPerMsg = 256

// FQDNAddr is an address the DNS proxy resolved for an FQDN, valid until
// Expires.
type FQDNAddr struct {
	Addr    netip.Addr
	Expires time.Time
}

// lower translates rs. fqdnElems returns the current elements of an FQDN
// set (the runner carries resolved addresses over a re-apply).
func lower(rs *Ruleset, fqdnElems func(set string) []FQDNAddr, now time.Time) (*plan, error) {
	pl := &plan{table: &nftables.Table{Name: rs.Table, Family: nftables.TableFamilyINet}}
	pl.objs = append(pl.objs, limitObj(pl.table, rs.LogLimit))
	for _, n := range rs.Counters() {
		pl.objs = append(pl.objs, &nftables.NamedObj{Table: pl.table, Name: n, Type: nftables.ObjTypeCounter, Obj: &expr.Counter{}})
	}
	chains := make(map[string]*nftables.Chain, len(rs.Chains))
	for _, c := range rs.Chains {
		if _, dup := chains[c.Name]; dup {
			return nil, fmt.Errorf("ruleset: duplicate chain %q", c.Name)
		}
		nc := &nftables.Chain{Name: c.Name, Table: pl.table}
		if c.Hook != HookNone {
			switch c.Hook {
			case HookPrerouting:
				nc.Hooknum = nftables.ChainHookPrerouting
			case HookInput:
				nc.Hooknum = nftables.ChainHookInput
			case HookForward:
				nc.Hooknum = nftables.ChainHookForward
			case HookPostrouting:
				nc.Hooknum = nftables.ChainHookPostrouting
			default:
				return nil, fmt.Errorf("ruleset: chain %s: unknown hook %q", c.Name, c.Hook)
			}
			nc.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(c.Priority))
			nc.Type = nftables.ChainType(c.Type)
			pol := nftables.ChainPolicyAccept
			if c.Policy == "drop" {
				pol = nftables.ChainPolicyDrop
			}
			nc.Policy = &pol
		}
		chains[c.Name] = nc
		pl.chains = append(pl.chains, nc)
	}
	sets := make(map[string]*nftables.Set, len(rs.Sets))
	for _, s := range rs.Sets {
		if _, dup := sets[s.Name]; dup {
			return nil, fmt.Errorf("ruleset: duplicate set %q", s.Name)
		}
		ns := &nftables.Set{Table: pl.table, Name: s.Name, Comment: s.Comment, KeyType: keyType(s.Family, s.Field)}
		if s.Cat.n > 0 {
			types := []nftables.SetDatatype{ns.KeyType}
			for i := range int(s.Cat.n) {
				types = append(types, keyType(s.Family, s.Cat.f[i]))
			}
			t, err := nftables.ConcatSetType(types...)
			if err != nil {
				return nil, fmt.Errorf("ruleset: set %s: %v", s.Name, err)
			}
			ns.KeyType = t
		}
		switch s.Kind {
		case SetPlain, SetVMap:
			ns.Interval = true
			if s.Kind == SetVMap {
				ns.IsMap = true
				ns.DataType = nftables.TypeVerdict
			}
		case SetVMapHash:
			// Its size: the kernel then picks a hash table of fixed size
			// (nft_hash, or nft_hash_fast for 4-byte keys) over the
			// resizable rhashtable.
			ns.IsMap, ns.DataType, ns.Size = true, nftables.TypeVerdict, uint32(len(s.Elems))
		case SetFQDN:
			ns.HasTimeout = true
		case SetDNATFQDN:
			ns.HasTimeout, ns.IsMap, ns.DataType = true, true, ns.KeyType
		default:
			return nil, fmt.Errorf("ruleset: set %s: unknown kind %d", s.Name, s.Kind)
		}
		sets[s.Name] = ns
		pl.sets = append(pl.sets, setPlan{ns, s})
	}
	pl.setMap, pl.chMap, pl.rs = sets, chains, rs
	pl.fqdnElems, pl.now = fqdnElems, now
	return pl, nil
}

// limitObj is the limit object of l in table.
func limitObj(table *nftables.Table, l LimitSpec) *nftables.NamedObj {
	return &nftables.NamedObj{Table: table, Name: l.Name(), Type: nftables.ObjTypeLimit,
		Obj: &expr.Limit{Type: expr.LimitTypePkts, Rate: l.Rate, Unit: expr.LimitTimeSecond, Burst: l.Burst}}
}

// elems lowers the elements of a set: computed only for the sets an
// apply creates.
func (pl *plan) elems(sp setPlan) ([]nftables.SetElement, error) {
	s := sp.src
	var elems []nftables.SetElement
	switch s.Kind {
	case SetVMapHash:
		elems = make([]nftables.SetElement, 0, len(s.Elems))
		for _, e := range s.Elems {
			if e.iv.lo != e.iv.hi {
				return nil, fmt.Errorf("ruleset: map %s: an interval in a hash map", s.Name)
			}
			if pl.chMap[e.Chain] == nil {
				return nil, fmt.Errorf("ruleset: map %s: unknown chain %q", s.Name, e.Chain)
			}
			key := valBytes(s.Family, s.Field, e.iv.lo)
			if s.Cat.n > 0 {
				key = catBytes(key, s, e)
			}
			elems = append(elems, nftables.SetElement{Key: key,
				VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: e.Chain}})
		}
	case SetPlain, SetVMap:
		fmax := fieldMax(s.Family, s.Field)
		elems = make([]nftables.SetElement, 0, 2*len(s.Elems))
		for _, e := range s.Elems {
			// rbtree intervals: a start element, and an end element one
			// past the interval's last value (none for the largest).
			el := nftables.SetElement{Key: valBytes(s.Family, s.Field, e.iv.lo)}
			if s.Kind == SetVMap {
				if pl.chMap[e.Chain] == nil {
					return nil, fmt.Errorf("ruleset: map %s: unknown chain %q", s.Name, e.Chain)
				}
				el.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: e.Chain}
			}
			elems = append(elems, el)
			if e.iv.hi != fmax {
				elems = append(elems, nftables.SetElement{Key: valBytes(s.Family, s.Field, e.iv.hi.next()), IntervalEnd: true})
			}
		}
	case SetFQDN:
		if pl.fqdnElems != nil {
			for _, a := range pl.fqdnElems(s.Name) {
				left := a.Expires.Sub(pl.now)
				if left < time.Second || famOf(a.Addr) != s.Family {
					continue
				}
				elems = append(elems, nftables.SetElement{Key: valBytes(s.Family, fieldDst, addrVal(a.Addr.Unmap())), Timeout: left.Truncate(time.Millisecond)})
			}
		}
	case SetDNATFQDN:
		if pl.fqdnElems != nil {
			elems = dnatMapElems(s, pl.fqdnElems(s.Name), pl.now)
		}
	}
	return elems, nil
}

// dnatMapElems returns the elements of a DNAT map (SetDNATFQDN): each of
// its public IPs to the address a translatedFqdn rule translates to
// (match.TranslateFQDN of the unexpired addresses), until that address
// expires; none when the name has no address of the map's family.
func dnatMapElems(s *Set, addrs []FQDNAddr, now time.Time) []nftables.SetElement {
	var live []netip.Addr
	for _, a := range addrs {
		if a.Expires.Sub(now) >= time.Second {
			live = append(live, a.Addr)
		}
	}
	to, ok := match.TranslateFQDN(live, s.Family == ipv6)
	if !ok {
		return nil
	}
	var left time.Duration
	for _, a := range addrs {
		if a.Addr.Unmap() == to {
			left = max(left, a.Expires.Sub(now))
		}
	}
	val := valBytes(s.Family, fieldDst, addrVal(to))
	out := make([]nftables.SetElement, 0, len(s.Elems))
	for _, e := range s.Elems {
		out = append(out, nftables.SetElement{Key: valBytes(s.Family, fieldDst, e.iv.lo), Val: val, Timeout: left.Truncate(time.Millisecond)})
	}
	return out
}

// keyType is the key type of a set of field f.
func keyType(fam family, f field) nftables.SetDatatype {
	switch {
	case f == fieldPort:
		return nftables.TypeInetService
	case fam == ipv4:
		return nftables.TypeIPAddr
	}
	return nftables.TypeIP6Addr
}

// catBytes is the key of element e of a dispatch map with a concatenated
// key (Set.Cat), whose own field's value is key: each field's value in
// the registers catLoads fills, padded to whole registers.
func catBytes(key []byte, s *Set, e Elem) []byte {
	b := make([]byte, 0, 48)
	b = append(b, key...)
	for i := range int(s.Cat.n) {
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		b = append(b, valBytes(s.Family, s.Cat.f[i], e.cat[i])...)
	}
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// catLoads loads the fields of m's concatenated key (its own field, then
// m.Cat's) into consecutive 32-bit registers from reg32First, as nft
// lowers a concatenation: a field compared on a prefix is masked (an IPv4
// prefix of whole bytes is loaded alone: the payload expression clears
// the rest of its register).
func catLoads(m VMap) []expr.Any {
	p := payloadOf(m.Family, m.Field)
	p.DestRegister = reg32First
	reg := reg32First + (p.Len+3)/4
	out := []expr.Any{p}
	for i := range int(m.Cat.n) {
		f, bits := m.Cat.f[i], int(m.Cat.bits[i])
		p := payloadOf(m.Family, f)
		p.DestRegister = reg
		out = append(out, p)
		width := fieldWidth(m.Family, f)
		switch {
		case bits == width:
		case m.Family == ipv4 && bits%8 == 0:
			p.Len = uint32(bits / 8)
		default:
			mask, _ := valAddr(m.Family, fieldMax(m.Family, f)).Prefix(bits)
			out = append(out, &expr.Bitwise{SourceRegister: reg, DestRegister: reg, Len: p.Len,
				Mask: mask.Addr().AsSlice(), Xor: make([]byte, p.Len)})
		}
		reg += uint32(width/8+3) / 4
	}
	return out
}

// sameHook reports whether two chains are base chains of the same hook,
// type and priority.
func sameHook(a, b *nftables.Chain) bool {
	return a.Hooknum != nil && b.Hooknum != nil && *a.Hooknum == *b.Hooknum &&
		a.Priority != nil && b.Priority != nil && *a.Priority == *b.Priority && a.Type == b.Type
}

func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

func payloadOf(fam family, f field) *expr.Payload {
	p := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader}
	switch {
	case f == fieldPort:
		p.Base, p.Offset, p.Len = expr.PayloadBaseTransportHeader, 2, 2
	case fam == ipv4 && f == fieldSrc:
		p.Offset, p.Len = 12, 4
	case fam == ipv4:
		p.Offset, p.Len = 16, 4
	case f == fieldSrc:
		p.Offset, p.Len = 8, 16
	default:
		p.Offset, p.Len = 24, 16
	}
	return p
}

func ctBits(key expr.CtKey, bits uint32, set bool) []expr.Any {
	op := expr.CmpOpNeq
	if !set {
		op = expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: make([]byte, 4)},
	}
}

func nfproto(f family) byte {
	if f == ipv4 {
		return unix.NFPROTO_IPV4
	}
	return unix.NFPROTO_IPV6
}

// ipsDstNAT is IPS_DST_NAT of the conntrack status bits.
const ipsDstNAT = 1 << 5

// wholeLoad reports whether m is an equality on the bytes it loads (a
// value, or a prefix on a byte boundary: lowerStmt's payload and cmp),
// with that payload and the bytes it compares.
func wholeLoad(m MatchRange) (*expr.Payload, []byte, bool) {
	n := wholeLoadLen(m)
	if n == 0 {
		return nil, nil, false
	}
	p := payloadOf(m.Family, m.Field)
	p.Len = uint32(n)
	return p, valBytes(m.Family, m.Field, m.iv.lo)[:n], true
}

// wholeLoadLen is the number of bytes wholeLoad loads for m, 0 when m is
// not such a match.
func wholeLoadLen(m MatchRange) int {
	if m.iv.lo == m.iv.hi {
		switch {
		case m.Field == fieldPort:
			return 2
		case m.Family == ipv4:
			return 4
		}
		return 16
	}
	if bits, isPrefix := prefixLen(m.Family, m.Field, m.iv); isPrefix && bits > 0 && bits%8 == 0 {
		return bits / 8
	}
	return 0
}

// Concatenated comparisons: consecutive matches that are each an equality
// on the bytes they load (wholeLoad; e.g. a leaf's `ip saddr 10.1.2.0/24
// th dport 443`) are lowered as their loads into consecutive 32-bit
// registers and one cmp over all of them, as nft lowers a concatenation
// (`ip saddr . th dport`): one expression less per extra match for the
// kernel to parse at each apply and to run per packet. A load shorter
// than its registers leaves the rest of its last register zero (the
// kernel's payload expression clears it), which the compared bytes hold
// too. nft_cmp compares at most 16 bytes.
const (
	reg32First = 8  // NFT_REG32_00
	cmpMaxLen  = 16 // sizeof(struct nft_data)
)

// concatLoads lowers ms (at least two wholeLoad matches) as one
// concatenated comparison; ok is false when they do not fit in one cmp.
func concatLoads(ms []MatchRange) ([]expr.Any, bool) {
	if len(ms) < 2 {
		return nil, false
	}
	var (
		out  []expr.Any
		data []byte
		reg  = uint32(reg32First)
	)
	for i, m := range ms {
		p, b, ok := wholeLoad(m)
		if !ok {
			return nil, false
		}
		p.DestRegister = reg
		out = append(out, p)
		data = append(data, b...)
		if i < len(ms)-1 {
			for len(data)%4 != 0 {
				data = append(data, 0)
			}
		}
		reg += (p.Len + 3) / 4
		if len(data) > cmpMaxLen {
			return nil, false
		}
	}
	return append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: reg32First, Data: data}), true
}

// notAllOf returns the MatchNotAll of ms, if the kernel can compare them
// with one != (one whole-byte match, or several that concatLoads lays
// out).
func notAllOf(ms []MatchRange) (MatchNotAll, bool) {
	switch {
	case len(ms) == 1:
		_, _, ok := wholeLoad(ms[0])
		return MatchNotAll{ms}, ok
	case len(ms) > 1:
		_, ok := concatLoads(ms)
		return MatchNotAll{ms}, ok
	}
	return MatchNotAll{}, false
}

func lowerStmt(st Stmt, sets map[string]*nftables.Set, chains map[string]*nftables.Chain) ([]expr.Any, error) {
	switch s := st.(type) {
	case MatchNotAll:
		var out []expr.Any
		if len(s.Ms) == 1 {
			p, b, ok := wholeLoad(s.Ms[0])
			if ok {
				out = []expr.Any{p, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: b}}
			}
		} else if ex, ok := concatLoads(s.Ms); ok {
			ex[len(ex)-1].(*expr.Cmp).Op = expr.CmpOpNeq
			out = ex
		}
		if out == nil {
			return nil, fmt.Errorf("%s: not one comparison", s)
		}
		return out, nil
	case MatchNFProto:
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto(s.Family)}}}, nil
	case MatchL4Proto:
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{s.Proto}}}, nil
	case MatchIfName:
		key := expr.MetaKeyIIFNAME
		if s.Out {
			key = expr.MetaKeyOIFNAME
		}
		return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(s.Name)}}, nil
	case MatchCtState:
		return ctBits(expr.CtKeySTATE, s.States, true), nil
	case MatchCtDNAT:
		return ctBits(expr.CtKeySTATUS, ipsDstNAT, !s.Negate), nil
	case MatchRange:
		if p, b, ok := wholeLoad(s); ok {
			// A value, or a prefix on a byte boundary: only its bytes are
			// loaded (as nft does), no mask — one expression less for the
			// kernel to parse at every apply (each costs it a walk of its
			// list of expression types) and to run per packet.
			return []expr.Any{p, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}, nil
		}
		lo, hi := valBytes(s.Family, s.Field, s.iv.lo), valBytes(s.Family, s.Field, s.iv.hi)
		out := []expr.Any{payloadOf(s.Family, s.Field)}
		switch bits, isPrefix := prefixLen(s.Family, s.Field, s.iv); {
		case isPrefix:
			mask := netip.PrefixFrom(valAddr(s.Family, fieldMax(s.Family, s.Field)), bits).Masked().Addr().AsSlice()
			out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(lo)), Mask: mask, Xor: make([]byte, len(lo))},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: lo})
		default:
			out = append(out, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: lo, ToData: hi})
		}
		return out, nil
	case MatchSet:
		set := sets[s.Set]
		if set == nil {
			return nil, fmt.Errorf("unknown set %q", s.Set)
		}
		return []expr.Any{payloadOf(s.Family, s.Field), &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID}}, nil
	case VMap:
		set := sets[s.Map]
		if set == nil {
			return nil, fmt.Errorf("unknown map %q", s.Map)
		}
		if s.Cat.n > 0 {
			return append(catLoads(s), &expr.Lookup{SourceRegister: reg32First, DestRegister: 0, IsDestRegSet: true, SetName: set.Name, SetID: set.ID}), nil
		}
		return []expr.Any{payloadOf(s.Family, s.Field), &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: set.Name, SetID: set.ID}}, nil
	case Counter:
		if s.Name != "" {
			return []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: s.Name}}, nil
		}
		return []expr.Any{&expr.Counter{}}, nil
	case Log:
		l := &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: s.Group, Data: []byte(s.Prefix)}
		if s.Limit != "" {
			return []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeLimit), Name: s.Limit}, l}, nil
		}
		return []expr.Any{l}, nil
	case Verdict:
		v := &expr.Verdict{Chain: s.Chain}
		switch s.Kind {
		case VerdictAccept:
			v.Kind = expr.VerdictAccept
		case VerdictDrop:
			v.Kind = expr.VerdictDrop
		case VerdictReturn:
			v.Kind = expr.VerdictReturn
		case VerdictJump, VerdictGoto:
			if chains[s.Chain] == nil {
				return nil, fmt.Errorf("unknown chain %q", s.Chain)
			}
			v.Chain = chains[s.Chain].Name
			v.Kind = expr.VerdictJump
			if s.Kind == VerdictGoto {
				v.Kind = expr.VerdictGoto
			}
		default:
			return nil, fmt.Errorf("bad verdict %d", s.Kind)
		}
		return []expr.Any{v}, nil
	case RejectTCPReset:
		return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}, nil
	case DNAT:
		fam := famOf(s.Addr)
		return []expr.Any{
			&expr.Immediate{Register: 1, Data: s.Addr.Unmap().AsSlice()},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(s.Port)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(nfproto(fam)), RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		}, nil
	case DNATMap:
		set := sets[s.Map]
		if set == nil {
			return nil, fmt.Errorf("unknown map %q", s.Map)
		}
		return []expr.Any{
			payloadOf(s.Family, fieldDst),
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(s.Port)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(nfproto(s.Family)), RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		}, nil
	case SNAT:
		fam := famOf(s.Addr)
		return []expr.Any{
			&expr.Immediate{Register: 1, Data: s.Addr.Unmap().AsSlice()},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(nfproto(fam)), RegAddrMin: 1},
		}, nil
	case Masquerade:
		return []expr.Any{&expr.Masq{}}, nil
	case Redirect:
		return []expr.Any{
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(s.Port)},
			&expr.Redir{RegisterProtoMin: 1},
		}, nil
	}
	if l, ok := st.(lowerer); ok { // ha.go
		return l.lower(), nil
	}
	return nil, fmt.Errorf("unknown statement %T", st)
}

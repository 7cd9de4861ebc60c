package match

import (
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// ruleTable holds the per-rule checks the indexes cannot decide: protocol,
// ports and source for DNAT and network rules; (scheme, port) and source
// for application rules. The common case (one port range, one application
// protocol, a single IPv4 source range or '*') fits in 32 hot bytes with
// what a decision needs (rule, action), two rules to a cache line; the rest
// lives in the cold part.
type ruleTable struct {
	hot  []ruleHot
	cold []ruleCold
	// lister resolves DNAT rules' translatedFqdn (nil: they never match).
	lister AddrLister
}

type ruleHot struct {
	// proto is the rule's protocols (DNAT, network), or the scheme of its
	// only application protocol (flagOneApp).
	proto policy.Proto
	flags uint8
	// ports is the only port range (flagOnePort), or in Lo the port of the
	// only application protocol (flagOneApp).
	ports  policy.PortRange
	src4   range4 // the only source range (flagSrcOne4)
	action policy.Action
	rule   *policy.Rule
}

const (
	flagDNAT    = 1 << iota // ports are checked whatever the protocol
	flagOnePort             // hot.ports is the only port range
	flagOneApp              // hot.proto/ports.Lo is the only (scheme, port)
	flagSrcAny              // source '*'
	flagSrcOne4             // hot.src4 is the whole source
	flagToFQDN              // a DNAT rule that translates to cold.toFQDN
)

type ruleCold struct {
	ports  []policy.PortRange   // sorted, merged
	protos []policy.AppProtocol // application rules
	src    addrSet
	fqdns  []string // network rules' destinationFqdns
	toFQDN string   // a DNAT rule's translatedFqdn
}

// init sizes the table for n rules.
func (t *ruleTable) init(n int) {
	t.hot = make([]ruleHot, 0, n)
	t.cold = make([]ruleCold, 0, n)
}

func (t *ruleTable) add(r *policy.Rule, action policy.Action, src addrSet, dnat bool) {
	h := ruleHot{proto: r.Protocols, action: action, rule: r}
	c := ruleCold{ports: sortedPorts(r.DestinationPorts), protos: r.AppProtocols, src: src}
	if dnat {
		h.flags |= flagDNAT
		if r.TranslatedFQDN != "" && !r.TranslatedAddress.IsValid() {
			h.flags |= flagToFQDN
			c.toFQDN = r.TranslatedFQDN
		}
	}
	if len(c.ports) == 1 {
		h.flags |= flagOnePort
		h.ports = c.ports[0]
	}
	if len(c.protos) == 1 {
		h.flags |= flagOneApp
		h.proto = policy.Proto(c.protos[0].Scheme)
		h.ports = policy.PortRange{Lo: c.protos[0].Port, Hi: c.protos[0].Port}
	}
	switch {
	case src.any:
		h.flags |= flagSrcAny
	case len(src.v4) == 1 && len(src.v6) == 0:
		h.flags |= flagSrcOne4
		h.src4 = src.v4[0]
	}
	t.hot = append(t.hot, h)
	t.cold = append(t.cold, c)
}

// srcOK checks the source of rule ri.
func (t *ruleTable) srcOK(h *ruleHot, ri int32, f *flowKey) bool {
	switch {
	case h.flags&flagSrcAny != 0:
		return f.src.valid
	case h.flags&flagSrcOne4 != 0:
		return f.src.is4 && h.src4.lo <= f.src.v4 && f.src.v4 <= h.src4.hi
	}
	return t.cold[ri].src.contains(&f.src)
}

// matchNet checks protocol, port and source of DNAT or network rule ri
// (the destination is the index's business).
func (t *ruleTable) matchNet(ri int32, f *flowKey) bool {
	h := &t.hot[ri]
	if f.proto&h.proto != f.proto || h.flags&flagDNAT != 0 && f.noDNAT {
		return false
	}
	if !f.icmp || h.flags&flagDNAT != 0 {
		if h.flags&flagOnePort != 0 {
			if f.port < h.ports.Lo || f.port > h.ports.Hi {
				return false
			}
		} else if !portsContain(t.cold[ri].ports, f.port) {
			return false
		}
	}
	if !t.srcOK(h, ri, f) {
		return false
	}
	if h.flags&flagToFQDN != 0 {
		_, ok := t.translated(ri, f.dst.is4)
		return ok
	}
	return true
}

// translated returns the address DNAT rule ri translates a flow of the
// family (is4) to.
func (t *ruleTable) translated(ri int32, is4 bool) (netip.Addr, bool) {
	h := &t.hot[ri]
	if h.flags&flagToFQDN == 0 {
		return h.rule.TranslatedAddress.Unmap(), h.rule.TranslatedAddress.IsValid()
	}
	if t.lister == nil {
		return netip.Addr{}, false
	}
	return TranslateFQDN(t.lister.Addrs(t.cold[ri].toFQDN), !is4)
}

// matchApp checks (scheme, port) and source of application rule ri.
func (t *ruleTable) matchApp(ri int32, f *flowKey, scheme policy.Scheme) bool {
	h := &t.hot[ri]
	if h.flags&flagOneApp != 0 {
		if policy.Scheme(h.proto) != scheme || h.ports.Lo != f.port {
			return false
		}
	} else if !appProtoIn(t.cold[ri].protos, scheme, f.port) {
		return false
	}
	return t.srcOK(h, ri, f)
}

func appProtoIn(protos []policy.AppProtocol, scheme policy.Scheme, port uint16) bool {
	for _, ap := range protos {
		if ap.Scheme == scheme && ap.Port == port {
			return true
		}
	}
	return false
}

// portsContain reports whether p is in one of the sorted, disjoint ranges.
func portsContain(rs []policy.PortRange, p uint16) bool {
	if len(rs) <= 8 {
		for _, r := range rs {
			if p < r.Lo {
				return false
			}
			if p <= r.Hi {
				return true
			}
		}
		return false
	}
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].Hi < p {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(rs) && rs[lo].Lo <= p
}

// sortedPorts returns rs sorted and merged (policy.Validate already does
// this; a hand-built Policy may not).
func sortedPorts(rs []policy.PortRange) []policy.PortRange {
	ok := true
	for i := range rs {
		if rs[i].Lo > rs[i].Hi || i > 0 && uint32(rs[i].Lo) <= uint32(rs[i-1].Hi)+1 {
			ok = false
			break
		}
	}
	if ok {
		return rs
	}
	return policy.MergePorts(rs)
}

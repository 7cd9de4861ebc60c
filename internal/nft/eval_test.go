package nft

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
)

// This file is a small interpreter of compiled rulesets, used to check the
// compiler's output against the reference matcher without a kernel. It
// follows nftables' semantics: a chain runs its rules in order; a rule's
// statements in order until one does not match; jump returns to the next
// rule of the caller when the callee ends without a verdict, goto returns
// to the caller's caller; a base chain that ends applies its policy.

type packet struct {
	fam      family
	proto    uint8
	src, dst netip.Addr
	dport    uint16
	iif, oif string
	ctState  uint32
	ctDNAT   bool
}

type evalResult struct {
	verdict string   // accept, drop, reject, dnat, snat, masquerade
	logs    []string // log prefixes, in order
	rules   int      // rules evaluated
	depth   int      // deepest jump stack
}

type evaluator struct {
	rs   *Ruleset
	fqdn map[string][]netip.Addr // set name -> addresses
	res  evalResult
	err  error
}

func evalChain(rs *Ruleset, chain string, p packet, fqdn map[string][]netip.Addr) (evalResult, error) {
	ev := &evaluator{rs: rs, fqdn: fqdn}
	c := rs.Chain(chain)
	if c == nil {
		return evalResult{}, fmt.Errorf("no chain %s", chain)
	}
	v := ev.chain(c, p, 0)
	if v == "" {
		v = c.Policy
	}
	ev.res.verdict = v
	return ev.res, ev.err
}

func (ev *evaluator) fail(format string, args ...any) string {
	if ev.err == nil {
		ev.err = fmt.Errorf(format, args...)
	}
	return "drop"
}

func (ev *evaluator) value(p packet, fam family, f field) (u128, bool) {
	if f == fieldPort {
		if p.proto != protoTCP && p.proto != protoUDP {
			return u128{}, false
		}
		return u128{0, uint64(p.dport)}, true
	}
	if fam != p.fam {
		return u128{}, false
	}
	if f == fieldSrc {
		return addrVal(p.src), true
	}
	return addrVal(p.dst), true
}

// chain returns a terminal verdict, or "" when the chain ends without one.
func (ev *evaluator) chain(c *Chain, p packet, depth int) string {
	if depth > 15 {
		return ev.fail("jump stack overflow at %s", c.Name)
	}
	ev.res.depth = max(ev.res.depth, depth)
rules:
	for _, r := range c.Rules {
		ev.res.rules++
		for _, st := range r.Stmts {
			switch s := st.(type) {
			case MatchNFProto:
				if p.fam != s.Family {
					continue rules
				}
			case MatchL4Proto:
				if p.proto != s.Proto {
					continue rules
				}
			case MatchIfName:
				n := p.iif
				if s.Out {
					n = p.oif
				}
				if n != s.Name {
					continue rules
				}
			case MatchCtState:
				if p.ctState&s.States == 0 {
					continue rules
				}
			case MatchCtDNAT:
				if p.ctDNAT == s.Negate {
					continue rules
				}
			case MatchRange:
				if s.Family != 0 && s.Family != p.fam {
					return ev.fail("chain %s: %s on a %s packet", c.Name, s, p.fam)
				}
				v, ok := ev.value(p, s.Family, s.Field)
				if !ok || v.less(s.iv.lo) || s.iv.hi.less(v) {
					continue rules
				}
			case MatchNotAll:
				all := true
				for _, m := range s.Ms {
					if m.Family != 0 && m.Family != p.fam {
						return ev.fail("chain %s: %s on a %s packet", c.Name, s, p.fam)
					}
					v, ok := ev.value(p, m.Family, m.Field)
					if !ok || v.less(m.iv.lo) || m.iv.hi.less(v) {
						all = false
					}
				}
				if all {
					continue rules
				}
			case MatchSet:
				set := ev.rs.Set(s.Set)
				if set == nil {
					return ev.fail("no set %s", s.Set)
				}
				if s.Family != 0 && s.Family != p.fam {
					return ev.fail("chain %s: %s on a %s packet", c.Name, s, p.fam)
				}
				v, ok := ev.value(p, s.Family, s.Field)
				if !ok {
					continue rules
				}
				if set.Kind == SetFQDN {
					if !slices.ContainsFunc(ev.fqdn[set.Name], func(a netip.Addr) bool { return addrVal(a) == v && famOf(a) == p.fam }) {
						continue rules
					}
					break
				}
				if _, ok := findElem(set, v); !ok {
					continue rules
				}
				if set.Kind == SetDNATFQDN {
					// A key is there only while the name has an address.
					if _, ok := match.TranslateFQDN(ev.fqdn[set.Name], p.fam == ipv6); !ok {
						continue rules
					}
				}
			case VMap:
				set := ev.rs.Set(s.Map)
				if set == nil || !set.vmap() {
					return ev.fail("no map %s", s.Map)
				}
				if s.Family != 0 && s.Family != p.fam {
					return ev.fail("chain %s: %s on a %s packet", c.Name, s, p.fam)
				}
				v, ok := ev.value(p, s.Family, s.Field)
				if !ok {
					continue rules
				}
				e, ok := findElem(set, v)
				if !ok {
					continue rules
				}
				// Elements goto their chain.
				return ev.chain(ev.rs.Chain(e.Chain), p, depth)
			case Counter:
			case Log:
				ev.res.logs = append(ev.res.logs, s.Prefix)
			case Verdict:
				switch s.Kind {
				case VerdictAccept:
					return "accept"
				case VerdictDrop:
					return "drop"
				case VerdictJump:
					if v := ev.chain(ev.rs.Chain(s.Chain), p, depth+1); v != "" {
						return v
					}
					continue rules
				case VerdictGoto:
					return ev.chain(ev.rs.Chain(s.Chain), p, depth)
				case VerdictReturn:
					return ""
				}
			case RejectTCPReset:
				if p.proto != protoTCP {
					return ev.fail("reject with tcp reset on a non-TCP packet in %s", c.Name)
				}
				return "reject"
			case DNAT:
				return "dnat " + netip.AddrPortFrom(s.Addr, s.Port).String()
			case DNATMap:
				// The map's target: fqdn holds the name's addresses under
				// the map's name; the runner installs the lowest.
				if to, ok := match.TranslateFQDN(ev.fqdn[s.Map], p.fam == ipv6); ok {
					return "dnat " + netip.AddrPortFrom(to, s.Port).String()
				}
				continue rules
			case Redirect:
				return fmt.Sprintf("redirect %d", s.Port)
			case SNAT:
				return "snat " + s.Addr.String()
			case Masquerade:
				return "masquerade"
			default:
				return ev.fail("unknown statement %T", st)
			}
		}
	}
	return ""
}

// evalFlow runs a new flow's first packet through the hooks it meets:
// prerouting (a nat chain: threat intelligence, the L7 proxy's redirect,
// DNAT), then input when the (translated) destination is one of local,
// else forward. The result's verdict is the last chain's, "redirect N" and
// "dnat A:P" become the input or forward verdict of the translated packet
// (reported in res.nat); logs accumulate.
func evalFlow(rs *Ruleset, local []netip.Addr, p packet, fqdn map[string][]netip.Addr) (evalResult, string, error) {
	var res evalResult
	var err error
	if rs.Chain("prerouting") != nil { // none when it would be empty
		res, err = evalChain(rs, "prerouting", p, fqdn)
	}
	if err != nil {
		return res, "", err
	}
	logs, nat := res.logs, ""
	switch v := res.verdict; {
	case v == "drop":
		return res, "", nil
	case strings.HasPrefix(v, "redirect "):
		nat = v
		port, _ := strconv.Atoi(strings.TrimPrefix(v, "redirect "))
		p.dport, p.ctDNAT = uint16(port), true
		if len(local) > 0 {
			p.dst = local[0]
		}
		local = append(local, p.dst)
	case strings.HasPrefix(v, "dnat "):
		nat = v
		ap := netip.MustParseAddrPort(strings.TrimPrefix(v, "dnat "))
		p.dst, p.dport, p.ctDNAT = ap.Addr(), ap.Port(), true
	}
	chain := "forward"
	if slices.Contains(local, p.dst) {
		chain = "input"
	}
	res, err = evalChain(rs, chain, p, fqdn)
	res.logs = append(logs, res.logs...)
	return res, nat, err
}

func findElem(s *Set, v u128) (Elem, bool) {
	for _, e := range s.Elems {
		if !v.less(e.iv.lo) && !e.iv.hi.less(v) {
			return e, true
		}
	}
	return Elem{}, false
}

var timeZero = time.Time{}

func (p packet) String() string {
	return fmt.Sprintf("%s %s -> %s port %d (iif %s, ct %#x)", protoName(p.proto), p.src, p.dst, p.dport, p.iif, p.ctState)
}

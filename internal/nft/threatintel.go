package nft

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// ThreatIntel is the kernel's part of threat-intelligence filtering: the
// addresses the feeds list (less the allowlist), checked for every new
// flow before every rule, as Azure Firewall does.
//
//	set ti_v4 { type ipv4_addr; flags interval; elements = { ... } }
//	set ti_v6 { type ipv6_addr; flags interval; elements = { ... } }
//	chain threat_intel {
//	    meta nfproto ipv4 ip daddr @ti_v4 goto threat_intel_decision
//	    meta nfproto ipv4 ip saddr @ti_v4 goto threat_intel_decision
//	    (the same for ip6)
//	}
//	chain threat_intel_decision {
//	    counter name "cw:D:threat" limit name "cw_log_…" log prefix "cw:D:threat" group 100
//	    drop
//	}
//	prerouting: jump threat_intel   mode Deny: first, before the L7 proxy's redirect and DNAT
//	                                mode Alert: after the redirect, before DNAT
//
// prerouting is a nat chain: it sees the first packet of every new flow,
// forwarded or to the firewall itself, with its original addresses. In
// mode Alert the rules log with prefix "cw:A:threat" and return instead
// of dropping (the flow then meets the rules); flows the kernel redirects
// to the L7 proxy are reported by the proxy's matcher instead, so that no
// flow is logged twice.
//
// Names (TLS SNI, HTTP Host, DNS query names) are not the kernel's: the
// L7 proxy and the DNS proxy check them with the same engine.
type ThreatIntel struct {
	// Deny drops listed flows (mode Deny); false logs them (mode Alert).
	Deny bool
	// V4 and V6 are the listed addresses that are not allowlisted, as
	// sorted, disjoint ranges of one family each
	// (threatintel.Set.BlockedRanges).
	V4, V6 []policy.AddrRange
}

// Names of the threat-intelligence chain and sets.
const (
	ThreatChain = "threat_intel"
	ThreatSetV4 = "ti_v4"
	ThreatSetV6 = "ti_v6"
)

func (t *ThreatIntel) ranges(fam family) []policy.AddrRange {
	if fam == ipv4 {
		return t.V4
	}
	return t.V6
}

func threatSetName(fam family) string {
	if fam == ipv4 {
		return ThreatSetV4
	}
	return ThreatSetV6
}

// threatElems converts ranges of family fam to set elements, checking
// that they are sorted, disjoint and of the family.
func threatElems(fam family, rs []policy.AddrRange) ([]Elem, error) {
	out := make([]Elem, 0, len(rs))
	var prev ivl
	for i, r := range rs {
		from, to := r.From.Unmap(), r.To.Unmap()
		if !from.IsValid() || !to.IsValid() || famOf(from) != fam || famOf(to) != fam || to.Less(from) {
			return nil, fmt.Errorf("threat intel: bad %s range %v-%v", fam.nfproto(), r.From, r.To)
		}
		iv := ivl{addrVal(from), addrVal(to)}
		if i > 0 && !prev.hi.less(iv.lo) {
			return nil, fmt.Errorf("threat intel: %s ranges not sorted and disjoint at %v-%v", fam.nfproto(), r.From, r.To)
		}
		prev = iv
		out = append(out, Elem{iv: iv})
	}
	return out, nil
}

// threatIntel compiles the sets and the chain (nil without threat
// intelligence). Compile puts the jump to it in prerouting: first in mode
// Deny, after the L7 proxy's redirect in mode Alert.
func (c *compiler) threatIntel() (*threatState, error) {
	t := c.cfg.ThreatIntel
	if t == nil {
		return nil, nil
	}
	tag := LogTag{Kind: LogThreatAlert}
	end := Verdict{Kind: VerdictReturn}
	if t.Deny {
		tag.Kind, end = LogThreatDeny, Verdict{Kind: VerdictDrop}
	}
	comment := tag.String()
	tag = c.tag(tag)
	// The log is behind the shared limit, and a limit that is over ends
	// its rule: the listed flows go to a chain that counts and logs them
	// (under the limit) in one rule and drops (Deny) or returns (Alert) in
	// the next, so that every listed flow is dropped however many there
	// are. (A goto: its return goes back to prerouting.)
	dec := c.chain(ThreatChain + "_decision")
	dec.add(comment+" listed address", Counter{Name: tag.String()}, c.limitedLog(tag))
	dec.add(comment+" listed address", end)
	ch := c.chain(ThreatChain)
	st := &threatState{deny: t.Deny, chain: ThreatChain}
	for _, fam := range []family{ipv4, ipv6} {
		elems, err := threatElems(fam, t.ranges(fam))
		if err != nil {
			return nil, err
		}
		name := threatSetName(fam)
		st.sets[fam/6] = name
		c.rs.Sets = append(c.rs.Sets, &Set{Name: name, Kind: SetPlain, Family: fam, Field: fieldDst, Elems: elems,
			Comment: "threat intel: " + strconv.Itoa(len(elems)) + " listed ranges"})
		for _, f := range []field{fieldDst, fieldSrc} {
			what := map[field]string{fieldDst: " listed destination", fieldSrc: " listed source"}[f]
			ch.add(comment+what, MatchNFProto{fam}, MatchSet{Family: fam, Field: f, Set: name}, Verdict{Kind: VerdictGoto, Chain: dec.Name})
		}
	}
	c.rs.threat = st
	return c.rs.threat, nil
}

// threatState records what the compiled ruleset's threat-intel part looks
// like, for UpdateThreatIntel.
type threatState struct {
	deny  bool
	sets  [2]string // the sets' names (ThreatSetV4, ThreatSetV6 before nameByContent)
	chain string    // the chain's name (ThreatChain before nameByContent)
}

// ErrThreatIntelNeedsApply is returned by UpdateThreatIntel when the
// running ruleset was compiled without threat intelligence or in the
// other mode: the caller must compile and Apply the policy again.
var ErrThreatIntelNeedsApply = errors.New("threat intel: the running ruleset has no threat-intel sets in this mode; apply the policy again")

// UpdateThreatIntel replaces the running ruleset's threat-intel ranges
// with t's, without recompiling the policy: what a feed refresh needs. The
// new sets are created next to the old ones and the threat-intel chain is
// switched to them in one transaction (an Apply of the running ruleset
// with new sets, which sends only them, the chain and prerouting): a flow
// meets the old ranges or the new ones, never neither. It returns
// ErrThreatIntelNeedsApply when the running ruleset has no threat-intel
// sets or was compiled for the other mode.
func (r *NetlinkRunner) UpdateThreatIntel(t *ThreatIntel) (time.Duration, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.current
	if cur == nil || cur.threat == nil || t == nil || cur.threat.deny != t.Deny {
		return 0, ErrThreatIntelNeedsApply
	}
	next, err := withThreatIntel(cur, t)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := r.apply(next); err != nil {
		return 0, fmt.Errorf("update threat-intel sets: %w", err)
	}
	return time.Since(start), nil
}

// withThreatIntel returns a copy of rs with t's ranges in its threat-intel
// sets (rs is not changed).
func withThreatIntel(rs *Ruleset, t *ThreatIntel) (*Ruleset, error) {
	next := *rs
	th := *rs.threat
	next.threat = &th
	next.fqdnSets = cloneNames(rs.fqdnSets)
	next.dnatMaps = cloneNames(rs.dnatMaps)
	// Provisional names, which nameByContent replaces.
	rename := map[string]string{}
	next.Sets = append([]*Set(nil), rs.Sets...)
	for i, s := range next.Sets {
		for k, name := range rs.threat.sets {
			if s.Name != name {
				continue
			}
			elems, err := threatElems(s.Family, t.ranges(s.Family))
			if err != nil {
				return nil, err
			}
			ns := *s
			ns.Name = threatSetName(s.Family)
			ns.Elems = elems
			ns.Comment = "threat intel: " + strconv.Itoa(len(elems)) + " listed ranges"
			next.Sets[i] = &ns
			rename[name] = ns.Name
			th.sets[k] = ns.Name
		}
	}
	if len(rename) != 2 {
		return nil, ErrThreatIntelNeedsApply
	}
	rename[rs.threat.chain] = ThreatChain
	th.chain = ThreatChain
	next.Chains = append([]*Chain(nil), rs.Chains...)
	for i, c := range next.Chains {
		changed := c.Name == rs.threat.chain
		rules := make([]*Rule, len(c.Rules))
		for j, ru := range c.Rules {
			stmts := append([]Stmt(nil), ru.Stmts...)
			for k, st := range stmts {
				switch x := st.(type) {
				case MatchSet:
					if to, ok := rename[x.Set]; ok {
						x.Set = to
						stmts[k], changed = x, true
					}
				case Verdict:
					if to, ok := rename[x.Chain]; ok && x.Chain != "" {
						x.Chain = to
						stmts[k], changed = x, true
					}
				}
			}
			rules[j] = &Rule{Comment: ru.Comment, Stmts: stmts}
		}
		if changed {
			nc := *c
			if to, ok := rename[c.Name]; ok {
				nc.Name = to
			}
			nc.Rules = rules
			next.Chains[i] = &nc
		}
	}
	if err := nameByContent(&next); err != nil {
		return nil, err
	}
	return &next, nil
}

func cloneNames(m map[string][]string) map[string][]string {
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = append([]string(nil), v...)
	}
	return out
}

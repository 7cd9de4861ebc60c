package nft

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// LogKind is what a logged packet's decision was.
type LogKind uint8

const (
	// LogAllow: a new flow allowed by network rule Index ("cw:A:<i>").
	LogAllow LogKind = iota + 1
	// LogDeny: a new flow denied by network rule Index ("cw:D:<i>").
	LogDeny
	// LogDNAT: a new inbound flow translated by DNAT rule Index ("cw:N:<i>").
	LogDNAT
	// LogDefaultDeny: a new forwarded flow that no rule allowed ("cw:D:default").
	LogDefaultDeny
	// LogInputDrop: a packet to the firewall itself that its input chain
	// dropped ("cw:D:input").
	LogInputDrop
	// LogThreatDeny: a new flow from or to an address listed by threat
	// intelligence, dropped in mode Deny ("cw:D:threat").
	LogThreatDeny
	// LogThreatAlert: the same in mode Alert, logged and let through to
	// the rules ("cw:A:threat").
	LogThreatAlert
)

// LogTag is the meaning of an NFLOG prefix written by the compiled ruleset.
//
// The prefix format is "cw:<verdict>:<what>":
//
//	cw:A:<i>      allowed by network rule i
//	cw:D:<i>      denied by network rule i
//	cw:N:<i>      translated (and allowed) by DNAT rule i
//	cw:D:default  forwarded flow denied because no rule matched
//	cw:D:input    packet to the firewall dropped by its input chain
//	cw:D:threat   new flow from or to a threat-intel listed address, dropped
//	cw:A:threat   the same in Alert mode: logged, then the rules decide
//
// where i is the rule's index among the matcher's network rules (A, D) or
// DNAT rules (N) of the policy that was applied (match.Rule.Index: the
// order of Matcher.Rules, which is Policy.RulesOf's), counting from 0. The rule comments in the kernel start with the same tag followed
// by the rule's group/collection/rule path, so `dataplane show` and the
// counters can be mapped back without the policy.
//
// A log statement's prefix may end in ":g<generation>" (Config.LogGeneration,
// 1 to 4294967295): the ruleset generation that logged the packet, so that
// a reader never maps a packet logged by one policy to a rule of another
// (rule indexes change when a reload reorders rules). Rule comments carry
// the tag without the generation.
type LogTag struct {
	Kind  LogKind
	Index int // the rule index for LogAllow, LogDeny and LogDNAT
	// Gen is the ruleset generation of a log prefix (0: not tagged).
	Gen uint32
}

func (t LogTag) String() string {
	switch t.Kind {
	case LogAllow, LogDeny, LogDNAT:
		// One string per tag (a large compile makes two per rule).
		var buf [48]byte
		b := append(buf[:0], "cw:"...)
		b = append(b, "ADN"[t.Kind-LogAllow], ':')
		b = strconv.AppendInt(b, int64(t.Index), 10)
		if t.Gen != 0 {
			b = strconv.AppendUint(append(b, ":g"...), uint64(t.Gen), 10)
		}
		return string(b)
	}
	s := t.base()
	if t.Gen != 0 {
		s += ":g" + strconv.FormatUint(uint64(t.Gen), 10)
	}
	return s
}

func (t LogTag) base() string {
	switch t.Kind {
	case LogAllow:
		return "cw:A:" + strconv.Itoa(t.Index)
	case LogDeny:
		return "cw:D:" + strconv.Itoa(t.Index)
	case LogDNAT:
		return "cw:N:" + strconv.Itoa(t.Index)
	case LogDefaultDeny:
		return "cw:D:default"
	case LogInputDrop:
		return "cw:D:input"
	case LogThreatDeny:
		return "cw:D:threat"
	case LogThreatAlert:
		return "cw:A:threat"
	}
	return "cw:?"
}

// ParseLogTag parses an NFLOG prefix written by the compiled ruleset.
func ParseLogTag(prefix string) (LogTag, error) {
	rest, ok := strings.CutPrefix(prefix, "cw:")
	if !ok || len(rest) < 3 || rest[1] != ':' {
		return LogTag{}, fmt.Errorf("log prefix %q: not a clusterwall prefix (cw:<A|D|N>:<index>)", prefix)
	}
	v, what := rest[0], rest[2:]
	var gen uint32
	if i := strings.LastIndex(what, ":g"); i >= 0 {
		g, err := strconv.ParseUint(what[i+2:], 10, 32)
		if err != nil || g == 0 || strconv.FormatUint(g, 10) != what[i+2:] {
			return LogTag{}, fmt.Errorf("log prefix %q: bad generation %q", prefix, what[i+2:])
		}
		gen, what = uint32(g), what[:i]
	}
	t, err := parseTagBase(prefix, v, what)
	if err != nil {
		return LogTag{}, err
	}
	t.Gen = gen
	return t, nil
}

func parseTagBase(prefix string, v byte, what string) (LogTag, error) {
	switch {
	case v == 'D' && what == "default":
		return LogTag{Kind: LogDefaultDeny}, nil
	case v == 'D' && what == "input":
		return LogTag{Kind: LogInputDrop}, nil
	case v == 'D' && what == "threat":
		return LogTag{Kind: LogThreatDeny}, nil
	case v == 'A' && what == "threat":
		return LogTag{Kind: LogThreatAlert}, nil
	}
	n, err := strconv.Atoi(what)
	if err != nil || n < 0 || strconv.Itoa(n) != what {
		return LogTag{}, fmt.Errorf("log prefix %q: bad rule index %q", prefix, what)
	}
	switch v {
	case 'A':
		return LogTag{Kind: LogAllow, Index: n}, nil
	case 'D':
		return LogTag{Kind: LogDeny, Index: n}, nil
	case 'N':
		return LogTag{Kind: LogDNAT, Index: n}, nil
	}
	return LogTag{}, fmt.Errorf("log prefix %q: unknown verdict %q", prefix, v)
}

// Rule returns the policy rule the tag names, or nil for default deny,
// input drops and indexes p does not have.
func (t LogTag) Rule(p *policy.Policy) *policy.Rule {
	var rules []*policy.Rule
	switch t.Kind {
	case LogAllow, LogDeny:
		rules = p.RulesOf(policy.KindNetwork)
	case LogDNAT:
		rules = p.RulesOf(policy.KindDNAT)
	default:
		return nil
	}
	if t.Index < 0 || t.Index >= len(rules) {
		return nil
	}
	return rules[t.Index]
}

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
//
// where i is the rule's index in Policy.RulesOf(KindNetwork) (A, D) or
// Policy.RulesOf(KindDNAT) (N) of the policy that was applied, counting
// from 0. The rule comments in the kernel start with the same tag followed
// by the rule's group/collection/rule path, so `dataplane show` and the
// counters can be mapped back without the policy.
type LogTag struct {
	Kind  LogKind
	Index int // the rule index for LogAllow, LogDeny and LogDNAT
}

func (t LogTag) String() string {
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
	switch {
	case v == 'D' && what == "default":
		return LogTag{Kind: LogDefaultDeny}, nil
	case v == 'D' && what == "input":
		return LogTag{Kind: LogInputDrop}, nil
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

package logquery

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/clusterwall/clusterwall/internal/ascii"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// coverer maps source addresses to the prefixes and IP groups the
// operator already uses (IP groups, rule sources, --cluster-cidr).
type coverer struct {
	exact  bool
	cands  []candidate
	groups map[string][]string
}

type candidate struct {
	label  string // a CIDR, or an IP group name
	group  bool
	prefix netip.Prefix
}

// sensible reports whether p may stand for the addresses it holds: not
// wider than a /16 (IPv4) or a /48 (IPv6), so "*" or 0.0.0.0/0 sources of
// existing rules never widen a suggestion.
func sensible(p netip.Prefix) bool {
	if p.Addr().Is4() {
		return p.Bits() >= 16
	}
	return p.Bits() >= 48
}

func newCoverer(o SuggestOptions) *coverer {
	c := &coverer{exact: o.ExactSources, groups: map[string][]string{}}
	for _, p := range o.ClusterCIDRs {
		if p.IsValid() {
			c.cands = append(c.cands, candidate{label: prefixText(p.Masked()), prefix: p.Masked()})
		}
	}
	if p := o.Policy; p != nil {
		for name, set := range p.IPGroups {
			var txt []string
			for _, pr := range set.Prefixes() {
				txt = append(txt, prefixText(pr))
				if sensible(pr) {
					c.cands = append(c.cands, candidate{label: name, group: true, prefix: pr})
				}
			}
			c.groups[name] = txt
		}
		for _, k := range []policy.Kind{policy.KindNetwork, policy.KindApplication} {
			for _, r := range p.RulesOf(k) {
				if r.Source.Any {
					continue
				}
				for _, pr := range r.Source.Prefixes() {
					if sensible(pr) {
						c.cands = append(c.cands, candidate{label: prefixText(pr), prefix: pr})
					}
				}
			}
		}
	}
	return c
}

func (c *coverer) groupText(name string) []string { return c.groups[name] }

// cover returns the source addresses (CIDRs) and IP groups for srcs, and
// a comment with the addresses seen.
func (c *coverer) cover(srcs map[netip.Addr]int) (addrs, groups []string, comment string) {
	var exact policy.AddrSetBuilder
	nExact := 0
	labels := map[string]bool{}
	groupSet := map[string]bool{}
	var seen []netip.Addr
	for a := range srcs {
		seen = append(seen, a)
		best := -1
		if !c.exact {
			for i, cand := range c.cands {
				if !cand.prefix.Contains(a) {
					continue
				}
				if best < 0 || cand.prefix.Bits() > c.cands[best].prefix.Bits() ||
					cand.prefix.Bits() == c.cands[best].prefix.Bits() && cand.group && !c.cands[best].group {
					best = i
				}
			}
		}
		if best < 0 {
			exact.AddPrefix(netip.PrefixFrom(a, a.BitLen()))
			nExact++
			continue
		}
		if c.cands[best].group {
			groupSet[c.cands[best].label] = true
		} else {
			labels[c.cands[best].label] = true
		}
	}
	if nExact > 0 {
		set := exact.Build()
		for _, p := range set.Prefixes() {
			labels[prefixText(p)] = true
		}
	}
	addrs = sortedAddrs(labels)
	for g := range groupSet {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	sort.Slice(seen, func(i, j int) bool { return seen[i].Less(seen[j]) })
	var parts []string
	for _, a := range seen {
		parts = append(parts, fmt.Sprintf("%s (%d)", a, srcs[a]))
	}
	comment = "seen from " + strings.Join(limit(parts, 8), ", ")
	return addrs, groups, comment
}

// sortedAddrs sorts CIDR strings by address.
func sortedAddrs(set map[string]bool) []string {
	var out []string
	for s := range set {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		a, e1 := netip.ParsePrefix(withBits(out[i]))
		b, e2 := netip.ParsePrefix(withBits(out[j]))
		if e1 != nil || e2 != nil || a.Addr() == b.Addr() {
			return out[i] < out[j]
		}
		return a.Addr().Less(b.Addr())
	})
	return out
}

func withBits(s string) string {
	if strings.Contains(s, "/") {
		return s
	}
	if strings.Contains(s, ":") {
		return s + "/128"
	}
	return s + "/32"
}

// prefixText prints a single address without its /32 or /128.
func prefixText(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// freeGroup picks a group name and priority the policy does not use: the
// lowest precedence (after every existing group), so a suggestion never
// overrides an existing rule.
func freeGroup(p *policy.Policy, name string) (string, int) {
	usedName := map[string]bool{}
	usedPrio := map[int]bool{}
	maxPrio := 0
	if p != nil {
		for _, g := range p.Groups {
			usedName[g.Name] = true
			usedPrio[g.Priority] = true
			if g.Priority > maxPrio {
				maxPrio = g.Priority
			}
		}
	}
	n := name
	for i := 2; usedName[n]; i++ {
		n = fmt.Sprintf("%s-%d", name, i)
	}
	prio := 60000
	if maxPrio >= prio {
		prio = maxPrio + 100
	}
	if prio > 65000 {
		prio = 65000
	}
	for usedPrio[prio] && prio > 100 {
		prio--
	}
	return n, prio
}

func appProtocols(m map[policy.AppProtocol]int) []string {
	var aps []policy.AppProtocol
	for ap := range m {
		aps = append(aps, ap)
	}
	sort.Slice(aps, func(i, j int) bool {
		if aps[i].Port != aps[j].Port {
			return aps[i].Port < aps[j].Port
		}
		return aps[i].Scheme < aps[j].Scheme
	})
	var out []string
	for _, ap := range aps {
		out = append(out, ap.String())
	}
	return out
}

// portList lists ports, consecutive ones as ranges (never wider than seen).
func portList(m map[uint16]int, proto policy.Proto) []string {
	if proto == policy.ProtoICMP {
		return []string{"*"}
	}
	var ports []policy.PortRange
	for p := range m {
		ports = append(ports, policy.PortRange{Lo: p, Hi: p})
	}
	var out []string
	for _, r := range policy.MergePorts(ports) {
		out = append(out, r.String())
	}
	return out
}

// ruleName makes a unique rule name from a prefix and a hint.
func ruleName(prefix, hint string, existing []*SuggestedRule) string {
	hint = strings.TrimPrefix(hint, "*.")
	var b strings.Builder
	for _, r := range hint {
		if r < 0x80 {
			r = rune(ascii.Lower(byte(r)))
		}
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	base := prefix
	if h := strings.Trim(b.String(), "-"); h != "" {
		base += "-" + h
	}
	if len(base) > 60 {
		base = base[:60]
	}
	name := base
	for i := 2; ; i++ {
		dup := false
		for _, r := range existing {
			if r.Name == name {
				dup = true
				break
			}
		}
		if !dup {
			return name
		}
		name = fmt.Sprintf("%s-%d", base, i)
	}
}

func dedupe(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

func limit(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(append([]string(nil), s[:n]...), fmt.Sprintf("and %d more", len(s)-n))
}

// q quotes a YAML scalar (single quotes: no escapes but ”).
func q(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func qlist(list []string) string {
	parts := make([]string, len(list))
	for i, s := range list {
		parts[i] = q(s)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// comment makes a YAML comment safe (one line).
func comment(s string) string { return strings.NewReplacer("\n", " ", "\r", " ").Replace(s) }

func flows(n int) string {
	if n == 1 {
		return "1 denied flow"
	}
	return strconv.Itoa(n) + " denied flows"
}

// Rules reports how many rules the suggestion has.
func (s *Suggestion) Rules() int { return len(s.Network) + len(s.App) }

// header is the comment block that explains the suggestion.
func (s *Suggestion) header() string {
	var b strings.Builder
	b.WriteString("# clusterwall suggest: ")
	if s.Rules() == 0 {
		b.WriteString("nothing to suggest")
	} else {
		fmt.Fprintf(&b, "%d network and %d application rules allow %d denied flows", len(s.Network), len(s.App), s.Flows)
	}
	if !s.First.IsZero() {
		fmt.Fprintf(&b, "\n# evidence: %d denied lines from %s to %s", s.Denied, s.First.UTC().Format(time.RFC3339), s.Last.UTC().Format(time.RFC3339))
	}
	b.WriteString("\n# Review before applying: a rule allows its whole wildcard and source range, not only the flows seen.\n")
	for _, n := range s.Notes {
		b.WriteString("# " + comment(n) + "\n")
	}
	return b.String()
}

// groupYAML renders the rule collection group as a YAML sequence item at
// the given indentation.
func (s *Suggestion) groupYAML(ind string) string {
	var b strings.Builder
	w := func(level int, format string, args ...any) {
		b.WriteString(ind + strings.Repeat("  ", level) + fmt.Sprintf(format, args...) + "\n")
	}
	w(0, "- name: %s", q(s.Group))
	w(0, "  priority: %d", s.Priority)
	w(0, "  ruleCollections:")
	coll := func(name, kind string, prio int, rules []*SuggestedRule) {
		w(2, "- name: %s", q(name))
		w(2, "  kind: %s", kind)
		w(2, "  priority: %d", prio)
		w(2, "  action: Allow")
		w(2, "  rules:")
		for _, r := range rules {
			w(3, "# %s", comment(r.Comment))
			w(3, "- name: %s", q(r.Name))
			w(3, "  protocols: %s", qlist(r.Protocols))
			if len(r.SourceAddrs) > 0 {
				w(3, "  sourceAddresses: %s # %s", qlist(r.SourceAddrs), comment(r.SourceComment))
			}
			if len(r.SourceGroups) > 0 {
				if len(r.SourceAddrs) > 0 {
					w(3, "  sourceIpGroups: %s", qlist(r.SourceGroups))
				} else {
					w(3, "  sourceIpGroups: %s # %s", qlist(r.SourceGroups), comment(r.SourceComment))
				}
			}
			if kind == "Network" {
				w(3, "  destinationAddresses:")
				for i, d := range r.Destinations {
					w(3, "    - %s # %s", q(d), comment(r.ItemComments[i]))
				}
				w(3, "  destinationPorts: %s", qlist(r.Ports))
			} else {
				w(3, "  targetFqdns:")
				for i, f := range r.TargetFQDNs {
					w(3, "    - %s # %s", q(f), comment(r.ItemComments[i]))
				}
			}
		}
	}
	if len(s.Network) > 0 {
		coll("suggested-network", "Network", 100, s.Network)
	}
	if len(s.App) > 0 {
		coll("suggested-application", "Application", 200, s.App)
	}
	return b.String()
}

// YAML renders the suggestion as a policy document of its own (with the
// IP groups its rules name), which `policy validate` accepts.
func (s *Suggestion) YAML() []byte {
	var b strings.Builder
	b.WriteString(s.header())
	name := s.PolicyName
	if name == "" {
		name = "clusterwall"
	}
	fmt.Fprintf(&b, "name: %s\n", q(name+"-suggested"))
	if s.Rules() == 0 {
		return []byte(b.String())
	}
	if len(s.IPGroups) > 0 {
		b.WriteString("ipGroups:\n")
		var names []string
		for n := range s.IPGroups {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(&b, "  %s: %s\n", q(n), qlist(s.IPGroups[n]))
		}
	}
	b.WriteString("ruleCollectionGroups:\n")
	b.WriteString(s.groupYAML("  "))
	return []byte(b.String())
}

// Merge appends the suggested group to a policy file's
// ruleCollectionGroups (comments of the file are kept) and returns the new
// file. Validate the result with policy.Load before applying it.
func Merge(policyYAML []byte, s *Suggestion) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(policyYAML, &doc); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("policy: not a YAML mapping")
	}
	if s.Rules() == 0 {
		return policyYAML, nil
	}
	var seq yaml.Node
	if err := yaml.Unmarshal([]byte(s.groupYAML("")), &seq); err != nil {
		return nil, fmt.Errorf("suggestion: %w", err)
	}
	group := seq.Content[0].Content[0]
	group.HeadComment = strings.TrimRight(s.header(), "\n")
	root := doc.Content[0]
	var groups *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "ruleCollectionGroups" {
			groups = root.Content[i+1]
		}
	}
	if groups == nil {
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "ruleCollectionGroups"}, &yaml.Node{Kind: yaml.SequenceNode})
		groups = root.Content[len(root.Content)-1]
	}
	if groups.Kind != yaml.SequenceNode {
		return nil, errors.New("policy: ruleCollectionGroups is not a list")
	}
	groups.Content = append(groups.Content, group)
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	enc.Close()
	return out.Bytes(), nil
}

package azcli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Default rule collection groups: where Azure puts rules created the
// classic way when it migrates them to a policy.
var defaultGroups = map[policy.Kind]struct {
	Name     string
	Priority int
}{
	policy.KindDNAT:        {"DefaultDnatRuleCollectionGroup", 100},
	policy.KindNetwork:     {"DefaultNetworkRuleCollectionGroup", 200},
	policy.KindApplication: {"DefaultApplicationRuleCollectionGroup", 300},
}

// DefaultGroup returns the name and priority of the group that rules of
// kind k land in when no group is named.
func DefaultGroup(k policy.Kind) (string, int) {
	g := defaultGroups[k]
	return g.Name, g.Priority
}

// Doc is a policy file being edited: its yaml.v3 node tree. Edits change
// only the nodes they concern, so comments, key order, quoting and
// unrelated content survive a round trip.
type Doc struct {
	doc  *yaml.Node // the DocumentNode
	root *yaml.Node // its MappingNode
}

// NewDoc returns a new, empty policy named name.
func NewDoc(name string) *Doc {
	root := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	addKey(root, "apiVersion", str("clusterwall.io/v1alpha1"))
	addKey(root, "kind", str("FirewallPolicy"))
	if name != "" {
		addKey(root, "name", str(name))
	}
	return &Doc{doc: &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}, root: root}
}

// blankMarker stands in for a blank line while the file is a node tree:
// yaml.v3 keeps comments but drops blank lines, so ParseDoc turns each
// blank line into this comment and Bytes turns it back.
const blankMarker = "#clusterwall:blank-line"

// ParseDoc parses a policy file's bytes. The file must hold one YAML
// document whose top level is a mapping. Blank lines are kept (as marker
// comments) unless that would change a value, e.g. inside a block scalar.
func ParseDoc(data []byte) (*Doc, error) {
	if !bytes.Contains(data, []byte(blankMarker)) {
		if d, err := parseDoc(markBlankLines(data)); err == nil && !hasMarker(d.doc) {
			return d, nil
		}
	}
	return parseDoc(data)
}

// markBlankLines replaces blank lines before the last non-blank one with
// blankMarker, except those that follow a comment: yaml.v3 reads "a
// comment, a blank line" as a foot comment and keeps such blank lines
// itself.
func markBlankLines(data []byte) []byte {
	lines := bytes.Split(data, []byte("\n"))
	last := len(lines) - 1
	for last >= 0 && isBlank(lines[last]) {
		last--
	}
	afterComment := false // the last non-blank line was a comment
	for i := 0; i < last; i++ {
		switch t := bytes.TrimSpace(lines[i]); {
		case len(t) == 0:
			if !afterComment {
				lines[i] = []byte(blankMarker)
			}
		default:
			afterComment = t[0] == '#'
		}
	}
	return bytes.Join(lines, []byte("\n"))
}

func isBlank(b []byte) bool { return len(bytes.TrimSpace(b)) == 0 }

// hasMarker reports whether a marker ended up in a value (a block or
// multi-line scalar) rather than in a comment.
func hasMarker(n *yaml.Node) bool {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "clusterwall:blank-line") {
		return true
	}
	for _, c := range n.Content {
		if hasMarker(c) {
			return true
		}
	}
	return false
}

// unmarkBlankLines turns marker comments back into blank lines.
func unmarkBlankLines(data []byte) []byte {
	if !bytes.Contains(data, []byte(blankMarker)) {
		return data
	}
	lines := bytes.Split(data, []byte("\n"))
	for i, l := range lines {
		if bytes.Equal(bytes.TrimSpace(l), []byte(blankMarker)) {
			lines[i] = nil
		} else if j := bytes.Index(l, []byte(" "+blankMarker)); j >= 0 {
			lines[i] = bytes.TrimRight(l[:j], " ") // never expected: a marker moved to a line comment
		}
	}
	return bytes.Join(lines, []byte("\n"))
}

func parseDoc(data []byte) (*Doc, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty policy file")
		}
		return nil, fmt.Errorf("YAML syntax: %v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the policy file's top level is not a mapping")
	}
	return &Doc{doc: &doc, root: doc.Content[0]}, nil
}

// Bytes encodes the document with two-space indentation, the layout of
// the project's examples.
func (d *Doc) Bytes() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(d.doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return unmarkBlankLines(b.Bytes()), nil
}

// CollectionRef locates a rule collection in the document.
type CollectionRef struct {
	Group         string
	GroupPriority int
	Name          string
	Kind          policy.Kind // KindInvalid when the file's kind is not understood
	Priority      int
	Action        string // as written in the file

	groupNode *yaml.Node // the group's mapping
	node      *yaml.Node // the collection's mapping
}

// GroupRef locates a rule collection group.
type GroupRef struct {
	Name     string
	Priority int
	node     *yaml.Node
}

// Groups lists the rule collection groups in file order.
func (d *Doc) Groups() []GroupRef {
	var out []GroupRef
	seq := deref(lookup(d.root, "ruleCollectionGroups"))
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return nil
	}
	for _, g := range seq.Content {
		g = deref(g)
		if g.Kind != yaml.MappingNode {
			continue
		}
		out = append(out, GroupRef{Name: scalar(lookup(g, "name")), Priority: intValue(lookup(g, "priority")), node: g})
	}
	return out
}

// Collections lists every rule collection in file order.
func (d *Doc) Collections() []CollectionRef {
	var out []CollectionRef
	for _, g := range d.Groups() {
		seq := deref(lookup(g.node, "ruleCollections"))
		if seq == nil || seq.Kind != yaml.SequenceNode {
			continue
		}
		for _, c := range seq.Content {
			c = deref(c)
			if c.Kind != yaml.MappingNode {
				continue
			}
			k, _ := policy.ParseKind(scalar(lookup(c, "kind")))
			out = append(out, CollectionRef{
				Group: g.Name, GroupPriority: g.Priority,
				Name: scalar(lookup(c, "name")), Kind: k,
				Priority: intValue(lookup(c, "priority")), Action: scalar(lookup(c, "action")),
				groupNode: g.node, node: c,
			})
		}
	}
	return out
}

// CollectionsOf lists the collections of one kind, optionally only those
// of the group named group (case-insensitive, as validation compares).
func (d *Doc) CollectionsOf(k policy.Kind, group string) []CollectionRef {
	var out []CollectionRef
	for _, c := range d.Collections() {
		if c.Kind == k && (group == "" || strings.EqualFold(c.Group, group)) {
			out = append(out, c)
		}
	}
	return out
}

// FindCollection finds the collection of kind k named name, in the group
// named group when group is not empty. It returns (ref, false, nil) when
// there is none, and an error when the name is ambiguous across groups.
func (d *Doc) FindCollection(k policy.Kind, group, name string) (CollectionRef, bool, error) {
	var found []CollectionRef
	for _, c := range d.CollectionsOf(k, group) {
		if strings.EqualFold(c.Name, name) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 0:
		return CollectionRef{}, false, nil
	case 1:
		return found[0], true, nil
	}
	groups := make([]string, len(found))
	for i, c := range found {
		groups[i] = strconv.Quote(c.Group)
	}
	return CollectionRef{}, false, fmt.Errorf("%s collection %q exists in several rule collection groups (%s); name one with --rcg-name",
		k, name, strings.Join(groups, ", "))
}

// Rules decodes the rules of a collection.
func (c CollectionRef) Rules() ([]policy.WireRule, error) {
	var rules []policy.WireRule
	n := lookup(c.node, "rules")
	if n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return nil, nil
	}
	if err := n.Decode(&rules); err != nil {
		return nil, fmt.Errorf("collection %q: rules: %v", c.Name, err)
	}
	return rules, nil
}

// Wire decodes the collection.
func (c CollectionRef) Wire() (policy.WireCollection, error) {
	var wc policy.WireCollection
	if err := c.node.Decode(&wc); err != nil {
		return wc, fmt.Errorf("collection %q: %v", c.Name, err)
	}
	return wc, nil
}

// RuleSpec is a rule to add and the collection (and group) to add it to.
type RuleSpec struct {
	Kind       policy.Kind
	Collection string
	// Group names the rule collection group; empty means the collection's
	// current group, or the kind's default group for a new collection.
	Group string
	// GroupPriority is the priority for a new group; 0 means unset.
	GroupPriority int
	// Priority and Action are required for a new collection and, when
	// set, must agree with an existing one. 0 and "" mean unset.
	Priority int
	Action   string
	Rule     policy.WireRule
}

// AddResult says what AddRule did.
type AddResult struct {
	Group         string
	Collection    string
	Priority      int
	Action        string
	NewGroup      bool
	NewCollection bool
}

// AddRule adds a rule as az does: to the named collection, creating the
// collection (and its group) when missing. On error the Doc may be partly
// changed and should be discarded (the commands never write it then).
func (d *Doc) AddRule(s RuleSpec) (AddResult, error) {
	what := kindWord(s.Kind)
	if s.Rule.Name == "" {
		return AddResult{}, errors.New("the rule needs a name (--name)")
	}
	if s.Collection == "" {
		return AddResult{}, errors.New("the rule needs a collection (--collection-name)")
	}
	coll, found, err := d.FindCollection(s.Kind, s.Group, s.Collection)
	if err != nil {
		return AddResult{}, err
	}
	if s.Group != "" {
		if g, ok := d.findGroup(s.Group); ok && s.GroupPriority != 0 && g.Priority != s.GroupPriority {
			return AddResult{}, fmt.Errorf("rule collection group %q already exists with priority %d; --rcg-priority %d conflicts (omit it to use the group)",
				g.Name, g.Priority, s.GroupPriority)
		}
	}
	if found {
		if err := checkAliases(coll); err != nil {
			return AddResult{}, err
		}
		if s.Priority != 0 && s.Priority != coll.Priority {
			return AddResult{}, fmt.Errorf("%s collection %q already exists with priority %d; --priority %d conflicts (omit --priority to add the rule to it)",
				s.Kind, coll.Name, coll.Priority, s.Priority)
		}
		if s.Action != "" && !sameAction(s.Action, coll.Action) {
			return AddResult{}, fmt.Errorf("%s collection %q already exists with action %s; --action %s conflicts (omit --action to add the rule to it)",
				s.Kind, coll.Name, coll.Action, s.Action)
		}
		rules, err := coll.Rules()
		if err != nil {
			return AddResult{}, err
		}
		for _, r := range rules {
			if strings.EqualFold(r.Name, s.Rule.Name) {
				return AddResult{}, fmt.Errorf("%s %q already exists in collection %q (group %q); delete it first or choose another --name",
					what, r.Name, coll.Name, coll.Group)
			}
		}
		if err := appendItem(coll.node, "rules", ruleNode(s.Rule)); err != nil {
			return AddResult{}, fmt.Errorf("collection %q: %v", coll.Name, err)
		}
		return AddResult{Group: coll.Group, Collection: coll.Name, Priority: coll.Priority, Action: coll.Action}, nil
	}

	// A new collection.
	var missing []string
	if s.Priority == 0 {
		missing = append(missing, "--priority")
	}
	if s.Action == "" {
		missing = append(missing, "--action")
	}
	if len(missing) > 0 {
		return AddResult{}, fmt.Errorf("%s collection %q does not exist yet; creating it needs %s", s.Kind, s.Collection, strings.Join(missing, " and "))
	}
	res := AddResult{Collection: s.Collection, Priority: s.Priority, Action: canonicalAction(s.Action), NewCollection: true}
	groupName, groupPrio := s.Group, s.GroupPriority
	if groupName == "" {
		groupName, groupPrio = DefaultGroup(s.Kind)
	}
	g, ok := d.findGroup(groupName)
	if !ok {
		if groupPrio == 0 {
			return AddResult{}, fmt.Errorf("rule collection group %q does not exist yet; creating it needs --rcg-priority", groupName)
		}
		for _, other := range d.Groups() {
			if other.Priority == groupPrio {
				return AddResult{}, fmt.Errorf("cannot create rule collection group %q with priority %d: group %q already has that priority (name a group with --rcg-name, and --rcg-priority for a new one)",
					groupName, groupPrio, other.Name)
			}
		}
		g = GroupRef{Name: groupName, Priority: groupPrio, node: groupNode(groupName, groupPrio)}
		if err := d.insertGroup(g); err != nil {
			return AddResult{}, err
		}
		res.NewGroup = true
	}
	if g.node.Anchor != "" {
		return AddResult{}, fmt.Errorf("rule collection group %q is a YAML anchor used elsewhere; edit the file by hand", g.Name)
	}
	res.Group = g.Name
	// Collection names are unique within a group whatever their kind.
	for _, c := range d.Collections() {
		if c.groupNode == g.node && strings.EqualFold(c.Name, s.Collection) {
			return AddResult{}, fmt.Errorf("rule collection group %q already has a %s collection named %q; a group's collection names must be unique (choose another --collection-name or --rcg-name)",
				g.Name, c.Kind, c.Name)
		}
	}
	c := collectionNode(s.Collection, s.Kind, s.Priority, canonicalAction(s.Action))
	if err := appendItem(c, "rules", ruleNode(s.Rule)); err != nil {
		return AddResult{}, err
	}
	if err := appendItem(g.node, "ruleCollections", c); err != nil {
		return AddResult{}, fmt.Errorf("rule collection group %q: %v", g.Name, err)
	}
	return res, nil
}

// DeleteResult says what DeleteRule did.
type DeleteResult struct {
	Group             string
	Collection        string
	CollectionRemoved bool // the collection became empty and was removed, as az does
}

// DeleteRule removes a rule. When the collection becomes empty it is
// removed too, as az does.
func (d *Doc) DeleteRule(k policy.Kind, group, collection, rule string) (DeleteResult, error) {
	coll, err := d.mustFind(k, group, collection)
	if err != nil {
		return DeleteResult{}, err
	}
	if err := checkAliases(coll); err != nil {
		return DeleteResult{}, err
	}
	res := DeleteResult{Group: coll.Group, Collection: coll.Name}
	seq := lookup(coll.node, "rules")
	idx := -1
	if seq != nil && seq.Kind == yaml.SequenceNode {
		for i, r := range seq.Content {
			if strings.EqualFold(scalar(lookup(deref(r), "name")), rule) {
				idx = i
				break
			}
		}
	}
	if idx < 0 {
		return DeleteResult{}, fmt.Errorf("%s %q not found in collection %q (group %q)", kindWord(k), rule, coll.Name, coll.Group)
	}
	seq.Content = append(seq.Content[:idx], seq.Content[idx+1:]...)
	if len(seq.Content) == 0 {
		if err := d.removeCollection(coll); err != nil {
			return DeleteResult{}, err
		}
		res.CollectionRemoved = true
	}
	return res, nil
}

// DeleteCollection removes a collection and its rules.
func (d *Doc) DeleteCollection(k policy.Kind, group, collection string) (CollectionRef, error) {
	coll, err := d.mustFind(k, group, collection)
	if err != nil {
		return CollectionRef{}, err
	}
	return coll, d.removeCollection(coll)
}

// Collection finds an existing collection or says clearly that it is missing.
func (d *Doc) Collection(k policy.Kind, group, collection string) (CollectionRef, error) {
	return d.mustFind(k, group, collection)
}

func (d *Doc) mustFind(k policy.Kind, group, collection string) (CollectionRef, error) {
	coll, found, err := d.FindCollection(k, group, collection)
	if err != nil {
		return CollectionRef{}, err
	}
	if !found {
		where := ""
		if group != "" {
			where = fmt.Sprintf(" in rule collection group %q", group)
		}
		var names []string
		for _, c := range d.CollectionsOf(k, group) {
			names = append(names, strconv.Quote(c.Name))
		}
		have := "there are none"
		if len(names) > 0 {
			have = "there are " + strings.Join(names, ", ")
		}
		return CollectionRef{}, fmt.Errorf("%s collection %q not found%s (%s)", k, collection, where, have)
	}
	return coll, nil
}

func (d *Doc) removeCollection(c CollectionRef) error {
	if c.groupNode.Anchor != "" || c.node.Anchor != "" {
		return fmt.Errorf("collection %q is part of a YAML anchor used elsewhere; edit the file by hand", c.Name)
	}
	seq := lookup(c.groupNode, "ruleCollections")
	for i, n := range seq.Content {
		if n == c.node {
			seq.Content = append(seq.Content[:i], seq.Content[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("collection %q: not found in its group (YAML alias?)", c.Name)
}

// insertGroup adds a new group before the first group of higher priority,
// so that the file lists groups in evaluation order when it did before.
func (d *Doc) insertGroup(g GroupRef) error {
	seq := lookup(d.root, "ruleCollectionGroups")
	if seq == nil || seq.Kind != yaml.SequenceNode || len(seq.Content) == 0 || seq.Anchor != "" {
		return appendItem(d.root, "ruleCollectionGroups", g.node)
	}
	for i, n := range seq.Content {
		if p := intValue(lookup(n, "priority")); p > g.Priority {
			seq.Content = append(seq.Content[:i], append([]*yaml.Node{g.node}, seq.Content[i:]...)...)
			return nil
		}
	}
	appendToSeq(seq, g.node)
	return nil
}

func (d *Doc) findGroup(name string) (GroupRef, bool) {
	for _, g := range d.Groups() {
		if strings.EqualFold(g.Name, name) {
			return g, true
		}
	}
	return GroupRef{}, false
}

// checkAliases refuses to edit a collection shared through a YAML anchor:
// the edit would show up in every place that refers to it.
func checkAliases(c CollectionRef) error {
	if c.node.Anchor != "" || c.groupNode.Anchor != "" {
		return fmt.Errorf("collection %q is part of a YAML anchor used elsewhere; edit the file by hand", c.Name)
	}
	if r := lookup(c.node, "rules"); r != nil && (r.Kind == yaml.AliasNode || r.Anchor != "") {
		return fmt.Errorf("the rules of collection %q are a YAML alias or anchor; edit the file by hand", c.Name)
	}
	return nil
}

func kindWord(k policy.Kind) string {
	switch k {
	case policy.KindDNAT:
		return "NAT rule"
	case policy.KindNetwork:
		return "network rule"
	case policy.KindApplication:
		return "application rule"
	}
	return "rule"
}

func sameAction(a, b string) bool {
	x, okx := policy.ParseAction(a)
	y, oky := policy.ParseAction(b)
	if okx && oky {
		return x == y
	}
	return strings.EqualFold(a, b)
}

// canonicalAction writes Allow, Deny or DNAT; anything else is kept as
// given so that validation reports it with its position.
func canonicalAction(s string) string {
	if a, ok := policy.ParseAction(s); ok {
		return a.String()
	}
	return s
}

// Node construction. New nodes follow the wire field order of
// policy.WireGroup, WireCollection and WireRule.

func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func quoted(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.SingleQuotedStyle}
}

func intNode(n int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(n)}
}

func flowList(vals []string, quote bool) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
	for _, v := range vals {
		if quote {
			n.Content = append(n.Content, quoted(v))
		} else {
			n.Content = append(n.Content, str(v))
		}
	}
	return n
}

func addKey(m *yaml.Node, key string, val *yaml.Node) {
	m.Content = append(m.Content, str(key), val)
}

func groupNode(name string, prio int) *yaml.Node {
	g := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	addKey(g, "name", str(name))
	addKey(g, "priority", intNode(prio))
	return g
}

func collectionNode(name string, k policy.Kind, prio int, action string) *yaml.Node {
	c := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	addKey(c, "name", str(name))
	addKey(c, "kind", str(k.String()))
	addKey(c, "priority", intNode(prio))
	addKey(c, "action", str(action))
	return c
}

// ruleNode encodes a rule in wire field order, lists in flow style as in
// the examples, ports quoted so that they stay strings.
func ruleNode(r policy.WireRule) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	addKey(n, "name", str(r.Name))
	if r.Description != "" {
		addKey(n, "description", str(r.Description))
	}
	lists := []struct {
		key   string
		vals  []string
		quote bool
	}{
		{"protocols", r.Protocols, false},
		{"sourceAddresses", r.SourceAddresses, false},
		{"sourceIpGroups", r.SourceIPGroups, false},
		{"destinationAddresses", r.DestinationAddresses, false},
		{"destinationIpGroups", r.DestinationIPGroups, false},
		{"destinationFqdns", r.DestinationFQDNs, false},
		{"destinationPorts", r.DestinationPorts, true},
		{"targetFqdns", r.TargetFQDNs, false},
		{"fqdnTags", r.FQDNTags, false},
	}
	for _, l := range lists {
		if len(l.vals) > 0 {
			addKey(n, l.key, flowList(l.vals, l.quote))
		}
	}
	if r.TranslatedAddress != "" {
		addKey(n, "translatedAddress", str(r.TranslatedAddress))
	}
	if r.TranslatedFQDN != "" {
		addKey(n, "translatedFqdn", str(r.TranslatedFQDN))
	}
	if r.TranslatedPort != "" {
		addKey(n, "translatedPort", quoted(r.TranslatedPort))
	}
	return n
}

// appendItem appends item to the sequence under key in mapping m, creating
// the key (or replacing an empty value) when needed.
func appendItem(m *yaml.Node, key string, item *yaml.Node) error {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != key {
			continue
		}
		v := m.Content[i+1]
		if v.Kind == yaml.AliasNode || v.Anchor != "" {
			return fmt.Errorf("%s is a YAML alias or anchor; edit the file by hand", key)
		}
		if v.Kind == yaml.MappingNode {
			return fmt.Errorf("%s is a mapping, not a list", key)
		}
		if v.Kind != yaml.SequenceNode {
			// null or empty: make it a list, keeping comments.
			seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", HeadComment: v.HeadComment, FootComment: v.FootComment}
			if k := m.Content[i]; k.LineComment == "" {
				k.LineComment = v.LineComment
			}
			m.Content[i+1] = seq
			v = seq
		}
		if len(v.Content) == 0 && v.Style&yaml.FlowStyle != 0 {
			// "rules: [] # comment" becomes a block list; the comment
			// moves to the key, where a block list can keep it.
			v.Style &^= yaml.FlowStyle
			if k := m.Content[i]; k.LineComment == "" {
				k.LineComment, v.LineComment = v.LineComment, ""
			}
		}
		appendToSeq(v, item)
		return nil
	}
	addKey(m, key, &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{item}})
	return nil
}

// appendToSeq appends item to a sequence. Foot comments that trailed the
// old last item (yaml.v3 hangs them on its deepest last key: a blank line
// before the next section, an "end of list" note) move to the new last
// item, so that they stay at the end of the list.
func appendToSeq(seq, item *yaml.Node) {
	if n := len(seq.Content); n > 0 {
		if foot := takeFoot(seq.Content[n-1]); foot != "" {
			k := lastKey(item)
			if k.FootComment != "" {
				foot = k.FootComment + "\n" + foot
			}
			k.FootComment = foot
		}
	}
	seq.Content = append(seq.Content, item)
}

// takeFoot removes and returns the foot comments along n's chain of last
// children, innermost first (the order they appear in the text).
func takeFoot(n *yaml.Node) string {
	var parts []string
	take := func(x *yaml.Node) {
		if x.FootComment != "" {
			parts = append(parts, x.FootComment)
			x.FootComment = ""
		}
	}
	for n != nil && n.Kind != yaml.AliasNode {
		take(n)
		switch {
		case n.Kind == yaml.MappingNode && len(n.Content) >= 2:
			take(n.Content[len(n.Content)-2])
			n = n.Content[len(n.Content)-1]
		case n.Kind == yaml.SequenceNode && len(n.Content) > 0:
			n = n.Content[len(n.Content)-1]
		default:
			n = nil
		}
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "\n")
}

// lastKey returns the deepest last key of a new node (descending through
// block mappings and the last item of block sequences), or n itself.
func lastKey(n *yaml.Node) *yaml.Node {
	last := n
	for {
		switch {
		case n.Kind == yaml.MappingNode && len(n.Content) >= 2:
			last = n.Content[len(n.Content)-2]
			n = n.Content[len(n.Content)-1]
		case n.Kind == yaml.SequenceNode && n.Style&yaml.FlowStyle == 0 && len(n.Content) > 0:
			n = n.Content[len(n.Content)-1]
		default:
			return last
		}
	}
}

// Node reading.

func lookup(m *yaml.Node, key string) *yaml.Node {
	m = deref(m)
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func scalar(n *yaml.Node) string {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func intValue(n *yaml.Node) int {
	v, err := strconv.Atoi(scalar(n))
	if err != nil {
		return 0
	}
	return v
}

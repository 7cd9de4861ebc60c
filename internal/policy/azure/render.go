package azure

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Render marshals f as policy YAML (indent 2) with a header naming the
// source, and each warning, and each validation error in errs, as a comment
// on the rule, collection or group it concerns (at the top when there is no
// such place).
func Render(f *policy.File, source string, warns []Warning, errs []*policy.Error) ([]byte, error) {
	var root yaml.Node
	if err := root.Encode(f); err != nil {
		return nil, err
	}
	idx := map[string]*yaml.Node{}
	indexNodes(&root, "", idx)
	styleLists(&root)

	comments := map[*yaml.Node][]string{}
	var order []*yaml.Node
	add := func(target, line string) {
		n := find(idx, target)
		if n == nil {
			n = &root
		}
		if _, ok := comments[n]; !ok {
			order = append(order, n)
		}
		comments[n] = append(comments[n], line)
	}
	nsev := 0
	for _, w := range warns {
		label := "warning"
		if w.Severe {
			label = "WARNING"
			nsev++
		}
		add(w.target, fmt.Sprintf("%s: %s: %s", label, w.Path, w.Msg))
	}
	for _, e := range errs {
		where, field := RulePath(f, e.Path)
		if field != "" {
			where += ": " + field
		}
		if where == "" {
			add(e.Path, "error: "+e.Msg)
		} else {
			add(e.Path, fmt.Sprintf("error: %s: %s", where, e.Msg))
		}
	}

	head := []string{fmt.Sprintf("Imported from %s by clusterwall import azure.", oneLine(source))}
	switch {
	case len(warns) == 0 && len(errs) == 0:
		head = append(head, "Everything was carried over.")
	default:
		s := plural(len(warns), "warning")
		if nsev > 0 {
			s += fmt.Sprintf(" (%d marked WARNING need a person's review: the policy may be LOOSER than in Azure or was restructured)", nsev)
		}
		if len(errs) > 0 {
			s += ", " + plural(len(errs), "validation error")
		}
		head = append(head, s+"; each is a comment at the part it concerns.")
	}
	if lines := comments[&root]; len(lines) > 0 {
		head = append(head, "")
		head = append(head, lines...)
	}
	root.HeadComment = commentText(head)
	for _, n := range order {
		if n == &root {
			continue
		}
		n.HeadComment = commentText(comments[n])
	}

	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// indexNodes maps wire paths to the nodes comments attach to: the item of a
// list, or the key of a mapping field.
func indexNodes(n *yaml.Node, path string, idx map[string]*yaml.Node) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if path == "" { // top-level fields take comments on their key
				idx[p] = k
			}
			indexNodes(v, p, idx)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if c.Kind == yaml.MappingNode { // groups, collections, rules
				idx[p] = c
			}
			indexNodes(c, p, idx)
		}
	}
}

// find returns the node for path or its nearest indexed ancestor.
func find(idx map[string]*yaml.Node, path string) *yaml.Node {
	for path != "" {
		if n, ok := idx[path]; ok {
			return n
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return nil
		}
		path = path[:i]
	}
	return nil
}

// styleLists writes short lists of scalars in flow style, as the examples do.
// It also quotes what yaml.v3 would not write back faithfully.
func styleLists(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Value != "" && strings.Trim(n.Value, "\n") == "" {
		// yaml.v3 writes a string of only newlines as a block scalar that
		// reads back shorter.
		n.Style = yaml.DoubleQuotedStyle
	}
	if n.Kind == yaml.SequenceNode && len(n.Content) > 0 {
		width, scalars := 0, true
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				scalars = false
				break
			}
			width += len(c.Value) + 4
		}
		if scalars && width <= 72 {
			n.Style = yaml.FlowStyle
		}
	}
	for _, c := range n.Content {
		styleLists(c)
	}
}

// commentText renders comment lines: one per line, long ones wrapped, never
// a control character (names come from the input).
func commentText(lines []string) string {
	var out []string
	for _, l := range lines {
		l = oneLine(l)
		first := true
		for len(l) > 100 {
			cut := strings.LastIndex(l[:100], " ")
			if cut < 40 {
				cut = 100
				for cut > 0 && !utf8.RuneStart(l[cut]) {
					cut--
				}
			}
			out = append(out, wrapPrefix(first)+strings.TrimRight(l[:cut], " "))
			l = strings.TrimLeft(l[cut:], " ")
			first = false
		}
		out = append(out, wrapPrefix(first)+l)
	}
	for i, l := range out {
		if l == "" {
			out[i] = "#"
		} else {
			out[i] = "# " + l
		}
	}
	return strings.Join(out, "\n")
}

func wrapPrefix(first bool) string {
	if first {
		return ""
	}
	return "  "
}

var controlRe = regexp.MustCompile(`[\x00-\x1f\x7f\x{0085}\x{2028}\x{2029}]`)

func oneLine(s string) string {
	return controlRe.ReplaceAllString(strings.ToValidUTF8(s, "\uFFFD"), " ")
}

var wirePathRe = regexp.MustCompile(`^ruleCollectionGroups\[(\d+)\](?:\.ruleCollections\[(\d+)\](?:\.rules\[(\d+)\])?)?(?:\.(.*))?$`)

// RulePath names a wire path of f (as policy.Error.Path gives it) by rule:
// "ruleCollectionGroups[1].ruleCollections[0].rules[2].destinationPorts[0]"
// becomes ("DefaultNetworkRuleCollectionGroup/aksfwnr/time",
// "destinationPorts[0]"). Paths outside the groups come back as the field.
func RulePath(f *policy.File, path string) (where, field string) {
	if rest, ok := strings.CutPrefix(path, "basePolicy."); ok && f.BasePolicy != nil && f.BasePolicy.Policy != nil {
		w, fl := RulePath(f.BasePolicy.Policy, rest)
		label := "basePolicy " + oneLine(f.BasePolicy.Policy.Name)
		if w == "" {
			return "", label + ": " + fl
		}
		return label + ": " + w, fl
	}
	m := wirePathRe.FindStringSubmatch(path)
	if m == nil {
		return "", path
	}
	num := func(s string) int { n, _ := strconv.Atoi(s); return n }
	gi := num(m[1])
	if gi >= len(f.RuleCollectionGroups) {
		return "", path
	}
	g := &f.RuleCollectionGroups[gi]
	where = label(g.Name, "ruleCollectionGroups["+m[1]+"]")
	if m[2] != "" {
		ci := num(m[2])
		if ci >= len(g.RuleCollections) {
			return where, strings.TrimPrefix(path, "ruleCollectionGroups["+m[1]+"].")
		}
		c := &g.RuleCollections[ci]
		where += "/" + label(c.Name, "ruleCollections["+m[2]+"]")
		if m[3] != "" {
			ri := num(m[3])
			if ri < len(c.Rules) {
				where += "/" + label(c.Rules[ri].Name, "rules["+m[3]+"]")
			} else {
				where += "/rules[" + m[3] + "]"
			}
		}
	}
	return where, m[4]
}

func label(name, fallback string) string {
	if name == "" {
		return fallback
	}
	return oneLine(name)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

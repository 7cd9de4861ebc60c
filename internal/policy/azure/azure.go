// Package azure converts Azure Firewall configuration into clusterwall's
// policy wire form (policy.File): an exported Azure Firewall Policy (an ARM
// template, or the az CLI's output for a policy and its rule collection
// groups) or a classic Azure Firewall with its own rule collections
// (`az network firewall show`, or an ARM template of the firewall).
//
// Nothing is dropped silently: whatever clusterwall cannot carry over (web
// categories, TLS inspection, IDPS, URL filtering, ...) becomes a Warning
// that names the rule as group/collection/rule, says whether the rule was
// skipped, and whether that makes the policy stricter or LOOSER than it was
// in Azure. Values of the wrong type are errors with file:line:column.
package azure

import (
	"fmt"
	"sort"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Warning is something of the Azure configuration that the import could not
// carry over as it was.
type Warning struct {
	// Path names what the warning is about: group/collection/rule for
	// rules, group/collection, group, or a policy field such as
	// intrusionDetection.
	Path string
	Msg  string
	// Pos is where in the input the value is, when known.
	Pos policy.Pos
	// Severe marks warnings a person must read before using the result:
	// the imported policy lets through traffic Azure stopped (LOOSER), or
	// its structure was changed.
	Severe bool

	// target is the wire path in the output File the warning is about
	// (ruleCollectionGroups[0].ruleCollections[1].rules[2]), for comments.
	target string
}

func (w Warning) String() string { return w.Path + ": " + w.Msg }

// Source is one input file.
type Source struct {
	Name string
	Data []byte
}

// Import converts one file of Azure Firewall JSON. The file may hold an ARM
// template, one resource, a list of resources, or several of those one after
// another. The result has not been validated: pass it to policy.Validate.
func Import(name string, data []byte) (*policy.File, []Warning, error) {
	return ImportAll(Source{Name: name, Data: data})
}

// ImportAll converts several files that together describe one firewall (a
// policy and its rule collection groups exported separately).
func ImportAll(srcs ...Source) (*policy.File, []Warning, error) {
	im := &importer{groupRefs: map[string]groupRef{}}
	var first *source
	for _, s := range srcs {
		src := &source{name: s.Name, data: s.Data}
		roots, err := parseJSON(src)
		if err != nil {
			return nil, nil, err
		}
		if first == nil {
			first = src
		}
		for _, r := range roots {
			im.root(src, r)
		}
	}
	if len(im.errs) > 0 {
		return nil, nil, im.errList()
	}
	if first == nil {
		return nil, nil, policy.ErrorList{{Msg: "no input"}}
	}
	f, err := im.build(first)
	if err != nil {
		return nil, nil, err
	}
	if len(im.errs) > 0 {
		return nil, nil, im.errList()
	}
	return f, im.warns, nil
}

// resource kinds the importer uses.
type rkind uint8

const (
	rPolicy rkind = iota + 1
	rGroup
	rFirewall
	rIPGroup
)

type resource struct {
	kind rkind
	src  *source
	t    *template
	n    *node
}

type importer struct {
	warns []Warning
	errs  policy.ErrorList
	res   []*resource
	// groupRefs maps the IP groups rules refer to (lower case) to the
	// first rule that does.
	groupRefs  map[string]groupRef
	groupOrder []string
}

type groupRef struct{ name, path, target string }

func (im *importer) errorf(src *source, n *node, format string, args ...any) {
	off := -1
	if n != nil {
		off = n.off
	}
	im.errs = append(im.errs, &policy.Error{Pos: src.pos(off), Msg: fmt.Sprintf(format, args...)})
}

func (im *importer) errList() error {
	l := append(policy.ErrorList(nil), im.errs...)
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i].Pos, l[j].Pos
		if a.File != b.File {
			return false
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return l
}

func (im *importer) warn(path, msg string, pos policy.Pos, severe bool, target string) {
	im.warns = append(im.warns, Warning{Path: path, Msg: msg, Pos: pos, Severe: severe, target: target})
}

// root handles one top-level JSON value.
func (im *importer) root(src *source, n *node) {
	switch n.kind {
	case jObject:
		if isTemplate(n) {
			im.template(src, n)
			return
		}
		im.resource(src, &template{}, n, false, "")
	case jArray:
		for _, it := range n.items {
			if it.kind != jObject {
				im.errorf(src, it, "expected a resource (a JSON object) in the list, found %s", describe(it))
				continue
			}
			if isTemplate(it) {
				im.template(src, it)
			} else {
				im.resource(src, &template{}, it, false, "")
			}
		}
	default:
		im.errorf(src, n, "expected Azure Firewall JSON (an ARM template, a resource or a list of resources), found %s", describe(n))
	}
}

func isTemplate(n *node) bool {
	if n.lookup("resources") != nil && n.lookup("type") == nil {
		return true
	}
	s := n.lookup("$schema")
	return s != nil && s.kind == jString && strings.Contains(strings.ToLower(s.str), "deploymenttemplate")
}

var templateFields = []string{"$schema", "contentVersion", "parameters", "variables", "resources", "outputs",
	"functions", "apiProfile", "metadata", "languageVersion", "definitions"}

func (im *importer) template(src *source, n *node) {
	t := &template{params: map[string]*node{}, vars: map[string]*node{}}
	v := im.view(src, t, n, "template")
	v.prop = nil // a template's "properties" would be an unknown field
	if p := n.lookup("parameters"); p != nil && p.kind != jNull {
		if p.kind != jObject {
			v.typeErr(p, "parameters", "an object")
		} else {
			for i, k := range p.keys {
				if p.vals[i].kind != jObject {
					v.typeErr(p.vals[i], "parameters."+k, "an object")
					continue
				}
				t.params[strings.ToLower(k)] = p.vals[i]
			}
		}
	}
	if p := n.lookup("variables"); p != nil && p.kind != jNull {
		if p.kind != jObject {
			v.typeErr(p, "variables", "an object")
		} else {
			for i, k := range p.keys {
				t.vars[strings.ToLower(k)] = p.vals[i]
			}
		}
	}
	v.unknown(templateFields...)
	rs := n.lookup("resources")
	switch {
	case rs == nil || rs.kind == jNull:
	case rs.kind == jArray:
		for _, r := range rs.items {
			if r.kind != jObject {
				v.typeErr(r, "resources[]", "a resource object")
				continue
			}
			im.resource(src, t, r, false, "")
		}
	case rs.kind == jObject: // languageVersion 2.0: symbolic names
		for _, r := range rs.vals {
			if r.kind != jObject {
				v.typeErr(r, "resources{}", "a resource object")
				continue
			}
			im.resource(src, t, r, false, "")
		}
	default:
		v.typeErr(rs, "resources", "a list of resources")
	}
}

func (im *importer) resource(src *source, t *template, n *node, nested bool, parent string) {
	v := im.view(src, t, n, "resource")
	if nm, ok := v.name(); ok {
		v.path = nm
	}
	typ, _ := v.str("type")
	ltyp := strings.ToLower(strings.TrimSpace(typ))
	var kind rkind
	switch {
	case ltyp == "microsoft.network/firewallpolicies":
		kind = rPolicy
	case ltyp == "microsoft.network/firewallpolicies/rulecollectiongroups" || (nested && ltyp == "rulecollectiongroups"):
		kind = rGroup
	case ltyp == "microsoft.network/azurefirewalls":
		kind = rFirewall
	case ltyp == "microsoft.network/ipgroups":
		kind = rIPGroup
	case strings.HasPrefix(ltyp, "microsoft.network/firewallpolicies/") || (nested && ltyp != ""):
		im.warn(v.path, fmt.Sprintf("resource of type %s is not supported: not imported", typ), src.pos(n.off), false, "")
		return
	case ltyp == "":
		kind = guessKind(v)
		if kind == 0 {
			return
		}
	default:
		return // another kind of resource (a virtual network, a public IP, ...): not policy
	}
	if c := n.lookup("condition"); c != nil && c.kind != jNull {
		r, err := t.resolve(c, 0)
		switch {
		case err != nil:
			im.warn(v.path, fmt.Sprintf("condition: %v: imported as if deployed", err), src.pos(c.off), false, "")
		case r.kind == jBool && !r.b:
			im.warn(v.path, "condition is false, so Azure does not deploy this resource: not imported", src.pos(c.off), false, "")
			return
		}
	}
	if c := n.lookup("copy"); c != nil && c.kind != jNull {
		im.warn(v.path, "copy loops are not supported: resource not imported (expand the loop, e.g. export the deployed resources with az)", src.pos(c.off), true, "")
		return
	}
	im.res = append(im.res, &resource{kind: kind, src: src, t: t, n: n})
	if kind == rPolicy {
		if rs := n.lookup("resources"); rs != nil && rs.kind == jArray {
			for _, r := range rs.items {
				if r.kind == jObject {
					im.resource(src, t, r, true, v.path)
				} else {
					v.typeErr(r, "resources[]", "a resource object")
				}
			}
		}
	}
}

// guessKind recognises az CLI output without a type.
func guessKind(v *view) rkind {
	switch {
	case v.has("ruleCollections"):
		return rGroup
	case v.has("networkRuleCollections") || v.has("applicationRuleCollections") || v.has("natRuleCollections"):
		return rFirewall
	case v.has("threatIntelMode") && v.has("ruleCollectionGroups"), v.has("dnsSettings"), v.has("threatIntelWhitelist"), v.has("basePolicy"):
		return rPolicy
	case v.has("ipAddresses") && v.has("name"):
		return rIPGroup
	}
	return 0
}

func (im *importer) byKind(k rkind) []*resource {
	var out []*resource
	for _, r := range im.res {
		if r.kind == k {
			out = append(out, r)
		}
	}
	return out
}

// hasClassicRules reports whether a firewall carries its own rule collections.
func hasClassicRules(r *resource) bool {
	v := &view{n: r.n, t: r.t}
	if p := r.n.lookup("properties"); p != nil && p.kind == jObject {
		v.prop = p
	}
	return v.has("networkRuleCollections") || v.has("applicationRuleCollections") || v.has("natRuleCollections")
}

func (im *importer) build(first *source) (*policy.File, error) {
	f := &policy.File{APIVersion: "clusterwall.io/v1alpha1", Kind: "FirewallPolicy"}
	policies := im.byKind(rPolicy)
	groups := im.byKind(rGroup)
	var classic, attached []*resource
	for _, fw := range im.byKind(rFirewall) {
		if hasClassicRules(fw) {
			classic = append(classic, fw)
		} else {
			attached = append(attached, fw)
		}
	}
	names := func(rs []*resource) string {
		var s []string
		for _, r := range rs {
			nm := "(unnamed)"
			if x := r.n.lookup("name"); x != nil && x.kind == jString {
				nm = x.str
			}
			s = append(s, fmt.Sprintf("%s at %s", nm, r.src.pos(r.n.off)))
		}
		return strings.Join(s, ", ")
	}
	switch {
	case len(policies) > 1:
		return nil, policy.ErrorList{{Pos: policies[1].src.pos(policies[1].n.off),
			Msg: fmt.Sprintf("the input holds %d firewall policies (%s): import one policy at a time", len(policies), names(policies))}}
	case len(classic) > 1:
		return nil, policy.ErrorList{{Pos: classic[1].src.pos(classic[1].n.off),
			Msg: fmt.Sprintf("the input holds %d firewalls with rules (%s): import one firewall at a time", len(classic), names(classic))}}
	case len(classic) == 1 && (len(policies) > 0 || len(groups) > 0):
		return nil, policy.ErrorList{{Pos: classic[0].src.pos(classic[0].n.off),
			Msg: "the input holds both a firewall with classic rules and a firewall policy: import one of them at a time"}}
	}
	im.ipGroups(f)
	switch {
	case len(policies) == 1 || len(groups) > 0:
		im.fromPolicy(f, policies, groups)
	case len(classic) == 1:
		im.classic(f, classic[0])
	case len(attached) > 0:
		fw := attached[0]
		v := im.view(fw.src, fw.t, fw.n, "firewall")
		if ref := v.object("firewallPolicy"); ref != nil {
			id := ref.lookup("id")
			pid := ""
			if id != nil && id.kind == jString {
				pid = id.str
			}
			return nil, policy.ErrorList{{Pos: fw.src.pos(fw.n.off),
				Msg: fmt.Sprintf("this firewall's rules are in the firewall policy %s, which is not in the input: export the policy (az network firewall policy show) and its rule collection groups (az network firewall policy rule-collection-group list) and import those", pid)}}
		}
		im.classic(f, fw)
	default:
		what := "no Azure Firewall content found"
		if len(im.byKind(rIPGroup)) > 0 {
			what = "only IP groups found, no firewall policy, rule collection group or firewall"
		}
		return nil, policy.ErrorList{{Pos: policy.Pos{File: first.name, Line: 1, Column: 1},
			Msg: what + ": expected an ARM template with Microsoft.Network/firewallPolicies, firewallPolicies/ruleCollectionGroups or azureFirewalls resources, or the output of az network firewall policy show, az network firewall policy rule-collection-group show/list, or az network firewall show"}}
	}
	im.checkGroupRefs(f)
	return f, nil
}

// ipGroups collects Microsoft.Network/ipGroups resources.
func (im *importer) ipGroups(f *policy.File) {
	for _, r := range im.byKind(rIPGroup) {
		v := im.view(r.src, r.t, r.n, "ipGroups")
		name, ok := v.name()
		if !ok {
			im.warn("ipGroups", "an IP group without a name: not imported", r.src.pos(r.n.off), false, "")
			continue
		}
		v.path = "ipGroups/" + name
		addrs, _ := v.strs("ipAddresses")
		v.target = "ipGroups"
		v.unknown("type", "apiVersion", "name", "id", "etag", "location", "tags", "dependsOn",
			"ipAddresses", "firewalls", "firewallPolicies", "provisioningState", "resourceGroup", "comments",
			"condition", "systemData")
		if f.IPGroups == nil {
			f.IPGroups = map[string][]string{}
		}
		if prev, dup := f.IPGroups[name]; dup && strings.Join(prev, ",") != strings.Join(addrs, ",") {
			im.warn(v.path, "defined twice with different addresses: the later definition is used", r.src.pos(r.n.off), true, "ipGroups")
		}
		if addrs == nil {
			addrs = []string{}
		}
		f.IPGroups[name] = addrs
	}
}

// ipGroupName turns a rule's IP group reference (a resource ID, a
// resourceId() result or a bare name) into the group's name.
func ipGroupName(ref string) string {
	name := ref
	if strings.Contains(ref, "/") {
		segs := strings.Split(strings.Trim(ref, "/"), "/")
		name = segs[len(segs)-1]
		for i := 0; i+1 < len(segs); i++ {
			if strings.EqualFold(segs[i], "ipGroups") {
				name = segs[i+1]
			}
		}
	}
	return strings.TrimSpace(name)
}

// useGroup records that a kept rule refers to an IP group.
func (im *importer) useGroup(name, path, target string) {
	key := strings.ToLower(name)
	if _, ok := im.groupRefs[key]; !ok {
		im.groupRefs[key] = groupRef{name: name, path: path, target: target}
		im.groupOrder = append(im.groupOrder, key)
	}
}

// checkGroupRefs warns about IP groups that rules use but the input does
// not define: the reference is kept (an empty group would change the rule).
func (im *importer) checkGroupRefs(f *policy.File) {
	defined := map[string]bool{}
	for name := range f.IPGroups {
		defined[strings.ToLower(name)] = true
	}
	for _, key := range im.groupOrder {
		if defined[key] {
			continue
		}
		ref := im.groupRefs[key]
		im.warn(ref.path, fmt.Sprintf("IP group %q is not in the input, so its addresses are unknown: the reference is kept, and the output does not validate until you define it under ipGroups: (e.g. from az network ip-group show)", ref.name), policy.Pos{}, false, ref.target)
	}
}

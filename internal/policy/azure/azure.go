// Package azure converts Azure Firewall configuration into clusterwall's
// policy wire form (policy.File): an exported or hand-written Azure Firewall
// Policy (an ARM template, evaluated as Azure Resource Manager deploys it,
// or the az CLI / REST API output for a policy and its rule collection
// groups) or a classic Azure Firewall with its own rule collections.
//
// Nothing is dropped silently: whatever is not carried over exactly (web
// categories, TLS inspection, IDPS, URL filtering, FQDN tags clusterwall
// does not know, values only known at deployment, ...) becomes a Warning
// that names the rule as group/collection/rule and says its Effect: the
// result is STRICTER or LOOSER than the policy was in Azure. Values of the
// wrong type are errors with file:line:column.
package azure

import (
	"fmt"
	"sort"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Effect is which way a warning moves the imported policy from Azure's.
type Effect uint8

const (
	// EffectNone: what is allowed, denied or translated does not change
	// (a name, a log setting, an alert that is not raised).
	EffectNone Effect = iota
	// EffectStricter: some traffic Azure allowed (or translated) is denied.
	EffectStricter
	// EffectLooser: some traffic Azure denied may be allowed.
	EffectLooser
	// EffectUnknown: stricter or looser, depending on what is missing;
	// --strict treats it as LOOSER.
	EffectUnknown
)

func (e Effect) String() string {
	switch e {
	case EffectStricter:
		return "STRICTER"
	case EffectLooser:
		return "LOOSER"
	case EffectUnknown:
		return "STRICTER or LOOSER"
	}
	return "no effect on traffic"
}

// MayLoosen reports whether the effect may let through traffic Azure stopped.
func (e Effect) MayLoosen() bool { return e == EffectLooser || e == EffectUnknown }

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
	// Effect says whether the result is stricter or looser than Azure.
	Effect Effect
	// Severe marks warnings a person must read before using the result:
	// the policy may be LOOSER, or its structure was changed.
	Severe bool
	// Unknown names a value only known at deployment (or that could not be
	// evaluated) that the warned part needs; the import fails on such a
	// warning unless partial results are allowed.
	Unknown string

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

// Options are what `az deployment group create` would be given, and which
// policy to import.
type Options struct {
	Deploy
	// Policy picks one firewall policy (or firewall) by name when the
	// input holds several.
	Policy string
	// IncludeBase follows the picked policy's basePolicy within the input:
	// the result carries its base policy inline.
	IncludeBase bool
}

// Import converts one file of Azure Firewall JSON. The file may hold an ARM
// template, one resource, a list of resources, a REST list ({"value": [...]})
// or several of those one after another. The result has not been
// validated: pass it to policy.Validate.
func Import(name string, data []byte) (*policy.File, []Warning, error) {
	return ImportWith(Options{}, Source{Name: name, Data: data})
}

// ImportAll converts several files that together describe one firewall (a
// policy and its rule collection groups exported separately).
func ImportAll(srcs ...Source) (*policy.File, []Warning, error) {
	return ImportWith(Options{}, srcs...)
}

// ImportWith converts files with deployment values and a policy choice.
func ImportWith(opts Options, srcs ...Source) (*policy.File, []Warning, error) {
	im := &importer{groupRefs: map[string]groupRef{}, opts: opts}
	im.ctx = newEvalCtx(opts.Deploy)
	im.ctx.warn = func(path, msg string, pos policy.Pos, eff Effect, unknown string) {
		im.warns = append(im.warns, Warning{Path: path, Msg: msg, Pos: pos, Effect: eff, Severe: eff.MayLoosen(), Unknown: unknown})
	}
	var first *source
	templates := 0
	type parsed struct {
		src   *source
		roots []*node
	}
	var files []parsed
	for _, s := range srcs {
		src := &source{name: s.Name, data: s.Data}
		roots, err := parseJSON(src)
		if err != nil {
			return nil, nil, err
		}
		if first == nil {
			first = src
		}
		files = append(files, parsed{src, roots})
		if len(roots) == 1 && roots[0].kind == jObject && isTemplate(roots[0]) {
			im.ctx.linkable = append(im.ctx.linkable, &linkable{src: src, t: roots[0]})
		}
	}
	// A template another input deploys as a linked template is evaluated
	// there, with the parameters that deployment passes, not on its own.
	targets := map[*source]bool{}
	for _, fl := range files {
		for _, l := range im.ctx.linkable {
			if l.src != fl.src && mentionsLink(fl.roots, baseName(l.src.name)) {
				targets[l.src] = true
			}
		}
	}
	for _, pass := range []bool{false, true} {
		for _, fl := range files {
			if targets[fl.src] != pass {
				continue
			}
			if pass && im.ctx.linkedUsed(fl.src) {
				continue
			}
			for _, r := range fl.roots {
				if im.root(fl.src, r) {
					templates++
				}
			}
		}
	}
	if first == nil {
		return nil, nil, policy.ErrorList{{Msg: "no input"}}
	}
	im.collect()
	im.errs = append(im.errs, im.ctx.errs...)
	im.errs = append(im.errs, im.ctx.unusedInputs(templates)...)
	if len(im.errs) > 0 {
		return nil, nil, im.errList()
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
	rOldGroup // 2019-06-01 to 2020-04-01 firewallPolicies/ruleGroups
)

type resource struct {
	kind rkind
	n    *node // evaluated
	// name is the resource's full name (policy/group for a group).
	name string
	// path names it in messages.
	path string
	// parent is the policy a rule collection group belongs to (lower
	// case; "?" when it cannot be told).
	parent string
	// cond is the unknown value the resource's condition depends on.
	cond *node
}

// shortName is the last segment of the resource's name.
func (r *resource) shortName() string {
	s := r.name
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

type importer struct {
	opts  Options
	ctx   *evalCtx
	warns []Warning
	errs  policy.ErrorList
	res   []*resource
	// groupRefs maps the IP groups rules refer to (lower case) to the
	// first rule that does.
	groupRefs  map[string]groupRef
	groupOrder []string
	// tagUses counts the rules that use each FQDN tag (lower case).
	usesAKSTag bool
}

type groupRef struct{ name, path, target string }

func (im *importer) errorf(n *node, format string, args ...any) {
	im.errs = append(im.errs, &policy.Error{Pos: n.pos(), Msg: fmt.Sprintf(format, args...)})
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

func (im *importer) warn(path, msg string, pos policy.Pos, eff Effect, target string) {
	im.warns = append(im.warns, Warning{Path: path, Msg: msg, Pos: pos, Effect: eff, Severe: eff.MayLoosen(), target: target})
}

// restructured records a change of structure a person should review.
func (im *importer) restructured(path, msg string, pos policy.Pos, target string) {
	im.warns = append(im.warns, Warning{Path: path, Msg: msg, Pos: pos, Effect: EffectNone, Severe: true, target: target})
}

// root handles one top-level JSON value; it reports whether it was a template.
func (im *importer) root(src *source, n *node) bool {
	switch n.kind {
	case jObject:
		if isTemplate(n) {
			im.template(src, n)
			return true
		}
		if v := n.lookup("value"); v != nil && v.kind == jArray && n.lookup("type") == nil && n.lookup("properties") == nil {
			// A REST API list: {"value": [...], "nextLink": ...}.
			if nl := n.lookup("nextLink"); nl != nil && nl.kind == jString && nl.str != "" {
				im.warn("input", "the REST list has a nextLink: only this page is in the input, so the rules of the next pages are not imported (fetch every page, or use az, which follows nextLink)", nl.pos(), EffectUnknown, "")
			}
			im.literal(src, v)
			return false
		}
		im.literal(src, n)
	case jArray:
		for _, it := range n.items {
			if it.kind != jObject {
				im.errorf(it, "expected a resource (a JSON object) in the list, found %s", describe(it))
				continue
			}
			if isTemplate(it) {
				im.template(src, it)
			} else {
				im.literal(src, it)
			}
		}
	default:
		im.errorf(n, "expected Azure Firewall JSON (an ARM template, a resource or a list of resources), found %s", describe(n))
	}
	return false
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
	v := im.view(n, "template")
	v.prop = nil // a template's "properties" would be an unknown field
	for _, key := range []string{"parameters", "variables"} {
		if p := n.lookup(key); p != nil && p.kind != jNull && p.kind != jObject {
			v.typeErr(p, key, "an object")
		}
	}
	if p := n.lookup("parameters"); p != nil && p.kind == jObject {
		for i, k := range p.keys {
			if p.vals[i].kind != jObject {
				v.typeErr(p.vals[i], "parameters."+k, "an object")
			}
		}
	}
	v.unknown(templateFields...)
	rs := n.lookup("resources")
	if rs != nil && rs.kind != jNull && rs.kind != jArray && rs.kind != jObject {
		v.typeErr(rs, "resources", "a list of resources")
		return
	}
	if rs != nil && rs.kind == jArray {
		for _, r := range rs.items {
			if r.kind != jObject {
				v.typeErr(r, "resources[]", "a resource object")
			}
		}
	}
	given := map[string]*ParamValue{}
	for k, p := range im.opts.Parameters {
		p := p
		given[strings.ToLower(k)] = &p
	}
	s := newTemplateScope(im.ctx, src, n, given, 0, "")
	s.expand(rs, "", "")
}

// literal handles az CLI or REST output: one resource or a list.
func (im *importer) literal(src *source, n *node) {
	s := &scope{ctx: im.ctx, src: src, literal: true}
	if n.kind == jArray {
		for _, it := range n.items {
			if it.kind != jObject {
				im.errorf(it, "expected a resource (a JSON object) in the list, found %s", describe(it))
			}
		}
	}
	list := n
	if n.kind == jObject {
		list = arrAt(n, []*node{n})
	}
	s.expand(list, "", "")
}

// collect classifies the resources Azure would deploy.
func (im *importer) collect() {
	for _, d := range im.ctx.declared {
		if !d.deployed || d.existing {
			continue
		}
		n := d.evaluate()
		typ := strings.ToLower(d.typ)
		r := &resource{n: n, name: d.name, path: d.path, cond: d.condUnknown}
		switch {
		case typ == "microsoft.network/firewallpolicies":
			r.kind = rPolicy
		case typ == "microsoft.network/firewallpolicies/rulecollectiongroups":
			r.kind = rGroup
		case typ == "microsoft.network/firewallpolicies/rulegroups":
			r.kind = rOldGroup
		case typ == "microsoft.network/azurefirewalls":
			r.kind = rFirewall
		case typ == "microsoft.network/ipgroups":
			r.kind = rIPGroup
		case strings.HasPrefix(typ, "microsoft.network/firewallpolicies/"):
			im.warn(d.path, fmt.Sprintf("resource of type %s is not supported: not imported", d.typ), d.raw.pos(), EffectUnknown, "")
			continue
		case typ == "":
			v := im.view(n, d.path)
			r.kind = guessKind(v)
			if r.kind == 0 {
				continue
			}
		default:
			continue // another kind of resource (a virtual network, a public IP, ...): not policy
		}
		if r.kind == rGroup || r.kind == rOldGroup {
			r.parent = groupParent(r)
		}
		if r.cond != nil {
			im.warns = append(im.warns, Warning{Path: d.path, Pos: r.cond.pos(), Effect: EffectUnknown, Severe: true, Unknown: r.cond.unk.String(),
				Msg: fmt.Sprintf("whether Azure deploys this resource is unknown: %s: imported as if deployed, which is LOOSER if it is not (STRICTER for its Deny rules)", r.cond.unk)})
		}
		im.res = append(im.res, r)
	}
}

// groupParent tells which policy a rule collection group belongs to: from
// its name ("policy/group") or its id.
func groupParent(r *resource) string {
	if i := strings.IndexByte(r.name, '/'); i >= 0 {
		return strings.ToLower(r.name[:i])
	}
	if id := r.n.lookup("id"); id != nil && id.kind == jString {
		_, name := parseResourceID(id.str)
		if i := strings.IndexByte(name, '/'); i >= 0 {
			return strings.ToLower(name[:i])
		}
	}
	return "?"
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

// hasClassicRules reports whether a firewall carries rule collections of its
// own. A firewall attached to a policy lists them empty, as Azure exports it.
func hasClassicRules(r *resource) bool {
	v := &view{n: r.n}
	if p := r.n.lookup("properties"); p != nil && p.kind == jObject {
		v.prop = p
	}
	for _, k := range []string{"networkRuleCollections", "applicationRuleCollections", "natRuleCollections"} {
		x := v.raw(k)
		if x == nil {
			continue
		}
		if x.kind != jArray || len(x.items) > 0 {
			return true
		}
	}
	return false
}

func names(rs []*resource) string {
	var s []string
	for _, r := range rs {
		nm := r.shortName()
		if nm == "" {
			nm = "(unnamed)"
		}
		s = append(s, fmt.Sprintf("%s at %s", nm, r.n.pos()))
	}
	return strings.Join(s, ", ")
}

func (im *importer) build(first *source) (*policy.File, error) {
	f := &policy.File{APIVersion: "clusterwall.io/v1alpha1", Kind: "FirewallPolicy"}
	policies := im.byKind(rPolicy)
	groups := append(im.byKind(rGroup), im.byKind(rOldGroup)...)
	var classic, attached []*resource
	for _, fw := range im.byKind(rFirewall) {
		if hasClassicRules(fw) {
			classic = append(classic, fw)
		} else {
			attached = append(attached, fw)
		}
	}
	// --policy picks one policy or one classic firewall.
	if want := im.opts.Policy; want != "" {
		var pick *resource
		for _, r := range append(append([]*resource{}, policies...), classic...) {
			if strings.EqualFold(r.shortName(), want) {
				pick = r
				break
			}
		}
		if pick == nil {
			return nil, policy.ErrorList{{Pos: policy.Pos{File: first.name, Line: 1, Column: 1},
				Msg: fmt.Sprintf("--policy %s: no firewall policy or firewall with rules of that name in the input (it holds %s)", want, im.choices(policies, classic))}}
		}
		if pick.kind == rFirewall {
			policies, groups, classic = nil, nil, []*resource{pick}
		} else {
			policies, classic = []*resource{pick}, nil
		}
	}
	switch {
	case len(policies)+len(classic) > 1:
		all := append(append([]*resource{}, policies...), classic...)
		return nil, policy.ErrorList{{Pos: all[1].n.pos(),
			Msg: fmt.Sprintf("the input holds %d firewall policies or firewalls with rules (%s): pick one with --policy NAME", len(all), names(all))}}
	case len(classic) == 1 && len(groups) > 0:
		return nil, policy.ErrorList{{Pos: classic[0].n.pos(),
			Msg: "the input holds both a firewall with classic rules and rule collection groups of a firewall policy: import one of them at a time (--policy NAME)"}}
	}
	im.ipGroups(f)
	switch {
	case len(policies) == 1 || len(groups) > 0:
		var pol *resource
		if len(policies) == 1 {
			pol = policies[0]
		}
		mine := groups
		if pol != nil {
			mine = nil
			for _, g := range groups {
				if g.parent == "?" || g.parent == strings.ToLower(pol.shortName()) {
					mine = append(mine, g)
				}
			}
		}
		im.fromPolicy(f, pol, mine)
		if pol != nil {
			im.base(f, pol, nil)
		}
	case len(classic) == 1:
		im.classic(f, classic[0])
	case len(attached) > 0:
		fw := attached[0]
		v := im.view(fw.n, "firewall")
		if ref := v.object("firewallPolicy"); ref != nil {
			id := ref.lookup("id")
			pid := ""
			if id != nil && id.kind == jString {
				pid = id.str
			}
			return nil, policy.ErrorList{{Pos: fw.n.pos(),
				Msg: fmt.Sprintf("this firewall's rules are in the firewall policy %s, which is not in the input: export the policy (az network firewall policy show) and its rule collection groups (az network firewall policy rule-collection-group list) and import those", pid)}}
		}
		im.classic(f, fw)
	default:
		what := "no Azure Firewall content found"
		if len(im.byKind(rIPGroup)) > 0 {
			what = "only IP groups found, no firewall policy, rule collection group or firewall"
		}
		var off []string
		linked := false
		for _, d := range im.ctx.declared {
			if d.nested != nil && d.nested.linked {
				linked = true
			}
			if !d.deployed && !d.existing && (relevantType(d.typ) || strings.EqualFold(d.typ, "Microsoft.Resources/deployments") && mentionsFirewall(d.raw, 0)) {
				off = append(off, d.path)
			}
		}
		if linked {
			what += " (the template deploys linked templates, which are not fetched: import them)"
		}
		if len(off) > 0 {
			what += fmt.Sprintf(" (with these parameters Azure would not deploy %s: their condition is false)", strings.Join(dedupe(off), ", "))
		}
		return nil, policy.ErrorList{{Pos: policy.Pos{File: first.name, Line: 1, Column: 1},
			Msg: what + ": expected an ARM template with Microsoft.Network/firewallPolicies, firewallPolicies/ruleCollectionGroups or azureFirewalls resources, or the output of az network firewall policy show, az network firewall policy rule-collection-group show/list, or az network firewall show"}}
	}
	im.checkGroupRefs(f)
	im.checkLocation(f)
	return f, nil
}

func (im *importer) choices(policies, classic []*resource) string {
	var s []string
	label := func(r *resource) string {
		if n := r.shortName(); n != "" {
			return n
		}
		return "whose name is unknown (" + r.n.pos().String() + ")"
	}
	for _, r := range policies {
		s = append(s, "policy "+label(r))
	}
	for _, r := range classic {
		s = append(s, "firewall "+label(r))
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// ipGroups collects Microsoft.Network/ipGroups resources.
func (im *importer) ipGroups(f *policy.File) {
	for _, r := range im.byKind(rIPGroup) {
		v := im.view(r.n, "ipGroups")
		name, ok := v.name()
		if !ok {
			im.warn("ipGroups", "an IP group without a name: not imported (a rule that uses it does not validate until it is defined)", r.n.pos(), EffectNone, "")
			continue
		}
		v.path = "ipGroups/" + name
		v.target = "ipGroups"
		// An address left out of an IP group changes every rule that uses it.
		v.drop = func(field, why string, at *node, unk *unknown) {
			w := Warning{Path: v.path, Pos: at.pos(), Effect: EffectUnknown, Severe: true, target: "ipGroups",
				Msg: fmt.Sprintf("%s: %s: left out: the rules using this IP group match less than in Azure (STRICTER for Allow rules, LOOSER for Deny rules)", field, why)}
			if unk != nil {
				w.Unknown = unk.String()
			}
			im.warns = append(im.warns, w)
		}
		addrs, _ := v.strs("ipAddresses")
		v.unknown("type", "apiVersion", "name", "id", "etag", "location", "tags", "dependsOn",
			"ipAddresses", "firewalls", "firewallPolicies", "provisioningState", "resourceGroup", "comments",
			"condition", "systemData")
		if f.IPGroups == nil {
			f.IPGroups = map[string][]string{}
		}
		if prev, dup := f.IPGroups[name]; dup && strings.Join(prev, ",") != strings.Join(addrs, ",") {
			im.warn(v.path, "defined twice with different addresses: the later definition is used, as Azure would deploy it last", r.n.pos(), EffectUnknown, "ipGroups")
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
	for b := f; b != nil; {
		for name := range b.IPGroups {
			defined[strings.ToLower(name)] = true
		}
		if b.BasePolicy == nil {
			break
		}
		b = b.BasePolicy.Policy
	}
	for _, key := range im.groupOrder {
		if defined[key] {
			continue
		}
		ref := im.groupRefs[key]
		im.warn(ref.path, fmt.Sprintf("IP group %q is not in the input, so its addresses are unknown: the reference is kept, and the output does not validate until you define it under ipGroups: (e.g. from az network ip-group show)", ref.name), policy.Pos{}, EffectNone, ref.target)
	}
}

// checkLocation: the AzureKubernetesService FQDN tag needs the policy's
// region; without it the tag's *.hcp.REGION.azmk8s.io widens to *.azmk8s.io.
func (im *importer) checkLocation(f *policy.File) {
	if f.Location != "" || !im.usesAKSTag {
		return
	}
	im.warns = append(im.warns, Warning{Path: "policy", Effect: EffectLooser, Severe: true, Unknown: "the policy's location (give it with --location REGION)",
		Msg: "location: the policy's region is unknown, so the AzureKubernetesService FQDN tag allows *.azmk8s.io instead of *.hcp.REGION.azmk8s.io: LOOSER than in Azure (set location:, or import with --location REGION)"})
}

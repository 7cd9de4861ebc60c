package azure

import (
	"fmt"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// base imports the picked policy's base policy (--include-base) from the
// input and puts it inline as the result's basePolicy:, its own base
// likewise. Azure's semantics for a child policy then apply when the result
// is loaded (internal/policy/inherit.go).
func (im *importer) base(f *policy.File, pol *resource, seen map[string]bool) {
	if !im.opts.IncludeBase {
		return
	}
	if seen == nil {
		seen = map[string]bool{}
	}
	seen[strings.ToLower(pol.shortName())] = true
	v := im.view(pol.n, "policy")
	ref := v.object("basePolicy")
	if ref == nil || !nonEmpty(ref) {
		if len(seen) == 1 {
			im.warn("policy", "--include-base: the policy has no basePolicy", pol.n.pos(), EffectNone, "")
		}
		return
	}
	idn := ref.lookup("id")
	if idn == nil || idn.kind != jString {
		im.warns = append(im.warns, Warning{Path: "policy", Pos: ref.pos(), Effect: EffectUnknown, Severe: true, Unknown: "the id of the base policy",
			Msg: "basePolicy: the base policy's id is unknown, so its rule collections are not imported: STRICTER or LOOSER, depending on them"})
		return
	}
	_, name := parseResourceID(idn.str)
	if name == "" {
		name = ipGroupName(idn.str)
	}
	var bp *resource
	var names []string
	for _, r := range im.byKind(rPolicy) {
		names = append(names, r.shortName())
		if strings.EqualFold(r.shortName(), name) {
			bp = r
		}
	}
	switch {
	case bp == nil:
		im.errs = append(im.errs, &policy.Error{Pos: idn.pos(), Msg: fmt.Sprintf("--include-base: the base policy %q is not in the input (it holds the policies %s): give its template or az output too", name, strings.Join(names, ", "))})
		return
	case seen[strings.ToLower(bp.shortName())]:
		im.errs = append(im.errs, &policy.Error{Pos: idn.pos(), Msg: fmt.Sprintf("--include-base: the chain of base policies comes back to %q", bp.shortName())})
		return
	}
	var groups []*resource
	for _, g := range append(im.byKind(rGroup), im.byKind(rOldGroup)...) {
		if g.parent == strings.ToLower(bp.shortName()) {
			groups = append(groups, g)
		}
	}
	bf := &policy.File{}
	first := len(im.warns)
	im.fromPolicy(bf, bp, groups)
	im.base(bf, bp, seen)
	// The base's warnings point into basePolicy: in the output.
	for i := first; i < len(im.warns); i++ {
		if t := im.warns[i].target; t != "" && !strings.HasPrefix(t, "ipGroups") {
			im.warns[i].target = "basePolicy." + t
		}
		im.warns[i].Path = "basePolicy " + bp.shortName() + ": " + im.warns[i].Path
	}
	f.BasePolicy = &policy.WireBase{Policy: bf}

	// Group names must differ across the chain (decision logs name the group).
	taken := map[string]bool{}
	for b := bf; b != nil; {
		for _, g := range b.RuleCollectionGroups {
			taken[strings.ToLower(g.Name)] = true
		}
		if b.BasePolicy == nil {
			break
		}
		b = b.BasePolicy.Policy
	}
	for i := range f.RuleCollectionGroups {
		g := &f.RuleCollectionGroups[i]
		if !taken[strings.ToLower(g.Name)] {
			continue
		}
		old := g.Name
		g.Name = old + "-" + f.Name
		for n := 2; taken[strings.ToLower(g.Name)]; n++ {
			g.Name = fmt.Sprintf("%s-%s-%d", old, f.Name, n)
		}
		taken[strings.ToLower(g.Name)] = true
		im.restructured(old, fmt.Sprintf("the base policy %q has a rule collection group of the same name: renamed %q (decision logs name the group; what is allowed does not change)", bp.shortName(), g.Name), policy.Pos{}, fmt.Sprintf("ruleCollectionGroups[%d]", i))
	}
	// Threat intelligence: a child can only be stricter; Azure applies the base's mode otherwise.
	rank := map[string]int{"": -1, "Off": 0, "Alert": 1, "Deny": 2}
	if f.ThreatIntel != nil && bf.ThreatIntel != nil && rank[f.ThreatIntel.Mode] < rank[bf.ThreatIntel.Mode] && f.ThreatIntel.Mode != "" {
		im.warn("policy", fmt.Sprintf("threatIntelMode %s is weaker than the base policy's %s, which Azure applies (a child policy can only be stricter): written as inherited", f.ThreatIntel.Mode, bf.ThreatIntel.Mode), pol.n.pos(), EffectNone, "")
		f.ThreatIntel.Mode = ""
	}
	// IP groups are resources of their own in Azure, shared by the chain:
	// they go to the top base, where every policy of the chain sees them.
	top := bf
	for top.BasePolicy != nil && top.BasePolicy.Policy != nil {
		top = top.BasePolicy.Policy
	}
	if len(f.IPGroups) > 0 {
		if top.IPGroups == nil {
			top.IPGroups = map[string][]string{}
		}
		for k, v := range f.IPGroups {
			top.IPGroups[k] = v
		}
		f.IPGroups = nil
	}
}

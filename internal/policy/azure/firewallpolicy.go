package azure

import (
	"fmt"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Fields every ARM resource or az CLI object may carry that say nothing
// about the policy.
var resourceFields = []string{"type", "apiVersion", "name", "id", "etag", "location", "tags", "dependsOn",
	"resources", "comments", "condition", "copy", "scope", "systemData", "resourceGroup", "provisioningState",
	"identity", "kind", "zones", "metadata", "managedBy", "extendedLocation"}

var policyFields = []string{"basePolicy", "childPolicies", "dnsSettings", "explicitProxy", "firewalls", "insights",
	"intrusionDetection", "ruleCollectionGroups", "size", "sku", "snat", "sql", "threatIntelMode",
	"threatIntelWhitelist", "transportSecurity", "privateRange"}

var groupFields = []string{"priority", "ruleCollections", "size"}

func (im *importer) fromPolicy(f *policy.File, pol *resource, groups []*resource) {
	var refs []groupRefName
	if pol != nil {
		refs = im.policySettings(f, pol)
	} else {
		im.warn("policy", "the input holds rule collection groups but no firewall policy (Microsoft.Network/firewallPolicies): the policy's own settings (name, location, threat intelligence, DNS) are not imported: STRICTER or LOOSER, depending on them (threat intelligence is off, the DNS proxy uses the daemon's settings)", policy.Pos{}, EffectUnknown, "")
	}
	have := map[string]bool{}
	for _, g := range groups {
		if g.kind == rOldGroup {
			g.n = upgradeRuleGroup(im, g)
		}
		if name := im.group(f, g); name != "" {
			have[strings.ToLower(name)] = true
		}
	}
	for _, r := range refs {
		if !have[strings.ToLower(r.name)] {
			im.warn("policy", fmt.Sprintf("ruleCollectionGroups: the policy has the rule collection group %q, which is not in the input: its rules are not imported: STRICTER or LOOSER, depending on them (export it with az network firewall policy rule-collection-group list and import both files)", r.name), r.pos, EffectUnknown, "")
		}
	}
}

type groupRefName struct {
	name string
	pos  policy.Pos
}

// settingsView starts importing a firewall's or a firewall policy's own
// settings: name, location and the threat-intel mode, which both carry.
func (im *importer) settingsView(f *policy.File, r *resource, what string) (*view, *policy.WireThreatIntel) {
	v := im.view(r.n, what)
	drop := v.drop
	v.drop = func(field, why string, at *node, unk *unknown) {
		switch field {
		case "location":
			// Only the AzureKubernetesService FQDN tag uses it; checkLocation says so.
			v.warnf(fmt.Sprintf("location: %s: left out (the AzureKubernetesService FQDN tag uses it; set location: by hand or import with --location REGION)", why), at, EffectNone)
		case "name":
			v.warnf(fmt.Sprintf("name: %s: left out (a name does not change what is allowed)", why), at, EffectNone)
		default:
			drop(field, why, at, unk)
		}
	}
	f.Name, _ = v.name()
	f.Location, _ = v.str("location")
	ti := &policy.WireThreatIntel{}
	mode, _ := v.str("threatIntelMode")
	ti.Mode = threatMode(mode)
	return v, ti
}

// policySettings imports a firewall policy's own settings and returns the
// rule collection groups it lists (az CLI output lists them by id).
func (im *importer) policySettings(f *policy.File, r *resource) []groupRefName {
	v, ti := im.settingsView(f, r, "policy")
	if al := v.object("threatIntelWhitelist"); al != nil {
		av := v.sub(al)
		a := &policy.WireAllowlist{}
		a.IPAddresses, _ = av.strs("ipAddresses")
		a.FQDNs, _ = av.strs("fqdns")
		av.unknown("ipAddresses", "fqdns")
		if len(a.IPAddresses)+len(a.FQDNs) > 0 {
			ti.Allowlist = a
		}
	}
	if ti.Mode != "" || ti.Allowlist != nil {
		f.ThreatIntel = ti
	}
	if d := v.object("dnsSettings"); d != nil {
		dv := v.sub(d)
		dns := &policy.WireDNS{}
		if b, ok := dv.boolean("enableProxy"); ok {
			dns.EnableProxy = &b
		}
		dns.Servers, _ = dv.strs("servers")
		dv.unknown("enableProxy", "servers", "requireProxyForNetworkRules")
		if dns.EnableProxy != nil || len(dns.Servers) > 0 {
			f.DNS = dns
		}
	}
	im.unsupportedPolicy(v)
	v.unknown(append(resourceFields, policyFields...)...)

	var refs []groupRefName
	for _, g := range v.objs("ruleCollectionGroups") {
		if id := g.lookup("id"); id != nil && id.kind == jString && id.str != "" {
			s := id.str
			if i := strings.LastIndex(s, "/"); i >= 0 {
				s = s[i+1:]
			}
			refs = append(refs, groupRefName{name: s, pos: id.pos()})
		}
	}
	return refs
}

func threatMode(s string) string {
	switch strings.ToLower(s) {
	case "off":
		return "Off"
	case "alert":
		return "Alert"
	case "deny":
		return "Deny"
	}
	return s
}

// unsupportedPolicy warns about policy features clusterwall lacks.
func (im *importer) unsupportedPolicy(v *view) {
	if b := v.object("basePolicy"); b != nil && nonEmpty(b) && !im.opts.IncludeBase {
		id := ""
		if x := b.lookup("id"); x != nil && x.kind == jString {
			id = " " + x.str
		}
		v.warnf(fmt.Sprintf("basePolicy: this policy inherits the rule collections of the base policy%s, which are not imported: STRICTER or LOOSER, depending on them (give the base policy's files too and import with --include-base)", id), v.raw("basePolicy"), EffectUnknown)
	}
	if d := v.object("intrusionDetection"); d != nil {
		dv := v.sub(d)
		mode, _ := dv.str("mode")
		deny := 0
		if c := dv.object("configuration"); c != nil {
			for _, o := range dv.sub(c).objs("signatureOverrides") {
				if m := o.lookup("mode"); m != nil && m.kind == jString && strings.EqualFold(m.str, "deny") {
					deny++
				}
			}
		}
		switch {
		case strings.EqualFold(mode, "deny"):
			v.warnf("intrusionDetection: IDPS in Deny mode is not supported: traffic Azure's IDPS blocked now passes: LOOSER than in Azure", v.raw("intrusionDetection"), EffectLooser)
		case deny > 0:
			v.warnf(fmt.Sprintf("intrusionDetection: IDPS is not supported, and %d signature overrides are in Deny mode: traffic they blocked now passes: LOOSER than in Azure", deny), v.raw("intrusionDetection"), EffectLooser)
		case mode == "" || strings.EqualFold(mode, "off"):
		default:
			v.warnf(fmt.Sprintf("intrusionDetection: IDPS in %s mode is not supported: its alerts are not raised (it blocked nothing, so what is allowed does not change)", mode), v.raw("intrusionDetection"), EffectNone)
		}
	}
	if ep := v.object("explicitProxy"); ep != nil {
		if b := ep.lookup("enableExplicitProxy"); b != nil && b.kind == jBool && b.b {
			v.warnf("explicitProxy: the explicit proxy settings are not imported: clients that use Azure's explicit proxy ports are not served until the proxy is set up in clusterwall's daemon configuration: STRICTER", v.raw("explicitProxy"), EffectStricter)
		}
	}
	if v.set("transportSecurity") {
		v.warnf("transportSecurity: TLS inspection (its certificate authority) is not supported: HTTPS is matched by its TLS SNI without decrypting it (FQDN rules decide the same; URL and web category rules are reported where they are)", v.raw("transportSecurity"), EffectNone)
	}
	if v.set("sql") {
		v.warnf("sql: SQL redirect mode is not supported: not imported (it changes how connections are carried, not which are allowed)", v.raw("sql"), EffectNone)
	}
	if v.set("snat") || v.set("privateRange") {
		key := "snat"
		if !v.set("snat") {
			key = "privateRange"
		}
		v.warnf(key+": SNAT private ranges are not carried over: not imported (they change source addresses, not what is allowed)", v.raw(key), EffectNone)
	}
	if v.set("insights") {
		v.warnf("insights: policy analytics (Log Analytics) settings are not imported: decision logs are clusterwall's own (what is allowed does not change)", v.raw("insights"), EffectNone)
	}
}

// group imports one rule collection group and returns its name.
func (im *importer) group(f *policy.File, r *resource) string {
	gi := len(f.RuleCollectionGroups)
	gt := fmt.Sprintf("ruleCollectionGroups[%d]", gi)
	v := im.view(r.n, gt)
	v.target = gt
	name, ok := v.name()
	if !ok {
		name = fmt.Sprintf("RuleCollectionGroup%d", gi+1)
		v.warnf(fmt.Sprintf("no usable name: named %q (a name does not change what is allowed)", name), r.n, EffectNone)
	}
	v.path = name
	prio, _ := v.integer("priority")
	v.unknown(append(resourceFields, groupFields...)...)
	f.RuleCollectionGroups = append(f.RuleCollectionGroups, policy.WireGroup{Name: name, Priority: prio})
	for i, cn := range v.objs("ruleCollections") {
		im.policyCollection(&f.RuleCollectionGroups[gi], gt, v, cn, i)
	}
	return name
}

func (im *importer) policyCollection(g *policy.WireGroup, gt string, gv *view, cn *node, idx int) {
	ct := fmt.Sprintf("%s.ruleCollections[%d]", gt, len(g.RuleCollections))
	v := im.view(cn, "")
	v.target = gt
	v.path = fmt.Sprintf("%s/ruleCollections[%d]", g.Name, idx)
	name, _ := v.name()
	if name != "" {
		v.path = g.Name + "/" + name
	}
	prio, _ := v.integer("priority")
	ctype, _ := v.str("ruleCollectionType")
	action := ""
	if a := v.object("action"); a != nil {
		av := v.sub(a)
		t, _ := av.str("type")
		action = normAction(t)
		av.unknown("type")
	}
	v.unknown("name", "priority", "ruleCollectionType", "action", "rules")
	rules := v.objs("rules")
	lt := strings.ToLower(ctype)
	if lt == "" {
		lt = "firewallpolicyfilterrulecollection"
		if action == "DNAT" {
			lt = "firewallpolicynatrulecollection"
		}
	}
	switch lt {
	case "firewallpolicynatrulecollection":
		if action == "" {
			action = "DNAT"
		}
		c := policy.WireCollection{Name: name, Kind: "DNAT", Priority: prio, Action: action}
		v.target = ct
		for i, rn := range rules {
			rc := im.newRule(v, rn, action, v.path, i)
			if k := ruleKind(rc.v); k != "DNAT" && rc.v.has("ruleType") {
				rc.skip(kindPhrase(k) + " in a NAT rule collection, which Azure does not allow")
				rc.finish(&c, ct, &policy.WireRule{})
				continue
			}
			w := rc.nat("ipProtocols")
			rc.finish(&c, ct, w)
		}
		g.RuleCollections = append(g.RuleCollections, c)
	case "firewallpolicyfilterrulecollection":
		var nets, apps []*node
		for i, rn := range rules {
			switch ruleKind(v.sub(rn)) {
			case "Network":
				nets = append(nets, rn)
			case "Application":
				apps = append(apps, rn)
			default:
				rc := im.newRule(v, rn, action, v.path, i)
				rc.skip(kindPhrase(ruleKind(rc.v)) + " in a filter rule collection (expected NetworkRule or ApplicationRule)")
				rc.finish(&policy.WireCollection{}, ct, &policy.WireRule{})
			}
		}
		type part struct {
			kind  string
			rules []*node
		}
		parts := []part{{"Network", nets}}
		switch {
		case len(nets) > 0 && len(apps) > 0:
			parts = []part{{"Network", nets}, {"Application", apps}}
			v.target = fmt.Sprintf("%s.ruleCollections[%d]", gt, len(g.RuleCollections))
			im.restructured(v.path, fmt.Sprintf("the collection mixes network and application rules: split into %q and %q with the same priority (Azure evaluates network rules before application rules either way, so what is allowed does not change)", name+"-network", name+"-application"), cn.pos(), v.target)
		case len(apps) > 0:
			parts = []part{{"Application", apps}}
		}
		for _, p := range parts {
			cname := name
			if len(parts) > 1 {
				cname = name + "-" + strings.ToLower(p.kind)
			}
			ct := fmt.Sprintf("%s.ruleCollections[%d]", gt, len(g.RuleCollections))
			c := policy.WireCollection{Name: cname, Kind: p.kind, Priority: prio, Action: action}
			cv := *v
			cv.path = g.Name + "/" + cname
			for i, rn := range p.rules {
				rc := im.newRule(&cv, rn, action, cv.path, i)
				var w *policy.WireRule
				if p.kind == "Network" {
					w = rc.network("ipProtocols")
				} else {
					w = rc.application()
				}
				rc.finish(&c, ct, w)
			}
			g.RuleCollections = append(g.RuleCollections, c)
		}
	default:
		msg, eff := collSkipEffect(action)
		v.warnf(fmt.Sprintf("ruleCollectionType %q is not supported: collection skipped with its %d rules: %s", ctype, len(rules), msg), cn, eff)
	}
}

func kindPhrase(k string) string {
	switch k {
	case "Network":
		return "a network rule"
	case "Application":
		return "an application rule"
	case "DNAT":
		return "a NAT rule"
	}
	return fmt.Sprintf("a rule of type %q", k)
}

// upgradeRuleGroup rewrites a rule group of API versions 2019-06-01 to
// 2020-04-01 (firewallPolicies/ruleGroups: rules with ruleConditions) into
// today's shape (ruleCollectionGroups: ruleCollections with rules), the
// renaming Azure itself made in 2020-05-01:
//
//	FirewallPolicyNatRule {action, ruleCondition, translatedAddress, translatedPort}
//	  -> FirewallPolicyNatRuleCollection with one NatRule
//	FirewallPolicyFilterRule {action, ruleConditions}
//	  -> FirewallPolicyFilterRuleCollection, each NetworkRuleCondition a
//	     NetworkRule and each ApplicationRuleCondition an ApplicationRule.
func upgradeRuleGroup(im *importer, r *resource) *node {
	v := im.view(r.n, r.shortName())
	im.restructured(r.shortName(), "a rule group of API version 2019-06-01 to 2020-04-01 (ruleGroups, rules, ruleConditions): read as the rule collection group, rule collections and rules Azure renamed them to in 2020-05-01", r.n.pos(), "")
	out := objAt(r.n)
	props := objAt(r.n)
	for i, k := range r.n.keys {
		if !strings.EqualFold(k, "properties") {
			out.keys = append(out.keys, k)
			out.vals = append(out.vals, r.n.vals[i])
		}
	}
	if p, ok := v.integer("priority"); ok {
		props.set("priority", numAt(v.raw("priority"), int64(p)))
	}
	colls := arrAt(r.n, nil)
	for _, rule := range v.objs("rules") {
		c := objAt(rule)
		rv := v.sub(rule)
		for _, k := range []string{"name", "priority", "action"} {
			if x := rv.raw(k); x != nil {
				c.set(k, x)
			}
		}
		rt, _ := rv.str("ruleType")
		var rules []*node
		switch strings.ToLower(rt) {
		case "firewallpolicynatrule":
			c.set("ruleCollectionType", &node{kind: jString, str: "FirewallPolicyNatRuleCollection", src: rule.src, off: rule.off})
			if cond := rv.object("ruleCondition"); cond != nil {
				nr := conditionRule(cond, "NatRule")
				for _, k := range []string{"translatedAddress", "translatedFqdn", "translatedPort"} {
					if x := rv.raw(k); x != nil {
						nr.set(k, x)
					}
				}
				rules = append(rules, nr)
			}
		case "firewallpolicyfilterrule":
			c.set("ruleCollectionType", &node{kind: jString, str: "FirewallPolicyFilterRuleCollection", src: rule.src, off: rule.off})
			for _, cond := range rv.objs("ruleConditions") {
				ct := ""
				if x := cond.lookup("ruleConditionType"); x != nil && x.kind == jString {
					ct = x.str
				}
				switch strings.ToLower(ct) {
				case "networkrulecondition":
					rules = append(rules, conditionRule(cond, "NetworkRule"))
				case "applicationrulecondition":
					rules = append(rules, conditionRule(cond, "ApplicationRule"))
				default:
					rules = append(rules, conditionRule(cond, ct))
				}
			}
		default:
			c.set("ruleCollectionType", &node{kind: jString, str: rt, src: rule.src, off: rule.off})
		}
		c.set("rules", arrAt(rule, rules))
		colls.items = append(colls.items, c)
	}
	props.set("ruleCollections", colls)
	out.set("properties", props)
	return out
}

// conditionRule turns a 2019-06-01 rule condition into a rule of ruleType.
func conditionRule(cond *node, ruleType string) *node {
	n := objAt(cond)
	for i, k := range cond.keys {
		if strings.EqualFold(k, "ruleConditionType") {
			continue
		}
		n.keys = append(n.keys, k)
		n.vals = append(n.vals, cond.vals[i])
	}
	n.set("ruleType", &node{kind: jString, str: ruleType, src: cond.src, off: cond.off})
	return n
}

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

func (im *importer) fromPolicy(f *policy.File, policies, groups []*resource) {
	var refs []groupRefName
	if len(policies) == 1 {
		refs = im.policySettings(f, policies[0])
	} else {
		im.warn("policy", "the input holds rule collection groups but no firewall policy (Microsoft.Network/firewallPolicies): the policy's own settings (name, location, threat intelligence, DNS) are not imported", policy.Pos{}, false, "")
	}
	have := map[string]bool{}
	for _, g := range groups {
		if name := im.group(f, g); name != "" {
			have[strings.ToLower(name)] = true
		}
	}
	for _, r := range refs {
		if !have[strings.ToLower(r.name)] {
			im.warn("policy", fmt.Sprintf("ruleCollectionGroups: the policy has the rule collection group %q, which is not in the input: its rules are not imported, so the result may be stricter or LOOSER than in Azure (export it with az network firewall policy rule-collection-group list and import both files)", r.name), r.pos, true, "")
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
	v := im.view(r.src, r.t, r.n, what)
	v.drop = func(field, why string, at *node) {
		msg := fmt.Sprintf("%s: %s: left out", field, why)
		if field == "location" {
			msg += "; set location: by hand (the AzureKubernetesService FQDN tag uses it)"
		}
		v.warnf(msg, at, false)
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
			refs = append(refs, groupRefName{name: s, pos: r.src.pos(id.off)})
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
	if b := v.object("basePolicy"); b != nil && nonEmpty(b) {
		id := ""
		if x := b.lookup("id"); x != nil && x.kind == jString {
			id = " " + x.str
		}
		v.warnf(fmt.Sprintf("basePolicy: this policy inherits the rules of the base policy%s, which are not imported: the result may be stricter or LOOSER than in Azure (import the base policy's rule collection groups too)", id), v.raw("basePolicy"), true)
	}
	if d := v.object("intrusionDetection"); d != nil {
		dv := v.sub(d)
		mode, _ := dv.str("mode")
		switch strings.ToLower(mode) {
		case "", "off":
		case "deny":
			v.warnf("intrusionDetection: IDPS in Deny mode is not supported: traffic Azure's IDPS blocked now passes, so THE POLICY IS LOOSER than in Azure", v.raw("intrusionDetection"), true)
		default:
			v.warnf(fmt.Sprintf("intrusionDetection: IDPS in %s mode is not supported: its alerts are not raised", mode), v.raw("intrusionDetection"), false)
		}
	}
	if v.set("explicitProxy") {
		v.warnf("explicitProxy: the explicit proxy settings are not imported (configure the proxy in clusterwall's own configuration)", v.raw("explicitProxy"), false)
	}
	if v.set("transportSecurity") {
		v.warnf("transportSecurity: TLS inspection (its certificate authority) is not supported: HTTPS is matched by its TLS SNI without decrypting it", v.raw("transportSecurity"), false)
	}
	if v.set("sql") {
		v.warnf("sql: SQL redirect mode is not supported: not imported", v.raw("sql"), false)
	}
	if v.set("snat") || v.set("privateRange") {
		key := "snat"
		if !v.set("snat") {
			key = "privateRange"
		}
		v.warnf(key+": SNAT private ranges are not carried over: not imported", v.raw(key), false)
	}
}

// group imports one rule collection group and returns its name.
func (im *importer) group(f *policy.File, r *resource) string {
	gi := len(f.RuleCollectionGroups)
	gt := fmt.Sprintf("ruleCollectionGroups[%d]", gi)
	v := im.view(r.src, r.t, r.n, gt)
	v.target = gt
	name, ok := v.name()
	if !ok {
		name = fmt.Sprintf("RuleCollectionGroup%d", gi+1)
		v.warnf(fmt.Sprintf("no usable name: named %q", name), r.n, false)
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
	v := im.view(gv.src, gv.t, cn, "")
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
			v.warnf(fmt.Sprintf("the collection mixes network and application rules: split into %q and %q with the same priority (network rules are evaluated before application rules either way)", name+"-network", name+"-application"), cn, true)
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
		eff, severe := collSkipEffect(action)
		v.warnf(fmt.Sprintf("ruleCollectionType %q is not supported: collection skipped with its %d rules: %s", ctype, len(rules), eff), cn, severe)
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

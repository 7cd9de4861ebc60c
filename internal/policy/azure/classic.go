package azure

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/clusterwall/clusterwall/internal/policy"
)

var firewallFields = []string{"additionalProperties", "applicationRuleCollections", "natRuleCollections",
	"networkRuleCollections", "firewallPolicy", "hubIPAddresses", "ipConfigurations", "ipGroups",
	"managementIpConfiguration", "sku", "threatIntelMode", "virtualHub", "autoscaleConfiguration"}

// The groups Azure's migration from classic rules to a policy puts them in.
var classicGroups = []struct {
	key, name, kind string
	priority        int
}{
	{"natRuleCollections", "DefaultDnatRuleCollectionGroup", "DNAT", 100},
	{"networkRuleCollections", "DefaultNetworkRuleCollectionGroup", "Network", 200},
	{"applicationRuleCollections", "DefaultApplicationRuleCollectionGroup", "Application", 300},
}

// classic imports a firewall with classic rule collections.
func (im *importer) classic(f *policy.File, r *resource) {
	v, ti := im.settingsView(f, r, "firewall")
	dns := &policy.WireDNS{}
	if ap := v.object("additionalProperties"); ap != nil {
		im.additionalProperties(v.sub(ap), ap, ti, dns)
	}
	if ti.Mode != "" || ti.Allowlist != nil {
		f.ThreatIntel = ti
	}
	if dns.EnableProxy != nil || len(dns.Servers) > 0 {
		f.DNS = dns
	}
	v.unknown(append(resourceFields, firewallFields...)...)

	for _, cg := range classicGroups {
		colls := v.objs(cg.key)
		if len(colls) == 0 {
			continue
		}
		gt := fmt.Sprintf("ruleCollectionGroups[%d]", len(f.RuleCollectionGroups))
		g := policy.WireGroup{Name: cg.name, Priority: cg.priority}
		nw := len(im.warns)
		for i, cn := range colls {
			im.classicCollection(&g, gt, v, cn, i, cg.kind)
		}
		if len(g.RuleCollections) == 0 {
			// Every collection was skipped: no group, and the warnings go
			// to the top of the output.
			for i := nw; i < len(im.warns); i++ {
				im.warns[i].target = ""
			}
			continue
		}
		f.RuleCollectionGroups = append(f.RuleCollectionGroups, g)
	}
}

func (im *importer) classicCollection(g *policy.WireGroup, gt string, fv *view, cn *node, idx int, kind string) {
	ct := fmt.Sprintf("%s.ruleCollections[%d]", gt, len(g.RuleCollections))
	v := im.view(cn, "")
	v.target = gt
	v.path = fmt.Sprintf("%s/%s[%d]", g.Name, map[string]string{"DNAT": "natRuleCollections", "Network": "networkRuleCollections", "Application": "applicationRuleCollections"}[kind], idx)
	name, _ := v.name()
	if name != "" {
		v.path = g.Name + "/" + name
	}
	prio, _ := v.integer("priority")
	action := ""
	if a := v.object("action"); a != nil {
		av := v.sub(a)
		t, _ := av.str("type")
		action = normAction(t)
		av.unknown("type")
	}
	v.unknown(append(resourceFields, "priority", "action", "rules")...)
	rules := v.objs("rules")
	if kind == "DNAT" && action == "SNAT" {
		v.warnf(fmt.Sprintf("SNAT rule collections are not supported: collection skipped with its %d rules (it only changed source addresses, not what is allowed)", len(rules)), cn, EffectNone)
		return
	}
	if kind == "DNAT" && action == "" {
		action = "DNAT"
	}
	c := policy.WireCollection{Name: name, Kind: kind, Priority: prio, Action: action}
	v.target = ct
	for i, rn := range rules {
		rc := im.newRule(v, rn, action, v.path, i)
		var w *policy.WireRule
		switch kind {
		case "DNAT":
			w = rc.nat("protocols")
		case "Network":
			w = rc.network("protocols")
		default:
			// actions, direction and priority are read-only leftovers of
			// old API versions.
			w = rc.application("actions", "direction", "priority")
		}
		rc.finish(&c, ct, w)
	}
	g.RuleCollections = append(g.RuleCollections, c)
}

// additionalProperties reads the classic firewall's DNS and threat-intel
// settings ("Network.DNS.EnableProxy": "true", ...).
func (im *importer) additionalProperties(v *view, ap *node, ti *policy.WireThreatIntel, dns *policy.WireDNS) {
	split := func(s string) []string {
		var out []string
		for _, p := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || unicode.IsSpace(r) }) {
			out = append(out, p)
		}
		return out
	}
	for i, key := range ap.keys {
		raw := ap.vals[i]
		field := "additionalProperties." + key
		val := raw
		if val.kind == jUnknown {
			v.drop(field, unknownWhy(val), val, val.unk)
			continue
		}
		s := ""
		switch val.kind {
		case jString, jNumber:
			s = val.str
		case jBool:
			s = fmt.Sprint(val.b)
		case jNull:
			continue
		default:
			v.typeErr(val, field, "a string")
			continue
		}
		switch strings.ToLower(key) {
		case "network.dns.enableproxy":
			b := strings.EqualFold(strings.TrimSpace(s), "true")
			dns.EnableProxy = &b
		case "network.dns.servers":
			dns.Servers = split(s)
		case "network.dns.requireproxyfornetworkrules":
			// Deprecated by Azure; clusterwall resolves FQDNs of network rules through its own DNS proxy.
		case "threatintel.whitelist.fqdns":
			if ti.Allowlist == nil {
				ti.Allowlist = &policy.WireAllowlist{}
			}
			ti.Allowlist.FQDNs = split(s)
		case "threatintel.whitelist.ipaddresses":
			if ti.Allowlist == nil {
				ti.Allowlist = &policy.WireAllowlist{}
			}
			ti.Allowlist.IPAddresses = split(s)
		case "network.snat.privateranges", "network.snat.autolearnprivateranges":
			v.warnf(field+": SNAT private ranges are not carried over: not imported (they change source addresses, not what is allowed)", raw, EffectNone)
		case "network.ftp.allowactiveftp":
			if strings.EqualFold(strings.TrimSpace(s), "true") {
				v.warnf(field+": active FTP is not supported: the data connections active FTP servers open are denied: STRICTER than in Azure", raw, EffectStricter)
			}
		default:
			v.warnf(fmt.Sprintf("%s: unknown setting ignored: STRICTER or LOOSER, depending on what it does in Azure: check it", field), raw, EffectUnknown)
		}
	}
	if ti.Allowlist != nil && len(ti.Allowlist.FQDNs)+len(ti.Allowlist.IPAddresses) == 0 {
		ti.Allowlist = nil
	}
}

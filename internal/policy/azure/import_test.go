package azure

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
)

const serviceTags = "../../../examples/service-tags.json"

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// summarize renders a validated policy's rules, one line per group,
// collection and rule with every field, so that two policies can be
// compared whatever their source positions. skip leaves out collections.
func summarize(p *policy.Policy, skip func(group, coll string) bool) []string {
	var out []string
	for _, g := range p.Groups {
		out = append(out, fmt.Sprintf("group %s priority=%d", g.Name, g.Priority))
		for _, c := range g.Collections {
			if skip != nil && skip(g.Name, c.Name) {
				continue
			}
			out = append(out, fmt.Sprintf("  collection %s kind=%s priority=%d action=%s", c.Name, c.Kind, c.Priority, c.Action))
			for _, r := range c.Rules {
				var targets []string
				for _, pat := range r.TargetFQDNs {
					targets = append(targets, pat.String()+"("+pat.Tag+")")
				}
				ta := ""
				if r.TranslatedAddress.IsValid() {
					ta = r.TranslatedAddress.String()
				}
				out = append(out, fmt.Sprintf("    rule %s desc=%q proto=%s src=%s dst=%s dstFqdns=%v ports=%v app=%v targets=%v tags=%v to=%s/%s:%d",
					r.Name, r.Description, r.Protocols, r.Source.String(), r.Destination.String(), r.DestinationFQDNs,
					r.DestinationPorts, r.AppProtocols, targets, r.FQDNTags, ta, r.TranslatedFQDN, r.TranslatedPort))
			}
		}
	}
	return out
}

func diffLines(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") == strings.Join(want, "\n") {
		return
	}
	t.Errorf("policies differ:\n--- got\n%s\n--- want\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
}

func validate(t *testing.T, f *policy.File) *policy.Policy {
	t.Helper()
	p, err := policy.Validate(f, "", policy.Options{ServiceTagsFile: serviceTags})
	if err != nil {
		t.Fatalf("imported policy does not validate:\n%v", err)
	}
	return p
}

// TestSeedPolicy imports the seed's policy from every form Azure gives it
// in and compares it with examples/aks-egress.yaml (less its apiserver
// DNAT collection, which the seed creates outside the firewall).
func TestSeedPolicy(t *testing.T) {
	want, err := seedExample("../../../examples/aks-egress.yaml")
	if err != nil {
		t.Fatal(err)
	}
	wantLines := summarize(want, func(g, c string) bool { return c == "apiserver" })

	cliPolicy, cliGroups := readFile(t, "aks-cli-policy.json"), readFile(t, "aks-cli-rcgs.json")
	var wrapped []byte // the policy and each group as one list of resources
	wrapped = append(wrapped, '[')
	wrapped = append(wrapped, cliPolicy...)
	wrapped = append(wrapped, ',')
	wrapped = append(wrapped, strings.TrimSpace(string(cliGroups))[1:]...)

	tests := []struct {
		name string
		srcs []Source
	}{
		{"ARM template", []Source{{"aks-template.json", readFile(t, "aks-template.json")}}},
		{"ARM template with a byte order mark", []Source{{"bom.json", append([]byte("\ufeff"), readFile(t, "aks-template.json")...)}}},
		{"ARM template, nested groups", []Source{{"aks-template-nested.json", readFile(t, "aks-template-nested.json")}}},
		{"az CLI, two files", []Source{{"aks-cli-policy.json", cliPolicy}, {"aks-cli-rcgs.json", cliGroups}}},
		{"az CLI, concatenated", []Source{{"both.json", append(append(append([]byte{}, cliPolicy...), '\n'), cliGroups...)}}},
		{"az CLI, one list", []Source{{"list.json", wrapped}}},
		{"classic firewall, az CLI", []Source{{"aks-classic.json", readFile(t, "aks-classic.json")}}},
		{"classic firewall, ARM template", []Source{{"aks-classic-template.json", readFile(t, "aks-classic-template.json")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, warns, err := ImportAll(tt.srcs...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range warns {
				t.Errorf("unexpected warning: %v", w)
			}
			got := validate(t, f)
			diffLines(t, summarize(got, nil), wantLines)
			if got.Name != want.Name || got.Location != want.Location {
				t.Errorf("name/location = %q/%q, want %q/%q", got.Name, got.Location, want.Name, want.Location)
			}
			if got.DNS.EnableProxy != want.DNS.EnableProxy {
				t.Errorf("dns.enableProxy = %v, want %v", got.DNS.EnableProxy, want.DNS.EnableProxy)
			}
			if got.ThreatIntel.Mode != policy.ActionAlert {
				t.Errorf("threat intel mode = %v, want Alert (Azure's default, as exported)", got.ThreatIntel.Mode)
			}

			// The YAML output reads back as the same policy.
			out, err := Render(f, tt.srcs[0].Name, warns, nil)
			if err != nil {
				t.Fatal(err)
			}
			back, err := policy.Load("imported.yaml", out, policy.Options{ServiceTagsFile: serviceTags})
			if err != nil {
				t.Fatalf("rendered YAML does not load: %v\n%s", err, out)
			}
			diffLines(t, summarize(back, nil), summarize(got, nil))
		})
	}
}

func warningsOf(t *testing.T, name string) (*policy.File, []Warning) {
	t.Helper()
	f, warns, err := Import(name, readFile(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return f, warns
}

func findRule(f *policy.File, group, coll, rule string) *policy.WireRule {
	for gi := range f.RuleCollectionGroups {
		g := &f.RuleCollectionGroups[gi]
		for ci := range g.RuleCollections {
			c := &g.RuleCollections[ci]
			for ri := range c.Rules {
				if g.Name == group && c.Name == coll && c.Rules[ri].Name == rule {
					return &c.Rules[ri]
				}
			}
		}
	}
	return nil
}

// TestUnsupported feeds every construct clusterwall does not carry over
// exactly and checks that each becomes a warning naming the rule, with the
// right effect (STRICTER, LOOSER, either, or none on traffic), said in
// words in the message.
func TestUnsupported(t *testing.T) {
	f, warns := warningsOf(t, "unsupported.json")
	_, more := warningsOf(t, "unsupported-more.json")
	tests := []struct {
		name   string
		file   []Warning
		path   string
		has    []string
		effect Effect
	}{
		{"allow rule with only web categories is skipped", warns, "Web/allow-web/news",
			[]string{`webCategories ["News"]`, "rule skipped", "STRICTER"}, EffectStricter},
		{"deny rule with only web categories is skipped", warns, "Web/deny-web/gambling",
			[]string{"webCategories", "RULE SKIPPED", "LOOSER"}, EffectLooser},
		{"deny rule loses its web categories", warns, "Web/deny-web/badsite",
			[]string{`webCategories ["Hacking"]`, "left out", "LOOSER"}, EffectLooser},
		{"target URLs on an allow rule", warns, "Web/allow-web/docs",
			[]string{"targetUrls", "left out", "STRICTER"}, EffectStricter},
		{"TLS inspection on a rule", warns, "Web/allow-web/docs", []string{"terminateTLS", "without decrypting"}, EffectNone},
		{"headers to insert", warns, "Web/allow-web/tagged", []string{"httpHeadersToInsert", "not inserted"}, EffectNone},
		{"mixed collection is split", warns, "Web/mixed", []string{`"mixed-network"`, `"mixed-application"`}, EffectNone},
		{"unknown rule field", warns, "Web/mixed-network/dns", []string{`unknown field "sourcePorts"`, "STRICTER or LOOSER"}, EffectUnknown},
		{"IP group not in the input", warns, "Web/mixed-network/dns", []string{`IP group "ipg-missing" is not in the input`, "does not validate"}, EffectNone},
		{"deploy-time value skips a DNAT rule", warns, "Inbound/publish/web",
			[]string{"rule skipped", "STRICTER", `parameter "publicIp" has no value`, "--parameters publicIp=VALUE"}, EffectStricter},
		{"a template error narrows a DNAT rule", warns, "Inbound/publish/ssh",
			[]string{"sourceAddresses[1]", "adminRange", "matches less", "STRICTER"}, EffectStricter},
		{"IDPS in Deny mode", warns, "policy", []string{"intrusionDetection", "LOOSER"}, EffectLooser},
		{"TLS inspection CA", warns, "policy", []string{"transportSecurity"}, EffectNone},
		{"explicit proxy", warns, "policy", []string{"explicitProxy", "STRICTER"}, EffectStricter},
		{"SQL redirect", warns, "policy", []string{"sql:"}, EffectNone},
		{"SNAT private ranges", warns, "policy", []string{"snat:", "SNAT private ranges"}, EffectNone},
		{"unknown policy field", warns, "policy", []string{`"properties.customBlockPage"`, "STRICTER or LOOSER"}, EffectUnknown},

		{"IDPS signature overrides in Deny mode", more, "policy", []string{"signature overrides are in Deny mode", "LOOSER"}, EffectLooser},
		{"FQDN tag not built in, allow rule skipped", more, "Apps/allow/updates",
			[]string{`fqdnTags "AzureBackup"`, "does not build this Azure FQDN tag in", "STRICTER"}, EffectStricter},
		{"Office 365 tag left out of an allow rule", more, "Apps/allow/aks-and-o365",
			[]string{`fqdnTags "Office365.Exchange.Optimize"`, "Microsoft 365 endpoints web service", "STRICTER"}, EffectStricter},
		{"destination addresses in an allow application rule", more, "Apps/allow/by-address",
			[]string{"destinationAddresses", "rule skipped", "STRICTER"}, EffectStricter},
		{"FQDN tag not built in, deny rule skipped", more, "Apps/deny/no-diagnostics",
			[]string{`fqdnTags "WindowsDiagnostics"`, "RULE SKIPPED", "LOOSER"}, EffectLooser},
		{"URL deny widens to the host", more, "Apps/deny/no-events",
			[]string{"targetUrls", "denies the whole of azure.microsoft.com", "STRICTER"}, EffectStricter},
		{"copy count only known at deployment", more, "[concat('more/spoke', copyIndex())]",
			[]string{"copy loop", `parameter "spokes" has no value`, "not imported"}, EffectUnknown},
		{"condition only known at deployment", more, "more/Extra",
			[]string{`parameter "deployExtra" has no value`, "imported as if deployed", "LOOSER"}, EffectUnknown},
		{"unsupported policy child resource", more, "more/default",
			[]string{"firewallPolicies/signatureOverrides is not supported"}, EffectUnknown},
		{"linked template", more, "linked",
			[]string{"linked template https://example.invalid/rules.json", "not fetched"}, EffectUnknown},
	}
	used := map[*Warning]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range tt.file {
				w := &tt.file[i]
				ok := w.Path == tt.path
				for _, s := range tt.has {
					ok = ok && strings.Contains(w.Msg, s)
				}
				if ok {
					used[w] = true
					if w.Effect != tt.effect {
						t.Errorf("%v: effect = %v, want %v", w, w.Effect, tt.effect)
					}
					if w.Severe != tt.effect.MayLoosen() && !strings.Contains(w.Msg, "split into") {
						t.Errorf("%v: severe = %v", w, w.Severe)
					}
					switch tt.effect {
					case EffectStricter, EffectLooser:
						if !strings.Contains(w.Msg, tt.effect.String()) {
							t.Errorf("%v: the message does not say %s", w, tt.effect)
						}
					}
					return
				}
			}
			t.Errorf("no warning for %s with %q; got:\n%s", tt.path, tt.has, listWarnings(tt.file))
		})
	}
	for _, l := range [][]Warning{warns, more} {
		for i := range l {
			if !used[&l[i]] {
				t.Errorf("warning not covered by the test: %v", l[i])
			}
		}
	}
	// Values only known at deployment are named on the warnings that need them.
	var unknowns []string
	for _, w := range more {
		if w.Unknown != "" {
			unknowns = append(unknowns, w.Unknown)
		}
	}
	if j := strings.Join(unknowns, "|"); !strings.Contains(j, "spokes") || !strings.Contains(j, "deployExtra") {
		t.Errorf("unknown values named: %q", unknowns)
	}

	// What was kept, and how.
	if r := findRule(f, "Web", "allow-web", "news"); r != nil {
		t.Errorf("rule news (web categories only) was kept: %+v", r)
	}
	if r := findRule(f, "Web", "deny-web", "gambling"); r != nil {
		t.Errorf("rule gambling (web categories only) was kept: %+v", r)
	}
	if r := findRule(f, "Inbound", "publish", "web"); r != nil {
		t.Errorf("rule web (unknown destination) was kept: %+v", r)
	}
	if r := findRule(f, "Web", "deny-web", "badsite"); r == nil || strings.Join(r.TargetFQDNs, ",") != "bad.example.net" {
		t.Errorf("rule badsite = %+v, want it kept with its target FQDN", r)
	}
	if r := findRule(f, "Web", "allow-web", "docs"); r == nil || strings.Join(r.SourceIPGroups, ",") != "ipg-aks" || r.Description != "Documentation, inspected." {
		t.Errorf("rule docs = %+v, want source IP group ipg-aks and its description", r)
	}
	if r := findRule(f, "Web", "allow-web", "tagged"); r == nil || strings.Join(r.SourceAddresses, ",") != "10.42.3.10,10.42.3.11" {
		t.Errorf("rule tagged = %+v, want the sources of parameter jumpHosts", r)
	}
	if r := findRule(f, "Inbound", "publish", "ssh"); r == nil || strings.Join(r.SourceAddresses, ",") != "198.51.100.0/24" {
		t.Errorf("rule ssh = %+v, want only the resolvable source", r)
	}
	if r := findRule(f, "Web", "mixed-network", "dns"); r == nil || strings.Join(r.SourceIPGroups, ",") != "ipg-missing" {
		t.Errorf("rule dns = %+v, want the reference to ipg-missing kept", r)
	}
	if r := findRule(f, "Web", "mixed-application", "ubuntu"); r == nil {
		t.Error("rule ubuntu missing from mixed-application")
	}
	if got := strings.Join(f.IPGroups["ipg-aks"], ","); got != "10.42.1.0/24,10.42.4.0/24" {
		t.Errorf("ipGroups.ipg-aks = %q", got)
	}
	if f.ThreatIntel == nil || f.ThreatIntel.Mode != "Deny" || f.ThreatIntel.Allowlist == nil ||
		strings.Join(f.ThreatIntel.Allowlist.FQDNs, ",") != "*.contoso.com" || strings.Join(f.ThreatIntel.Allowlist.IPAddresses, ",") != "198.51.100.7" {
		t.Errorf("threatIntel = %+v", f.ThreatIntel)
	}
	if f.DNS == nil || f.DNS.EnableProxy == nil || !*f.DNS.EnableProxy || strings.Join(f.DNS.Servers, ",") != "10.42.0.53" {
		t.Errorf("dns = %+v", f.DNS)
	}

	// Validation fails only on the IP group the user must define.
	_, err := policy.Validate(f, "", policy.Options{ServiceTagsFile: serviceTags})
	var el policy.ErrorList
	if !errors.As(err, &el) || len(el) != 1 || !strings.Contains(el[0].Msg, `unknown IP group "ipg-missing"`) {
		t.Fatalf("validation: %v", err)
	}
	where, field := RulePath(f, el[0].Path)
	if where != "Web/mixed-network/dns" || field != "sourceIpGroups[0]" {
		t.Errorf("RulePath(%s) = %q, %q", el[0].Path, where, field)
	}
	f.IPGroups["ipg-missing"] = []string{"10.42.5.0/24"}
	validate(t, f)
}

func listWarnings(ws []Warning) string {
	var b strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&b, "  %v (effect=%v severe=%v unknown=%q)\n", w, w.Effect, w.Severe, w.Unknown)
	}
	return b.String()
}

// TestErrors checks that bad input is an error naming file:line:column.
func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // substring of the error, with its position
	}{
		{"empty", "", "in.json:1:1: empty file"},
		{"only space", "  \n ", "in.json:1:1: empty file"},
		{"not JSON", "name: policy\n", "in.json:1:2: not valid JSON"},
		{"syntax error", "{\n  \"resources\": [\n    }\n", "in.json:3:5: not valid JSON"},
		{"truncated", "{\n  \"resources\": [\n", "in.json:3:1: not valid JSON: unexpected end of input"},
		{"a number", "\n  42\n", "in.json:2:3: expected Azure Firewall JSON"},
		{"list of strings", `["a"]`, `in.json:1:2: expected a resource (a JSON object) in the list, found the string "a"`},
		{"no firewall content", `{"type": "Microsoft.Network/virtualNetworks", "name": "vnet"}`, "in.json:1:1: no Azure Firewall content found"},
		{"empty template", `{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#", "resources": []}`, "no Azure Firewall content found"},
		{"only IP groups", `{"type": "Microsoft.Network/ipGroups", "name": "g", "properties": {"ipAddresses": ["10.0.0.0/8"]}}`, "only IP groups found"},
		{"priority is a word", "{\n  \"type\": \"Microsoft.Network/firewallPolicies/ruleCollectionGroups\",\n  \"name\": \"p/g\",\n  \"properties\": {\"priority\": \"high\"}\n}",
			`in.json:4:30: g: priority: expected a whole number, found the string "high"`},
		{"rules is an object", "{\"name\": \"g\", \"priority\": 100, \"ruleCollections\": [\n {\"name\": \"c\", \"priority\": 100, \"ruleCollectionType\": \"FirewallPolicyFilterRuleCollection\", \"action\": {\"type\": \"Allow\"},\n  \"rules\": {}}]}",
			"in.json:3:12: g/c: rules: expected a list of objects, found an object"},
		{"sourceAddresses is a string", `{"name": "g", "priority": 100, "ruleCollections": [{"name": "c", "priority": 100, "action": {"type": "Allow"}, "rules": [{"ruleType": "NetworkRule", "name": "r", "ipProtocols": ["TCP"], "sourceAddresses": "10.0.0.0/8", "destinationAddresses": ["*"], "destinationPorts": ["80"]}]}]}`,
			`in.json:1:206: g/c/r: sourceAddresses: expected a list of strings, found the string "10.0.0.0/8"`},
		{"port is a list", `{"networkRuleCollections": [], "applicationRuleCollections": [{"name": "a", "priority": 100, "action": {"type": "Allow"}, "rules": [{"name": "r", "protocols": [{"protocolType": "Https", "port": [443]}], "sourceAddresses": ["*"], "targetFqdns": ["x.com"]}]}]}`,
			"in.json:1:195: DefaultApplicationRuleCollectionGroup/a/r: port: expected a whole number, found a list"},
		{"two policies", `[{"type": "Microsoft.Network/firewallPolicies", "name": "a"},` + "\n" + `{"type": "Microsoft.Network/firewallPolicies", "name": "b"}]`,
			"in.json:2:1: the input holds 2 firewall policies or firewalls with rules (a at in.json:1:2, b at in.json:2:1): pick one with --policy NAME"},
		{"firewall using a policy", `{"type": "Microsoft.Network/azureFirewalls", "name": "fw", "properties": {"firewallPolicy": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/pol"}}}`,
			"rules are in the firewall policy /subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/pol, which is not in the input"},
		{"parameters not an object", `{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#", "parameters": [], "resources": []}`,
			"in.json:1:110: template: parameters: expected an object, found a list"},
		{"UTF-16", "\xff\xfe{\x00}\x00", "in.json:1:1: the file is UTF-16"},
		{"byte order mark", "\xef\xbb\xbf{\"a\": }", "in.json:1:7: not valid JSON"},
		{"deep nesting", strings.Repeat("[", 300) + strings.Repeat("]", 300), "nested more than 256 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _, err := Import("in.json", []byte(tt.in))
			if err == nil {
				t.Fatalf("no error; got %+v", f)
			}
			if f != nil {
				t.Errorf("a policy came with the error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func TestClassicSettings(t *testing.T) {
	in := `{
  "name": "fw",
  "location": "westeurope",
  "threatIntelMode": "Deny",
  "additionalProperties": {
    "Network.DNS.EnableProxy": "true",
    "Network.DNS.Servers": "10.1.0.4,10.1.0.5",
    "ThreatIntel.Whitelist.FQDNs": "*.contoso.com, login.contoso.com",
    "ThreatIntel.Whitelist.IpAddresses": "198.51.100.1",
    "Network.SNAT.PrivateRanges": "IANAPrivateRanges",
    "Network.Something.New": "1"
  },
  "natRuleCollections": [
    {"name": "snat", "priority": 100, "action": {"type": "Snat"}, "rules": [{"name": "x"}]}
  ],
  "networkRuleCollections": [
    {"name": "block", "priority": 100, "action": {"type": "Deny"}, "rules": [
      {"name": "icmp", "protocols": ["ICMP"], "sourceAddresses": ["10.1.0.0/16"], "destinationAddresses": ["*"], "destinationPorts": ["*"]}
    ]}
  ],
  "applicationRuleCollections": [],
  "ipConfigurations": [{"name": "cfg", "privateIPAddress": "10.1.0.4"}],
  "sku": {"name": "AZFW_VNet", "tier": "Premium"}
}`
	f, warns, err := Import("fw.json", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if f.DNS == nil || f.DNS.EnableProxy == nil || !*f.DNS.EnableProxy || strings.Join(f.DNS.Servers, " ") != "10.1.0.4 10.1.0.5" {
		t.Errorf("dns = %+v", f.DNS)
	}
	if f.ThreatIntel == nil || f.ThreatIntel.Mode != "Deny" || strings.Join(f.ThreatIntel.Allowlist.FQDNs, " ") != "*.contoso.com login.contoso.com" ||
		strings.Join(f.ThreatIntel.Allowlist.IPAddresses, " ") != "198.51.100.1" {
		t.Errorf("threatIntel = %+v", f.ThreatIntel)
	}
	if len(f.RuleCollectionGroups) != 1 || f.RuleCollectionGroups[0].Name != "DefaultNetworkRuleCollectionGroup" || f.RuleCollectionGroups[0].Priority != 200 {
		t.Fatalf("groups = %+v", f.RuleCollectionGroups)
	}
	wantWarn := []string{
		"firewall: additionalProperties.Network.SNAT.PrivateRanges: SNAT private ranges",
		"firewall: additionalProperties.Network.Something.New: unknown setting",
		"DefaultDnatRuleCollectionGroup/snat: SNAT rule collections are not supported",
	}
	if len(warns) != len(wantWarn) {
		t.Errorf("warnings:\n%s", listWarnings(warns))
	}
	for i, w := range wantWarn {
		if i < len(warns) && !strings.HasPrefix(warns[i].String(), w) {
			t.Errorf("warning %d = %q, want prefix %q", i, warns[i], w)
		}
	}
	p := validate(t, f)
	r := p.Groups[0].Collections[0].Rules[0]
	if r.Action() != policy.ActionDeny || r.Protocols != policy.ProtoICMP {
		t.Errorf("rule = %s %s", r.Action(), r.Protocols)
	}
}

// TestIPGroupsAndExpressions covers IP groups referenced by resourceId(),
// by full resource ID and by parameter, names from concat() without a
// default, and the properties/top-level forms of fields.
func TestIPGroupsAndExpressions(t *testing.T) {
	in := `{
  "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
  "parameters": {
    "firewallPolicyName": {"type": "string"},
    "ipGroups_web_externalid": {"type": "string", "defaultValue": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/ipGroups/web"},
    "prio": {"type": "int", "defaultValue": 250},
    "ports": {"type": "array", "defaultValue": ["80", "443"]}
  },
  "variables": {"names": {"aks": "aks-nodes"}, "escaped": "[[not an expression]"},
  "resources": [
    {"type": "Microsoft.Network/ipGroups", "name": "[variables('names').aks]", "properties": {"ipAddresses": ["10.42.1.0/24"]}},
    {"type": "Microsoft.Network/ipGroups", "name": "web", "properties": {"ipAddresses": ["10.50.0.10", "10.50.0.11"]}},
    {"type": "Microsoft.Network/virtualNetworks", "name": "vnet", "properties": {}},
    {"type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups",
     "name": "[concat(parameters('firewallPolicyName'), '/Internal')]",
     "properties": {"priority": "[parameters('prio')]", "ruleCollections": [
       {"ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": "east-west", "priority": 100, "action": {"type": "allow"},
        "rules": [
          {"ruleType": "NetworkRule", "name": "nodes-to-web", "description": "[variables('escaped')]", "ipProtocols": ["TCP"],
           "sourceIpGroups": ["[resourceId('Microsoft.Network/ipGroups', variables('names').aks)]"],
           "destinationIpGroups": ["[parameters('ipGroups_web_externalid')]"],
           "destinationPorts": "[parameters('ports')]"}
        ]}
     ]}}
  ]
}`
	f, warns, err := Import("t.json", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 || warns[0].Path != "policy" || !strings.Contains(warns[0].Msg, "no firewall policy") {
		t.Errorf("warnings:\n%s", listWarnings(warns))
	}
	r := findRule(f, "Internal", "east-west", "nodes-to-web")
	if r == nil {
		t.Fatalf("rule not imported: %+v", f)
	}
	if g := f.RuleCollectionGroups[0]; g.Priority != 250 || g.RuleCollections[0].Action != "Allow" {
		t.Errorf("group = %+v", g)
	}
	if strings.Join(r.SourceIPGroups, ",") != "aks-nodes" || strings.Join(r.DestinationIPGroups, ",") != "web" ||
		strings.Join(r.DestinationPorts, ",") != "80,443" || r.Description != "[not an expression]" {
		t.Errorf("rule = %+v", r)
	}
	p := validate(t, f)
	if got := p.Groups[0].Collections[0].Rules[0].Destination.String(); got != "10.50.0.10-10.50.0.11" && got != "10.50.0.10/31" {
		t.Errorf("destination = %s", got)
	}
}

// evalIn evaluates one expression string in a template given as JSON.
func evalIn(t *testing.T, tmpl string, dep Deploy, expr string) *node {
	t.Helper()
	src := &source{name: "t.json", data: []byte(tmpl)}
	roots, err := parseJSON(src)
	if err != nil {
		t.Fatal(err)
	}
	ctx := newEvalCtx(dep)
	ctx.warn = func(path, msg string, pos policy.Pos, eff Effect, unknown string) {}
	given := map[string]*ParamValue{}
	for k, p := range dep.Parameters {
		p := p
		given[strings.ToLower(k)] = &p
	}
	s := newTemplateScope(ctx, src, roots[0], given, 0, "")
	s.expand(roots[0].lookup("resources"), "", "")
	return s.value(&node{kind: jString, str: expr, src: src})
}

func TestExpressions(t *testing.T) {
	tmpl := `{
  "parameters": {
    "name": {"type": "string", "defaultValue": "pol"},
    "nodef": {"type": "string"},
    "loop": {"type": "string", "defaultValue": "[parameters('loop')]"},
    "n": {"type": "int", "defaultValue": 3},
    "obj": {"type": "object", "defaultValue": {"a": {"b": ["x", "y"]}, "n": null}}
  },
  "variables": {
    "v": "[concat(parameters('name'), '-x')]",
    "list": ["a", "b"],
    "self": "[variables('self')]",
    "copy": [{"name": "nums", "count": "[parameters('n')]", "input": "[mul(copyIndex('nums'), 10)]"}],
    "disks": {"copy": [{"name": "items", "count": 2, "input": {"lun": "[copyIndex('items')]"}}]}
  },
  "resources": [
    {"type": "Microsoft.Network/publicIPAddresses", "name": "pip-fw", "properties": {}},
    {"type": "Microsoft.Network/networkInterfaces", "name": "nic", "properties": {"ipConfigurations": [{"name": "c", "properties": {"privateIPAllocationMethod": "Static", "privateIPAddress": "10.0.0.4"}}]}},
    {"type": "Microsoft.Network/networkInterfaces", "name": "dyn", "properties": {"ipConfigurations": [{"name": "c", "properties": {"privateIPAllocationMethod": "Dynamic"}}]}},
    {"type": "Microsoft.Resources/deployments", "name": "mod", "properties": {"expressionEvaluationOptions": {"scope": "inner"},
      "parameters": {"p": {"value": "[parameters('name')]"}},
      "template": {"parameters": {"p": {"type": "string"}}, "resources": [], "outputs": {"o": {"type": "string", "value": "[concat(parameters('p'), '!')]"}}}}}
  ]
}`
	dep := Deploy{PublicIPs: map[string]string{"pip-fw": "203.0.113.9"}, Location: "westeurope"}
	tests := []struct {
		expr, want, err string
	}{
		{"[parameters('name')]", "pol", ""},
		{"[PARAMETERS('Name')]", "pol", ""},
		{"[variables('v')]", "pol-x", ""},
		{"[concat('a', 'b', 'c')]", "abc", ""},
		{"[format('{0}/{1}', parameters('name'), 'rcg')]", "pol/rcg", ""},
		{"[format('{0:D3}-{{x}}', 7)]", "007-{x}", ""},
		{"[toLower('ABC')]", "abc", ""},
		{"[variables('list')[1]]", "b", ""},
		{"['it''s']", "it's", ""},
		{"[if(equals(parameters('name'), 'pol'), 'yes', resourceGroup().location)]", "yes", ""},
		{"[resourceGroup().location]", "westeurope", ""},
		{"[resourceId('Microsoft.Network/ipGroups', 'g1')]", "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/resourceGroup/providers/Microsoft.Network/ipGroups/g1", ""},
		{"[resourceId('sub', 'rg', 'Microsoft.Network/firewallPolicies/ruleCollectionGroups', 'p', 'r')]", "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/p/ruleCollectionGroups/r", ""},
		{"[[literal]", "[literal]", ""},
		{"plain", "plain", ""},
		{"[string(length(variables('nums')))]", "3", ""},
		{"[string(variables('nums')[2])]", "20", ""},
		{"[string(variables('disks').items[1].lun)]", "1", ""},
		{"[join(split('a,b;c', createArray(',', ';')), '-')]", "a-b-c", ""},
		{"[string(union(createArray('a'), createArray('a', 'b')))]", `["a","b"]`, ""},
		{"[string(createObject('k', 1))]", `{"k":1}`, ""},
		{"[string(contains(variables('list'), 'b'))]", "True", ""},
		{"[string(empty(''))]", "True", ""},
		{"[take('abcdef', 2)]", "ab", ""},
		{"[first(variables('list'))]", "a", ""},
		{"[last(variables('list'))]", "b", ""},
		{"[string(range(5, 3))]", "[5,6,7]", ""},
		{"[replace('a.b.c', '.', '-')]", "a-b-c", ""},
		{"[string(json('{\"a\": [1]}').a[0])]", "1", ""},
		{"[parameters('obj').a.b[1]]", "y", ""},
		{"[string(parameters('obj').?missing)]", "", ""},
		{"[coalesce(parameters('obj').n, 'z')]", "z", ""},
		{"[uniqueString('test')]", "rbgf3xv4ufgzg", ""},
		{"[uniqueString('hello', 'world')]", "a7wkljktk6wne", ""},
		{"[uniqueString('/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/my-rg')]", "bmg7c6xu4tw46", ""},
		{"[guid('a', 'b')]", "", ""},
		{"[reference('pip-fw').ipAddress]", "203.0.113.9", ""},
		{"[reference(resourceId('Microsoft.Network/publicIPAddresses', 'pip-fw'), '2020-05-01', 'Full').properties.ipAddress]", "203.0.113.9", ""},
		{"[reference('nic').ipConfigurations[0].properties.privateIPAddress]", "10.0.0.4", ""},
		{"[reference('mod').outputs.o.value]", "pol!", ""},
		{"[string(map(variables('list'), lambda('x', toUpper(lambdaVariables('x')))))]", `["A","B"]`, ""},
		{"[string(filter(variables('nums'), lambda('x', greater(lambdaVariables('x'), 5))))]", "[10,20]", ""},
		{"[tryGet(parameters('obj'), 'a', 'b', 0)]", "x", ""},
		{"[parameters('nodef')]", "", `parameter "nodef" has no value`},
		{"[reference('dyn').ipConfigurations[0].properties.privateIPAddress]", "", "dynamic private IP address"},
		{"[reference('other').ipAddress]", "", "which the template does not deploy (give it with --reference other=JSON)"},
		{"[parameters('missing')]", "", `no parameter "missing"`},
		{"[parameters('loop')]", "", "refers to itself"},
		{"[variables('self')]", "", "refers to itself"},
		{"[newGuid()]", "", "newGuid()"},
		{"[base32('x')]", "", "not supported"},
		{"[concat('a']", "", "expected ',' or ')'"},
		{"[concat('a', ]", "", "unexpected"},
		{"['unterminated]", "", "unterminated"},
		{"[copyIndex()]", "", "outside a copy loop"},
		{"[div(1, 0)]", "", "division by zero"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			n := evalIn(t, tmpl, dep, tt.expr)
			if tt.err != "" {
				if n.kind != jUnknown || !strings.Contains(n.unk.String(), tt.err) {
					t.Fatalf("= %s %q %v, want unknown %q", n.kind, n.str, n.unk, tt.err)
				}
				return
			}
			if n.kind == jUnknown {
				t.Fatalf("unknown: %v", n.unk)
			}
			if tt.want != "" && (n.kind != jString || n.str != tt.want) {
				t.Errorf("= %s %q, want %q", n.kind, n.str, tt.want)
			}
		})
	}
	// Without --location and --public-ip these are deploy-time values, named.
	for expr, want := range map[string]string{
		"[resourceGroup().location]":      "give it with --location REGION",
		"[reference('pip-fw').ipAddress]": "--public-ip pip-fw=ADDRESS",
		"[parameters('nodef')]":           "--parameters nodef=VALUE",
	} {
		n := evalIn(t, tmpl, Deploy{}, expr)
		if n.kind != jUnknown || n.unk.failed || !strings.Contains(n.unk.String(), want) {
			t.Errorf("%s = %s %v, want an unknown naming %q", expr, n.kind, n.unk, want)
		}
	}
	g := evalIn(t, tmpl, dep, "[guid('a', 'b')]")
	if len(g.str) != 36 || g.str[14] != '5' || g.str != evalIn(t, tmpl, dep, "[guid('a', 'b')]").str {
		t.Errorf("guid = %q, want a stable version 5 UUID", g.str)
	}
	for _, tt := range []struct{ in, want string }{
		{"[concat(parameters('firewallPolicyName'), '/DefaultNetworkRuleCollectionGroup')]", "DefaultNetworkRuleCollectionGroup"},
		{"[format('{0}/rcg', parameters('p'))]", "rcg"},
		{"[parameters('p')]", ""},
		{"[format('{0}/{1}', parameters('p'), 'x')]", "x"},
		{"[format('{0}/{1}', 'x', parameters('p'))]", ""},
		{"[format('{0}/{2}', parameters('p'), 'x')]", ""},
	} {
		got, _ := nameSuffix(tt.in)
		if got != tt.want {
			t.Errorf("nameSuffix(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRulePath(t *testing.T) {
	f := &policy.File{RuleCollectionGroups: []policy.WireGroup{{Name: "G", RuleCollections: []policy.WireCollection{{Name: "C", Rules: []policy.WireRule{{Name: "R"}, {}}}}}}}
	tests := []struct{ path, where, field string }{
		{"ruleCollectionGroups[0].ruleCollections[0].rules[0].destinationPorts[1]", "G/C/R", "destinationPorts[1]"},
		{"ruleCollectionGroups[0].ruleCollections[0].rules[1]", "G/C/rules[1]", ""},
		{"ruleCollectionGroups[0].ruleCollections[0].priority", "G/C", "priority"},
		{"ruleCollectionGroups[0].name", "G", "name"},
		{"ruleCollectionGroups[7].name", "", "ruleCollectionGroups[7].name"},
		{"dns.servers[0]", "", "dns.servers[0]"},
	}
	for _, tt := range tests {
		w, fl := RulePath(f, tt.path)
		if w != tt.where || fl != tt.field {
			t.Errorf("RulePath(%s) = %q, %q; want %q, %q", tt.path, w, fl, tt.where, tt.field)
		}
	}
}

func TestPosition(t *testing.T) {
	src := &source{name: "f", data: []byte("ab\n\u00e9c\nx")}
	for _, tt := range []struct {
		off       int
		line, col int
	}{{0, 1, 1}, {2, 1, 3}, {3, 2, 1}, {5, 2, 2}, {7, 3, 1}, {100, 3, 2}} {
		p := src.pos(tt.off)
		if p.Line != tt.line || p.Column != tt.col {
			t.Errorf("pos(%d) = %d:%d, want %d:%d", tt.off, p.Line, p.Column, tt.line, tt.col)
		}
	}
}

// TestExpressionLimits: variables that double each other level after level
// would take exponential time; the evaluator gives up instead.
func TestExpressionLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"variables": {"v0": "abcdefghijklmnop"`)
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, `, "v%d": "[concat(variables('v%d'), variables('v%d'))]"`, i, i-1, i-1)
	}
	b.WriteString(`}, "resources": []}`)
	n := evalIn(t, b.String(), Deploy{}, "[variables('v40')]")
	if n.kind != jUnknown || !strings.Contains(n.unk.String(), "too") {
		t.Fatalf("v40 = %s %v, want a limit", n.kind, n.unk)
	}
	n = evalIn(t, b.String(), Deploy{}, "[variables('v4')]")
	if n.kind != jString || len(n.str) != 16*16 {
		t.Fatalf("v4 = %s %v", n.kind, n.unk)
	}
}

// TestOddities covers rules in the wrong kind of collection, unknown
// collection types, resources Azure would not deploy, and a policy whose
// groups or base policy are not in the input.
func TestOddities(t *testing.T) {
	in := `[
 {"type": "Microsoft.Network/FirewallPolicies", "name": "child", "location": "eastus",
  "basePolicy": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/parent"},
  "ruleCollectionGroups": [{"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/child/ruleCollectionGroups/Main"},
                           {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/child/ruleCollectionGroups/Other"}],
  "intrusionDetection": {"mode": "Alert"}, "threatIntelMode": "Off"},
 {"type": "Microsoft.Network/FirewallPolicies/RuleCollectionGroups", "name": "Main", "priority": 200, "ruleCollections": [
   {"ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": "f", "priority": 100, "action": {"type": "Deny"}, "rules": [
     {"ruleType": "NatRule", "name": "stray", "ipProtocols": ["TCP"], "sourceAddresses": ["*"], "destinationAddresses": ["203.0.113.1"], "destinationPorts": ["80"], "translatedAddress": "10.0.0.1", "translatedPort": "80"},
     {"name": "inferred", "ipProtocols": ["TCP"], "sourceAddresses": ["*"], "destinationAddresses": ["192.0.2.0/24"], "destinationPorts": ["25"]}
   ]},
   {"ruleCollectionType": "FirewallPolicyNatRuleCollection", "name": "n", "priority": 200, "action": {"type": "Dnat"}, "rules": [
     {"ruleType": "ApplicationRule", "name": "wrong", "protocols": [{"protocolType": "Https", "port": 443}], "sourceAddresses": ["*"], "targetFqdns": ["x.com"]},
     {"name": "untyped", "ipProtocols": ["TCP"], "sourceAddresses": ["*"], "destinationAddresses": ["203.0.113.1"], "destinationPorts": ["8080"], "translatedFqdn": "web.internal.example", "translatedPort": "80"}
   ]},
   {"ruleCollectionType": "FirewallPolicyFutureRuleCollection", "name": "future", "priority": 300, "action": {"type": "Deny"}, "rules": [{}]}
 ]}
]`
	tmpl := `{"resources": [
 {"type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups", "name": "child/Skipped", "condition": false, "properties": {"priority": 300}},
 {"type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups", "name": "[concat('child/Looped', copyIndex())]", "copy": {"name": "c", "count": 2}, "properties": {"priority": "[add(400, copyIndex())]"}}
]}`
	f, warns, err := ImportAll(Source{"odd.json", []byte(in)}, Source{"odd-template.json", []byte(tmpl)})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		path, has string
		severe    bool
	}{
		{"policy", "basePolicy: this policy inherits the rule collections of the base policy /subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/parent", true},
		{"policy", "intrusionDetection: IDPS in Alert mode is not supported", false},
		{"child/Skipped", "condition is false", false},
		{"Main/f/stray", "a NAT rule in a filter rule collection", true}, // a skipped Deny: LOOSER
		{"Main/n/wrong", "an application rule in a NAT rule collection", false},
		{"Main/future", `ruleCollectionType "FirewallPolicyFutureRuleCollection" is not supported: collection skipped with its 1 rules: LOOSER`, true},
		{"policy", `the policy has the rule collection group "Other", which is not in the input`, true},
	}
	if len(warns) != len(want) {
		t.Errorf("got %d warnings, want %d:\n%s", len(warns), len(want), listWarnings(warns))
	}
	for _, w := range want {
		found := false
		for _, g := range warns {
			if g.Path == w.path && strings.Contains(g.Msg, w.has) {
				found = true
				if g.Severe != w.severe {
					t.Errorf("%v: severe = %v, want %v", g, g.Severe, w.severe)
				}
			}
		}
		if !found {
			t.Errorf("no warning %s: %s", w.path, w.has)
		}
	}
	if f.Name != "child" || f.ThreatIntel == nil || f.ThreatIntel.Mode != "Off" {
		t.Errorf("policy = %q %+v", f.Name, f.ThreatIntel)
	}
	if len(f.RuleCollectionGroups) != 3 || f.RuleCollectionGroups[1].Name != "Looped0" || f.RuleCollectionGroups[2].Priority != 401 {
		t.Fatalf("groups: %+v", f.RuleCollectionGroups)
	}
	if findRule(f, "Main", "f", "inferred") == nil || findRule(f, "Main", "n", "untyped") == nil {
		t.Errorf("rules without ruleType were not kept: %+v", f.RuleCollectionGroups[0])
	}
	validate(t, f)
}

// seedExample loads examples/aks-egress.yaml as the seed article has it:
// without the IPv6 cluster subnet the lab adds to two application rules.
func seedExample(path string) (*policy.Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	data = []byte(strings.ReplaceAll(string(data), ", '2001:db8:42:1::/64'", ""))
	return policy.Load(path, data, policy.Options{})
}

// TestSharedValues: values that share each other level after level would
// be exponentially large when walked; the evaluator refuses them.
func TestSharedValues(t *testing.T) {
	for _, build := range []string{`createArray(variables('v%d'), variables('v%d'))`, `union(createObject('a', variables('v%d')), createObject('b', variables('v%d')))`} {
		var b strings.Builder
		b.WriteString(`{"variables": {"v0": ["x"]`)
		for i := 1; i <= 60; i++ {
			fmt.Fprintf(&b, `, "v%d": "[%s]"`, i, fmt.Sprintf(build, i-1, i-1))
		}
		fmt.Fprintf(&b, `, "raw": {"a": "[variables('v59')]", "b": "[variables('v59')]"}}, "resources": [
  {"type": "Microsoft.Network/firewallPolicies", "name": "p", "properties": {"transportSecurity": "[variables('v60')]", "insights": "[variables('raw')]"}}]}`)
		start := time.Now()
		n := evalIn(t, b.String(), Deploy{}, "[string(equals(variables('v60'), variables('v60')))]")
		if n.kind != jUnknown || !strings.Contains(n.unk.String(), "too") {
			t.Errorf("equals of v60 = %s %q %v, want a limit", n.kind, n.str, n.unk)
		}
		if _, _, err := Import("shared.json", []byte(b.String())); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("took %v", d)
		}
	}
}

// TestIncludeBase: a child policy and its base in one template; with
// --include-base the base comes inline, its groups first, and names that
// collide (Azure's default groups) are renamed in the child.
func TestIncludeBase(t *testing.T) {
	in := `{
  "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
  "resources": [
    {"type": "Microsoft.Network/ipGroups", "name": "nodes", "properties": {"ipAddresses": ["10.240.0.0/22"]}},
    {"type": "Microsoft.Network/firewallPolicies", "name": "base", "properties": {"threatIntelMode": "Deny"},
     "resources": [{"type": "ruleCollectionGroups", "name": "DefaultNetworkRuleCollectionGroup", "properties": {"priority": 200, "ruleCollections": [
       {"ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": "dns", "priority": 100, "action": {"type": "Allow"},
        "rules": [{"ruleType": "NetworkRule", "name": "dns", "ipProtocols": ["UDP"], "sourceAddresses": ["*"], "destinationAddresses": ["*"], "destinationPorts": ["53", "x"]}]}]}}]},
    {"type": "Microsoft.Network/firewallPolicies", "name": "child", "properties": {"threatIntelMode": "Alert", "basePolicy": {"id": "[resourceId('Microsoft.Network/firewallPolicies', 'base')]"}},
     "resources": [{"type": "ruleCollectionGroups", "name": "DefaultNetworkRuleCollectionGroup", "properties": {"priority": 200, "ruleCollections": [
       {"ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": "web", "priority": 100, "action": {"type": "Allow"},
        "rules": [{"ruleType": "NetworkRule", "name": "https", "ipProtocols": ["TCP"], "sourceIpGroups": ["[resourceId('Microsoft.Network/ipGroups', 'nodes')]"], "destinationAddresses": ["*"], "destinationPorts": ["443"]}]}]}}]}
  ]
}`
	_, _, err := ImportWith(Options{}, Source{"t.json", []byte(in)})
	if err == nil || !strings.Contains(err.Error(), "pick one with --policy NAME") {
		t.Fatalf("err = %v", err)
	}
	f, warns, err := ImportWith(Options{Policy: "child"}, Source{"t.json", []byte(in)})
	if err != nil {
		t.Fatal(err)
	}
	if f.BasePolicy != nil || len(warns) != 1 || warns[0].Effect != EffectUnknown || !strings.Contains(warns[0].Msg, "--include-base") {
		t.Errorf("without --include-base: base %v, warnings:\n%s", f.BasePolicy, listWarnings(warns))
	}
	f, warns, err = ImportWith(Options{Policy: "child", IncludeBase: true}, Source{"t.json", []byte(in)})
	if err != nil {
		t.Fatal(err)
	}
	if f.BasePolicy == nil || f.BasePolicy.Policy.Name != "base" || f.RuleCollectionGroups[0].Name != "DefaultNetworkRuleCollectionGroup-child" ||
		f.BasePolicy.Policy.IPGroups["nodes"] == nil || f.IPGroups != nil || f.ThreatIntel.Mode != "" {
		t.Fatalf("file = %+v base %+v", f, f.BasePolicy.Policy)
	}
	var msgs []string
	for _, w := range warns {
		msgs = append(msgs, w.Path+": "+w.Msg)
	}
	j := strings.Join(msgs, "\n")
	for _, want := range []string{"renamed \"DefaultNetworkRuleCollectionGroup-child\"", "threatIntelMode Alert is weaker than the base policy's Deny"} {
		if !strings.Contains(j, want) {
			t.Errorf("warnings lack %q:\n%s", want, j)
		}
	}
	// The base's validation error names the base policy's rule.
	_, verr := policy.Validate(f, "", policy.Options{})
	var el policy.ErrorList
	if !errors.As(verr, &el) || len(el) != 1 {
		t.Fatalf("validate: %v", verr)
	}
	where, field := RulePath(f, el[0].Path)
	if where != "basePolicy base: DefaultNetworkRuleCollectionGroup/dns/dns" || field != "destinationPorts[1]" {
		t.Errorf("RulePath(%s) = %q %q", el[0].Path, where, field)
	}
	f.BasePolicy.Policy.RuleCollectionGroups[0].RuleCollections[0].Rules[0].DestinationPorts = []string{"53"}
	p, err := policy.Validate(f, "", policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Groups) != 2 || !p.Groups[0].Inherited || p.ThreatIntel.Mode != policy.ActionDeny {
		t.Errorf("groups %+v, threat intel %v", p.Groups, p.ThreatIntel.Mode)
	}
	out, err := Render(f, "t.json", warns, nil)
	if err != nil {
		t.Fatal(err)
	}
	back, err := policy.Load("out.yaml", out, policy.Options{})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if back.Groups[0].Name != "DefaultNetworkRuleCollectionGroup" || !back.Groups[0].Inherited {
		t.Errorf("rendered: %s", out)
	}
	// A missing base is an error naming the policies the input holds.
	in2 := strings.Replace(in, `'base')]"}}`, `'elsewhere')]"}}`, 1)
	if _, _, err := ImportWith(Options{Policy: "child", IncludeBase: true}, Source{"t.json", []byte(in2)}); err == nil || !strings.Contains(err.Error(), `the base policy "elsewhere" is not in the input (it holds the policies base, child)`) {
		t.Errorf("err = %v", err)
	}
}

// TestShapes: the shapes Azure hands out besides templates — the REST
// API's {"value": [...]} list, a firewall attached to a policy (its classic
// collections empty, as exported), a list with a nextLink.
func TestShapes(t *testing.T) {
	policyJSON := `{"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/fwp", "name": "fwp", "type": "Microsoft.Network/FirewallPolicies",
  "location": "eastus", "properties": {"threatIntelMode": "Alert", "ruleCollectionGroups": [{"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/fwp/ruleCollectionGroups/egress"}]}}`
	rest := `{"value": [{"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/fwp/ruleCollectionGroups/egress",
  "name": "egress", "type": "Microsoft.Network/FirewallPolicies/RuleCollectionGroups", "properties": {"priority": 200, "ruleCollections": [
    {"ruleCollectionType": "FirewallPolicyFilterRuleCollection", "name": "web", "priority": 100, "action": {"type": "Allow"},
     "rules": [{"ruleType": "ApplicationRule", "name": "ghcr", "protocols": [{"protocolType": "Https", "port": 443}], "sourceAddresses": ["10.42.0.0/16"], "targetFqdns": ["ghcr.io"]}]}]}}]}`
	firewall := `{"name": "fw", "type": "Microsoft.Network/azureFirewalls", "properties": {"firewallPolicy": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/fwp"},
  "networkRuleCollections": [], "applicationRuleCollections": [], "natRuleCollections": [], "threatIntelMode": "Alert"}}`
	f, warns, err := ImportAll(Source{"policy.json", []byte(policyJSON)}, Source{"rcgs.json", []byte(rest)}, Source{"fw.json", []byte(firewall)})
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 || f.Name != "fwp" || findRule(f, "egress", "web", "ghcr") == nil {
		t.Fatalf("file %+v, warnings:\n%s", f, listWarnings(warns))
	}
	validate(t, f)

	// The firewall alone: its rules are in a policy that is not in the input.
	if _, _, err := Import("fw.json", []byte(firewall)); err == nil || !strings.Contains(err.Error(), "this firewall's rules are in the firewall policy /subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/fwp, which is not in the input") {
		t.Errorf("firewall alone: %v", err)
	}

	// A page of a longer list: named, STRICTER or LOOSER.
	paged := strings.TrimSuffix(strings.TrimSpace(rest), "}") + `, "nextLink": "https://management.azure.com/...&$skipToken=2"}`
	_, warns, err = ImportAll(Source{"policy.json", []byte(policyJSON)}, Source{"rcgs.json", []byte(paged)})
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 1 || warns[0].Effect != EffectUnknown || !strings.Contains(warns[0].Msg, "nextLink") {
		t.Errorf("warnings:\n%s", listWarnings(warns))
	}
}

// TestEvaluationBounds: a long chain of variables, and more resources than
// a deployment may hold, end with a message, not a crash or a long wait.
func TestEvaluationBounds(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"variables": {"v0": "x"`)
	for i := 1; i <= 5000; i++ {
		fmt.Fprintf(&b, `, "v%d": "[variables('v%d')]"`, i, i-1)
	}
	b.WriteString(`}, "resources": []}`)
	n := evalIn(t, b.String(), Deploy{}, "[variables('v5000')]")
	if n.kind != jUnknown || !strings.Contains(n.unk.String(), "more than 256 deep") {
		t.Errorf("v5000 = %s %q %v", n.kind, n.str, n.unk)
	}
	if n := evalIn(t, b.String(), Deploy{}, "[variables('v200')]"); n.kind != jString || n.str != "x" {
		t.Errorf("v200 = %s %v", n.kind, n.unk)
	}

	start := time.Now()
	many := `{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#", "resources": [
  {"type": "Microsoft.Network/ipGroups", "name": "[concat('a', copyIndex())]", "copy": {"name": "a", "count": 800}, "properties": {"ipAddresses": ["10.0.0.1"]},
   "resources": [{"type": "Microsoft.Network/ipGroups", "name": "[concat('b', copyIndex())]", "copy": {"name": "b", "count": 800}, "properties": {"ipAddresses": ["10.0.0.2"]}}]}]}`
	_, _, err := Import("many.json", []byte(many))
	if err == nil || !strings.Contains(err.Error(), "declares more than 20000 resources") {
		t.Errorf("err = %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v", d)
	}
}

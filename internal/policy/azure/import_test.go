package azure

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

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

// TestUnsupported checks that every feature clusterwall lacks becomes a
// warning naming the rule, with the right direction (stricter or LOOSER).
func TestUnsupported(t *testing.T) {
	f, warns := warningsOf(t, "unsupported.json")
	tests := []struct {
		name   string
		path   string
		has    []string
		severe bool
	}{
		{"allow rule with only web categories is skipped, stricter", "Web/allow-web/news",
			[]string{`webCategories ["News"]`, "rule skipped", "stricter"}, false},
		{"deny rule with only web categories is skipped, LOOSER", "Web/deny-web/gambling",
			[]string{"webCategories", "RULE SKIPPED", "LOOSER"}, true},
		{"deny rule loses its web categories, LOOSER", "Web/deny-web/badsite",
			[]string{`webCategories ["Hacking"]`, "left out", "LOOSER"}, true},
		{"target URLs on an allow rule", "Web/allow-web/docs",
			[]string{"targetUrls", "left out", "stricter"}, false},
		{"TLS inspection", "Web/allow-web/docs", []string{"terminateTLS", "without decrypting"}, false},
		{"headers to insert", "Web/allow-web/tagged", []string{"httpHeadersToInsert", "not inserted"}, false},
		{"mixed collection is split", "Web/mixed", []string{`"mixed-network"`, `"mixed-application"`}, true},
		{"unknown rule field", "Web/mixed-network/dns", []string{`unknown field "sourcePorts"`}, false},
		{"IP group not in the input", "Web/mixed-network/dns", []string{`IP group "ipg-missing" is not in the input`, "does not validate"}, false},
		{"unresolvable expression skips a DNAT rule", "Inbound/publish/web",
			[]string{"rule skipped", "no longer translated"}, false},
		{"unresolvable expression names the field", "Inbound/publish/web",
			[]string{"destinationAddresses[0]", `parameter "publicIp" has no defaultValue`}, false},
		{"unresolvable expression narrows a DNAT rule", "Inbound/publish/ssh",
			[]string{"sourceAddresses[1]", "adminRange", "matches less"}, false},
		{"IDPS in Deny mode", "policy", []string{"intrusionDetection", "LOOSER"}, true},
		{"TLS inspection CA", "policy", []string{"transportSecurity"}, false},
		{"explicit proxy", "policy", []string{"explicitProxy"}, false},
		{"SQL redirect", "policy", []string{"sql:"}, false},
		{"SNAT private ranges", "policy", []string{"snat:", "SNAT private ranges"}, false},
		{"unknown policy field", "policy", []string{`"properties.customBlockPage"`}, false},
	}
	used := map[int]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, w := range warns {
				ok := w.Path == tt.path
				for _, s := range tt.has {
					ok = ok && strings.Contains(w.Msg, s)
				}
				if ok {
					used[i] = true
					if w.Severe != tt.severe {
						t.Errorf("%v: severe = %v, want %v", w, w.Severe, tt.severe)
					}
					return
				}
			}
			t.Errorf("no warning for %s with %q; got:\n%s", tt.path, tt.has, listWarnings(warns))
		})
	}
	for i, w := range warns {
		if !used[i] {
			t.Errorf("warning not covered by the test: %v", w)
		}
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
		fmt.Fprintf(&b, "  %v (severe=%v)\n", w, w.Severe)
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
			"in.json:2:1: the input holds 2 firewall policies (a at in.json:1:2, b at in.json:2:1)"},
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

func TestExpressions(t *testing.T) {
	tmpl := &template{
		params: map[string]*node{
			"name":  {kind: jObject, keys: []string{"defaultValue"}, vals: []*node{strNode("pol", 0)}},
			"nodef": {kind: jObject, keys: []string{"type"}, vals: []*node{strNode("string", 0)}},
			"loop":  {kind: jObject, keys: []string{"defaultValue"}, vals: []*node{strNode("[parameters('loop')]", 0)}},
		},
		vars: map[string]*node{
			"v":    strNode("[concat(parameters('name'), '-x')]", 0),
			"list": arrNode([]*node{strNode("a", 0), strNode("b", 0)}, 0),
		},
	}
	tests := []struct {
		expr, want, err string
	}{
		{"[parameters('name')]", "pol", ""},
		{"[PARAMETERS('Name')]", "pol", ""},
		{"[variables('v')]", "pol-x", ""},
		{"[concat('a', 'b', 'c')]", "abc", ""},
		{"[format('{0}/{1}', parameters('name'), 'rcg')]", "pol/rcg", ""},
		{"[toLower('ABC')]", "abc", ""},
		{"[variables('list')[1]]", "b", ""},
		{"['it''s']", "it's", ""},
		{"[if(equals(parameters('name'), 'pol'), 'yes', resourceGroup().location)]", "yes", ""},
		{"[resourceId('Microsoft.Network/ipGroups', 'g1')]", "/providers/Microsoft.Network/ipGroups/g1", ""},
		{"[resourceId('sub', 'rg', 'Microsoft.Network/firewallPolicies/ruleCollectionGroups', 'p', 'r')]", "/providers/Microsoft.Network/firewallPolicies/p/ruleCollectionGroups/r", ""},
		{"[[literal]", "[literal]", ""},
		{"plain", "plain", ""},
		{"[parameters('nodef')]", "", "has no defaultValue"},
		{"[parameters('missing')]", "", `no parameter "missing"`},
		{"[resourceGroup().location]", "", "only known at deployment"},
		{"[parameters('loop')]", "", "nested too deeply"},
		{"[uniqueString('x')]", "", "only known at deployment"},
		{"[base64('x')]", "", "not supported"},
		{"[concat('a']", "", "expected ',' or ')'"},
		{"[concat('a', ]", "", "unexpected"},
		{"['unterminated]", "", "unterminated"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			n, err := tmpl.resolve(strNode(tt.expr, 0), 0)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.kind != jString || n.str != tt.want {
				t.Errorf("= %s %q, want %q", n.kind, n.str, tt.want)
			}
		})
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
	vars := map[string]*node{"v0": strNode("abcdefghijklmnop", 0)}
	for i := 1; i <= 40; i++ {
		vars[fmt.Sprintf("v%d", i)] = strNode(fmt.Sprintf("[concat(variables('v%d'), variables('v%d'))]", i-1, i-1), 0)
	}
	tmpl := &template{vars: vars}
	_, err := tmpl.resolve(strNode("[variables('v40')]", 0), 0)
	if err == nil || !strings.Contains(err.Error(), "too") {
		t.Fatalf("err = %v, want a limit", err)
	}
	n, err := (&template{vars: vars}).resolve(strNode("[variables('v4')]", 0), 0)
	if err != nil || len(n.str) != 16*16 {
		t.Fatalf("v4 = %v, %v", n, err)
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
 ]},
 {"type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups", "name": "child/Skipped", "condition": false, "properties": {"priority": 300}},
 {"type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups", "name": "child/Looped", "copy": {"name": "c", "count": 2}, "properties": {"priority": 400}}
]`
	f, warns, err := Import("odd.json", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		path, has string
		severe    bool
	}{
		{"policy", "basePolicy: this policy inherits the rules of the base policy /subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/firewallPolicies/parent", true},
		{"policy", "intrusionDetection: IDPS in Alert mode is not supported", false},
		{"Skipped", "condition is false", false},
		{"Looped", "copy loops are not supported", true},
		{"Main/f/stray", "a NAT rule in a filter rule collection", true}, // a skipped Deny: LOOSER
		{"Main/n/wrong", "an application rule in a NAT rule collection", false},
		{"Main/future", `ruleCollectionType "FirewallPolicyFutureRuleCollection" is not supported: collection skipped with its 1 rules: THE POLICY IS LOOSER`, true},
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
	if len(f.RuleCollectionGroups) != 1 {
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

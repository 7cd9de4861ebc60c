package azcli

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update after checking):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func mustParse(t *testing.T, data []byte) *Doc {
	t.Helper()
	d, err := ParseDoc(data)
	if err != nil {
		t.Fatalf("ParseDoc: %v", err)
	}
	return d
}

func mustBytes(t *testing.T, d *Doc) []byte {
	t.Helper()
	b, err := d.Bytes()
	if err != nil {
		t.Fatalf("Bytes: %v", err)
	}
	return b
}

// mustLoad validates a policy text as the commands do.
func mustLoad(t *testing.T, name string, data []byte) *policy.Policy {
	t.Helper()
	p, err := policy.Load(name, data, policy.Options{ServiceTags: policy.ServiceTags{}})
	if err != nil {
		t.Fatalf("policy.Load(%s):\n%v\n--- text\n%s", name, err, data)
	}
	return p
}

func netRule(name string) policy.WireRule {
	return policy.WireRule{Name: name, Protocols: []string{"TCP"}, SourceAddresses: []string{"10.8.0.0/24"},
		DestinationAddresses: []string{"192.0.2.10"}, DestinationPorts: []string{"443"}}
}

func TestRoundTripKeepsFile(t *testing.T) {
	in := readTestdata(t, "commented.yaml")
	if got := mustBytes(t, mustParse(t, in)); !bytes.Equal(got, in) {
		t.Errorf("round trip without edits changed the file:\n%s", got)
	}
}

// isSubsequence reports whether every line of a appears in b, in order.
func isSubsequence(a, b []string) (bool, string) {
	j := 0
	for _, l := range a {
		for j < len(b) && b[j] != l {
			j++
		}
		if j == len(b) {
			return false, l
		}
		j++
	}
	return true, ""
}

func TestAddRuleKeepsEveryLine(t *testing.T) {
	in := readTestdata(t, "commented.yaml")
	d := mustParse(t, in)
	res, err := d.AddRule(RuleSpec{Kind: policy.KindNetwork, Collection: "infra", Rule: netRule("https")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Group != "Platform" || res.NewCollection || res.NewGroup || res.Priority != 100 || res.Action != "Allow" {
		t.Errorf("AddRule result = %+v, want the existing Platform/infra", res)
	}
	out := mustBytes(t, d)
	inLines := strings.Split(string(in), "\n")
	outLines := strings.Split(string(out), "\n")
	if ok, missing := isSubsequence(inLines, outLines); !ok {
		t.Errorf("line %q of the input is missing or moved in the output:\n%s", missing, out)
	}
	// Exactly the new rule's lines appear, right after ntp's last line and
	// before the blank line that separates the groups.
	newRule := "          - name: https\n            protocols: [TCP]\n            sourceAddresses: [10.8.0.0/24]\n" +
		"            destinationAddresses: [192.0.2.10]\n            destinationPorts: ['443']\n"
	after := "            destinationPorts: [\"123\"]\n"
	i := bytes.Index(in, []byte(after))
	if i < 0 {
		t.Fatal("testdata changed: ntp's ports line not found")
	}
	want := string(in[:i+len(after)]) + newRule + string(in[i+len(after):])
	if string(out) != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	p := mustLoad(t, "commented.yaml", out)
	rules := p.RulesOf(policy.KindNetwork)
	if n := len(rules); n != 3 || rules[2].Name != "https" || rules[2].Collection.Name != "infra" {
		t.Errorf("network rules after edit: %d, last %q", n, rules[n-1].Path())
	}
}

func TestEditsGolden(t *testing.T) {
	in := readTestdata(t, "commented.yaml")
	d := mustParse(t, in)
	steps := []RuleSpec{
		{Kind: policy.KindNetwork, Collection: "infra", Rule: netRule("https")},
		{Kind: policy.KindApplication, Collection: "web", Priority: 200, Action: "Allow", Rule: policy.WireRule{
			Name: "github", Description: "source code", Protocols: []string{"Https:443"}, SourceIPGroups: []string{"builders"},
			TargetFQDNs: []string{"github.com", "*.githubusercontent.com"}}},
		{Kind: policy.KindDNAT, Collection: "ingress", Priority: 100, Action: "DNAT", Rule: policy.WireRule{
			Name: "web", Protocols: []string{"TCP"}, SourceAddresses: []string{"*"}, DestinationAddresses: []string{"203.0.113.32"},
			DestinationPorts: []string{"80"}, TranslatedAddress: "10.42.1.100", TranslatedPort: "8080"}},
	}
	for _, s := range steps {
		if _, err := d.AddRule(s); err != nil {
			t.Fatalf("AddRule(%s): %v", s.Rule.Name, err)
		}
	}
	out := mustBytes(t, d)
	golden(t, "commented.golden.yaml", out)
	// Every comment of the input survives.
	for _, l := range strings.Split(string(in), "\n") {
		if i := strings.Index(l, "# "); i >= 0 && !strings.Contains(string(out), l[i:]) {
			t.Errorf("comment %q lost", l[i:])
		}
	}
	p := mustLoad(t, "commented.yaml", out)
	var groups []string
	for _, g := range p.Groups {
		groups = append(groups, g.Name)
	}
	if got := strings.Join(groups, ","); got != "DefaultDnatRuleCollectionGroup,Platform,DefaultApplicationRuleCollectionGroup" {
		t.Errorf("groups = %s", got)
	}
	// The new DNAT group is placed by priority: first in the file too.
	if i, j := bytes.Index(out, []byte("DefaultDnatRuleCollectionGroup")), bytes.Index(out, []byte("name: Platform")); i > j {
		t.Errorf("new group not inserted in priority order:\n%s", out)
	}
}

func TestNewDoc(t *testing.T) {
	d := NewDoc("p")
	if _, err := d.AddRule(RuleSpec{Kind: policy.KindNetwork, Collection: "c", Priority: 100, Action: "allow", Rule: netRule("r")}); err != nil {
		t.Fatal(err)
	}
	out := mustBytes(t, d)
	p := mustLoad(t, "p.yaml", out)
	if p.Name != "p" || len(p.Groups) != 1 || p.Groups[0].Name != "DefaultNetworkRuleCollectionGroup" || p.Groups[0].Priority != 200 {
		t.Fatalf("unexpected policy from:\n%s", out)
	}
	if c := p.Groups[0].Collections[0]; c.Action != policy.ActionAllow || c.Priority != 100 {
		t.Errorf("collection = %+v", c)
	}
	if !bytes.HasPrefix(out, []byte("apiVersion: clusterwall.io/v1alpha1\nkind: FirewallPolicy\nname: p\n")) {
		t.Errorf("header:\n%s", out)
	}
	// Wire field order of the new rule, ports quoted.
	re := regexp.MustCompile(`(?s)- name: r\n\s+protocols: \[TCP\]\n\s+sourceAddresses: \[10.8.0.0/24\]\n\s+destinationAddresses: \[192.0.2.10\]\n\s+destinationPorts: \['443'\]\n`)
	if !re.Match(out) {
		t.Errorf("rule not written in wire order with quoted ports:\n%s", out)
	}
}

// A comment dedented below the end of a nested list is a foot comment to
// yaml.v3, which writes it at the indentation of the node it belongs to.
// Its text survives; its indentation may not (a yaml.v3 limitation).
func TestFootCommentTextSurvives(t *testing.T) {
	in := []byte(twoGroups[:strings.Index(twoGroups, "  - name: B")] + "      # end of group A\n" + twoGroups[strings.Index(twoGroups, "  - name: B"):])
	d := mustParse(t, in)
	if _, err := d.AddRule(RuleSpec{Kind: policy.KindApplication, Group: "A", Collection: "web", Rule: policy.WireRule{
		Name: "a2", Protocols: []string{"Https:443"}, SourceAddresses: []string{"*"}, TargetFQDNs: []string{"example.org"}}}); err != nil {
		t.Fatal(err)
	}
	out := mustBytes(t, d)
	if !bytes.Contains(out, []byte("# end of group A")) {
		t.Errorf("foot comment lost:\n%s", out)
	}
	p := mustLoad(t, "p.yaml", out)
	if rules := p.Groups[0].Collections[1].Rules; len(rules) != 2 || rules[1].Name != "a2" {
		t.Errorf("a2 not appended to A/web:\n%s", out)
	}
}

func TestBlankLinesKept(t *testing.T) {
	in := []byte("apiVersion: clusterwall.io/v1alpha1\n\nkind: FirewallPolicy\n\n\nruleCollectionGroups:\n  - name: G\n    priority: 500\n\n  - name: H\n    priority: 600\n")
	d := mustParse(t, in)
	if _, err := d.AddRule(RuleSpec{Kind: policy.KindNetwork, Collection: "c", Group: "H", Priority: 100, Action: "Deny", Rule: netRule("r")}); err != nil {
		t.Fatal(err)
	}
	out := mustBytes(t, d)
	if ok, missing := isSubsequence(strings.Split(string(in), "\n"), strings.Split(string(out), "\n")); !ok {
		t.Errorf("line %q lost:\n%s", missing, out)
	}
	if bytes.Contains(out, []byte("clusterwall:blank")) {
		t.Errorf("marker leaked:\n%s", out)
	}
}

func TestBlockScalarUnchanged(t *testing.T) {
	// A blank line inside a block scalar is content: ParseDoc must not
	// turn it into a marker (it falls back to dropping blank lines).
	in := []byte("apiVersion: clusterwall.io/v1alpha1\n\nruleCollectionGroups:\n  - name: G\n    priority: 500\n    ruleCollections:\n      - name: c\n        kind: Network\n        priority: 100\n        action: Allow\n        rules:\n          - name: r\n            description: |\n              one\n\n              three\n            protocols: [TCP]\n            sourceAddresses: ['*']\n            destinationAddresses: ['*']\n            destinationPorts: ['*']\n")
	d := mustParse(t, in)
	if _, err := d.AddRule(RuleSpec{Kind: policy.KindNetwork, Collection: "c", Rule: netRule("r2")}); err != nil {
		t.Fatal(err)
	}
	p := mustLoad(t, "p.yaml", mustBytes(t, d))
	if got := p.Groups[0].Collections[0].Rules[0].Description; got != "one\n\nthree\n" {
		t.Errorf("description = %q, want %q", got, "one\n\nthree\n")
	}
}

func TestEmptyListsBecomeBlock(t *testing.T) {
	for name, in := range map[string]string{
		"flow empty": "ruleCollectionGroups: []\n",
		"null":       "ruleCollectionGroups:\n",
		"absent":     "kind: FirewallPolicy\n",
	} {
		t.Run(name, func(t *testing.T) {
			d := mustParse(t, []byte(in))
			if _, err := d.AddRule(RuleSpec{Kind: policy.KindNetwork, Collection: "c", Priority: 100, Action: "Allow", Rule: netRule("r")}); err != nil {
				t.Fatal(err)
			}
			out := mustBytes(t, d)
			mustLoad(t, "p.yaml", out)
			if !bytes.Contains(out, []byte("ruleCollectionGroups:\n  - name: DefaultNetworkRuleCollectionGroup\n")) {
				t.Errorf("not a block list:\n%s", out)
			}
		})
	}
}

const twoGroups = `ruleCollectionGroups:
  - name: A
    priority: 400
    ruleCollections:
      - name: shared
        kind: Network
        priority: 100
        action: Allow
        rules:
          - {name: r1, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['1']}
      - name: web
        kind: Application
        priority: 100
        action: Allow
        rules:
          - {name: a1, protocols: ['Https:443'], sourceAddresses: ['*'], targetFqdns: [example.com]}
  - name: B
    priority: 500
    ruleCollections:
      - name: shared
        kind: Network
        priority: 100
        action: Deny
        rules:
          - {name: r1, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['2']}
`

func TestAddRuleErrors(t *testing.T) {
	tests := []struct {
		name string
		spec RuleSpec
		want string
	}{
		{"duplicate rule, any case", RuleSpec{Kind: policy.KindApplication, Collection: "web", Rule: policy.WireRule{Name: "A1"}},
			`application rule "a1" already exists in collection "web" (group "A")`},
		{"ambiguous collection", RuleSpec{Kind: policy.KindNetwork, Collection: "shared", Rule: netRule("x")},
			`Network collection "shared" exists in several rule collection groups ("A", "B"); name one with --rcg-name`},
		{"conflicting priority", RuleSpec{Kind: policy.KindApplication, Collection: "web", Priority: 200, Rule: netRule("x")},
			`Application collection "web" already exists with priority 100; --priority 200 conflicts`},
		{"conflicting action", RuleSpec{Kind: policy.KindNetwork, Group: "b", Collection: "shared", Action: "Allow", Rule: netRule("x")},
			`Network collection "shared" already exists with action Deny; --action Allow conflicts`},
		{"new collection without priority and action", RuleSpec{Kind: policy.KindNetwork, Collection: "new", Rule: netRule("x")},
			`Network collection "new" does not exist yet; creating it needs --priority and --action`},
		{"new collection without action", RuleSpec{Kind: policy.KindNetwork, Collection: "new", Priority: 100, Rule: netRule("x")},
			`creating it needs --action`},
		{"new group without priority", RuleSpec{Kind: policy.KindNetwork, Group: "C", Collection: "new", Priority: 100, Action: "Allow", Rule: netRule("x")},
			`rule collection group "C" does not exist yet; creating it needs --rcg-priority`},
		{"group priority conflicts", RuleSpec{Kind: policy.KindNetwork, Group: "A", GroupPriority: 999, Collection: "new", Priority: 100, Action: "Allow", Rule: netRule("x")},
			`rule collection group "A" already exists with priority 400; --rcg-priority 999 conflicts`},
		{"new group priority taken", RuleSpec{Kind: policy.KindNetwork, Group: "C", GroupPriority: 500, Collection: "new", Priority: 100, Action: "Allow", Rule: netRule("x")},
			`group "B" already has that priority`},
		{"name taken by another kind in the group", RuleSpec{Kind: policy.KindDNAT, Group: "A", Collection: "web", Priority: 100, Action: "DNAT", Rule: netRule("x")},
			`rule collection group "A" already has a Application collection named "web"`},
		{"no name", RuleSpec{Kind: policy.KindNetwork, Collection: "web"}, "needs a name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := mustParse(t, []byte(twoGroups))
			_, err := d.AddRule(tt.spec)
			if err == nil {
				t.Fatalf("AddRule succeeded:\n%s", mustBytes(t, d))
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestAddRuleWithGroup(t *testing.T) {
	d := mustParse(t, []byte(twoGroups))
	res, err := d.AddRule(RuleSpec{Kind: policy.KindNetwork, Group: "b", Collection: "SHARED", Action: "deny", Priority: 100, Rule: netRule("x")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Group != "B" || res.Collection != "shared" || res.NewCollection {
		t.Errorf("result = %+v", res)
	}
	p := mustLoad(t, "p.yaml", mustBytes(t, d))
	if got := p.Groups[1].Collections[0].Rules; len(got) != 2 || got[1].Name != "x" {
		t.Errorf("rule not added to B/shared")
	}
}

func TestDelete(t *testing.T) {
	d := mustParse(t, []byte(twoGroups))
	if _, err := d.DeleteRule(policy.KindNetwork, "", "shared", "r1"); err == nil || !strings.Contains(err.Error(), "several rule collection groups") {
		t.Errorf("ambiguous delete: err = %v", err)
	}
	if _, err := d.DeleteRule(policy.KindNetwork, "A", "shared", "nope"); err == nil || !strings.Contains(err.Error(), `network rule "nope" not found in collection "shared" (group "A")`) {
		t.Errorf("missing rule: err = %v", err)
	}
	if _, err := d.DeleteRule(policy.KindNetwork, "A", "nope", "r1"); err == nil || !strings.Contains(err.Error(), `Network collection "nope" not found in rule collection group "A" (there are "shared")`) {
		t.Errorf("missing collection: err = %v", err)
	}
	res, err := d.DeleteRule(policy.KindNetwork, "a", "shared", "R1")
	if err != nil {
		t.Fatal(err)
	}
	if !res.CollectionRemoved || res.Group != "A" {
		t.Errorf("result = %+v, want the emptied collection removed", res)
	}
	if c, err := d.DeleteCollection(policy.KindApplication, "", "web"); err != nil || c.Group != "A" {
		t.Fatalf("DeleteCollection: %v", err)
	}
	p := mustLoad(t, "p.yaml", mustBytes(t, d))
	if n := len(p.Groups[0].Collections); n != 0 {
		t.Errorf("group A has %d collections, want 0", n)
	}
	if n := len(p.Groups[1].Collections); n != 1 {
		t.Errorf("group B has %d collections, want 1", n)
	}
}

func TestAnchorsRefused(t *testing.T) {
	in := `x-rules: &common
  - {name: r1, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: ['*'], destinationPorts: ['1']}
ruleCollectionGroups:
  - name: A
    priority: 400
    ruleCollections:
      - name: c
        kind: Network
        priority: 100
        action: Allow
        rules: *common
`
	d := mustParse(t, []byte(in))
	if _, err := d.AddRule(RuleSpec{Kind: policy.KindNetwork, Collection: "c", Rule: netRule("x")}); err == nil || !strings.Contains(err.Error(), "YAML alias") {
		t.Errorf("AddRule into an alias: err = %v", err)
	}
	if _, err := d.DeleteRule(policy.KindNetwork, "", "c", "r1"); err == nil || !strings.Contains(err.Error(), "YAML alias") {
		t.Errorf("DeleteRule from an alias: err = %v", err)
	}
}

func TestParseDocErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":      "",
		"list":       "- a\n",
		"bad syntax": "a: [\n",
	} {
		if _, err := ParseDoc([]byte(in)); err == nil {
			t.Errorf("%s: ParseDoc succeeded", name)
		}
	}
}

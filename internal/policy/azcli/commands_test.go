package azcli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/clusterwall/clusterwall/internal/policy"
)

const (
	seedFile        = "../../../../shared/seeds/000_5b5717f50398ce23.txt"
	serviceTagsFile = "../../../examples/service-tags.json"
	examplePolicy   = "../../../examples/aks-egress.yaml"
)

// seedVars are the values the seed's shell variables take in the lab.
var seedVars = map[string]string{
	"RG": "aks-egress-rg", "FWNAME": "aks-egress-fw", "LOC": "eastus",
	"FWPUBLIC_IP": "203.0.113.32", "SERVICE_IP": "10.42.1.100",
}

var varRe = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)

// shellWords splits a command line as sh does for the seed's lines:
// single quotes, double quotes, backslash escapes outside quotes.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", line)
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			j := strings.IndexByte(line[i+1:], '"')
			if j < 0 {
				return nil, fmt.Errorf("unterminated \" in %q", line)
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '\\' && i+1 < len(line):
			cur.WriteByte(line[i+1])
			i++
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// seedCommands returns the seed's `az network firewall *-rule create`
// lines as argument lists for clusterwall: variables substituted,
// `az network firewall` dropped, and -g/-f replaced by --policy (unless
// keepAz, which keeps them to check that they are ignored).
func seedCommands(t *testing.T, policyPath string, keepAz bool) [][]string {
	t.Helper()
	data, err := os.ReadFile(seedFile)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("seed article %s is absent (this test needs /work/shared next to the repository)", seedFile)
	}
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^az network firewall (network|application|nat)-rule create `)
	var out [][]string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if !re.MatchString(line) {
			continue
		}
		var unknown []string
		line = varRe.ReplaceAllStringFunc(line, func(m string) string {
			name := varRe.FindStringSubmatch(m)[1]
			v, ok := seedVars[name]
			if !ok {
				unknown = append(unknown, name)
			}
			return v
		})
		if len(unknown) > 0 {
			t.Fatalf("seed line uses variables this test does not define: %v\n%s", unknown, line)
		}
		words, err := shellWords(line)
		if err != nil {
			t.Fatal(err)
		}
		words = words[3:] // az network firewall
		var args []string
		for i := 0; i < len(words); i++ {
			switch w := words[i]; {
			case !keepAz && (w == "-g" || w == "--resource-group" || w == "-f" || w == "--firewall-name"):
				i++ // and its value
			default:
				args = append(args, w)
			}
		}
		args = append(args, "--policy", policyPath, "--service-tags", serviceTagsFile)
		out = append(out, args)
	}
	return out
}

// run runs one command line (command words first) and returns its output.
func run(args []string) (string, error) {
	c, rest := Find(args)
	if c == nil {
		return "", fmt.Errorf("no command for %q", args)
	}
	var out bytes.Buffer
	err := c.Run(rest, &out)
	return out.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(args)
	if err != nil {
		t.Fatalf("clusterwall %s:\n%v", strings.Join(args, " "), err)
	}
	return out
}

// Comparable projections of validated policies.
type ruleView struct {
	Name, Description                           string
	Protocols, Source, Destination, Ports, Apps string
	DestinationFQDNs, TargetFQDNs, FQDNTags     []string
	TranslatedAddress, TranslatedFQDN           string
	TranslatedPort                              uint16
}

type collectionView struct {
	Group         string
	GroupPriority int
	Name, Kind    string
	Priority      int
	Action        string
	Rules         []ruleView
}

func project(p *policy.Policy, skip map[string]bool) []collectionView {
	var out []collectionView
	for _, g := range p.Groups {
		for _, c := range g.Collections {
			if skip[c.Name] {
				continue
			}
			cv := collectionView{Group: g.Name, GroupPriority: g.Priority, Name: c.Name, Kind: c.Kind.String(), Priority: c.Priority, Action: c.Action.String()}
			for _, r := range c.Rules {
				rv := ruleView{Name: r.Name, Description: r.Description, Protocols: r.Protocols.String(),
					Source: r.Source.String(), Destination: r.Destination.String(),
					DestinationFQDNs: r.DestinationFQDNs, FQDNTags: r.FQDNTags,
					TranslatedFQDN: r.TranslatedFQDN, TranslatedPort: r.TranslatedPort}
				if r.TranslatedAddress.IsValid() {
					rv.TranslatedAddress = r.TranslatedAddress.String()
				}
				for _, pr := range r.DestinationPorts {
					rv.Ports += pr.String() + " "
				}
				for _, ap := range r.AppProtocols {
					rv.Apps += ap.String() + " "
				}
				// Targets from FQDN tags depend on the policy's location;
				// the tags themselves are compared.
				for _, f := range r.TargetFQDNs {
					if f.Tag == "" {
						rv.TargetFQDNs = append(rv.TargetFQDNs, f.String())
					}
				}
				cv.Rules = append(cv.Rules, rv)
			}
			out = append(out, cv)
		}
	}
	return out
}

// TestSeedReplay runs every `az network firewall *-rule create` command of
// the seed article against an empty policy and checks that the result is
// examples/aks-egress.yaml without its apiserver DNAT collection (which the
// article adds with --api-server-authorized-ip-ranges, not a rule command).
func TestSeedReplay(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "aks-egress-fw.yaml")
	cmds := seedCommands(t, path, false)
	kinds := map[string]int{}
	for _, args := range cmds {
		kinds[args[0]]++
	}
	if kinds["network-rule"] != 3 || kinds["application-rule"] != 3 || kinds["nat-rule"] != 1 {
		t.Fatalf("seed commands per kind = %v, want 3 network, 3 application, 1 nat", kinds)
	}
	for _, args := range cmds {
		out := mustRun(t, args...)
		if !strings.Contains(out, "added") {
			t.Errorf("clusterwall %s: output %q", strings.Join(args, " "), out)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "seed-replay.golden.yaml", got)

	gotPolicy, err := policy.Load(path, got, policy.Options{ServiceTagsFile: serviceTagsFile})
	if err != nil {
		t.Fatalf("replayed policy is invalid: %v", err)
	}
	want, err := seedExample(examplePolicy)
	if err != nil {
		t.Fatalf("example policy: %v", err)
	}
	if diff := cmp.Diff(project(want, map[string]bool{"apiserver": true}), project(gotPolicy, nil)); diff != "" {
		t.Errorf("replayed policy differs from %s without apiserver (-want +got):\n%s", examplePolicy, diff)
	}
	if gotPolicy.Name != "aks-egress-fw" {
		t.Errorf("policy name = %q, want the file's base name", gotPolicy.Name)
	}

	// Pasting the commands with -g/-f kept gives the same file.
	path2 := filepath.Join(dir, "kept", "aks-egress-fw.yaml")
	if err := os.Mkdir(filepath.Dir(path2), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range seedCommands(t, path2, true) {
		mustRun(t, args...)
	}
	if got2, _ := os.ReadFile(path2); !bytes.Equal(got, got2) {
		t.Errorf("with -g/-f kept the result differs:\n%s", got2)
	}

	// Replaying again fails at once: the first rule exists.
	_, err = run(cmds[0])
	if err == nil || !strings.Contains(err.Error(), `network rule "apiudp" already exists in collection "aksfwnr"`) {
		t.Errorf("replaying twice: err = %v", err)
	}
}

func TestShellWords(t *testing.T) {
	got, err := shellWords(`a 'b c' "d$e" f\ g  'h'"i"`)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b c", "d$e", "f g", "hi"}; !cmp.Equal(got, want) {
		t.Errorf("shellWords = %q, want %q", got, want)
	}
}

// writePolicy writes text to a new policy file and returns its path.
func writePolicy(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(text), 0o640); err != nil {
		t.Fatal(err)
	}
	return path
}

const basePolicy = `apiVersion: clusterwall.io/v1alpha1
kind: FirewallPolicy
name: p
# Hand-written: keep me.
ruleCollectionGroups:
  - name: DefaultNetworkRuleCollectionGroup
    priority: 200
    ruleCollections:
      - name: aksfwnr
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: apiudp
            protocols: [UDP]
            sourceAddresses: ['*']
            destinationAddresses: [AzureCloud.eastus]
            destinationPorts: ['1194']
`

func TestCommandErrorsLeaveFileUntouched(t *testing.T) {
	netArgs := func(extra ...string) []string {
		return append([]string{"network-rule", "create", "--service-tags", serviceTagsFile, "-c", "aksfwnr",
			"--protocols", "TCP", "--source-addresses", "*", "--destination-addresses", "AzureCloud.eastus"}, extra...)
	}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"missing flags", []string{"network-rule", "create", "-c", "aksfwnr"},
			[]string{"network-rule create: missing required flags: --name/-n, --protocols, --destination-ports; one of --source-addresses or --source-ip-groups; one of --destination-addresses or --destination-ip-groups or --destination-fqdns", "--help"}},
		{"missing translation", []string{"nat-rule", "create", "-c", "x", "-n", "y", "--protocols", "TCP", "--source-addresses", "*",
			"--destination-addresses", "203.0.113.32", "--destination-ports", "80", "--translated-port", "80"},
			[]string{"missing required flag: one of --translated-address or --translated-fqdn"}},
		{"unknown flag", netArgs("-n", "x", "--destination-ports", "1", "--target-fqdns", "a.example"),
			[]string{"unknown flag --target-fqdns", "valid flags:", "--destination-fqdns"}},
		{"duplicate rule", netArgs("-n", "APIUDP", "--destination-ports", "1"),
			[]string{`network rule "apiudp" already exists in collection "aksfwnr"`, "was not changed"}},
		{"conflicting priority", netArgs("-n", "x", "--destination-ports", "1", "--priority", "300"),
			[]string{`already exists with priority 100; --priority 300 conflicts`}},
		{"conflicting action", netArgs("-n", "x", "--destination-ports", "1", "--action", "Deny"),
			[]string{`already exists with action Allow; --action Deny conflicts`}},
		{"new collection without priority", []string{"application-rule", "create", "-c", "web", "-n", "x", "--protocols", "https=443",
			"--source-addresses", "*", "--target-fqdns", "example.com", "--action", "allow", "--service-tags", serviceTagsFile},
			[]string{`Application collection "web" does not exist yet; creating it needs --priority`}},
		{"priority not a number", netArgs("-n", "x", "--destination-ports", "1", "--priority", "high"),
			[]string{`--priority: expected a whole number, got "high"`}},
		{"rcg-priority without rcg-name", netArgs("-n", "x", "--destination-ports", "1", "--rcg-priority", "500"),
			[]string{"--rcg-priority needs --rcg-name"}},
		{"bad port", netArgs("-n", "x", "--destination-ports", "99999"),
			[]string{"p.yaml was NOT changed: the edit would make the policy invalid", `p.yaml:23:32: network rule "x": port 99999 out of range 1-65535`,
				"23 |             destinationPorts: ['99999']", "   |                                ^"}},
		{"unknown service tag", []string{"network-rule", "create", "--service-tags", serviceTagsFile, "-c", "aksfwnr", "-n", "x",
			"--protocols", "TCP", "--source-addresses", "*", "--destination-addresses", "AzureCloud.mars", "--destination-ports", "1"},
			[]string{"was NOT changed", `unknown service tag "AzureCloud.mars"`}},
		{"bad protocol", []string{"network-rule", "create", "--service-tags", serviceTagsFile, "-c", "aksfwnr", "-n", "x",
			"--protocols", "SCTP", "--source-addresses", "*", "--destination-addresses", "10.0.0.1", "--destination-ports", "1"},
			[]string{"was NOT changed", `protocol must be TCP, UDP, ICMP or Any, not "SCTP"`}},
		{"bad app protocol", []string{"application-rule", "create", "-c", "web", "-n", "x", "--protocols", "ftp=21",
			"--source-addresses", "*", "--target-fqdns", "example.com", "--action", "allow", "--priority", "100", "--service-tags", serviceTagsFile},
			[]string{"was NOT changed", `not "ftp=21"`}},
		{"snat action", []string{"nat-rule", "create", "-c", "x", "-n", "y", "--protocols", "TCP", "--source-addresses", "*",
			"--destination-addresses", "203.0.113.32", "--destination-ports", "80", "--translated-port", "80", "--translated-address", "10.0.0.1",
			"--action", "Snat", "--priority", "100", "--service-tags", serviceTagsFile},
			[]string{"was NOT changed", `action must be Allow, Deny or DNAT, not "Snat"`}},
		{"no service tags", netArgs("-n", "x", "--destination-ports", "1")[:2],
			[]string{"missing required flags"}},
		{"file invalid without service tags", []string{"network-rule", "create", "-c", "aksfwnr", "-n", "x", "--protocols", "TCP",
			"--source-addresses", "*", "--destination-addresses", "10.0.0.1", "--destination-ports", "1"},
			[]string{"p.yaml is not a valid policy; fix it first (the file was not changed)", `unknown service tag "AzureCloud.eastus"`}},
		{"delete missing rule", []string{"network-rule", "delete", "-c", "aksfwnr", "-n", "nope", "--service-tags", serviceTagsFile},
			[]string{`network rule "nope" not found in collection "aksfwnr"`}},
		{"delete missing collection", []string{"nat-rule", "collection", "delete", "-n", "nope", "--service-tags", serviceTagsFile},
			[]string{`DNAT collection "nope" not found (there are none)`}},
		{"show missing rule", []string{"network-rule", "show", "-c", "aksfwnr", "-n", "nope"},
			[]string{`network rule "nope" not found in collection "aksfwnr" (group "DefaultNetworkRuleCollectionGroup"; it has "apiudp")`}},
		{"bad output format", []string{"network-rule", "list", "-c", "aksfwnr", "-o", "table"},
			[]string{`--output "table" is not supported; use yaml, json or none`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writePolicy(t, basePolicy)
			args := append(append([]string{}, tt.args...), "--policy", path)
			out, err := run(args)
			if err == nil {
				t.Fatalf("succeeded with output %q", out)
			}
			msg := strings.ReplaceAll(err.Error(), path, "p.yaml")
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not contain %q:\n%s", w, msg)
				}
			}
			if got, _ := os.ReadFile(path); string(got) != basePolicy {
				t.Errorf("file changed:\n%s", got)
			}
			if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
				t.Errorf("directory holds %d entries, want only p.yaml (temp file left?)", len(ents))
			}
		})
	}
}

// The position in a NotChangedError points at the offending value in the
// proposed text, whatever line that is.
func TestNotChangedErrorPosition(t *testing.T) {
	path := writePolicy(t, basePolicy)
	_, err := run([]string{"network-rule", "create", "--policy", path, "--service-tags", serviceTagsFile, "-c", "aksfwnr", "-n", "x",
		"--protocols", "TCP", "--source-addresses", "10.0.0.300", "--destination-addresses", "10.0.0.1", "--destination-ports", "22"})
	var nc *NotChangedError
	if !errors.As(err, &nc) {
		t.Fatalf("err = %v, want a NotChangedError", err)
	}
	var list policy.ErrorList
	if !errors.As(nc.Errs, &list) || len(list) != 1 {
		t.Fatalf("errors = %v", nc.Errs)
	}
	pos := list[0].Pos
	lines := strings.Split(string(nc.Proposed), "\n")
	if pos.File != path || pos.Line < 1 || pos.Line > len(lines) || !strings.HasPrefix(lines[pos.Line-1][pos.Column-1:], "10.0.0.300") {
		t.Errorf("position %v does not point at the bad address in:\n%s", pos, nc.Proposed)
	}
}

func TestCreateNewFileAndListShow(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	out := mustRun(t, "application-rule", "create", "--policy", path, "-c", "web", "-n", "github", "--protocols", "https=443", "http",
		"--source-addresses", "10.0.0.0/8", "--target-fqdns", "github.com", "*.github.io", "--action", "allow", "--priority", "200",
		"--description", "source code")
	if !strings.Contains(out, `added application rule "github" to collection "web" (group "DefaultApplicationRuleCollectionGroup", priority 200, Allow); created new rule collection group`) {
		t.Errorf("create output: %q", out)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("new file mode = %v, want 0644", fi.Mode().Perm())
	}
	// A second rule with -o json prints the rule.
	out = mustRun(t, "application-rule", "create", "--policy", path, "-c", "web", "-n", "docs", "--protocols", "Https",
		"--source-addresses", "10.0.0.0/8", "--target-fqdns", "docs.example.com", "-o", "json")
	var created policy.WireRule
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Name != "docs" || !cmp.Equal(created.Protocols, []string{"Https:443"}) {
		t.Errorf("create -o json printed %q (%v)", out, err)
	}

	// list: YAML by default, JSON with -o json; both hold what was created.
	var rules []policy.WireRule
	if err := json.Unmarshal([]byte(mustRun(t, "application-rule", "list", "--policy", path, "-c", "web", "-o", "json")), &rules); err != nil {
		t.Fatal(err)
	}
	want := []policy.WireRule{
		{Name: "github", Description: "source code", Protocols: []string{"Https:443", "Http:80"}, SourceAddresses: []string{"10.0.0.0/8"}, TargetFQDNs: []string{"github.com", "*.github.io"}},
		{Name: "docs", Protocols: []string{"Https:443"}, SourceAddresses: []string{"10.0.0.0/8"}, TargetFQDNs: []string{"docs.example.com"}},
	}
	if diff := cmp.Diff(want, rules); diff != "" {
		t.Errorf("list -o json (-want +got):\n%s", diff)
	}
	yamlOut := mustRun(t, "application-rule", "list", "--policy", path, "-c", "web")
	if !strings.HasPrefix(yamlOut, "- name: github\n  description: source code\n  protocols:\n    - Https:443\n") {
		t.Errorf("list YAML:\n%s", yamlOut)
	}
	show := mustRun(t, "application-rule", "show", "--policy", path, "--collection-name", "WEB", "--name", "Docs", "-o", "json")
	var one policy.WireRule
	if err := json.Unmarshal([]byte(show), &one); err != nil || !cmp.Equal(one, want[1]) {
		t.Errorf("show printed %q (%v)", show, err)
	}

	var colls []CollectionView
	if err := json.Unmarshal([]byte(mustRun(t, "application-rule", "collection", "list", "--policy", path, "-o", "json")), &colls); err != nil {
		t.Fatal(err)
	}
	if len(colls) != 1 || colls[0].RuleCollectionGroup != "DefaultApplicationRuleCollectionGroup" || colls[0].Name != "web" ||
		colls[0].Kind != "Application" || colls[0].Priority != 200 || colls[0].Action != "Allow" || len(colls[0].Rules) != 2 {
		t.Errorf("collection list = %+v", colls)
	}
	if got := mustRun(t, "network-rule", "collection", "list", "--policy", path, "-o", "json"); strings.TrimSpace(got) != "[]" {
		t.Errorf("network collection list = %q, want []", got)
	}
	cs := mustRun(t, "application-rule", "collection", "show", "--policy", path, "-n", "web")
	if !strings.HasPrefix(cs, "ruleCollectionGroup: DefaultApplicationRuleCollectionGroup\nname: web\nkind: Application\npriority: 200\naction: Allow\nrules:\n") {
		t.Errorf("collection show:\n%s", cs)
	}
	if got := mustRun(t, "application-rule", "list", "--policy", path, "-c", "web", "-o", "none"); got != "" {
		t.Errorf("-o none printed %q", got)
	}

	// delete: the last rule of a collection takes the collection with it.
	mustRun(t, "application-rule", "delete", "--policy", path, "-c", "web", "-n", "github")
	out = mustRun(t, "application-rule", "delete", "--policy", path, "-c", "web", "-n", "docs")
	if !strings.Contains(out, "the collection was left empty and was removed") {
		t.Errorf("delete output: %q", out)
	}
	if _, err := run([]string{"application-rule", "collection", "show", "--policy", path, "-n", "web"}); err == nil {
		t.Error("collection still there after its last rule was deleted")
	}
}

func TestNATAndCollectionDelete(t *testing.T) {
	path := writePolicy(t, basePolicy)
	mustRun(t, "nat-rule", "create", "--policy", path, "--service-tags", serviceTagsFile, "--collection-name", "ingress", "--name", "web",
		"--protocols", "TCP", "UDP", "--source-addresses", "*", "--destination-addresses", "203.0.113.32", "--destination-ports", "443",
		"--translated-fqdn", "web.internal.example", "--translated-port", "8443", "--action", "Dnat", "--priority", "100")
	data, _ := os.ReadFile(path)
	p, err := policy.Load(path, data, policy.Options{ServiceTagsFile: serviceTagsFile})
	if err != nil {
		t.Fatal(err)
	}
	if p.Groups[0].Name != "DefaultDnatRuleCollectionGroup" || p.Groups[0].Priority != 100 {
		t.Fatalf("first group = %s/%d", p.Groups[0].Name, p.Groups[0].Priority)
	}
	r := p.Groups[0].Collections[0].Rules[0]
	if r.Protocols != policy.ProtoTCP|policy.ProtoUDP || r.TranslatedFQDN != "web.internal.example" || r.TranslatedPort != 8443 || r.Action() != policy.ActionDNAT {
		t.Errorf("NAT rule = %+v", r)
	}
	if !bytes.Contains(data, []byte("translatedPort: '8443'")) || !bytes.Contains(data, []byte("# Hand-written: keep me.")) {
		t.Errorf("file:\n%s", data)
	}
	out := mustRun(t, "network-rule", "collection", "delete", "--policy", path, "--service-tags", serviceTagsFile, "-n", "aksfwnr")
	if !strings.Contains(out, `deleted Network collection "aksfwnr" from group "DefaultNetworkRuleCollectionGroup"`) {
		t.Errorf("output %q", out)
	}
	data, _ = os.ReadFile(path)
	if bytes.Contains(data, []byte("aksfwnr")) {
		t.Errorf("collection still in file:\n%s", data)
	}
}

func TestRuleCollectionGroupFlags(t *testing.T) {
	path := writePolicy(t, basePolicy)
	args := func(rule string, extra ...string) []string {
		return append([]string{"network-rule", "create", "--policy", path, "--service-tags", serviceTagsFile, "-n", rule,
			"--protocols", "TCP", "--source-addresses", "10.0.0.0/8", "--destination-addresses", "192.0.2.0/24", "--destination-ports", "22"}, extra...)
	}
	if _, err := run(args("ssh", "-c", "admin", "--action", "Deny", "--priority", "100", "--rcg-name", "Platform")); err == nil ||
		!strings.Contains(err.Error(), `rule collection group "Platform" does not exist yet; creating it needs --rcg-priority`) {
		t.Errorf("err = %v", err)
	}
	mustRun(t, args("ssh", "-c", "admin", "--action", "Deny", "--priority", "100", "--rule-collection-group-name", "Platform", "--rcg-priority", "150")...)
	// Without --rcg-name, "admin" is the one in Platform, wherever it is.
	if _, err := run(args("ssh", "-c", "admin", "--action", "Allow", "--priority", "110")); err == nil ||
		!strings.Contains(err.Error(), `Network collection "admin" already exists with priority 100; --priority 110 conflicts`) {
		t.Errorf("err = %v", err)
	}
	// The same collection name in the default group is another collection;
	// then "admin" is ambiguous without --rcg-name.
	mustRun(t, args("ssh", "-c", "admin", "--action", "Allow", "--priority", "110", "--rcg-name", "DefaultNetworkRuleCollectionGroup")...)
	_, err := run(args("ssh2", "-c", "admin"))
	if err == nil || !strings.Contains(err.Error(), `Network collection "admin" exists in several rule collection groups ("Platform", "DefaultNetworkRuleCollectionGroup"); name one with --rcg-name`) {
		t.Errorf("ambiguous: err = %v", err)
	}
	mustRun(t, args("ssh2", "-c", "admin", "--rcg-name", "platform")...)
	list := mustRun(t, "network-rule", "list", "--policy", path, "-c", "admin", "--rcg-name", "Platform", "-o", "json")
	var rules []policy.WireRule
	if err := json.Unmarshal([]byte(list), &rules); err != nil || len(rules) != 2 || rules[1].Name != "ssh2" {
		t.Errorf("Platform/admin rules: %s (%v)", list, err)
	}
	data, _ := os.ReadFile(path)
	// Platform (150) is written before the default network group (200).
	if i, j := bytes.Index(data, []byte("name: Platform")), bytes.Index(data, []byte("name: DefaultNetworkRuleCollectionGroup")); i < 0 || i > j {
		t.Errorf("group order:\n%s", data)
	}
}

func TestFileHandling(t *testing.T) {
	create := func(path string) error {
		_, err := run([]string{"network-rule", "create", "--policy", path, "-c", "c", "-n", "r", "--protocols", "TCP",
			"--source-addresses", "*", "--destination-addresses", "192.0.2.1", "--destination-ports", "22", "--action", "allow", "--priority", "100"})
		return err
	}
	t.Run("mode kept", func(t *testing.T) {
		path := writePolicy(t, "kind: FirewallPolicy\n")
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := create(path); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
		}
	})
	t.Run("symlink followed", func(t *testing.T) {
		target := writePolicy(t, "kind: FirewallPolicy\n")
		link := filepath.Join(t.TempDir(), "link.yaml")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if err := create(link); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("link replaced by a file")
		}
		if data, _ := os.ReadFile(target); !bytes.Contains(data, []byte("name: r")) {
			t.Errorf("target not edited:\n%s", data)
		}
	})
	t.Run("empty file is a new policy", func(t *testing.T) {
		path := writePolicy(t, "")
		if err := create(path); err != nil {
			t.Fatal(err)
		}
		if data, _ := os.ReadFile(path); !bytes.HasPrefix(data, []byte("apiVersion: clusterwall.io/v1alpha1\nkind: FirewallPolicy\nname: p\n")) {
			t.Errorf("file:\n%s", data)
		}
	})
	t.Run("broken YAML refused", func(t *testing.T) {
		path := writePolicy(t, "ruleCollectionGroups: [\n")
		err := create(path)
		if err == nil || !strings.Contains(err.Error(), "is not a valid policy; fix it first") {
			t.Errorf("err = %v", err)
		}
		if _, err := run([]string{"network-rule", "list", "--policy", path, "-c", "c"}); err == nil || !strings.Contains(err.Error(), "cannot be read as a policy") {
			t.Errorf("list: err = %v", err)
		}
	})
	t.Run("delete needs the file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "none.yaml")
		if _, err := run([]string{"network-rule", "delete", "--policy", path, "-c", "c", "-n", "r"}); err == nil || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v", err)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Error("delete created the file")
		}
	})
}

func TestHelp(t *testing.T) {
	for _, c := range Commands() {
		var out bytes.Buffer
		if err := c.Run([]string{"--bogus", "-h"}, &out); err != nil {
			t.Errorf("%s -h: %v", c.Name(), err)
		}
		if !strings.Contains(out.String(), "clusterwall "+c.Name()+" --policy FILE") || !strings.Contains(out.String(), "--policy FILE") {
			t.Errorf("%s -h:\n%s", c.Name(), out.String())
		}
	}
}

func TestCommandsList(t *testing.T) {
	var names []string
	for _, c := range Commands() {
		names = append(names, c.Name())
	}
	for _, g := range []string{"network-rule", "application-rule", "nat-rule"} {
		for _, v := range []string{"create", "list", "show", "delete", "collection list", "collection show", "collection delete"} {
			found := false
			for _, n := range names {
				found = found || n == g+" "+v
			}
			if !found {
				t.Errorf("no command %s %s", g, v)
			}
		}
	}
	if c, rest := Find([]string{"nat-rule", "collection", "list", "--policy", "x"}); c == nil || c.Name() != "nat-rule collection list" || len(rest) != 2 {
		t.Errorf("Find = %v, %q", c, rest)
	}
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

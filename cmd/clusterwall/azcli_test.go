package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const azTags = "../../examples/service-tags.json"

// runAz runs the clusterwall command line as main does and returns stdout,
// the message main would print on stderr, and the exit code.
func runAz(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.Execute()
	var ee *exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.code
		errb.WriteString(ee.msg)
	default:
		code = 1
		errb.WriteString("clusterwall: " + err.Error())
	}
	return out.String(), errb.String(), code
}

func TestAzCommandsEndToEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	steps := []struct {
		name      string
		args      []string
		code      int
		stdout    string // substring
		stderr    string // substring
		unchanged bool   // the file must be byte-for-byte the same after
	}{
		{name: "seed network rule, pasted with -g/-f",
			args:   []string{"network-rule", "create", "-g", "$RG", "-f", "$FWNAME", "--collection-name", "aksfwnr", "-n", "apiudp", "--protocols", "UDP", "--source-addresses", "*", "--destination-addresses", "AzureCloud.eastus", "--destination-ports", "1194", "--action", "allow", "--priority", "100"},
			stdout: `added network rule "apiudp" to collection "aksfwnr" (group "DefaultNetworkRuleCollectionGroup", priority 100, Allow)`},
		{name: "second rule without priority and action",
			args:   []string{"network-rule", "create", "--collection-name", "aksfwnr", "-n", "apitcp", "--protocols", "TCP", "--source-addresses", "*", "--destination-addresses", "AzureCloud.eastus", "--destination-ports", "9000"},
			stdout: `added network rule "apitcp"`},
		{name: "application rule with multi-value protocols",
			args:   []string{"application-rule", "create", "--collection-name", "aksfwar", "-n", "fqdn", "--source-addresses", "*", "--protocols", "http=80", "https=443", "--fqdn-tags", "AzureKubernetesService", "--action", "allow", "--priority", "100"},
			stdout: `added application rule "fqdn"`},
		{name: "nat rule with long az flags",
			args:   []string{"nat-rule", "create", "--collection-name", "exampleset", "--destination-addresses", "203.0.113.32", "--destination-ports", "80", "--firewall-name", "fw", "--name", "inboundrule", "--protocols", "Any", "--resource-group", "rg", "--source-addresses", "*", "--translated-port", "80", "--action", "Dnat", "--priority", "100", "--translated-address", "10.42.1.100"},
			stdout: `added NAT rule "inboundrule"`},
		{name: "duplicate", code: 1, unchanged: true,
			args:   []string{"network-rule", "create", "--collection-name", "aksfwnr", "-n", "apiudp", "--protocols", "UDP", "--source-addresses", "*", "--destination-addresses", "AzureCloud.eastus", "--destination-ports", "1194"},
			stderr: `clusterwall: network rule "apiudp" already exists in collection "aksfwnr"`},
		{name: "invalid value", code: 1, unchanged: true,
			args:   []string{"network-rule", "create", "--collection-name", "aksfwnr", "-n", "bad", "--protocols", "UDP", "--source-addresses", "10.0.0.0/33", "--destination-addresses", "10.0.0.1", "--destination-ports", "1"},
			stderr: "was NOT changed"},
		{name: "missing flags", code: 1, unchanged: true,
			args:   []string{"nat-rule", "create", "--collection-name", "x"},
			stderr: "clusterwall: nat-rule create: missing required flags: --name/-n"},
		{name: "unknown flag", code: 1, unchanged: true,
			args:   []string{"network-rule", "list", "--collection", "aksfwnr"},
			stderr: "unknown flag --collection (did you mean --collection-name?)"},
		{name: "list json",
			args:   []string{"network-rule", "list", "--collection-name", "aksfwnr", "-o", "json"},
			stdout: `"name": "apitcp"`},
		{name: "show yaml",
			args:   []string{"application-rule", "show", "-c", "aksfwar", "-n", "fqdn"},
			stdout: "name: fqdn\nprotocols:\n  - Http:80\n  - Https:443\n"},
		{name: "collection list",
			args:   []string{"nat-rule", "collection", "list"},
			stdout: "- ruleCollectionGroup: DefaultDnatRuleCollectionGroup\n  name: exampleset\n"},
		{name: "delete",
			args:   []string{"network-rule", "delete", "-c", "aksfwnr", "-n", "apitcp"},
			stdout: `deleted network rule "apitcp"`},
		{name: "collection delete",
			args:   []string{"application-rule", "collection", "delete", "-n", "aksfwar"},
			stdout: `deleted Application collection "aksfwar"`},
	}
	for _, s := range steps {
		before, _ := os.ReadFile(path)
		args := append(s.args, "--policy", path, "--service-tags", azTags)
		stdout, stderr, code := runAz(t, args...)
		if code != s.code {
			t.Fatalf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", s.name, code, s.code, stdout, stderr)
		}
		if !strings.Contains(stdout, s.stdout) {
			t.Errorf("%s: stdout %q lacks %q", s.name, stdout, s.stdout)
		}
		if !strings.Contains(stderr, s.stderr) {
			t.Errorf("%s: stderr %q lacks %q", s.name, stderr, s.stderr)
		}
		if after, _ := os.ReadFile(path); s.unchanged && !bytes.Equal(before, after) {
			t.Errorf("%s: the file changed", s.name)
		}
	}
	// The result validates with the policy command.
	stdout, stderr, code := runAz(t, "policy", "validate", "--service-tags", azTags, path)
	if code != 0 || !strings.Contains(stdout, "ok (3 rule collection groups, 2 rules)") {
		t.Errorf("policy validate: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestAzCommandsHelpAndUnknown(t *testing.T) {
	stdout, _, code := runAz(t, "network-rule", "create", "-h")
	if code != 0 || !strings.Contains(stdout, "--destination-ports PORT [PORT ...]") || !strings.Contains(stdout, "-n, --name NAME") {
		t.Errorf("create -h: exit %d\n%s", code, stdout)
	}
	stdout, _, code = runAz(t, "application-rule")
	if code != 0 || !strings.Contains(stdout, "collection") || !strings.Contains(stdout, "create") {
		t.Errorf("application-rule: exit %d\n%s", code, stdout)
	}
	_, stderr, code := runAz(t, "nat-rule", "creat")
	if code != 1 || !strings.Contains(stderr, `unknown command "creat" for "clusterwall nat-rule"; valid: collection, create, delete, list, show`) {
		t.Errorf("nat-rule creat: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = runAz(t, "nat-rule", "collection", "lst")
	if code != 1 || !strings.Contains(stderr, `unknown command "lst"`) {
		t.Errorf("nat-rule collection lst: exit %d, stderr %q", code, stderr)
	}
}

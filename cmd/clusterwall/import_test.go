package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	importTestdata = "../../internal/policy/azure/testdata/"
	importTags     = "../../examples/service-tags.json"
)

// runImportCLI runs the clusterwall command line and returns its output and
// exit code.
func runImportCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.Execute()
	var ee *exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.code
		if ee.msg != "" {
			errb.WriteString(ee.msg + "\n")
		}
	default:
		code = 1
		errb.WriteString(err.Error() + "\n")
	}
	return out.String(), errb.String(), code
}

func TestImportAzureCommand(t *testing.T) {
	dir := t.TempDir()
	tagsAbs, err := filepath.Abs(importTags)
	if err != nil {
		t.Fatal(err)
	}
	notJSON := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(notJSON, []byte("{\n  \"resources\": [,]\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	template, err := os.ReadFile(importTestdata + "aks-template.json")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("template to stdout", func(t *testing.T) {
		out, errs, code := runImportCLI(t, "", "import", "azure", importTestdata+"aks-template.json", "--service-tags", importTags)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		if !strings.HasPrefix(out, "# Imported from "+importTestdata+"aks-template.json") || !strings.Contains(out, "name: inboundrule") {
			t.Errorf("stdout:\n%s", out)
		}
		if strings.Contains(errs, "warning:") || !strings.Contains(errs, "imported 3 rule collection groups, 7 rules; 0 warnings") {
			t.Errorf("stderr:\n%s", errs)
		}
	})

	t.Run("-o writes a file that validates", func(t *testing.T) {
		path := filepath.Join(dir, "out", "policy.yaml")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		out, errs, code := runImportCLI(t, "", "import", "azure", importTestdata+"aks-cli-policy.json", importTestdata+"aks-cli-rcgs.json",
			"--service-tags", importTags, "--service-tags-ref", tagsAbs, "-o", path)
		if code != 0 || out != "" {
			t.Fatalf("exit %d, stdout %q: %s", code, out, errs)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "serviceTags: "+tagsAbs) {
			t.Errorf("no serviceTags: line in\n%s", data)
		}
		left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*"))
		if len(left) > 0 {
			t.Errorf("temporary files left: %v", left)
		}
		// Validation finds the service tags through the written reference.
		vout, verrs, code := runImportCLI(t, "", "policy", "validate", path)
		if code != 0 || !strings.Contains(vout, "ok (3 rule collection groups, 7 rules)") {
			t.Errorf("policy validate: exit %d: %s%s", code, vout, verrs)
		}
	})

	t.Run("standard input", func(t *testing.T) {
		out, errs, code := runImportCLI(t, string(template), "import", "azure", "-", "--service-tags", importTags)
		if code != 0 || !strings.Contains(out, "# Imported from standard input by") {
			t.Fatalf("exit %d: %s\n%s", code, errs, out)
		}
	})

	t.Run("deploy-time values are named, and nothing is written", func(t *testing.T) {
		path := filepath.Join(dir, "partial.yaml")
		out, errs, code := runImportCLI(t, "", "import", "azure", importTestdata+"unsupported.json", "--service-tags", importTags, "-o", path)
		if code != 1 || out != "" {
			t.Errorf("exit %d, stdout %q", code, out)
		}
		for _, want := range []string{
			"error: 2 values are only known at deployment or could not be evaluated; nothing was written",
			"parameter \"publicIp\" has no value (give it with --parameters publicIp=VALUE)\n    needed by: Inbound/publish/web",
			"no parameter \"adminRange\" in the template\n    needed by: Inbound/publish/ssh",
		} {
			if !strings.Contains(errs, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errs)
			}
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("output written: %v", err)
		}
	})

	t.Run("warnings and a validation error", func(t *testing.T) {
		path := filepath.Join(dir, "unsupported.yaml")
		_, errs, code := runImportCLI(t, "", "import", "azure", importTestdata+"unsupported.json", "--service-tags", importTags, "-o", path,
			"--parameters", "publicIp=203.0.113.40", "--allow-partial")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		for _, want := range []string{
			"warning: Web/deny-web/gambling: it matches only by webCategories",
			"RULE SKIPPED: LOOSER than in Azure",
			"warning: Web/allow-web/news: it matches only by webCategories",
			"warning: policy: intrusionDetection: IDPS in Deny mode",
			"error: Web/mixed-network/dns: sourceIpGroups[0]: network rule \"dns\": unknown IP group \"ipg-missing\"",
			"(4 STRICTER, 5 may be LOOSER: review them)",
		} {
			if !strings.Contains(errs, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errs)
			}
		}
		// The output is still written, for the user to finish; the given
		// parameter made the web rule importable.
		data, err := os.ReadFile(path)
		if err != nil || !strings.Contains(string(data), "# error: Web/mixed-network/dns") || !strings.Contains(string(data), "name: web") {
			t.Errorf("output %v:\n%s", err, data)
		}
	})

	t.Run("--strict refuses what may be LOOSER", func(t *testing.T) {
		path := filepath.Join(dir, "strict.yaml")
		out, errs, code := runImportCLI(t, "", "import", "azure", importTestdata+"unsupported.json", "--service-tags", importTags, "-o", path,
			"--parameters", "publicIp=203.0.113.40", "--allow-partial", "--strict")
		if code != 1 || out != "" || !strings.Contains(errs, "error: --strict: 5 warnings may make the policy LOOSER than in Azure; nothing was written") ||
			!strings.Contains(errs, "  Web/deny-web/gambling: it matches only by webCategories") {
			t.Errorf("exit %d, stdout %q: %s", code, out, errs)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("output written: %v", err)
		}
		// Nothing looser: --strict passes.
		out, errs, code = runImportCLI(t, "", "import", "azure", importTestdata+"aks-template.json", "--service-tags", importTags, "--strict")
		if code != 0 || !strings.Contains(out, "name: inboundrule") {
			t.Errorf("strict on a clean import: exit %d: %s", code, errs)
		}
	})

	t.Run("parameters, public IPs and --policy", func(t *testing.T) {
		params := filepath.Join(dir, "params.json")
		if err := os.WriteFile(params, []byte(`{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
 "contentVersion": "1.0.0.0", "parameters": {"sources": {"value": ["10.9.0.0/16"]}, "port": {"value": 8443}}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		tmpl := filepath.Join(dir, "two.json")
		if err := os.WriteFile(tmpl, []byte(`{
  "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
  "parameters": {"sources": {"type": "array"}, "port": {"type": "int"}, "prefix": {"type": "string", "defaultValue": "p"}},
  "resources": [
    {"type": "Microsoft.Network/publicIPAddresses", "name": "pip-fw", "properties": {}},
    {"type": "Microsoft.Network/firewallPolicies", "name": "[concat(parameters('prefix'), '-a')]", "properties": {}},
    {"type": "Microsoft.Network/firewallPolicies", "name": "[concat(parameters('prefix'), '-b')]", "properties": {}},
    {"type": "Microsoft.Network/firewallPolicies/ruleCollectionGroups", "name": "[concat(parameters('prefix'), '-b/inbound')]",
     "properties": {"priority": 100, "ruleCollections": [{"ruleCollectionType": "FirewallPolicyNatRuleCollection", "name": "web", "priority": 100, "action": {"type": "Dnat"},
       "rules": [{"ruleType": "NatRule", "name": "https", "ipProtocols": ["TCP"], "sourceAddresses": "[parameters('sources')]",
                  "destinationAddresses": ["[reference(resourceId('Microsoft.Network/publicIPAddresses', 'pip-fw'), '2023-09-01').ipAddress]"],
                  "destinationPorts": ["[string(parameters('port'))]"], "translatedAddress": "10.0.1.4", "translatedPort": "443"}]}]}}
  ]
}`), 0o644); err != nil {
			t.Fatal(err)
		}
		_, errs, code := runImportCLI(t, "", "import", "azure", tmpl, "--parameters", "@"+params)
		if code != 1 || !strings.Contains(errs, "pick one with --policy NAME") || !strings.Contains(errs, "p-a at") || !strings.Contains(errs, "p-b at") {
			t.Errorf("two policies: exit %d: %s", code, errs)
		}
		_, errs, code = runImportCLI(t, "", "import", "azure", tmpl, "--parameters", "@"+params, "--policy", "p-c")
		if code != 1 || !strings.Contains(errs, "--policy p-c: no firewall policy or firewall with rules of that name in the input (it holds policy p-a, policy p-b)") {
			t.Errorf("unknown --policy: exit %d: %s", code, errs)
		}
		_, errs, code = runImportCLI(t, "", "import", "azure", tmpl, "--parameters", "@"+params, "--policy", "p-b")
		if code != 1 || !strings.Contains(errs, "the address of the public IP pip-fw (give it with --public-ip pip-fw=ADDRESS)\n    needed by: inbound/web/https") {
			t.Errorf("no public IP: exit %d: %s", code, errs)
		}
		out, errs, code := runImportCLI(t, "", "import", "azure", tmpl, "--parameters", "@"+params, "--parameters", "port=9443",
			"--policy", "p-b", "--public-ip", "pip-fw=203.0.113.7")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		for _, want := range []string{"name: p-b", "sourceAddresses: [10.9.0.0/16]", "destinationAddresses: [203.0.113.7]", `destinationPorts: ["9443"]`} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		for _, bad := range [][]string{
			{"--parameters", "nope=1"},
			{"--public-ip", "pip-other=203.0.113.7"},
			{"--public-ip", "pip-fw=not-an-ip"},
			{"--parameters", "port=many"},
		} {
			args := append([]string{"import", "azure", tmpl, "--parameters", "@" + params, "--policy", "p-b", "--public-ip", "pip-fw=203.0.113.7"}, bad...)
			_, errs, code := runImportCLI(t, "", args...)
			if code != 1 {
				t.Errorf("%v: exit %d: %s", bad, code, errs)
			}
		}
	})

	t.Run("missing service tags are errors", func(t *testing.T) {
		_, errs, code := runImportCLI(t, "", "import", "azure", importTestdata+"aks-classic.json")
		if code != 1 || !strings.Contains(errs, `error: DefaultNetworkRuleCollectionGroup/aksfwnr/apiudp: destinationAddresses[0]: network rule "apiudp": unknown service tag "AzureCloud.eastus"`) {
			t.Errorf("exit %d: %s", code, errs)
		}
	})

	t.Run("bad JSON", func(t *testing.T) {
		path := filepath.Join(dir, "never.yaml")
		out, errs, code := runImportCLI(t, "", "import", "azure", notJSON, "-o", path)
		if code != 1 || out != "" || !strings.Contains(errs, notJSON+":2:17: not valid JSON") {
			t.Errorf("exit %d, stdout %q, stderr %s", code, out, errs)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("output written for bad input: %v", err)
		}
	})

	t.Run("missing file", func(t *testing.T) {
		_, errs, code := runImportCLI(t, "", "import", "azure", filepath.Join(dir, "nope.json"))
		if code != 1 || !strings.Contains(errs, "nope.json") {
			t.Errorf("exit %d: %s", code, errs)
		}
	})
}

package azure

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// sameFile compares two wire policies by their YAML (nil and empty lists
// are the same there).
func sameFile(t testing.TB, a, b *policy.File) bool {
	t.Helper()
	ya, err := yaml.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	yb, err := yaml.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(ya) == string(yb)
}

// FuzzImport: any input gives a policy or a positioned error, never a
// panic; a policy renders to YAML that decodes back to the same policy.
func FuzzImport(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `[[[]]]`, `{"resources": {}}`, `{"type": "x"}`,
		`{"ruleCollections": [{"rules": [{"ruleType": "ApplicationRule", "webCategories": ["x"]}]}]}`,
		`{"networkRuleCollections": [{"name": "n\nx: y", "action": {"type": "Deny"}, "rules": [{"name": "#r", "protocols": ["[concat('a']"]}]}]}`,
		`{"$schema": "deploymentTemplate", "parameters": {"p": {"defaultValue": "[parameters('p')]"}}, "resources": [{"type": "Microsoft.Network/firewallPolicies", "name": "[parameters('p')]"}]}`,
		`{"name": "g", "priority": 1e99, "ruleCollections": []}`,
		`{"additionalProperties": {"Network.DNS.Servers": []}, "natRuleCollections": [{"action": {"type": "Snat"}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, warns, err := Import("fuzz.json", data)
		if err != nil {
			var el policy.ErrorList
			if !errors.As(err, &el) || len(el) == 0 {
				t.Fatalf("error without positions: %v", err)
			}
			for _, e := range el {
				if e.Pos.Line < 1 || e.Pos.Column < 1 {
					t.Fatalf("error without a line and column: %v", e)
				}
			}
			return
		}
		if pf == nil {
			t.Fatal("no policy and no error")
		}
		_, verr := policy.Validate(pf, "", policy.Options{ServiceTags: policy.ServiceTags{}})
		var errs policy.ErrorList
		errors.As(verr, &errs)
		out, err := Render(pf, "fuzz.json", warns, errs)
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		back, _, err := policy.DecodeYAML("out.yaml", out)
		if err != nil {
			t.Fatalf("rendered YAML does not decode: %v\n%s", err, out)
		}
		if !sameFile(t, back, pf) {
			t.Fatalf("rendered YAML decodes differently:\n%s", out)
		}
	})
}

// FuzzParameters: a parameters file (--parameters @FILE) gives values or a
// positioned error, never a panic.
func FuzzParameters(f *testing.F) {
	for _, s := range []string{
		`{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#", "contentVersion": "1.0.0.0", "parameters": {"a": {"value": [1, "x"]}, "b": {"reference": {"keyVault": {"id": "kv"}, "secretName": "s"}}}}`,
		`{"a": {"value": {"b": null}}}`, `{"parameters": []}`, `[]`, `{"a": 1}`, `// c` + "\n" + `{"a": {"value": 1 /* x */}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		vals, err := ParseParameters([]string{"@p.json"}, func(string) ([]byte, error) { return data, nil })
		if err != nil {
			var el policy.ErrorList
			if !errors.As(err, &el) || len(el) == 0 {
				t.Fatalf("error without positions: %v", err)
			}
			return
		}
		tmpl := []byte(`{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#", "parameters": {"a": {"type": "array", "defaultValue": []}, "b": {"type": "string", "defaultValue": "x"}}, "resources": [
  {"type": "Microsoft.Network/ipGroups", "name": "g", "properties": {"ipAddresses": "[parameters('a')]"}},
  {"type": "Microsoft.Network/firewallPolicies", "name": "[string(parameters('b'))]", "properties": {}}]}`)
		ImportWith(Options{Deploy: Deploy{Parameters: vals}}, Source{Name: "t.json", Data: tmpl})
	})
}

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

	t.Run("warnings and a validation error", func(t *testing.T) {
		path := filepath.Join(dir, "unsupported.yaml")
		_, errs, code := runImportCLI(t, "", "import", "azure", importTestdata+"unsupported.json", "--service-tags", importTags, "-o", path)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		for _, want := range []string{
			"warning: Web/deny-web/gambling: it matches only by webCategories",
			"RULE SKIPPED: THE POLICY IS LOOSER",
			"warning: Web/allow-web/news: it matches only by webCategories",
			"warning: policy: intrusionDetection: IDPS in Deny mode",
			"error: Web/mixed-network/dns: sourceIpGroups[0]: network rule \"dns\": unknown IP group \"ipg-missing\"",
			"4 may make the policy LOOSER",
		} {
			if !strings.Contains(errs, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errs)
			}
		}
		// The output is still written, for the user to finish.
		data, err := os.ReadFile(path)
		if err != nil || !strings.Contains(string(data), "# error: Web/mixed-network/dns") {
			t.Errorf("output %v:\n%s", err, data)
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

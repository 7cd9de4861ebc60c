package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExportCRD: the command turns the seed's policy and an Azure export
// into a YAML stream of clusterwall.io objects, and refuses an invalid
// policy with its FILE:LINE:COL.
func TestExportCRD(t *testing.T) {
	out, errs, code := runImportCLI(t, "", "export", "crd", "--policy", "../../examples/aks-egress.yaml", "--groups-namespace", "platform")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if n := strings.Count(out, "kind: RuleCollectionGroup"); n != 3 || !strings.Contains(out, "kind: FirewallPolicy") || !strings.Contains(out, "namespace: platform") {
		t.Fatalf("%d groups in\n%s", n, out)
	}
	if !strings.Contains(errs, `warning: serviceTags "service-tags.json" is a file`) {
		t.Errorf("no warning about the service tags file: %q", errs)
	}

	matches, _ := filepath.Glob(importTestdata + "*.json")
	azureOK := false
	for _, m := range matches {
		out, _, code := runImportCLI(t, "", "export", "crd", "--policy", m, "--service-tags", importTags)
		if code == 0 && strings.Contains(out, "kind: FirewallPolicy") && strings.Contains(out, "ruleCollectionGroups:") {
			azureOK = true
			break
		}
	}
	if !azureOK {
		t.Errorf("no Azure export in %s converted", importTestdata)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("ruleCollectionGroups:\n  - name: g\n    priority: 99\n"), 0o644)
	_, errs, code = runImportCLI(t, "", "export", "crd", "--policy", bad)
	if code != 1 || !strings.Contains(errs, bad+":3:15: ") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
}

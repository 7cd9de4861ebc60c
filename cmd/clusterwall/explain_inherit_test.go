package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExplainInheritance: explain shows that a decision came from a group
// inherited from the base policy, processed before the policy's own.
func TestExplainInheritance(t *testing.T) {
	dir := t.TempDir()
	base := `name: org-base
ruleCollectionGroups:
  - name: org-guardrails
    priority: 65000
    ruleCollections:
      - name: no-smtp
        kind: Network
        priority: 100
        action: Deny
        rules:
          - name: smtp
            protocols: [TCP]
            sourceAddresses: [10.42.0.0/16]
            destinationAddresses: ['*']
            destinationPorts: ['25']
`
	child := `name: cluster-a
basePolicy: org.yaml
ruleCollectionGroups:
  - name: team
    priority: 100
    ruleCollections:
      - name: out
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: any-tcp
            protocols: [TCP]
            sourceAddresses: [10.42.0.0/16]
            destinationAddresses: ['*']
            destinationPorts: ['*']
`
	for name, data := range map[string]string{"org.yaml": base, "cluster.yaml": child} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pol := filepath.Join(dir, "cluster.yaml")
	out, errs, code := runImportCLI(t, "", "explain", "--policy", pol, "--src", "10.42.1.5", "--dst", "192.0.2.25", "--port", "25")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"Action:  Deny", "Group:   org-guardrails (priority 65000, inherited from base policy org-base: processed before the policy's own groups)",
		"Rule:    smtp (" + filepath.Join(dir, "org.yaml") + ":11:13)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, errs, code = runImportCLI(t, "", "explain", "--policy", pol, "--src", "10.42.1.5", "--dst", "192.0.2.25", "--port", "443", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatal(err)
	}
	if e["action"] != "Allow" || e["rule"] != "any-tcp" || e["basePolicy"] != nil {
		t.Errorf("json = %v", e)
	}
	out, _, _ = runImportCLI(t, "", "explain", "--policy", pol, "--src", "10.42.1.5", "--dst", "192.0.2.25", "--port", "25", "--json")
	if err := json.Unmarshal([]byte(out), &e); err != nil || e["basePolicy"] != "org-base" {
		t.Errorf("json = %v %v", e, err)
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// writeLog writes records as the daemon does.
func writeLog(t *testing.T, recs ...telemetry.Record) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "decisions.log")
	var b []byte
	for i := range recs {
		var err error
		if b, err = telemetry.AppendJSON(b, &recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestLogsCommands(t *testing.T) {
	now := time.Now().UTC()
	app := func(src, name string, ago time.Duration) telemetry.Record {
		return telemetry.Record{Time: now.Add(-ago), Category: telemetry.CategoryApplicationRule, SourceIp: src, SourcePort: 40000,
			Fqdn: name, DestinationPort: 443, Protocol: "HTTPS", Action: "Deny", ActionReason: "no rule matched", Source: "proxy"}
	}
	allowed := telemetry.Record{Time: now, Category: telemetry.CategoryNetworkRule, SourceIp: "10.42.1.10", DestinationIp: "198.18.10.5",
		DestinationPort: 9000, Protocol: "TCP", Action: "Allow", RuleCollectionGroup: "g", RuleCollection: "c", Rule: "apitcp"}
	file := writeLog(t, app("10.42.1.10", "a.example.com", 2*time.Hour), app("10.42.1.11", "b.example.com", time.Minute),
		app("10.42.1.11", "b.example.com", time.Second), allowed)

	out, err := run(t, "logs", "--file", file, "--since", "1h", "--action", "deny")
	if err != nil || strings.Contains(out, "a.example.com") || strings.Count(out, "b.example.com") != 2 || !strings.HasPrefix(out, "TIME") {
		t.Errorf("logs --since 1h --action deny: %v\n%s", err, out)
	}
	out, err = run(t, "logs", "--file", file, "--rule", "c/apitcp", "--json")
	if err != nil || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"Rule":"apitcp"`) {
		t.Errorf("logs --rule --json: %v\n%s", err, out)
	}
	out, err = run(t, "logs", "top", "--file", file, "--by", "fqdn", "--action", "Deny", "-n", "1")
	if err != nil || !strings.Contains(out, "b.example.com") || strings.Contains(out, "a.example.com") {
		t.Errorf("logs top: %v\n%s", err, out)
	}
	out, err = run(t, "suggest", "--file", file, "--policy", "../../examples/aks-egress.yaml", "--service-tags", "../../examples/service-tags.json")
	if err != nil || !strings.Contains(out, "'*.example.com'") || !strings.Contains(out, "'10.42.1.0/24'") {
		t.Errorf("suggest: %v\n%s", err, out)
	}
	for _, bad := range [][]string{
		{"logs", "--file", file, "--since", "yesterday"},
		{"logs", "--file", file, "--action", "maybe"},
		{"logs", "--file", file, "--src", "10.0.0.0/99"},
		{"logs", "--file", file, "--fqdn", "a.*.com"},
		{"logs", "--file", file, "--category", "firewall"},
		{"logs", "top", "--file", file, "--by", "colour"},
		{"logs", "--file", filepath.Join(t.TempDir(), "none.log")},
		{"suggest", "--file", file, "--merge"},
		{"suggest", "--file", file, "--cluster-cidr", "10.42.1.0"},
	} {
		if out, err := run(t, bad...); err == nil {
			t.Errorf("%v accepted:\n%s", bad, out)
		}
	}
}

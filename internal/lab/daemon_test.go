package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDaemonConfig: the config names the lab's interfaces, addresses,
// admin address and decision log (test/ checks that the daemon's strict
// loader accepts it); bad input is a clear error.
func TestDaemonConfig(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(pol, []byte("name: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := DaemonConfig("cwx", DaemonOptions{Policy: pol, SNAT: "off"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"policy: \"" + pol + "\"", "inside: cw-in", "outside: cw-out", `publicIPs: ["203.0.113.32", "2001:db8:cafe::32", "203.0.113.33", "2001:db8:cafe::33"]`,
		`privateIP: "10.42.2.4"`, "snat: off", `listen: "127.0.0.1:9180"`, `file: "/run/clusterwall-lab/cwx/decisions.log"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("config lacks %q:\n%s", want, data)
		}
	}

	// The WAF: the lab's config in the state directory, or one's own.
	data, _ = DaemonConfig("cwx", DaemonOptions{Policy: pol, WAF: true})
	if !strings.Contains(string(data), "waf:\n  config: \"/run/clusterwall-lab/cwx/waf.yaml\"") {
		t.Errorf("WAF: %s", data)
	}
	data, _ = DaemonConfig("cwx", DaemonOptions{Policy: pol, WAF: true, WAFConfig: pol})
	if !strings.Contains(string(data), "waf:\n  config: \""+pol+"\"") {
		t.Errorf("WAF with its own config: %s", data)
	}

	for _, tc := range []struct {
		name, lab string
		o         DaemonOptions
		want      string
	}{
		{"no policy", "cwx", DaemonOptions{}, "no policy file"},
		{"missing policy", "cwx", DaemonOptions{Policy: filepath.Join(dir, "nope.yaml")}, "nope.yaml"},
		{"missing service tags", "cwx", DaemonOptions{Policy: pol, ServiceTags: filepath.Join(dir, "tags.json")}, "serviceTags"},
		{"bad lab name", "CW", DaemonOptions{Policy: pol}, "lab name"},
		{"missing WAF config", "cwx", DaemonOptions{Policy: pol, WAF: true, WAFConfig: filepath.Join(dir, "waf.yaml")}, "daemon wafConfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DaemonConfig(tc.lab, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("DaemonConfig: %v, want an error about %q", err, tc.want)
			}
		})
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run executes the root command with args and returns stdout and the error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestExplainSeed(t *testing.T) {
	const pol = "../../examples/aks-egress.yaml"
	tests := []struct {
		name string
		args []string
		want map[string]any
	}{
		{"ghcr allowed by website", []string{"--src", "10.42.1.10", "--dst", "ghcr.io", "--proto", "tcp", "--port", "443", "--resolve", "ghcr.io=192.0.2.10"},
			map[string]any{"action": "Allow", "kind": "Application", "ruleCollectionGroup": "DefaultApplicationRuleCollectionGroup", "ruleCollection": "aksfwarweb", "rule": "website"}},
		{"example.org default deny", []string{"--src", "10.42.1.10", "--dst", "example.org", "--port", "443", "--resolve", "example.org=192.0.2.14"},
			map[string]any{"action": "Deny", "kind": "", "rule": "", "reason": "no rule matched"}},
		{"ntp by resolved fqdn", []string{"--src", "10.42.1.10", "--dst", "ntp.ubuntu.com", "--proto", "udp", "--port", "123", "--resolve", "ntp.ubuntu.com=192.0.2.13"},
			map[string]any{"action": "Allow", "kind": "Network", "rule": "time"}},
		{"ntp address without the name's answer", []string{"--src", "10.42.1.10", "--dst", "192.0.2.13", "--proto", "udp", "--port", "123", "--resolve", "ntp.ubuntu.com=192.0.2.99"},
			map[string]any{"action": "Deny", "reason": "no rule matched"}},
		{"azure cloud 9000", []string{"--src", "10.42.1.10", "--dst", "198.18.10.5", "--port", "9000"},
			map[string]any{"action": "Allow", "rule": "apitcp"}},
		{"other port denied", []string{"--src", "10.42.1.10", "--dst", "198.18.10.5", "--port", "9001"},
			map[string]any{"action": "Deny"}},
		{"dnat store-front", []string{"--src", "198.51.100.8", "--dst", "203.0.113.32", "--port", "80"},
			map[string]any{"action": "DNAT", "kind": "DNAT", "rule": "inboundrule", "translatedAddress": "10.42.1.100", "translatedPort": float64(80)}},
		{"api authorized", []string{"--src", "198.51.100.7", "--dst", "203.0.113.32", "--port", "443", "--scheme", "none"},
			map[string]any{"action": "DNAT", "ruleCollection": "apiserver", "translatedAddress": "10.42.1.200"}},
		{"api unauthorized: the firewall itself drops it", []string{"--src", "198.51.100.8", "--dst", "203.0.113.32", "--port", "443", "--scheme", "none"},
			map[string]any{"action": "Deny", "reason": "to the firewall itself, where no service accepts it", "from": "outside", "path": "firewall"}},
		{"dnat port from the inside: not translated", []string{"--src", "10.42.1.10", "--dst", "203.0.113.32", "--proto", "udp", "--port", "80", "--from", "inside"},
			map[string]any{"action": "Deny", "kind": "", "reason": "to the firewall itself, where no service accepts it", "from": "inside", "path": "firewall"}},
		{"dnat port, --from outside", []string{"--src", "10.42.1.10", "--dst", "203.0.113.32", "--proto", "udp", "--port", "80", "--from", "outside"},
			map[string]any{"action": "DNAT", "rule": "inboundrule", "from": "outside", "path": "forward"}},
		{"dnat TCP port from the inside: the L7 proxy's (an application rule's port)", []string{"--src", "10.42.1.10", "--dst", "203.0.113.32", "--port", "80", "--from", "inside"},
			map[string]any{"action": "Deny", "kind": "", "reason": "no rule matched", "from": "inside", "path": "proxy"}},
		{"https from the inside goes to the L7 proxy", []string{"--src", "10.42.1.10", "--dst", "ghcr.io", "--port", "443", "--resolve", "ghcr.io=192.0.2.10"},
			map[string]any{"action": "Allow", "from": "inside", "path": "proxy"}},
		{"https from the outside is not proxied", []string{"--src", "198.51.100.8", "--dst", "ghcr.io", "--port", "443", "--resolve", "ghcr.io=192.0.2.10", "--from", "outside"},
			map[string]any{"action": "Deny", "kind": "", "reason": "no rule matched", "from": "outside", "path": "forward"}},
		{"ping the public IP", []string{"--src", "198.51.100.8", "--dst", "203.0.113.32", "--proto", "icmp"},
			map[string]any{"action": "Allow", "path": "firewall", "service": "ICMP", "reason": "service of the firewall"}},
		{"aks tag", []string{"--src", "10.42.1.10", "--dst", "mcr.microsoft.com", "--port", "443", "--resolve", "mcr.microsoft.com=192.0.2.11"},
			map[string]any{"action": "Allow", "ruleCollection": "aksfwar", "rule": "fqdn"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := run(t, append([]string{"explain", "--policy", pol, "--json"}, tt.args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %#v, want %#v (all: %s)", k, got[k], v, out)
				}
			}
		})
	}
}

// TestExplainConfig: with the daemon's config explain knows the firewall's
// addresses and services (and its policy), and answers flows to the
// firewall itself as its input chain does.
func TestExplainConfig(t *testing.T) {
	dir := t.TempDir()
	pol, err := filepath.Abs("../../examples/aks-egress.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "clusterwall.yaml")
	if err := os.WriteFile(cfg, []byte(`policy: `+pol+`
interfaces: {inside: eth1, outside: eth0}
publicIPs: [203.0.113.32]
privateIP: 10.42.2.4
proxy: {explicit: '10.42.2.4:3128'}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want map[string]any
	}{
		{[]string{"--src", "10.42.1.10", "--dst", "10.42.2.4", "--proto", "udp", "--port", "53"},
			map[string]any{"action": "Allow", "path": "firewall", "service": "DNS", "from": "inside"}},
		{[]string{"--src", "10.42.1.10", "--dst", "10.42.2.4", "--port", "3128"},
			map[string]any{"action": "Allow", "path": "firewall", "service": "TCP services to the inside"}},
		{[]string{"--src", "10.42.1.10", "--dst", "10.42.2.4", "--port", "22"},
			map[string]any{"action": "Deny", "path": "firewall", "reason": "to the firewall itself, where no service accepts it"}},
		{[]string{"--src", "198.51.100.9", "--dst", "10.42.2.4", "--proto", "udp", "--port", "53", "--from", "outside"},
			map[string]any{"action": "Deny", "path": "firewall"}},
		{[]string{"--src", "198.51.100.8", "--dst", "203.0.113.32", "--port", "80"},
			map[string]any{"action": "DNAT", "rule": "inboundrule", "translatedAddress": "10.42.1.100"}},
	} {
		out, err := run(t, append([]string{"explain", "--config", cfg, "--json"}, tc.args...)...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, out)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("%v: %s = %#v, want %#v (all: %s)", tc.args, k, got[k], v, out)
			}
		}
	}
	if _, err := run(t, "explain", "--config", filepath.Join(dir, "missing.yaml"), "--src", "10.42.1.10", "--dst", "10.42.2.4", "--port", "22"); err == nil {
		t.Error("a missing config file: no error")
	}
}

// TestExplainTranslatedFQDN: a DNAT rule with translatedFqdn translates to
// the lowest address the name resolves to (what the kernel installs), and
// does not match while the name has none.
func TestExplainTranslatedFQDN(t *testing.T) {
	pol := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(pol, []byte(`ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - name: c
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - {name: web, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [203.0.113.32], destinationPorts: ['80'], translatedFqdn: web.internal.example, translatedPort: '8080'}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "explain", "--policy", pol, "--src", "198.51.100.8", "--dst", "203.0.113.32", "--port", "80", "--json",
		"--resolve", "web.internal.example=10.42.1.12,web.internal.example=10.42.1.11")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got["action"] != "DNAT" || got["translatedAddress"] != "10.42.1.11" || got["translatedFqdn"] != "web.internal.example" {
		t.Errorf("resolved: %s", out)
	}
	out, err = run(t, "explain", "--policy", pol, "--src", "198.51.100.8", "--dst", "203.0.113.32", "--port", "80",
		"--resolve", "web.internal.example=2001:db8::1")
	if err != nil || !strings.Contains(out, "Action:  Deny") || !strings.Contains(out, "to the firewall itself") {
		t.Errorf("no IPv4 address for the name: %v\n%s", err, out)
	}
}

func TestExplainText(t *testing.T) {
	out, err := run(t, "explain", "--policy", "../../examples/aks-egress.yaml", "--src", "10.42.1.10", "--dst", "example.org", "--port", "443", "--resolve", "example.org=192.0.2.14")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Action:  Deny") || !strings.Contains(out, "no rule matched") || !strings.Contains(out, "from the inside") ||
		!strings.Contains(out, "Path:    the L7 proxy") {
		t.Errorf("output:\n%s", out)
	}
	out, err = run(t, "explain", "--policy", "../../examples/aks-egress.yaml", "--src", "10.42.1.10", "--dst", "203.0.113.32", "--proto", "udp", "--port", "80", "--from", "inside")
	if err != nil || !strings.Contains(out, "Path:    to the firewall itself") || !strings.Contains(out, "daemon's defaults") {
		t.Errorf("%v, output:\n%s", err, out)
	}
	out, err = run(t, "explain", "--policy", "../../examples/aks-egress.yaml", "--src", "198.51.100.8", "--dst", "203.0.113.32", "--port", "80")
	if err != nil || !strings.Contains(out, "is a public IP of the firewall: explaining a flow from the outside") || !strings.Contains(out, "Translated: 10.42.1.100:80") {
		t.Errorf("%v, output:\n%s", err, out)
	}
}

func TestExplainBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"--src", "nope", "--dst", "1.2.3.4", "--port", "1"},
		{"--src", "10.0.0.1", "--dst", "1.2.3.4", "--port", "0"},
		{"--src", "10.0.0.1", "--dst", "1.2.3.4", "--port", "1", "--proto", "sctp"},
		{"--src", "10.0.0.1", "--dst", "bad_name!", "--port", "1"},
		{"--src", "10.0.0.1", "--dst", "1.2.3.4", "--port", "1", "--resolve", "x"},
		{"--src", "10.0.0.1", "--dst", "1.2.3.4", "--port", "1", "--from", "sideways"},
		{"--src", "10.0.0.1", "--dst", "1.2.3.4", "--port", "1", "--from", "any"},
	} {
		_, err := run(t, append([]string{"explain", "--policy", "../../examples/aks-egress.yaml"}, args...)...)
		if err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestPolicyValidateCommand(t *testing.T) {
	out, err := run(t, "policy", "validate", "../../examples/aks-egress.yaml")
	if err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("%v %s", err, out)
	}
}

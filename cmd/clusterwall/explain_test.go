package main

import (
	"bytes"
	"encoding/json"
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
		{"api unauthorized", []string{"--src", "198.51.100.8", "--dst", "203.0.113.32", "--port", "443", "--scheme", "none"},
			map[string]any{"action": "Deny", "reason": "no rule matched"}},
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

func TestExplainText(t *testing.T) {
	out, err := run(t, "explain", "--policy", "../../examples/aks-egress.yaml", "--src", "10.42.1.10", "--dst", "example.org", "--port", "443", "--resolve", "example.org=192.0.2.14")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Action:  Deny") || !strings.Contains(out, "no rule matched") {
		t.Errorf("output:\n%s", out)
	}
}

func TestExplainBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"--src", "nope", "--dst", "1.2.3.4", "--port", "1"},
		{"--src", "10.0.0.1", "--dst", "1.2.3.4", "--port", "0"},
		{"--src", "10.0.0.1", "--dst", "1.2.3.4", "--port", "1", "--proto", "sctp"},
		{"--src", "10.0.0.1", "--dst", "bad_name!", "--port", "1"},
		{"--src", "10.0.0.1", "--dst", "1.2.3.4", "--port", "1", "--resolve", "x"},
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

package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestExplainThreatIntel: explain loads the seed policy's threat-intel
// feeds and decides a listed name or address before every rule.
func TestExplainThreatIntel(t *testing.T) {
	const pol = "../../examples/aks-egress.yaml"
	for _, tc := range []struct {
		name string
		args []string
		want map[string]any
	}{
		{"listed name beats an application rule", []string{"--dst", "www.evil.example.net", "--port", "443", "--resolve", "www.evil.example.net=192.0.2.10"},
			map[string]any{"action": "Deny", "reason": "threat intelligence", "threatIntel": "Deny", "threatDescription": "lab-domains: evil.example.net (the lab's malicious host)"}},
		{"listed address beats the network rule time", []string{"--dst", "ntp.ubuntu.com", "--proto", "udp", "--port", "123", "--resolve", "ntp.ubuntu.com=192.0.2.66"},
			map[string]any{"action": "Deny", "rule": "", "threatIntel": "Deny"}},
		{"unlisted: the rules decide", []string{"--dst", "ghcr.io", "--port", "443", "--resolve", "ghcr.io=192.0.2.10"},
			map[string]any{"action": "Allow", "rule": "website", "threatIntel": nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, append([]string{"explain", "--policy", pol, "--src", "10.42.1.10", "--json"}, tc.args...)...)
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
	out, err := run(t, "explain", "--policy", pol, "--src", "10.42.1.10", "--dst", "192.0.2.66", "--port", "443")
	if err != nil || !strings.Contains(out, "Threat intel: Deny (lab-ips: 192.0.2.66") || !strings.Contains(out, "evaluated before every rule") {
		t.Errorf("text output: %v\n%s", err, out)
	}
}

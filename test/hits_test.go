package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// hitsPolicy is flowLogPolicy with a second rule, other, in the same
// collection; the variants below change one rule at a time.
const hitsPolicy = `name: hits
ruleCollectionGroups:
  - name: net
    priority: 200
    ruleCollections:
      - name: web
        kind: Network
        priority: 100
        action: Allow
        rules:
FIRST          - name: http
            protocols: [TCP]
            sourceAddresses: [10.42.1.0/24]
            destinationAddresses: [192.0.2.10]
            destinationPorts: [HTTPPORTS]
          - name: other
            protocols: [TCP]
            sourceAddresses: [10.42.1.0/24]
            destinationAddresses: [192.0.2.10]
            destinationPorts: [OTHERPORTS]
`

func hitsPolicyText(first, httpPorts, otherPorts string) string {
	return strings.NewReplacer("FIRST", first, "HTTPPORTS", httpPorts, "OTHERPORTS", otherPorts).Replace(hitsPolicy)
}

// TestRuleHitsAcrossRealApplies: a rule's hits (GET /v1/rules, read from
// the kernel's counters) add up across applies on the real kernel, however
// the apply treats the rule's counter: kept (another rule's ports
// changed: the daemon reads no counter and carries the running base over),
// deleted and made again (the rule's own ports changed: the apply reads
// the counters it deletes first), moved (a rule inserted before it: its tag
// changes). Each step opens real connections through the firewall and
// requires the total to grow by the flows opened, no fewer (a lost count)
// and no more (a count carried twice); some of them are opened just before
// the apply, after the last read, so that only the kernel's counter holds
// them when the apply runs.
func TestRuleHitsAcrossRealApplies(t *testing.T) {
	t.Parallel()
	f := newFWLab(t, hitsPolicyText("", "'80'", "'8080'"))
	hits := func() uint64 {
		t.Helper()
		code, body, err := f.Admin(context.Background(), http.MethodGet, "/v1/rules")
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /v1/rules: %d %v", code, err)
		}
		var rh struct {
			Rules []struct {
				Rule string `json:"rule"`
				Hits uint64 `json:"hits"`
			} `json:"rules"`
			CountersError string `json:"countersError"`
		}
		if err := json.Unmarshal(body, &rh); err != nil || rh.CountersError != "" {
			t.Fatalf("GET /v1/rules: %v %q: %s", err, rh.CountersError, body)
		}
		for _, r := range rh.Rules {
			if r.Rule == "http" {
				return r.Hits
			}
		}
		t.Fatalf("GET /v1/rules has no rule http: %s", body)
		return 0
	}
	const count = 200
	var lo, hi uint64 // the flows opened so far: distinct source ports, connections
	flows := func() {
		t.Helper()
		ports, _ := openFlows(t, f, count)
		lo += uint64(len(ports))
		hi += count
	}
	open := func(when string) {
		t.Helper()
		flows()
		if h := hits(); h < lo || h > hi {
			t.Fatalf("%s: http has %d hits after %d..%d flows", when, h, lo, hi)
		}
	}
	open("before any reload")
	steps := []struct{ what, text string }{
		{"other's ports changed (http's counter kept)", hitsPolicyText("", "'80'", "'8081'")},
		{"http's own ports changed (its counter made again)", hitsPolicyText("", "'80', '81'", "'8081'")},
		{"a rule inserted before http (its tag moves)", hitsPolicyText(`          - name: first
            protocols: [UDP]
            sourceAddresses: [10.42.1.0/24]
            destinationAddresses: [192.0.2.10]
            destinationPorts: ['53']
`, "'80', '81'", "'8081'")},
		{"the same text again (nothing changes)", ""},
		{"back to the first policy", hitsPolicyText("", "'80'", "'8080'")},
	}
	for _, s := range steps {
		// Flows no read has seen yet: only the kernel's counter holds
		// them when the apply runs.
		flows()
		f.reloads(t, 1, func(int) (reloadHow, string) {
			if s.text == "" {
				return reloadSIGHUP, ""
			}
			return reloadFile, s.text
		}, 0)
		open(s.what)
	}
}

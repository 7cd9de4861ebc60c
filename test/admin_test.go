package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// adminPolicy allows TCP 80 to ghcr.io's v4 address; adminPolicyV2 also
// allows example.com's.
const adminPolicy = `# e2e admin API policy
name: e2e-admin
ruleCollectionGroups:
  - name: net
    priority: 200
    ruleCollections:
      - name: egress
        kind: Network
        priority: 200
        action: Allow
        rules:
          - name: web
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [GHCR]
            destinationPorts: ['80']
EXTRA`

const adminExtraRule = `          - name: example-web # added through POST /v1/apply
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [EXAMPLE]
            destinationPorts: ['80']
`

func adminPolicyText(extra string) string {
	p := strings.Replace(adminPolicy, "EXTRA", extra, 1)
	return strings.NewReplacer("GHCR", ghcr4.String(), "EXAMPLE", example4.String()).Replace(p)
}

const e2eToken = "e2e-admin-token-0123456789abcdef"

// adminLab is a lab whose daemon requires a bearer token (admin.tokenFile).
type adminLab struct {
	*fwLab
	tokenFile string
}

func newAdminLab(t *testing.T) *adminLab {
	t.Helper()
	f := newFWLab(t, adminPolicyText(""))
	return &adminLab{fwLab: f, tokenFile: f.enableTokens(t, e2eToken+" e2e\n")}
}

// api sends one admin request from inside fw; token "" sends none.
func (a *adminLab) api(t *testing.T, method, path, token string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+lab.DaemonAdmin+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.AdminClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

type ruleHits struct {
	Generation uint64 `json:"generation"`
	Rules      []struct {
		Group      string `json:"ruleCollectionGroup"`
		Collection string `json:"ruleCollection"`
		Rule       string `json:"rule"`
		Kind       string `json:"kind"`
		Action     string `json:"action"`
		Priority   int    `json:"priority"`
		Hits       uint64 `json:"hits"`
		LastHit    string `json:"lastHit"`
	} `json:"rules"`
	DefaultDenyHits uint64 `json:"defaultDenyHits"`
	CountersError   string `json:"countersError"`
}

func (a *adminLab) rules(t *testing.T) ruleHits {
	t.Helper()
	code, body := a.api(t, "GET", "/v1/rules", e2eToken, nil)
	var h ruleHits
	if err := json.Unmarshal(body, &h); code != 200 || err != nil {
		t.Fatalf("GET /v1/rules = %d %v: %s", code, err, body)
	}
	if h.CountersError != "" {
		t.Fatalf("GET /v1/rules: %s", h.CountersError)
	}
	return h
}

func (h ruleHits) hits(rule string) (uint64, string, bool) {
	for _, r := range h.Rules {
		if r.Rule == rule {
			return r.Hits, r.LastHit, true
		}
	}
	return 0, "", false
}

// TestAdminAPIInLab drives the admin API of a real daemon in a lab: bearer
// token required, rule hits from the kernel's counters and decision
// metrics after real flows, `clusterwall apply` of a good policy (new
// generation, new flows allowed, the file persisted) and of a bad one
// (422 with line and column, the CLI exits 1, nothing changes).
func TestAdminAPIInLab(t *testing.T) {
	t.Parallel()
	a := newAdminLab(t)
	web, example := ap(ghcr4, 80), ap(example4, 80)

	// Authentication: probes open, the API and metrics need the token.
	for _, tt := range []struct {
		path, token string
		want        int
	}{
		{"/healthz", "", 200}, {"/readyz", "", 200}, {"/v1/status", "", 401}, {"/metrics", "", 401},
		{"/v1/status", "not-the-token-0123456789abcdef", 401}, {"/v1/status", e2eToken, 200},
	} {
		if code, body := a.api(t, "GET", tt.path, tt.token, nil); code != tt.want {
			t.Errorf("GET %s (token %q) = %d, want %d: %s", tt.path, tt.token, code, tt.want, body)
		}
	}

	// Real flows: web's hits (the kernel rule's counter) grow by the new
	// connections made.
	h0 := a.rules(t)
	n0, _, ok := h0.hits("web")
	if !ok {
		t.Fatalf("no rule web in %+v", h0)
	}
	const conns = 5
	for i := 0; i < conns; i++ {
		if o, _, err := a.tcpLine(lab.HostNode, netip.Addr{}, web); err != nil || o != passed {
			t.Fatalf("flow to %s: %v %v", web, o, err)
		}
	}
	if o, _, _ := a.tcpLine(lab.HostNode, netip.Addr{}, example); o == passed {
		t.Fatalf("%s passed before the apply", example)
	}
	h1 := a.rules(t)
	n1, last, _ := h1.hits("web")
	if n1-n0 < conns || n1-n0 > 2*conns {
		t.Errorf("web hits %d -> %d after %d connections", n0, n1, conns)
	}
	if _, err := time.Parse(time.RFC3339, last); err != nil {
		t.Errorf("web lastHit %q: %v", last, err)
	}
	if h1.DefaultDenyHits <= h0.DefaultDenyHits {
		t.Errorf("default deny hits %d -> %d after a denied flow", h0.DefaultDenyHits, h1.DefaultDenyHits)
	}

	// Metrics: the decision counter of web (from the kernel's log) and
	// every metric the Grafana dashboard queries.
	var scrape string
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := a.api(t, "GET", "/metrics", e2eToken, nil)
		scrape = string(body)
		if code == 200 && strings.Contains(scrape, `clusterwall_decisions_total{action="Allow",category="AZFWNetworkRule",rule="web",rule_collection="egress",rule_collection_group="net"}`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no decision counter for web in the scrape (%d):\n%s", code, grepLines(scrape, "clusterwall_decisions"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !regexp.MustCompile(`(?m)^clusterwall_rule_hits_total\{action="Allow",kind="Network",rule="web",rule_collection="egress",rule_collection_group="net"\} [1-9]`).MatchString(scrape) {
		t.Errorf("rule hits of web not in the scrape:\n%s", grepLines(scrape, "clusterwall_rule_hits"))
	}
	for _, m := range dashboardMetrics(t) {
		if m == "clusterwall_waf_blocks_total" {
			continue // by rule: series exist once the WAF blocked (internal/daemon TestMetricsScrape)
		}
		if !regexp.MustCompile(`(?m)^` + m + `[{ ]`).MatchString(scrape) {
			t.Errorf("the Grafana dashboard queries %s; the daemon's scrape lacks it", m)
		}
	}

	// clusterwall apply of a good policy: a new generation, example.com
	// allowed, the file persisted as sent.
	gen := a.status(t).Generation
	good := filepath.Join(a.dir, "v2.yaml")
	v2 := adminPolicyText(adminExtraRule)
	os.WriteFile(good, []byte(v2), 0o644)
	out, err := a.cw(t, lab.HostFW, "apply", good, "--token-file", a.tokenFile)
	if err != nil || !strings.Contains(out, "generation") {
		t.Fatalf("clusterwall apply: %v\n%s", err, out)
	}
	if st := a.status(t); st.Generation != gen+1 || st.LastReload != "ok" {
		t.Errorf("after apply: %+v (generation was %d)", st, gen)
	}
	if o, _, err := a.tcpLine(lab.HostNode, netip.Addr{}, example); err != nil || o != passed {
		t.Errorf("%s after the apply: %v %v", example, o, err)
	}
	if data, _ := os.ReadFile(a.policy); string(data) != v2 {
		t.Errorf("policy file after apply:\n%s", data)
	}
	time.Sleep(500 * time.Millisecond) // the file watcher's debounce: it must not reload the same bytes
	if st := a.status(t); st.Generation != gen+1 {
		t.Errorf("the persisted file was applied again: generation %d", st.Generation)
	}
	// web's count survives the apply (its kernel counter started afresh).
	if n2, _, _ := a.rules(t).hits("web"); n2 < n1 {
		t.Errorf("web hits fell from %d to %d across the apply", n1, n2)
	}

	// A bad policy: exit 1, FILE:LINE:COL on the sent file, nothing changes.
	bad := filepath.Join(a.dir, "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(v2, "['80']\n", "['80', '70000']\n", 1)), 0o644)
	out, err = a.cw(t, lab.HostFW, "apply", bad, "--token-file", a.tokenFile)
	if err == nil || !strings.Contains(err.Error(), bad+":16:38: network rule \"web\": port 70000 out of range") {
		t.Errorf("clusterwall apply of a bad policy: %v\n%s", err, out)
	}
	code, body := a.api(t, "POST", "/v1/apply", e2eToken, []byte(strings.Replace(v2, "['80']\n", "['80', '70000']\n", 1)))
	var res struct {
		Errors []struct {
			Line, Column int
			Field        string
		}
	}
	json.Unmarshal(body, &res)
	if code != http.StatusUnprocessableEntity || len(res.Errors) != 1 || res.Errors[0].Line != 16 || res.Errors[0].Column != 38 || res.Errors[0].Field == "" {
		t.Errorf("POST /v1/apply of a bad policy = %d: %s", code, body)
	}
	if st := a.status(t); st.Generation != gen+1 {
		t.Errorf("a bad apply changed the generation: %+v", st)
	}
	if o, _, err := a.tcpLine(lab.HostNode, netip.Addr{}, example); err != nil || o != passed {
		t.Errorf("%s after the rejected apply: %v %v", example, o, err)
	}
	if data, _ := os.ReadFile(a.policy); string(data) != v2 {
		t.Errorf("a rejected apply changed the policy file:\n%s", data)
	}
	// Without the token the CLI is refused.
	if out, err := a.cw(t, lab.HostFW, "apply", good); err == nil || !strings.Contains(err.Error(), "bearer token") {
		t.Errorf("apply without a token: %v\n%s", err, out)
	}
	out, err = a.cw(t, lab.HostFW, "status", "--token-file", a.tokenFile)
	if err != nil || !strings.Contains(out, "ready        yes") || !strings.Contains(out, "e2e-admin") {
		t.Errorf("clusterwall status: %v\n%s", err, out)
	}
	// Each component's health, as docs/cli.md promises.
	for _, re := range []string{`(?m)^  data plane +up +generation \d+, policy e2e-admin`, `(?m)^  kernel decision log +up +NFLOG group 100`,
		`(?m)^  DNS proxy +up +listening on 10\.42\.2\.4:53; upstreams 1/1 healthy`, `(?m)^  L7 proxy +up +listening on \[::\]:15001; \d+ connections open`,
		`(?m)^  WAF +off `} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("clusterwall status lacks %s:\n%s", re, out)
		}
	}
	// The daemon's log audits the changes.
	logData, _ := os.ReadFile(a.LogFile(lab.DaemonProc))
	if !bytes.Contains(logData, []byte(`"who":"token:e2e addr:127.0.0.1:`)) || !bytes.Contains(logData, []byte(`"action":"apply","result":"rejected"`)) {
		t.Errorf("no audit lines in the daemon's log:\n%s", grepLines(string(logData), "admin API change"))
	}
}

// status reads /v1/status with the token.
func (a *adminLab) status(t *testing.T) daemonStatus {
	t.Helper()
	code, body := a.api(t, "GET", "/v1/status", e2eToken, nil)
	var st daemonStatus
	if err := json.Unmarshal(body, &st); code != 200 || err != nil {
		t.Fatalf("GET /v1/status = %d %v: %s", code, err, body)
	}
	return st
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// dashboardMetrics returns the clusterwall_* metrics the Grafana dashboard
// queries.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", "clusterwall.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	var out []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range regexp.MustCompile(`clusterwall_[a-z_]+`).FindAllString(tg.Expr, -1) {
				if !set[m] {
					set[m] = true
					out = append(out, m)
				}
			}
		}
	}
	return out
}

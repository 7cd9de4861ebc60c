package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

const testToken = "s3cret-token-for-tests-0123456789"

// newAuthDaemon is newTestDaemon with a token file (two tokens, one
// named) and a log the test can read.
func newAuthDaemon(t *testing.T) (*Daemon, *fakeDataplane, string, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	os.WriteFile(filepath.Join(dir, "tokens"), []byte("# admin tokens\n"+testToken+" ci\nanother-token-0123456789abcdef\n"), 0o600)
	conf := writeDaemonConfig(t, dir, "admin: {tokenFile: tokens}\n")
	os.Chmod(pol, 0o640)
	logs := &syncBuffer{}
	fd := &fakeDataplane{}
	d := loadTestDaemon(t, conf, fd, slog.New(slog.NewJSONHandler(logs, nil)), nil)
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	return d, fd, pol, logs
}

func do(t *testing.T, method, url, token, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func TestAdminAuth(t *testing.T) {
	d, _, _, logs := newAuthDaemon(t)
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	for _, tt := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 503}, // open, and not ready: the proxy is not started
		{"GET", "/v1/status", "", 401},
		{"GET", "/v1/status", "wrong-token-0123456789abcdef", 401},
		{"GET", "/v1/status", testToken + "x", 401},
		{"GET", "/v1/status", testToken, 200},
		{"GET", "/v1/status", "another-token-0123456789abcdef", 200},
		{"GET", "/metrics", "", 401},
		{"GET", "/metrics", testToken, 200},
		{"GET", "/v1/rules", "", 401},
		{"GET", "/v1/policy", "", 401},
		{"POST", "/v1/reload", "", 401},
		{"POST", "/v1/apply", "", 401},
		{"POST", "/v1/validate", "", 401},
		{"POST", "/v1/reload", testToken, 200},
	} {
		if code, body := do(t, tt.method, srv.URL+tt.path, tt.token, ""); code != tt.want {
			t.Errorf("%s %s (token %q) = %d, want %d: %s", tt.method, tt.path, tt.token, code, tt.want, body)
		}
	}
	// "Basic" with the right secret is still refused.
	req, _ := http.NewRequest("GET", srv.URL+"/v1/status", nil)
	req.Header.Set("Authorization", "Basic "+testToken)
	if resp, _ := http.DefaultClient.Do(req); resp.StatusCode != 401 {
		t.Errorf("Basic auth = %d", resp.StatusCode)
	}
	// The reload is audited with the token's name.
	if !strings.Contains(logs.String(), `"who":"token:ci addr:127.0.0.1:`) || !strings.Contains(logs.String(), `"action":"reload","result":"ok"`) {
		t.Errorf("no audit line for the reload:\n%s", logs.String())
	}
}

func TestTokenFileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ tokens, want string }{
		{"", "no token"},
		{"short\n", "tokens:1: token shorter than 16 characters"},
		{"# c\n0123456789abcdef name extra\n", "tokens:2: want \"TOKEN [NAME]\""},
	} {
		os.WriteFile(filepath.Join(dir, "tokens"), []byte(tt.tokens), 0o600)
		os.WriteFile(filepath.Join(dir, "c.yaml"), []byte("policy: p.yaml\ninterfaces: {inside: a, outside: b}\npublicIPs: [1.2.3.4]\nadmin: {tokenFile: tokens}\n"), 0o644)
		_, err := LoadConfig(filepath.Join(dir, "c.yaml"))
		if err == nil || !strings.Contains(err.Error(), "admin.tokenFile") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want %q", tt.tokens, err, tt.want)
		}
	}
}

const appliedPolicy = `# the new policy: comments survive the apply
name: t2
ruleCollectionGroups:
  - name: g
    priority: 200
    ruleCollections:
      - name: c
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: web8443 # moved to 8443
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.10]
            destinationPorts: ['8443']
`

func TestAdminApply(t *testing.T) {
	d, fd, pol, logs := newAuthDaemon(t)
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	flow := func(port uint16) match.Flow {
		return match.Flow{Src: netip.MustParseAddr("10.42.1.10"), Dst: netip.MustParseAddr("192.0.2.10"), Proto: policy.ProtoTCP, Port: port}
	}
	decide := func(port uint16) policy.Action { _, m := d.Current(); return m.Decide(flow(port)).Action }

	// A bad policy: 422 with file, line, column and field; nothing changes.
	bad := strings.Replace(appliedPolicy, "['8443']", "['70000']", 1)
	code, body := do(t, "POST", srv.URL+"/v1/apply", testToken, bad)
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("bad apply = %d: %s", code, body)
	}
	var res struct {
		Errors []APIError `json:"errors"`
	}
	if err := json.Unmarshal(body, &res); err != nil || len(res.Errors) != 1 {
		t.Fatalf("bad apply body: %v: %s", err, body)
	}
	if e := res.Errors[0]; e.File != pol || e.Line != 16 || e.Column != 32 || !strings.Contains(e.Message, "port 70000 out of range") ||
		!strings.Contains(e.Field, "destinationPorts") || !strings.HasPrefix(e.Text, pol+":16:32: ") {
		t.Errorf("error = %+v", e)
	}
	if st := d.Status(); st.Generation != 1 || len(fd.applied) != 1 || decide(443) != policy.ActionAllow {
		t.Fatalf("bad apply changed the running policy: %+v", st)
	}
	if data, _ := os.ReadFile(pol); string(data) != testPolicy {
		t.Fatalf("bad apply changed the policy file:\n%s", data)
	}

	// A good one: generation 2, new decisions, persisted with its comments.
	code, body = do(t, "POST", srv.URL+"/v1/apply", testToken, appliedPolicy)
	var applied struct {
		Generation int         `json:"generation"`
		Apply      *ApplyTimes `json:"apply"`
	}
	if err := json.Unmarshal(body, &applied); code != 200 || err != nil || applied.Generation != 2 || applied.Apply == nil ||
		applied.Apply.TotalMs <= 0 || applied.Apply.TotalMs < applied.Apply.LoadMs+applied.Apply.ValidateMs+applied.Apply.CompileMs+applied.Apply.KernelMs-0.01 {
		t.Fatalf("apply = %d: %s", code, body)
	}
	if decide(443) != policy.ActionDeny || decide(8443) != policy.ActionAllow {
		t.Errorf("new policy not in force")
	}
	data, _ := os.ReadFile(pol)
	if string(data) != appliedPolicy {
		t.Errorf("policy file after apply:\n%s", data)
	}
	if fi, _ := os.Stat(pol); fi.Mode().Perm() != 0o640 {
		t.Errorf("policy file mode %v, want the old 0640", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(pol), ".policy.yaml.apply-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	// The watcher's reload of the same bytes changes nothing.
	if err := d.Reload(reasonFileChanged); err != nil || d.Status().Generation != 2 {
		t.Errorf("reload of the persisted file: %v, generation %d", err, d.Status().Generation)
	}
	// GET /v1/policy returns it as applied, or as JSON.
	code, body = do(t, "GET", srv.URL+"/v1/policy", testToken, "")
	if code != 200 || string(body) != appliedPolicy {
		t.Errorf("GET /v1/policy = %d:\n%s", code, body)
	}
	code, body = do(t, "GET", srv.URL+"/v1/policy?format=json", testToken, "")
	var pj struct {
		Generation uint64         `json:"generation"`
		Policy     map[string]any `json:"policy"`
	}
	if err := json.Unmarshal(body, &pj); code != 200 || err != nil || pj.Generation != 2 || pj.Policy["name"] != "t2" {
		t.Errorf("GET /v1/policy?format=json = %d %v: %s", code, err, body)
	}
	// Audited: who, what, result.
	lines := logs.String()
	if !strings.Contains(lines, `"who":"token:ci addr:127.0.0.1:`) || !strings.Contains(lines, `"action":"apply","result":"rejected"`) ||
		!strings.Contains(lines, `"action":"apply","result":"ok","generation":2`) {
		t.Errorf("audit lines missing:\n%s", lines)
	}
	// A kernel failure: 422, the file and the running policy stay.
	fd.fail = os.ErrPermission
	code, _ = do(t, "POST", srv.URL+"/v1/apply", testToken, testPolicy)
	fd.fail = nil
	if data, _ := os.ReadFile(pol); code != http.StatusUnprocessableEntity || string(data) != appliedPolicy || d.Status().Generation != 2 {
		t.Errorf("apply with a failing kernel = %d, generation %d, file:\n%s", code, d.Status().Generation, data)
	}
}

func TestAdminMTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := makeCert(t, dir, "ca", nil, nil)
	makeCert(t, dir, "server", ca, caKey)
	makeCert(t, dir, "client", ca, caKey)
	conf := writeDaemonConfig(t, dir, "admin: {listen: '127.0.0.1:0', tls: {cert: server.pem, key: server.key, clientCA: ca.pem}}\n")
	logs := &syncBuffer{}
	d := loadTestDaemon(t, conf, &fakeDataplane{}, slog.New(slog.NewJSONHandler(logs, nil)), nil)
	d.Reload("start")
	ln, err := d.AdminListener()
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: d.AdminHandler(), ErrorLog: nil}
	go srv.Serve(ln)
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	url := "https://" + ln.Addr().String() + "/v1/reload"
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}}
	}
	if _, err := client().Post(url, "", nil); err == nil {
		t.Error("a client without a certificate got an answer")
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client(cert).Post(url, "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("with a client certificate: %v %v", err, resp)
	}
	if !strings.Contains(logs.String(), `"who":"cn:client addr:127.0.0.1:`) {
		t.Errorf("audit line without the client's CN:\n%s", logs.String())
	}
}

// makeCert writes NAME.pem and NAME.key: a CA when parent is nil, else a
// certificate for 127.0.0.1 signed by parent.
func makeCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	} else {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// countingDataplane is fakeDataplane with kernel counters the test sets.
// An apply starts every counter afresh (all its rules are new), or, with
// keep, keeps them all (the rules were kept: nft.NetlinkRunner applies
// only what changed).
type countingDataplane struct {
	fakeDataplane
	mu       sync.Mutex
	counters []nft.RuleCounter
	keep     bool
}

func (c *countingDataplane) Apply(p *policy.Policy, m *match.Matcher) (LogIndex, error) {
	x, err := c.fakeDataplane.Apply(p, m)
	if err == nil {
		c.mu.Lock()
		if !c.keep {
			c.counters = nil
		}
		c.mu.Unlock()
	}
	return x, err
}

func (c *countingDataplane) Counters() ([]nft.RuleCounter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]nft.RuleCounter(nil), c.counters...), nil
}

// knowingDataplane is countingDataplane telling which counters an apply
// kept (as NFTDataplane.KeptCounter does): the daemon then takes the
// counters after an apply from its read before it, without a second read.
type knowingDataplane struct{ countingDataplane }

func (c *knowingDataplane) KeptCounter(nft.LogTag) bool { return c.keep }

func (c *countingDataplane) set(cs ...nft.RuleCounter) {
	c.mu.Lock()
	c.counters = cs
	c.mu.Unlock()
}

// TestRuleHitsAcrossApplies: hits come from the kernel's counters, survive
// an apply (the kernel's start at zero with the new rules), and proxy
// decisions count for application rules.
func TestRuleHitsAcrossApplies(t *testing.T) {
	t.Run("read after", func(t *testing.T) { testRuleHitsAcrossApplies(t, false) })
	t.Run("kept known", func(t *testing.T) { testRuleHitsAcrossApplies(t, true) })
}

func testRuleHitsAcrossApplies(t *testing.T, knowing bool) {
	d, _, pol := newTestDaemon(t)
	kd := &knowingDataplane{}
	cd := &kd.countingDataplane
	d.dp = cd
	if knowing {
		d.dp = kd
	}
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	cd.set(nft.RuleCounter{Tag: "cw:A:0", Packets: 5}, nft.RuleCounter{Tag: "cw:D:default", Packets: 7})
	h := d.RuleHits()
	if h.Generation != 1 || len(h.Rules) != 1 || h.Rules[0].Hits != 5 || h.Rules[0].LastHit == "" || h.DefaultDenyHits != 7 {
		t.Fatalf("hits = %+v", h)
	}
	if r := h.Rules[0]; r.RuleCollectionGroup != "g" || r.RuleCollection != "c" || r.Rule != "web" || r.Kind != "Network" || r.Action != "Allow" || r.Priority != 100 {
		t.Errorf("rule = %+v", r)
	}
	// The kernel counted 2 more before the apply; the new rules start at 0.
	cd.set(nft.RuleCounter{Tag: "cw:A:0", Packets: 7})
	withApp := testPolicy + `      - name: apps
        kind: Application
        priority: 300
        action: Allow
        rules:
          - name: gh
            protocols: ['Https:443']
            sourceAddresses: ['*']
            targetFqdns: [github.com]
`
	os.WriteFile(pol, []byte(withApp), 0o644)
	if err := d.Reload("test"); err != nil {
		t.Fatal(err)
	}
	cd.set(nft.RuleCounter{Tag: "cw:A:0", Packets: 1})
	d.hits.observe(&telemetry.Record{Time: time.Now(), Category: telemetry.CategoryApplicationRule, Source: "proxy",
		RuleCollectionGroup: "g", RuleCollection: "apps", Rule: "gh", Action: "Allow"})
	h = d.RuleHits()
	got := map[string]uint64{}
	for _, r := range h.Rules {
		got[r.Rule] = r.Hits
	}
	if h.Generation != 2 || got["web"] != 8 || got["gh"] != 1 {
		t.Errorf("after the apply: generation %d, hits %v (want web 8, gh 1)", h.Generation, got)
	}
}

// TestRuleHitsKeptCounters: an apply that keeps a rule's kernel counter
// (its chains did not change) neither loses nor double-counts its hits.
func TestRuleHitsKeptCounters(t *testing.T) {
	t.Run("read after", func(t *testing.T) { testRuleHitsKeptCounters(t, false) })
	t.Run("kept known", func(t *testing.T) { testRuleHitsKeptCounters(t, true) })
}

func testRuleHitsKeptCounters(t *testing.T, knowing bool) {
	d, _, pol := newTestDaemon(t)
	kd := &knowingDataplane{countingDataplane{keep: true}}
	cd := &kd.countingDataplane
	d.dp = cd
	if knowing {
		d.dp = kd
	}
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	cd.set(nft.RuleCounter{Tag: "cw:A:0", Packets: 5})
	if h := d.RuleHits(); len(h.Rules) != 1 || h.Rules[0].Hits != 5 {
		t.Fatalf("hits = %+v", h)
	}
	for i := range 3 {
		os.WriteFile(pol, []byte(testPolicy+fmt.Sprintf("# edit %d\n", i)), 0o644)
		if err := d.Reload("test"); err != nil {
			t.Fatal(err)
		}
	}
	cd.set(nft.RuleCounter{Tag: "cw:A:0", Packets: 9}) // 4 more on the same counter
	if h := d.RuleHits(); len(h.Rules) != 1 || h.Rules[0].Hits != 9 {
		t.Fatalf("after applies that kept the counter: hits = %+v, want 9", h)
	}
}

// TestMetricsScrape: the decision counters, histograms, WAF blocks and the
// daemon's gauges appear in a scrape; every metric the Grafana dashboard
// queries is among them. The kernel's decisions count from its counters
// (every flow), not from its log messages (which the kernel limits): a
// rule's counter of 7 and 3 of its flows logged count 7, plus what the L7
// proxy decided by the rule.
func TestMetricsScrape(t *testing.T) {
	dir := t.TempDir()
	conf := writeDaemonConfig(t, dir, "")
	dlog := telemetry.NewDecisionLog(io.Discard, telemetry.Options{Rate: 1, Burst: 1})
	defer dlog.Close()
	cd := &countingDataplane{}
	d := loadTestDaemon(t, conf, cd, nil, dlog)
	d.Reload("start")
	cd.set(nft.RuleCounter{Tag: "cw:A:0:g1", Packets: 7}, nft.RuleCounter{Tag: "cw:D:default:g1", Packets: 4},
		nft.RuleCounter{Tag: "cw:D:input:g1", Packets: 1}, nft.RuleCounter{Tag: "cw:D:threat:g1", Packets: 2})
	now := time.Now()
	for i := 0; i < 3; i++ { // beyond the log's rate limit: metrics still count
		dlog.Log(telemetry.Record{Time: now, Category: telemetry.CategoryNetworkRule, Source: "kernel", Action: "Allow", RuleCollectionGroup: "g", RuleCollection: "c", Rule: "web"})
	}
	dlog.Log(telemetry.Record{Time: now, Category: telemetry.CategoryNetworkRule, Source: "kernel", Action: "Deny", ActionReason: "Default Action: no rule matched"})
	dlog.Log(telemetry.Record{Time: now, Category: telemetry.CategoryNetworkRule, Source: "proxy", Action: "Allow", RuleCollectionGroup: "g", RuleCollection: "c", Rule: "web"})
	dlog.Log(telemetry.Record{Time: now, Category: telemetry.CategoryDNSQuery, Source: "dns", QueryName: "a.example.", RequestDurationSecs: 0.002})
	dlog.Log(telemetry.Record{Time: now, Category: telemetry.CategoryWAF, Source: "waf", Action: "Blocked", RuleIds: []int{942100, 949110}})
	dlog.Log(telemetry.Record{Time: now, Category: telemetry.CategoryWAF, Source: "waf", Action: "Detected", RuleIds: []int{920350}})
	d.metrics.proxyObserve(true, 3*time.Millisecond)
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	_, body := do(t, "GET", srv.URL+"/metrics", "", "")
	scrape := string(body)
	for _, want := range []string{
		`clusterwall_decisions_total{action="Allow",category="AZFWNetworkRule",rule="web",rule_collection="c",rule_collection_group="g"} 8`,
		`clusterwall_decisions_total{action="Deny",category="AZFWNetworkRule",rule="",rule_collection="",rule_collection_group=""} 5`,
		`clusterwall_decisions_total{action="Deny",category="AZFWThreatIntel",rule="",rule_collection="",rule_collection_group=""} 2`,
		`clusterwall_waf_blocks_total{rule="942100"} 1`,
		`clusterwall_waf_blocked_requests_total 1`,
		`clusterwall_dns_request_duration_seconds_count 1`,
		`clusterwall_proxy_decision_duration_seconds_count{action="Allow"} 1`,
		`clusterwall_policy_generation 1`,
		`clusterwall_policy_last_reload_success 1`,
		`clusterwall_policy_reloads_total{result="ok"} 1`,
		`clusterwall_rule_hits_total{action="Allow",kind="Network",rule="web",rule_collection="c",rule_collection_group="g"} 8`,
		`clusterwall_log_lines_rate_limited_total 7`, // of 8 records, burst 1
		`clusterwall_ready 0`,                        // not Run: the proxy does not listen
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if strings.Contains(scrape, `rule="920350"`) {
		t.Error("a WAF detection counted as a block")
	}
	missing := dashboardMetricsMissing(t, scrape)
	if len(missing) > 0 {
		t.Errorf("the Grafana dashboard queries metrics the daemon does not export: %v", missing)
	}
}

// dashboardMetricsMissing returns the metric names the Grafana dashboard
// queries that a scrape does not have.
func dashboardMetricsMissing(t *testing.T, scrape string) []string {
	t.Helper()
	names := dashboardMetrics(t)
	have := map[string]bool{}
	for _, line := range strings.Split(scrape, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		n := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			n = line[:i]
		}
		have[n] = true
	}
	var missing []string
	for _, n := range names {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	return missing
}

// dashboardMetrics returns every clusterwall_* metric name the Grafana
// dashboard's queries use.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../../deploy/grafana/clusterwall.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("deploy/grafana/clusterwall.json: %v", err)
	}
	re := regexp.MustCompile(`clusterwall_[a-z_]+`)
	set := map[string]bool{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range re.FindAllString(tg.Expr, -1) {
				set[n] = true
			}
		}
	}
	if len(set) < 10 {
		t.Fatalf("the dashboard queries only %d clusterwall metrics", len(set))
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// TestOpenAPICoversRoutes: every route registered on the admin mux (in
// any file of this package) is in docs/openapi.yaml with its method, and
// every path there is registered.
func TestOpenAPICoversRoutes(t *testing.T) {
	routes := registeredRoutes(t)
	data, err := os.ReadFile("../../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		OpenAPI string                               `yaml:"openapi"`
		Paths   map[string]map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(data, &spec); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(spec.OpenAPI, "3.") {
		t.Errorf("openapi: %q, want 3.x", spec.OpenAPI)
	}
	documented := map[string]bool{}
	for path, ops := range spec.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	registered := map[string]bool{}
	for _, r := range routes {
		method, path, _ := strings.Cut(r, " ")
		if path == "/{$}" || strings.HasPrefix(path, "/ui/") {
			continue // the dashboard's pages (docs/dashboard.md), not the API
		}
		path = strings.TrimSuffix(path, "{$}")
		registered[method+" "+path] = true
		if !documented[method+" "+path] {
			t.Errorf("route %s %s is not in docs/openapi.yaml", method, path)
		}
	}
	for op := range documented {
		if !registered[op] {
			t.Errorf("docs/openapi.yaml documents %s, which the daemon does not serve", op)
		}
	}
	if len(registered) < 9 {
		t.Errorf("found only %d routes: %v", len(registered), routes)
	}
}

// registeredRoutes finds the patterns of every mux.Handle/HandleFunc call
// with a literal pattern in this package's non-test files.
func registeredRoutes(t *testing.T) []string {
	t.Helper()
	fset := gotoken.NewFileSet()
	files, _ := filepath.Glob("*.go")
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != gotoken.STRING {
				return true
			}
			s, _ := strconv.Unquote(lit.Value)
			if strings.Contains(s, " /") {
				out = append(out, s)
			}
			return true
		})
	}
	return out
}

// TestDeployConfig: the example config make install ships loads (with the
// systemd credential and the policy pointed at test files).
func TestDeployConfig(t *testing.T) {
	data, err := os.ReadFile("../../deploy/clusterwall.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tokens"), []byte(testToken+"\n"), 0o600)
	abs, _ := filepath.Abs("../../examples/aks-egress.yaml")
	text := strings.NewReplacer("/run/credentials/clusterwall.service/admin-token", filepath.Join(dir, "tokens"),
		"/var/lib/clusterwall/policy.yaml", abs).Replace(string(data))
	os.WriteFile(filepath.Join(dir, "clusterwall.yaml"), []byte(text), 0o644)
	cfg, err := LoadConfig(filepath.Join(dir, "clusterwall.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.TokenFile == "" || cfg.DNS.Listen != "10.240.0.4:53" {
		t.Errorf("config: %+v", cfg)
	}
	if _, err := policy.LoadFile(cfg.Policy, cfg.PolicyOptions()); err != nil {
		t.Error(err)
	}
}

// TestRuleHitsPrunedOnApply: an apply forgets the counts of the rules it
// removed (the tracker's maps hold the running policy's rules only), and
// keeps those of the rules it kept.
func TestRuleHitsPrunedOnApply(t *testing.T) {
	d, _, pol := newTestDaemon(t)
	cd := &countingDataplane{}
	d.dp = cd
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	observe := func(rule string) {
		d.hits.observe(&telemetry.Record{Time: time.Now(), Category: telemetry.CategoryNetworkRule, Source: "proxy",
			RuleCollectionGroup: "g", RuleCollection: "c", Rule: rule, Action: "Allow"})
	}
	cd.set(nft.RuleCounter{Tag: "cw:A:0", Packets: 3})
	observe("web")
	// 50 applies, each renaming a second rule: without pruning the maps
	// would hold all 50 names.
	for i := range 50 {
		extra := fmt.Sprintf(`          - name: r%d
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.20]
            destinationPorts: ['%d']
`, i, 1000+i)
		os.WriteFile(pol, []byte(testPolicy+extra), 0o644)
		if err := d.Reload("test"); err != nil {
			t.Fatal(err)
		}
		observe(fmt.Sprintf("r%d", i))
		cd.set(nft.RuleCounter{Tag: "cw:A:1", Packets: 1})
	}
	keys := map[hitKey]bool{}
	d.hits.lockSettled() // the last apply's prune done (settleRuleHits)
	for _, m := range []map[hitKey]uint64{d.hits.base, d.hits.observed, d.hits.folded, d.hits.seen} {
		for k := range m {
			keys[k] = true
		}
	}
	for k := range d.hits.last {
		keys[k] = true
	}
	d.hits.mu.Unlock()
	for k := range keys {
		if k.rule != "web" && k.rule != "r49" && k != keyDefaultDeny && k != keyInputDrop {
			t.Errorf("the hit tracker still holds removed rule %+v", k)
		}
	}
	got := map[string]uint64{}
	for _, r := range d.RuleHits().Rules {
		got[r.Rule] = r.Hits
	}
	if got["web"] != 4 || got["r49"] != 2 {
		t.Errorf("hits %v, want web 4 (3 kernel + 1 proxy), r49 2 (1 kernel + 1 proxy)", got)
	}
}

// TestRuleHitsDescribeRulesAndProxyDefaultDeny: /v1/rules says what each
// rule matches, and its defaultDenyHits counts the L7 proxy's default
// denies (no rule matched) on top of the kernel's counter, but not the
// proxy's other refusals.
func TestRuleHitsDescribeRulesAndProxyDefaultDeny(t *testing.T) {
	d, _, pol := newTestDaemon(t)
	cd := &countingDataplane{}
	d.dp = cd
	withMore := testPolicy + `      - name: apps
        kind: Application
        priority: 300
        action: Allow
        rules:
          - name: gh
            protocols: ['Https:443', 'Http:8080']
            sourceAddresses: [10.42.1.0/24]
            targetFqdns: [github.com, '*.githubusercontent.com']
  - name: publish
    priority: 100
    ruleCollections:
      - name: dnat
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - name: pub
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [203.0.113.32]
            destinationPorts: ['8080']
            translatedAddress: 10.42.1.100
            translatedPort: '80'
`
	os.WriteFile(pol, []byte(withMore), 0o644)
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	cd.set(nft.RuleCounter{Tag: "cw:D:default", Packets: 3})
	for _, reason := range []string{match.ReasonNoRuleMatched, match.ReasonNoRuleMatched, "SNI TLS extension was missing"} {
		d.hits.observe(&telemetry.Record{Time: time.Now(), Category: telemetry.CategoryApplicationRule, Source: "proxy", Action: "Deny", ActionReason: reason})
	}
	h := d.RuleHits()
	if h.DefaultDenyHits != 5 {
		t.Errorf("defaultDenyHits = %d, want 3 (kernel) + 2 (proxy, no rule matched)", h.DefaultDenyHits)
	}
	got := map[string]string{}
	for _, r := range h.Rules {
		got[r.Rule] = fmt.Sprintf("%v -> %v %v %v %s", r.Sources, r.Destinations, r.Protocols, r.Ports, r.Translated)
	}
	for rule, want := range map[string]string{
		"pub": "[*] -> [203.0.113.32] [TCP] [8080] 10.42.1.100:80",
		"web": "[*] -> [192.0.2.10] [TCP] [443] ",
		"gh":  "[10.42.1.0/24] -> [github.com *.githubusercontent.com] [Https:443 Http:8080] [] ",
	} {
		if got[rule] != want {
			t.Errorf("%s matches %q, want %q", rule, got[rule], want)
		}
	}
}

// byTagDataplane is knowingDataplane that can also read counters by tag
// (as NFTDataplane.CountersOf does), noting what was asked and how often
// every counter was dumped.
type byTagDataplane struct {
	knowingDataplane
	asked []string
	dumps int
}

func (c *byTagDataplane) Counters() ([]nft.RuleCounter, error) {
	c.mu.Lock()
	c.dumps++
	c.mu.Unlock()
	return c.countingDataplane.Counters()
}

func (c *byTagDataplane) CountersOf(tags []nft.LogTag) ([]nft.RuleCounter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []nft.RuleCounter
	for _, t := range tags {
		c.asked = append(c.asked, t.String())
		for _, rc := range c.counters {
			if rc.Tag == t.String() {
				out = append(out, rc)
			}
		}
	}
	return out, nil
}

// TestRuleHitsFewKeptReadByTag: replacing a large policy reads only the
// counters of the rules the new one keeps (and the default deny's and
// input drops'), by name, not every counter, and their hits carry over.
func TestRuleHitsFewKeptReadByTag(t *testing.T) {
	d, _, _ := newTestDaemon(t)
	bd := &byTagDataplane{}
	d.dp = bd
	if err := d.ApplyBytes("test", []byte(policyYAML(2000, 1, true, 0))); err != nil {
		t.Fatal(err)
	}
	bd.dumps = 0 // the first apply read the counters after it (nothing before)
	bd.set(nft.RuleCounter{Tag: "cw:A:0", Packets: 5}, nft.RuleCounter{Tag: "cw:A:1", Packets: 4}, nft.RuleCounter{Tag: "cw:D:default", Packets: 3})
	// The first rule of the large policy, alone.
	if err := d.ApplyBytes("test", []byte(policyYAML(1, 1, true, 0))); err != nil {
		t.Fatal(err)
	}
	if bd.dumps != 0 || strings.Join(bd.asked, " ") != "cw:D:default cw:D:input cw:A:0" {
		t.Fatalf("apply read %d dumps and asked for %v", bd.dumps, bd.asked)
	}
	bd.set(nft.RuleCounter{Tag: "cw:A:0", Packets: 2})
	h := d.RuleHits()
	if len(h.Rules) != 1 || h.Rules[0].Rule != "r000000" || h.Rules[0].Hits != 7 || h.DefaultDenyHits != 3 {
		t.Fatalf("hits = %+v, want r000000 7, default deny 3", h)
	}
	// A policy of 2,000 rules replaced by one that keeps them all: one
	// dump (cheaper than 2,000 reads by name under 32,768 rules); a small
	// one replaced: one dump.
	if err := d.ApplyBytes("test", []byte(policyYAML(2000, 1, true, 0))); err != nil {
		t.Fatal(err)
	}
	if bd.dumps != 2 { // the small policy's counters, and RuleHits
		t.Fatalf("small to large: %d dumps, want 2", bd.dumps)
	}
	bd.asked = nil
	if err := d.ApplyBytes("test", []byte(policyYAML(2000, 1, true, 1))); err != nil {
		t.Fatal(err)
	}
	if bd.dumps != 3 || len(bd.asked) != 0 {
		t.Fatalf("large to large: %d dumps (want 3), asked for %d counters by name", bd.dumps, len(bd.asked))
	}
}

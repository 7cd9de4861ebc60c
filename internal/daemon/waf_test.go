package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// wafFile is a WAF config for the tests: one plain HTTP listener on a
// free loopback port, one route to backend, the policy in mode.
func wafFile(backend, mode string) string {
	return fmt.Sprintf(`listeners:
  - name: web
    address: 127.0.0.1:0
    policy: store
routes:
  - name: store-front
    hosts: [store.example.com]
    backends: [%q]
policies:
  - name: store
    mode: %s
    paranoiaLevel: 1
`, backend, mode)
}

// writeAtomic replaces a file by rename, as an operator's editor would.
func writeAtomic(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestWAFConfigSection(t *testing.T) {
	dir := t.TempDir()
	wafPath := filepath.Join(dir, "waf.yaml")
	conf := writeDaemonConfig(t, dir, "waf:\n  config: waf.yaml\n")

	// The listener ports are opened to the internet by the data plane.
	os.WriteFile(wafPath, []byte(strings.Replace(wafFile("10.42.1.100:80", "Prevention"), "127.0.0.1:0", "203.0.113.32:443", 1)), 0o644)
	cfg, err := LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WAF.Config != wafPath {
		t.Fatalf("waf.config = %q, want %q (relative to the daemon config)", cfg.WAF.Config, wafPath)
	}
	if got := fmt.Sprint(cfg.DataplaneConfig().OutsideTCPPorts); got != "[443]" {
		t.Fatalf("OutsideTCPPorts = %s, want [443]", got)
	}
	// Only on the public IP the listener uses.
	if got := fmt.Sprint(cfg.DataplaneConfig().OutsideTCPAddrs); got != "[203.0.113.32]" {
		t.Fatalf("OutsideTCPAddrs = %s, want [203.0.113.32]", got)
	}
	if err := cfg.DataplaneConfig().Validate(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, waf, want string
	}{
		{"unknown field", wafFile("10.42.1.100:80", "Prevention") + "bogus: 1\n", "waf.yaml:13:1"},
		{"bad mode", wafFile("10.42.1.100:80", "Block"), "waf.yaml:11:11"},
		{"bad backend", wafFile("10.42.1.100", "Prevention"), "routes[0].backends[0]"},
		{"bad SecLang", wafFile("10.42.1.100:80", "Prevention") + "    customRules: |\n      SecRule ARGS \"@rx x\" \"id:1,phase:1,bogusaction\"\n", "waf.yaml:14"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(wafPath, []byte(tc.waf), 0o644)
			_, err := LoadConfig(conf)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
	os.Remove(wafPath)
	if _, err := LoadConfig(conf); err == nil || !strings.Contains(err.Error(), "config.yaml: waf.config: open ") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestWAFInDaemon runs the daemon's WAF on loopback in front of a real
// backend: a benign request passes with X-Forwarded-For, an SQL injection
// gets a 403 whose correlation ID is in the decision log's WAF line, a
// reload during a long request keeps it, and a bad config is rejected
// with its position while the running one stays.
func TestWAFInDaemon(t *testing.T) {
	release := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		w.Header().Set("X-Seen-XFF", r.Header.Get("X-Forwarded-For"))
		io.WriteString(w, "store-front\n")
	}))
	defer backend.Close()
	be := strings.TrimPrefix(backend.URL, "http://")

	dir := t.TempDir()
	wafPath := filepath.Join(dir, "waf.yaml")
	os.WriteFile(wafPath, []byte(wafFile(be, "Prevention")), 0o644)
	sink := &syncBuffer{}
	dlog := telemetry.NewDecisionLog(sink, telemetry.Options{})
	defer dlog.Close()
	d := loadTestDaemon(t, writeDaemonConfig(t, dir, "waf:\n  config: waf.yaml\n"), &fakeDataplane{}, nil, dlog)
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := d.startWAF(ctx); err != nil {
		t.Fatal(err)
	}
	addr := d.waf.srv.Addr("web").String()
	admin := httptest.NewServer(d.AdminHandler())
	defer admin.Close()

	get := func(target string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+target, nil)
		req.Host = "store.example.com"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	wafLine := func(id string) *telemetry.Record {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			for _, r := range sink.records() {
				if r.Category == telemetry.CategoryWAF && r.CorrelationId == id {
					return &r
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no WAF decision line with correlation ID %q in\n%s", id, sink.b.String())
		return nil
	}
	sqli := "/?id=" + url.QueryEscape("1' OR '1'='1")

	resp, body := get("/")
	if resp.StatusCode != 200 || body != "store-front\n" || resp.Header.Get("X-Seen-XFF") != "127.0.0.1" {
		t.Fatalf("benign: %d %q XFF %q", resp.StatusCode, body, resp.Header.Get("X-Seen-XFF"))
	}
	resp, body = get(sqli)
	id := resp.Header.Get("X-Correlation-Id")
	if resp.StatusCode != 403 || id == "" || !strings.Contains(body, id) {
		t.Fatalf("SQLi: %d, correlation ID %q, page %q", resp.StatusCode, id, body)
	}
	r := wafLine(id)
	if r.Action != "Blocked" || r.SourceIp != "127.0.0.1" || r.Hostname != "store.example.com" || !strings.HasPrefix(r.RequestUri, "/?id=") ||
		!containsInt(r.RuleIds, 942100) || r.AnomalyScore < 5 || r.HttpStatus != 403 || r.Policy != "store" || r.Source != "waf" {
		t.Fatalf("WAF line: %+v", r)
	}

	// A reload while a request is in flight: the request completes; the
	// new configuration (Detection) is in force afterwards.
	type result struct {
		code int
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/slow", nil)
		req.Host = "store.example.com"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- result{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		slow <- result{code: resp.StatusCode}
	}()
	time.Sleep(200 * time.Millisecond) // the request is at the backend
	writeAtomic(t, wafPath, wafFile(be, "Detection"))
	if code, out := post(t, admin.URL+"/v1/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, out)
	}
	close(release)
	if res := <-slow; res.err != nil || res.code != 200 {
		t.Fatalf("request in flight during the reload: %d %v", res.code, res.err)
	}
	resp, _ = get(sqli)
	if resp.StatusCode != 200 {
		t.Fatalf("SQLi in Detection mode: %d, want 200", resp.StatusCode)
	}
	if r := wafLine(resp.Header.Get("X-Correlation-Id")); r.Action != "Detected" || r.WafMode != "Detection" {
		t.Fatalf("Detection line: %+v", r)
	}
	if st := d.Status().WAF; st == nil || st.Generation != 2 || st.LastReload != "ok" || st.Listeners["web"] != addr {
		t.Fatalf("WAF status: %+v", st)
	}

	// A bad config: 422 naming the file, line and column; Detection stays.
	writeAtomic(t, wafPath, strings.Replace(wafFile(be, "Prevention"), "paranoiaLevel: 1", "paranoiaLevel: 7", 1))
	code, out := post(t, admin.URL+"/v1/reload")
	if code != http.StatusUnprocessableEntity || !strings.Contains(out, "waf.yaml:12:20") || !strings.Contains(out, "paranoiaLevel") {
		t.Fatalf("bad reload: %d %s", code, out)
	}
	if resp, _ := get(sqli); resp.StatusCode != 200 {
		t.Fatalf("after a rejected reload: SQLi %d, want 200 (Detection stays)", resp.StatusCode)
	}
	if st := d.Status().WAF; st.Generation != 2 || !strings.Contains(st.LastReload, "waf.yaml:12:20") {
		t.Fatalf("WAF status after a rejected reload: %+v", st)
	}
	// A reload that moves a listener is refused too (restart to change it).
	writeAtomic(t, wafPath, strings.Replace(wafFile(be, "Prevention"), "127.0.0.1:0", "127.0.0.1:1", 1))
	if err := d.ReloadWAF("test"); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("listener change: %v", err)
	}
	// Back to Prevention.
	writeAtomic(t, wafPath, wafFile(be, "Prevention"))
	if err := d.ReloadWAF("test"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(sqli); resp.StatusCode != 403 {
		t.Fatalf("Prevention again: %d", resp.StatusCode)
	}
}

func containsInt(list []int, n int) bool {
	for _, x := range list {
		if x == n {
			return true
		}
	}
	return false
}

func post(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Post(u, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

package waf

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

const simpleConfig = `
listeners:
  - name: web
    address: 127.0.0.1:0
routes:
  - name: app
    backends: ["$BACKEND"]
policies:
  - name: default
    mode: $MODE
    paranoiaLevel: 1
`

func TestBenignRequestPasses(t *testing.T) {
	_, addr := startBackend(t, "b1")
	s, events := startWAF(t, simpleConfig, map[string]string{"BACKEND": addr, "MODE": "Prevention"})
	res, body := get(t, baseURL(s, "web")+"/products?id=42", "Host", "shop.example.com", "User-Agent", "Mozilla/5.0", "Accept", "text/html")
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	var e echo
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatal(err)
	}
	if got := e.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want 127.0.0.1", got)
	}
	if got := e.Header.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto = %q", got)
	}
	if e.Host != "shop.example.com" || e.URI != "/products?id=42" {
		t.Errorf("backend saw host %q uri %q", e.Host, e.URI)
	}
	id := res.Header.Get("X-Correlation-Id")
	if id == "" || e.Header.Get("X-Correlation-Id") != id {
		t.Errorf("correlation id: client %q, backend %q", id, e.Header.Get("X-Correlation-Id"))
	}
	if ev := events.eventFor(t, id); ev != nil {
		t.Errorf("a benign request was logged: %+v", ev)
	}
}

func TestAttacksBlockedOrDetected(t *testing.T) {
	attacks := []struct {
		name  string
		query string
		rule  int
	}{
		{"sql injection", "id=" + url.QueryEscape("1' OR '1'='1"), 942100},
		{"xss", "q=" + url.QueryEscape("<script>alert(1)</script>"), 941100},
	}
	for _, mode := range []string{"Prevention", "Detection"} {
		t.Run(mode, func(t *testing.T) {
			_, addr := startBackend(t, "b1")
			s, events := startWAF(t, simpleConfig, map[string]string{"BACKEND": addr, "MODE": mode})
			for _, a := range attacks {
				t.Run(a.name, func(t *testing.T) {
					res, body := get(t, baseURL(s, "web")+"/search?"+a.query, "Host", "shop.example.com", "User-Agent", "Mozilla/5.0", "Accept", "text/html")
					id := res.Header.Get("X-Correlation-Id")
					ev := events.eventFor(t, id)
					if ev == nil {
						t.Fatalf("no event for %s", id)
					}
					if !slices.Contains(ev.RuleIDs, a.rule) || !slices.Contains(ev.RuleIDs, 949110) {
						t.Errorf("rules %v, want %d and 949110", ev.RuleIDs, a.rule)
					}
					if ev.AnomalyScore < 5 || ev.ClientIP != "127.0.0.1" || ev.Method != "GET" || ev.Listener != "web" || ev.Route != "app" || ev.Category != "WAF" || ev.Host != "shop.example.com" || !strings.HasPrefix(ev.URI, "/search?") || len(ev.Messages) != len(ev.RuleIDs) {
						t.Errorf("event fields: %+v", ev)
					}
					if mode == "Prevention" {
						if res.StatusCode != http.StatusForbidden || !strings.Contains(body, id) || ev.Action != ActionBlocked || ev.Status != 403 {
							t.Errorf("status %d action %s, body %q", res.StatusCode, ev.Action, body)
						}
					} else if res.StatusCode != 200 || ev.Action != ActionDetected {
						t.Errorf("detection: status %d action %s", res.StatusCode, ev.Action)
					}
				})
			}
		})
	}
}

func TestExclusionsAndCustomRules(t *testing.T) {
	_, addr := startBackend(t, "b1")
	s, events := startWAF(t, `
listeners:
  - name: web
    address: 127.0.0.1:0
routes:
  - name: app
    backends: ["$BACKEND"]
policies:
  - name: default
    exclusions:
      - tags: [attack-sqli]
        pathPrefix: /api/search
      - ruleIds: [942100, 942180, 942200, 942260, 942300, 942330, 942340, 942370, 942390, 949110]
        targets: [ARGS:comment]
      - ruleIds: [941100-941399]
        pathPrefix: /cms
    customRules: |
      SecRule ARGS:debug "@streq 1" "id:10001,phase:1,deny,status:403,log,msg:'debug parameter not allowed'"
`, map[string]string{"BACKEND": addr})
	sqli := url.QueryEscape("1' OR '1'='1")
	xss := url.QueryEscape("<script>alert(1)</script>")
	tests := []struct {
		name   string
		path   string
		status int
		rule   int
	}{
		{"sqli on an excluded path", "/api/search?q=" + sqli, 200, 0},
		{"sqli elsewhere", "/api/other?q=" + sqli, 403, 942100},
		{"sqli in an excluded target", "/form?comment=" + sqli, 200, 0},
		{"sqli in another target", "/form?title=" + sqli, 403, 942100},
		{"xss on a path excluding a range", "/cms/page?q=" + xss, 200, 0},
		{"xss elsewhere", "/page?q=" + xss, 403, 941100},
		{"custom rule", "/page?debug=1", 403, 10001},
		{"custom rule not matching", "/page?debug=0", 200, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, _ := get(t, baseURL(s, "web")+tt.path, "User-Agent", "Mozilla/5.0", "Accept", "text/html")
			if res.StatusCode != tt.status {
				t.Errorf("status %d, want %d", res.StatusCode, tt.status)
			}
			ev := events.eventFor(t, res.Header.Get("X-Correlation-Id"))
			if tt.rule != 0 && (ev == nil || !slices.Contains(ev.RuleIDs, tt.rule)) {
				t.Errorf("event %+v lacks rule %d", ev, tt.rule)
			}
		})
	}
}

func TestResponseInspection(t *testing.T) {
	_, addr := startBackend(t, "b1")
	for _, on := range []bool{true, false} {
		cfg := strings.Replace(simpleConfig, "paranoiaLevel: 1", "paranoiaLevel: 1\n    responseInspection: "+map[bool]string{true: "true", false: "false"}[on], 1)
		s, events := startWAF(t, cfg, map[string]string{"BACKEND": addr, "MODE": "Prevention"})
		res, body := get(t, baseURL(s, "web")+"/sqlerror", "Host", "shop.example.com", "User-Agent", "Mozilla/5.0", "Accept", "text/html")
		ev := events.eventFor(t, res.Header.Get("X-Correlation-Id"))
		if on {
			if res.StatusCode != 403 || strings.Contains(body, "SQL syntax") || ev == nil || !slices.Contains(ev.RuleIDs, 951230) || !slices.Contains(ev.RuleIDs, 959100) || ev.Action != ActionBlocked {
				t.Errorf("inspection on: status %d, event %+v", res.StatusCode, ev)
			}
		} else if res.StatusCode != 200 || !strings.Contains(body, "SQL syntax") || ev != nil {
			t.Errorf("inspection off: status %d, event %+v", res.StatusCode, ev)
		}
	}
}

func TestRoutingRoundRobinAndPassiveHealth(t *testing.T) {
	_, a1 := startBackend(t, "a1")
	_, a2 := startBackend(t, "a2")
	_, api := startBackend(t, "api")
	s, _ := startWAF(t, `
listeners:
  - name: web
    address: 127.0.0.1:0
routes:
  - name: shop
    hosts: [shop.example.com]
    backends: ["$A1", "$A2", "127.0.0.1:1"]
    passiveHealth: {maxFails: 1, failTimeout: 1m}
  - name: shop-api
    hosts: ["*.example.com"]
    pathPrefix: /api
    backends: ["$API"]
  - name: fallback
    backends: ["$A1"]
policies:
  - name: default
    mode: Prevention
`, map[string]string{"A1": a1, "A2": a2, "API": api})
	which := func(host, path string) (string, int) {
		res, body := get(t, baseURL(s, "web")+path, "Host", host, "User-Agent", "Mozilla/5.0", "Accept", "*/*")
		var e echo
		json.Unmarshal([]byte(body), &e)
		return e.Backend, res.StatusCode
	}
	if b, _ := which("www.example.com", "/api/v1"); b != "api" {
		t.Errorf("wildcard host + prefix went to %q", b)
	}
	if b, _ := which("www.example.com", "/apiary"); b != "a1" {
		t.Errorf("/apiary is not under /api, went to %q", b)
	}
	if b, _ := which("other.test", "/"); b != "a1" {
		t.Errorf("fallback went to %q", b)
	}
	seen := map[string]int{}
	bad := 0
	for i := 0; i < 12; i++ {
		b, status := which("shop.example.com", "/")
		if status == http.StatusBadGateway {
			bad++
			continue
		}
		seen[b]++
	}
	if seen["a1"] == 0 || seen["a2"] == 0 || seen["api"] != 0 {
		t.Errorf("round robin: %v", seen)
	}
	if bad != 1 {
		t.Errorf("%d requests hit the dead backend, want 1 (then it is taken out)", bad)
	}
}

func TestActiveHealthCheck(t *testing.T) {
	_, good := startBackend(t, "good")
	_, sick := startBackend(t, "sick")
	s, _ := startWAF(t, `
listeners:
  - name: web
    address: 127.0.0.1:0
routes:
  - name: app
    backends: ["$GOOD", "$SICK"]
    healthCheck: {path: /healthz, interval: 50ms, timeout: 40ms, unhealthyThreshold: 1}
policies:
  - name: default
`, map[string]string{"GOOD": good, "SICK": sick})
	time.Sleep(300 * time.Millisecond)
	for i := 0; i < 6; i++ {
		_, body := get(t, baseURL(s, "web")+"/", "User-Agent", "Mozilla/5.0", "Accept", "*/*")
		if !strings.Contains(body, `"backend":"good"`) {
			t.Fatalf("request %d went to %s", i, body)
		}
	}
}

func TestReloadKeepsInFlightRequests(t *testing.T) {
	b1, addr1 := startBackend(t, "one")
	_, addr2 := startBackend(t, "two")
	cfgText := simpleConfig
	s, _ := startWAF(t, cfgText, map[string]string{"BACKEND": addr1, "MODE": "Prevention"})
	done := make(chan string)
	go func() {
		res, err := http.Get(baseURL(s, "web") + "/slow")
		if err != nil {
			done <- err.Error()
			return
		}
		defer res.Body.Close()
		var e echo
		json.NewDecoder(res.Body).Decode(&e)
		done <- res.Status + " " + e.Backend
	}()
	<-b1.started
	// A config that does not compile is rejected and the running one stays.
	if _, err := ParseConfig("bad.yaml", []byte(strings.Replace(simpleConfig, "paranoiaLevel: 1", "paranoiaLevel: 7", 1))); err == nil {
		t.Fatal("paranoiaLevel 7 was accepted")
	}
	moved := mustConfig(t, strings.Replace(cfgText, "127.0.0.1:0", "127.0.0.1:1", 1), map[string]string{"BACKEND": addr2, "MODE": "Prevention"})
	if err := s.Reload(moved); err == nil || !strings.Contains(err.Error(), "address changed") {
		t.Errorf("reload with a new listener address: %v", err)
	}
	// Now a valid reload to another backend, with the request in flight.
	if err := s.Reload(mustConfig(t, cfgText, map[string]string{"BACKEND": addr2, "MODE": "Detection"})); err != nil {
		t.Fatal(err)
	}
	_, body := get(t, baseURL(s, "web")+"/", "User-Agent", "Mozilla/5.0", "Accept", "*/*")
	if !strings.Contains(body, `"backend":"two"`) {
		t.Errorf("after reload: %s", body)
	}
	// Detection now: an attack passes.
	res, _ := get(t, baseURL(s, "web")+"/?id="+url.QueryEscape("1' OR '1'='1"), "User-Agent", "Mozilla/5.0", "Accept", "*/*")
	if res.StatusCode != 200 {
		t.Errorf("after reload to Detection: %d", res.StatusCode)
	}
	close(b1.release)
	select {
	case got := <-done:
		if got != "200 OK one" {
			t.Errorf("in-flight request: %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight request did not finish")
	}
}

func TestShutdownWaitsForRequests(t *testing.T) {
	b, addr := startBackend(t, "one")
	cfg := mustConfig(t, simpleConfig, map[string]string{"BACKEND": addr, "MODE": "Prevention"})
	s, err := NewServer(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan int)
	go func() {
		res, err := http.Get(baseURL(s, "web") + "/slow")
		if err != nil {
			done <- 0
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	<-b.started
	shut := make(chan error)
	go func() { shut <- s.Shutdown(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	close(b.release)
	if code := <-done; code != 200 {
		t.Errorf("in-flight request got %d during shutdown", code)
	}
	if err := <-shut; err != nil {
		t.Error(err)
	}
}

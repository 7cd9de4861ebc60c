package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterwall/clusterwall/internal/dnsproxy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// uiTestServer is the admin API of a test daemon with a decision log.
func uiTestServer(t *testing.T) (*Daemon, *httptest.Server) {
	t.Helper()
	d, _, _ := newTestDaemon(t)
	d.dlog = telemetry.NewDecisionLog(io.Discard, telemetry.Options{})
	t.Cleanup(d.dlog.Close)
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.AdminHandler())
	t.Cleanup(srv.Close)
	return d, srv
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, body)
		}
	}
	return resp.StatusCode
}

func TestDashboardAssets(t *testing.T) {
	_, srv := uiTestServer(t)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET / = %d Location %q, want a redirect to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/ui/", "text/html", `<script src="app.js"`},
		{"/ui/app.js", "text/javascript", "/v1/decisions/stream"},
		{"/ui/app.css", "text/css", "--deny"},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) || !strings.Contains(string(body), tc.contains) {
			t.Errorf("GET %s = %d %q, body has %q: %v", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.contains, strings.Contains(string(body), tc.contains))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
	}
}

func TestDecisionsAndOverview(t *testing.T) {
	d, srv := uiTestServer(t)
	d.dlog.Log(telemetry.Record{Category: telemetry.CategoryNetworkRule, Action: "Allow", SourceIp: "10.42.1.10", DestinationIp: "192.0.2.10", DestinationPort: 443, Rule: "web"})
	d.dlog.Log(telemetry.Record{Category: telemetry.CategoryApplicationRule, Action: "Deny", SourceIp: "10.42.1.11", Fqdn: "evil.example", DestinationPort: 443})
	d.dlog.Log(telemetry.Record{Category: telemetry.CategoryWAF, Action: "Blocked", SourceIp: "198.51.100.7", Hostname: "shop.example", RequestUri: "/?id=1'or'1'='1", RuleIds: []int{942100}})

	var got struct {
		Decisions []telemetry.Record `json:"decisions"`
		Count     int                `json:"count"`
	}
	tests := []struct {
		query string
		want  []string // SourceIp of each record, newest first
	}{
		{"", []string{"198.51.100.7", "10.42.1.11", "10.42.1.10"}},
		{"?limit=1", []string{"198.51.100.7"}},
		{"?action=denied", []string{"198.51.100.7", "10.42.1.11"}},
		{"?action=Allow", []string{"10.42.1.10"}},
		{"?category=WAF", []string{"198.51.100.7"}},
		{"?q=EVIL", []string{"10.42.1.11"}},
		{"?q=nowhere", nil},
	}
	for _, tc := range tests {
		if code := getJSON(t, srv.URL+"/v1/decisions"+tc.query, &got); code != http.StatusOK {
			t.Fatalf("GET /v1/decisions%s = %d", tc.query, code)
		}
		var srcs []string
		for _, r := range got.Decisions {
			srcs = append(srcs, r.SourceIp)
		}
		if strings.Join(srcs, ",") != strings.Join(tc.want, ",") || got.Count != len(tc.want) {
			t.Errorf("GET /v1/decisions%s = %v (count %d), want %v", tc.query, srcs, got.Count, tc.want)
		}
	}
	for _, bad := range []string{"?limit=0", "?limit=x", "?limit=100000"} {
		if code := getJSON(t, srv.URL+"/v1/decisions"+bad, nil); code != http.StatusBadRequest {
			t.Errorf("GET /v1/decisions%s = %d, want 400", bad, code)
		}
	}

	var ov telemetry.Overview
	if code := getJSON(t, srv.URL+"/v1/overview?top=5", &ov); code != http.StatusOK {
		t.Fatalf("GET /v1/overview = %d", code)
	}
	if ov.Allowed != 1 || ov.Denied != 2 || len(ov.Series) != 360 || ov.BucketSeconds != 10 {
		t.Errorf("overview: allowed %d denied %d, %d buckets of %d s", ov.Allowed, ov.Denied, len(ov.Series), ov.BucketSeconds)
	}
	if len(ov.TopDenied) != 2 || len(ov.TopTalkers) != 3 {
		t.Errorf("tops: denied %+v talkers %+v", ov.TopDenied, ov.TopTalkers)
	}
	if code := getJSON(t, srv.URL+"/v1/overview?top=0", nil); code != http.StatusBadRequest {
		t.Errorf("GET /v1/overview?top=0 = %d, want 400", code)
	}
}

func TestDecisionStream(t *testing.T) {
	d, srv := uiTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/decisions/stream?action=Deny&q=192.0.2", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	// The server subscribed before it wrote the first comment.
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, ":") {
		t.Fatalf("first line %q %v", line, err)
	}
	if d.Hub().Subscribers() != 1 {
		t.Fatalf("%d subscribers", d.Hub().Subscribers())
	}
	d.dlog.Log(telemetry.Record{Category: telemetry.CategoryNetworkRule, Action: "Allow", DestinationIp: "192.0.2.10", DestinationPort: 443})
	d.dlog.Log(telemetry.Record{Category: telemetry.CategoryNetworkRule, Action: "Deny", DestinationIp: "198.51.100.1", DestinationPort: 22})
	d.dlog.Log(telemetry.Record{Category: telemetry.CategoryNetworkRule, Action: "Deny", DestinationIp: "192.0.2.99", DestinationPort: 1, SourceIp: "10.42.1.10"})
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var r telemetry.Record
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		if r.Action != "Deny" || r.DestinationIp != "192.0.2.99" {
			t.Fatalf("filtered stream delivered %+v", r)
		}
		break
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for d.Hub().Subscribers() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("subscription not closed after the client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDashboardWithToken(t *testing.T) {
	d, _, _ := newTestDaemon(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("s3cret-token-0123456789 ops\n"), 0o600)
	d.cfg.Admin.TokenFile = tokens
	d.dlog = telemetry.NewDecisionLog(io.Discard, telemetry.Options{})
	defer d.dlog.Close()
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	// The page loads without a token (it asks for one); its data does not.
	if code := getJSON(t, srv.URL+"/ui/", nil); code != http.StatusOK {
		t.Errorf("GET /ui/ = %d with tokens configured, want 200", code)
	}
	for _, p := range []string{"/v1/decisions", "/v1/overview", "/v1/decisions/stream", "/v1/dns/upstreams"} {
		if code := getJSON(t, srv.URL+p, nil); code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token = %d, want 401", p, code)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/overview", nil)
	req.Header.Set("Authorization", "Bearer s3cret-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/overview with the token = %d", resp.StatusCode)
	}
}

func TestDNSUpstreamsHealth(t *testing.T) {
	d, srv := uiTestServer(t)
	var st DNSUpstreams
	getJSON(t, srv.URL+"/v1/dns/upstreams", &st)
	if st.Enabled || len(st.Upstreams) != 0 {
		t.Errorf("DNS proxy off: %+v", st)
	}

	// A real upstream that answers, and a dead one (nothing listens).
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, m *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(m)
		w.WriteMsg(r)
	})}
	go up.ActivateAndServe()
	defer up.Shutdown()
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	deadAddr := dead.LocalAddr().String()
	dead.Close()

	px, err := dnsproxy.New(dnsproxy.Config{Upstreams: []string{pc.LocalAddr().String(), deadAddr}, HealthInterval: 50 * time.Millisecond, Timeout: 200 * time.Millisecond},
		dnsproxy.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := dnsproxy.Listen("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go px.Serve(ctx, l)
	d.dns = px
	d.dnsUp.Store(true)
	d.cfg.DNS.Listen = "127.0.0.1:53"

	deadline := time.Now().Add(5 * time.Second)
	for {
		getJSON(t, srv.URL+"/v1/dns/upstreams", &st)
		health := map[string]bool{}
		for _, u := range st.Upstreams {
			health[u.Addr] = u.Healthy
		}
		if st.Enabled && len(st.Upstreams) == 2 && health[pc.LocalAddr().String()] && !health[deadAddr] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream health not reported: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

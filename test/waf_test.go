package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/daemon"
	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// wafLab is a lab whose daemon enforces the seed's policy and runs the
// ingress WAF (lab.DaemonOptions.WAF) in front of store-front.
func newWAFLab(t *testing.T) *fwLab {
	t.Helper()
	requireFW(t)
	f := &fwLab{dir: t.TempDir(), policy: filepath.Join(repoRoot, "examples", "aks-egress.yaml")}
	f.up(t, &lab.DaemonOptions{Policy: f.policy, WAF: true}, "the daemon and the WAF")
	return f
}

// storeClient is an HTTPS client in the client namespace (source src) that
// connects to the firewall's public address pub for store.example.com and
// verifies the WAF's certificate with the lab CA.
func (f *fwLab) storeClient(t *testing.T, src, pub netip.Addr) *http.Client {
	t.Helper()
	pool, err := f.CAPool()
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return f.dial(lab.HostClient, src, "tcp", netip.AddrPortFrom(pub, lab.WAFPort), 2*time.Second)
		},
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: lab.StoreServerName},
		DisableKeepAlives: true,
	}
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

type storeAnswer struct {
	status int
	body   string
	header http.Header
}

func storeDo(t *testing.T, c *http.Client, method, target string, body io.Reader, contentType string) storeAnswer {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+lab.StoreServerName+target, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, target, err)
	}
	return storeAnswer{status: resp.StatusCode, body: string(data), header: resp.Header}
}

// wafLine waits for the decision log's WAF line with correlation ID id.
func (f *fwLab) wafLine(t *testing.T, id string) telemetry.Record {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		for _, r := range f.decisions(t) {
			if r.Category == telemetry.CategoryWAF && r.CorrelationId == id {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no WAF line with correlation ID %s in %s", id, f.DecisionLog())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// noWAFLine checks that the WAF logged nothing for correlation ID id.
func (f *fwLab) noWAFLine(t *testing.T, id string) {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	for _, r := range f.decisions(t) {
		if r.Category == telemetry.CategoryWAF && r.CorrelationId == id {
			t.Fatalf("the WAF logged a benign request: %+v", r)
		}
	}
}

// wafStatus is GET /v1/status's waf part.
func (f *fwLab) wafStatus(t *testing.T) (gen uint64, last string) {
	t.Helper()
	code, body, err := f.Admin(context.Background(), http.MethodGet, "/v1/status")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /v1/status: %d %v %s", code, err, body)
	}
	var st struct {
		WAF *struct {
			Generation uint64 `json:"generation"`
			LastReload string `json:"lastReload"`
		} `json:"waf"`
	}
	if err := json.Unmarshal(body, &st); err != nil || st.WAF == nil {
		t.Fatalf("GET /v1/status: no waf: %v %s", err, body)
	}
	return st.WAF.Generation, st.WAF.LastReload
}

func hasRuleFamily(ids []int, family int) bool {
	for _, id := range ids {
		if id/1000 == family {
			return true
		}
	}
	return false
}

// TestWAFIngress drives internet → 203.0.113.33:443 (the firewall's
// second public IP, the WAF's) → WAF in fw → store-front with real
// clients: benign requests from any client pass with the client's address
// in X-Forwarded-For (IPv4 and IPv6), SQL injection and XSS get a 403 whose
// correlation ID is the one in the decision log's WAF line, the first
// public IP's 443 stays the seed's (DNAT to the API server for the
// authorized client, dropped by the input chain for every other), a
// reload during a long request keeps it and takes effect, and a bad WAF
// config is rejected with its position while the running one stays.
func TestWAFIngress(t *testing.T) {
	t.Parallel()
	f := newWAFLab(t)
	auth4, unauth4, unauth6 := lab.ClientAuthorizedV4, lab.ClientUnauthorizedV4, lab.ClientUnauthorizedV6
	c4 := f.storeClient(t, auth4, lab.FWIngressV4)
	sqli := "/?id=" + url.QueryEscape("1' OR '1'='1")
	xss := "/?q=" + url.QueryEscape("<script>alert(1)</script>")

	t.Run("benign", func(t *testing.T) {
		for _, tc := range []struct {
			src, pub netip.Addr
		}{{auth4, lab.FWIngressV4}, {unauth4, lab.FWIngressV4}, {unauth6, lab.FWIngressV6}} {
			a := storeDo(t, f.storeClient(t, tc.src, tc.pub), http.MethodGet, "/", nil, "")
			id := a.header.Get("X-Correlation-Id")
			if a.status != 200 || a.body != lab.StoreBody || id == "" {
				t.Fatalf("from %s: %d %q correlation ID %q", tc.src, a.status, a.body, id)
			}
			if xff := a.header.Get(lab.ForwardedForHeader); xff != tc.src.String() {
				t.Fatalf("from %s: store-front saw X-Forwarded-For %q", tc.src, xff)
			}
			// The WAF connects to store-front from the firewall's inside address.
			peer, err := netip.ParseAddrPort(a.header.Get(lab.PeerHeader))
			if err != nil || peer.Addr() != lab.FWInsideV4 {
				t.Fatalf("from %s: store-front saw the connection from %q, want %s", tc.src, a.header.Get(lab.PeerHeader), lab.FWInsideV4)
			}
			f.noWAFLine(t, id)
		}
	})

	t.Run("attacks blocked", func(t *testing.T) {
		for _, tc := range []struct {
			name, target string
			family       int
		}{{"SQL injection", sqli, 942}, {"XSS", xss, 941}} {
			a := storeDo(t, c4, http.MethodGet, tc.target, nil, "")
			id := a.header.Get("X-Correlation-Id")
			if a.status != http.StatusForbidden || id == "" || !strings.Contains(a.body, id) {
				t.Fatalf("%s: %d, correlation ID %q, page %q", tc.name, a.status, id, a.body)
			}
			r := f.wafLine(t, id)
			if r.Action != "Blocked" || r.SourceIp != auth4.String() || r.Hostname != lab.StoreServerName ||
				r.RequestUri != tc.target || !hasRuleFamily(r.RuleIds, tc.family) || r.AnomalyScore < 5 ||
				r.HttpStatus != 403 || r.Route != "store-front" || r.Source != "waf" {
				t.Fatalf("%s: WAF line %+v", tc.name, r)
			}
			t.Logf("%s: 403 %s, rules %v, score %d", tc.name, id, r.RuleIds, r.AnomalyScore)
		}
		// The same with curl (a real client's URL encoding).
		out, err := f.Exec(context.Background(), lab.HostClient, "curl", "-sS", "-o", "/dev/null", "-D", "-",
			"--cacert", f.CAFile(), "--interface", unauth4.String(),
			"--resolve", fmt.Sprintf("%s:%d:%s", lab.StoreServerName, lab.WAFPort, lab.FWIngressV4),
			"https://"+lab.StoreServerName+"/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		status, header, _ := parseCurl(string(out))
		if status != 403 {
			t.Fatalf("curl XSS: %d\n%s", status, out)
		}
		if r := f.wafLine(t, header["x-correlation-id"]); !hasRuleFamily(r.RuleIds, 941) {
			t.Fatalf("curl XSS: WAF line %+v", r)
		}
	})

	t.Run("the first public IP's 443 stays the API server's", func(t *testing.T) {
		body, _, err := f.httpGet(lab.HostClient, auth4, "https", ap(lab.FWPublicV4, 443))
		if err != nil || body != "api" {
			t.Fatalf("198.51.100.7 → 203.0.113.32:443: %q %v, want the API server", body, err)
		}
		// Every other client is dropped by the input chain (no TLS, no
		// WAF: the WAF listens on the ingress IP only) and logged.
		var keys []flowKey
		for _, tc := range []struct{ src, dst netip.Addr }{
			{unauth4, lab.FWPublicV4}, {unauth6, lab.FWPublicV6}, {lab.ClientAuthorizedV6, lab.FWPublicV6},
		} {
			c, err := f.dial(lab.HostClient, tc.src, "tcp", ap(tc.dst, 443), denyWait)
			if err == nil {
				c.Close()
			}
			if o := classify(err); o != timedOut {
				t.Fatalf("%s → %s: %v (%v), want dropped", tc.src, ap(tc.dst, 443), o, err)
			}
			keys = append(keys, flowKey{src: tc.src, dst: tc.dst, port: 443, proto: "TCP"})
		}
		found := f.waitDecisions(t, keys, 3*time.Second)
		for _, k := range keys {
			r, ok := found[k]
			if !ok || r.Action != "Deny" || r.ActionReason != daemon.ReasonInputDrop {
				t.Fatalf("%s: decision line %+v (found %v), want Deny %q", k, r, ok, daemon.ReasonInputDrop)
			}
		}
	})

	t.Run("reload keeps requests in flight; bad config rejected", func(t *testing.T) {
		wafFile := filepath.Join(f.Dir(), lab.WAFConfigFile)
		orig, err := os.ReadFile(wafFile)
		if err != nil {
			t.Fatal(err)
		}
		gen0, _ := f.wafStatus(t)
		write := func(data string) {
			t.Helper()
			if err := os.WriteFile(wafFile+".tmp", []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(wafFile+".tmp", wafFile); err != nil {
				t.Fatal(err)
			}
		}
		reload := func() (int, string) {
			t.Helper()
			code, body, err := f.Admin(context.Background(), http.MethodPost, "/v1/reload")
			if err != nil {
				t.Fatal(err)
			}
			return code, string(body)
		}

		// A form POST whose body trickles in over about 2 s: the request is
		// in the WAF (Coraza reads the body) while the config is swapped.
		pr, pw := io.Pipe()
		go func() {
			defer pw.Close()
			io.WriteString(pw, "comment=")
			for i := 0; i < 20; i++ {
				time.Sleep(100 * time.Millisecond)
				if _, err := io.WriteString(pw, "hello+world+"); err != nil {
					return
				}
			}
		}()
		done := make(chan storeAnswer, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodPost, "https://"+lab.StoreServerName+"/order", pr)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := c4.Do(req)
			if err != nil {
				done <- storeAnswer{body: err.Error()}
				return
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			done <- storeAnswer{status: resp.StatusCode, body: string(data)}
		}()
		time.Sleep(500 * time.Millisecond)
		write(strings.Replace(string(orig), "mode: Prevention", "mode: Detection", 1))
		if code, body := reload(); code != http.StatusOK {
			t.Fatalf("reload to Detection: %d %s", code, body)
		}
		select {
		case a := <-done:
			t.Fatalf("the long request ended before the reload did (%d %q): nothing was in flight", a.status, a.body)
		default:
		}
		if a := <-done; a.status != 200 || a.body != lab.StoreBody {
			t.Fatalf("the request in flight during the reload: %d %q", a.status, a.body)
		}
		if gen, last := f.wafStatus(t); gen != gen0+1 || last != "ok" {
			t.Fatalf("WAF status after the reload: generation %d (was %d), %q", gen, gen0, last)
		}
		a := storeDo(t, c4, http.MethodGet, sqli, nil, "")
		if a.status != 200 {
			t.Fatalf("SQL injection in Detection mode: %d, want 200", a.status)
		}
		if r := f.wafLine(t, a.header.Get("X-Correlation-Id")); r.Action != "Detected" || !hasRuleFamily(r.RuleIds, 942) {
			t.Fatalf("Detection line: %+v", r)
		}

		// A bad config: 422 with FILE:LINE:COL; the running one (Detection) stays.
		write(strings.Replace(string(orig), "paranoiaLevel: 1", "paranoiaLevel: 9", 1))
		line := 0
		for i, l := range strings.Split(strings.Replace(string(orig), "paranoiaLevel: 1", "paranoiaLevel: 9", 1), "\n") {
			if strings.Contains(l, "paranoiaLevel: 9") {
				line = i + 1
			}
		}
		want := fmt.Sprintf("%s:%d:20", wafFile, line)
		code, body := reload()
		if code != http.StatusUnprocessableEntity || !strings.Contains(body, want) || !strings.Contains(body, "paranoia level must be 1 to 4") {
			t.Fatalf("bad config: %d %s (want 422 naming %s)", code, body, want)
		}
		if gen, last := f.wafStatus(t); gen != gen0+1 || !strings.Contains(last, want) {
			t.Fatalf("WAF status after the rejected reload: generation %d, %q", gen, last)
		}
		if a := storeDo(t, c4, http.MethodGet, sqli, nil, ""); a.status != 200 {
			t.Fatalf("after the rejected reload: SQL injection %d, want 200 (Detection stays)", a.status)
		}
		if a := storeDo(t, c4, http.MethodGet, "/", nil, ""); a.status != 200 || a.body != lab.StoreBody {
			t.Fatalf("after the rejected reload: benign %d %q", a.status, a.body)
		}

		// Back to the original: blocked again.
		write(string(orig))
		if code, body := reload(); code != http.StatusOK {
			t.Fatalf("reload to Prevention: %d %s", code, body)
		}
		if a := storeDo(t, c4, http.MethodGet, sqli, nil, ""); a.status != http.StatusForbidden {
			t.Fatalf("Prevention again: %d", a.status)
		}
	})
}

// parseCurl splits curl's `-D -` output into the status and the header
// (lower-case keys) of the last response, and the rest.
func parseCurl(out string) (int, map[string]string, string) {
	header := map[string]string{}
	status := 0
	rest := out
	for strings.HasPrefix(rest, "HTTP/") {
		head, after, ok := strings.Cut(rest, "\r\n\r\n")
		if !ok {
			head, after = rest, ""
		}
		lines := strings.Split(head, "\r\n")
		if f := strings.Fields(lines[0]); len(f) >= 2 {
			fmt.Sscan(f[1], &status)
		}
		clear(header)
		for _, l := range lines[1:] {
			if k, v, ok := strings.Cut(l, ":"); ok {
				header[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		rest = after
	}
	return status, header, rest
}

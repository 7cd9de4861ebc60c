package daemon

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/heapwatch"
)

// post sends body (shared, not copied) to the admin API.
func postBody(t *testing.T, url string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// TestAdminBodyMemoryBounded is the regression test for issue 17's
// "one 60 MB request to /v1/validate took the daemon from 48 MB to
// 6.0 GB": bodies made of tiny YAML values and alias bombs, posted to
// /v1/validate and /v1/apply — four at once — are refused with the
// position and the limit, and the daemon's heap grows by about the one
// body it reads at a time. Before the limits, the 8 MB body alone grew the
// heap by 1.7 GB, and four at once by four times that.
func TestAdminBodyMemoryBounded(t *testing.T) {
	d, _, _, _ := newAuthDaemon(t)
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	flow := []byte("name: x\nipGroups:\n  g: [" + strings.Repeat("a,", 4<<20) + "a]\n")
	bomb := []byte("a: &a [x,x,x,x,x,x,x,x,x,x]\n")
	for i, prev := 1, "a"; i < 8; i++ {
		name := string(rune('a' + i))
		bomb = fmt.Appendf(bomb, "%s: &%s [%s]\n", name, name, strings.TrimSuffix(strings.Repeat("*"+prev+",", 10), ","))
		prev = name
	}
	bomb = append(bomb, "name: x\nipGroups: {x: *h}\n"...)
	var mu sync.Mutex
	var answers []string
	peak, _ := heapwatch.Peak(func() {
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				path, body := "/v1/validate", flow
				if i%2 == 1 {
					path = "/v1/apply"
				}
				if i == 3 {
					body = bomb
				}
				code, resp := postBody(t, srv.URL+path, body)
				mu.Lock()
				answers = append(answers, fmt.Sprintf("%s %d %.600s", path, code, resp))
				mu.Unlock()
			})
		}
		wg.Wait()
	})
	t.Logf("heap grew by %d MB for four requests of up to %d MB", peak>>20, len(flow)>>20)
	for _, a := range answers {
		if !strings.Contains(a, " 422 ") || !strings.Contains(a, "limit") || !strings.Contains(a, `"line"`) {
			t.Errorf("answer: %s", a)
		}
	}
	// The body being read (8 MB, plus io.ReadAll's growing buffer) and the
	// client's request buffers; nothing proportional to the YAML nodes.
	if limit := uint64(96 << 20); peak > limit {
		t.Errorf("heap grew by %d MB; want at most %d MB", peak>>20, limit>>20)
	}
	if st := d.Status(); st.Generation != 1 {
		t.Errorf("a refused apply changed the policy: generation %d", st.Generation)
	}
}

// TestAdminBodyLimits: a body over admin.maxBodyBytes gets 413, and a
// request that cannot get its turn within the wait gets 503 with
// Retry-After, while the rest of the API keeps answering; the budgets are
// in the metrics.
func TestAdminBodyLimits(t *testing.T) {
	d, _, _, _ := newAuthDaemon(t)
	d.cfg.Admin.MaxBodyBytes = 1 << 20
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	code, body := postBody(t, srv.URL+"/v1/validate", bytes.Repeat([]byte("#"), 2<<20))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "admin.maxBodyBytes") {
		t.Errorf("2 MB body: %d %s", code, body)
	}
	// Hold the turn: the next body request waits, then gets 503.
	d.adminLim.init()
	d.adminLim.bodyGate <- struct{}{}
	old := bodyWaitTimeout
	bodyWaitTimeout = 200 * time.Millisecond
	defer func() { bodyWaitTimeout = old }()
	req, _ := http.NewRequest("POST", srv.URL+"/v1/validate", strings.NewReader(testPolicy))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("validate while busy: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code, _ := do(t, "GET", srv.URL+"/v1/status", testToken, ""); code != 200 {
		t.Errorf("status while busy: %d", code)
	}
	<-d.adminLim.bodyGate
	if code, body := postBody(t, srv.URL+"/v1/validate", []byte(testPolicy)); code != 200 {
		t.Errorf("validate after: %d %s", code, body)
	}
	_, metrics := do(t, "GET", srv.URL+"/metrics", testToken, "")
	for _, want := range []string{`clusterwall_budget_limit{budget="admin_bodies"} 1`, `clusterwall_budget_refused_total{budget="admin_bodies"} 2`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestAdminConnectionLimit: connections beyond admin.maxConnections are
// closed at once; the ones within keep being served.
func TestAdminConnectionLimit(t *testing.T) {
	d, _, _, _ := newAuthDaemon(t)
	d.cfg.Admin.Listen = "127.0.0.1:0"
	d.cfg.Admin.MaxConnections = 4
	ln, err := d.AdminListener()
	if err != nil {
		t.Fatal(err)
	}
	srv := d.AdminServer()
	go srv.Serve(ln)
	defer srv.Close()
	var held []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// Four idle connections fill the budget: a fifth is closed at once.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF && !isReset(err) {
		t.Errorf("fifth connection: read %v, want it closed", err)
	}
	c.Close()
	// A held one still works.
	fmt.Fprintf(held[0], "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	held[0].SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	if n, _ := held[0].Read(buf); !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Errorf("held connection: %q", buf[:n])
	}
	var b []budget
	for _, x := range d.budgets() {
		if x.name == "admin_connections" {
			b = append(b, x)
		}
	}
	if len(b) != 1 || b[0].used != 4 || b[0].limit != 4 || b[0].refused != 1 {
		t.Errorf("admin_connections budget: %+v", b)
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "closed"))
}

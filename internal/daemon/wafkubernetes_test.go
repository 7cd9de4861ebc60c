package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWAFKubernetesPush pushes the controller's routes to the daemon's
// admin API: they are served next to the file's, a bad document is refused
// with its field while the running routes stay, the document is kept
// (0600) and a restarted daemon serves it, and a reload of the file keeps
// it.
func TestWAFKubernetesPush(t *testing.T) {
	backend := func(name string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
		t.Cleanup(s.Close)
		return strings.TrimPrefix(s.URL, "http://")
	}
	fileBE, kubeBE := backend("file"), backend("kube")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "waf.yaml"), []byte(wafFile(fileBE, "Prevention")), 0o644)
	conf := writeDaemonConfig(t, dir, "waf:\n  config: waf.yaml\n")
	start := func() (*Daemon, *httptest.Server, string) {
		d := loadTestDaemon(t, conf, &fakeDataplane{}, nil, nil)
		if err := d.Reload("start"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		if err := d.startWAF(ctx); err != nil {
			t.Fatal(err)
		}
		admin := httptest.NewServer(d.AdminHandler())
		t.Cleanup(admin.Close)
		return d, admin, d.waf.srv.Addr("web").String()
	}
	d, admin, addr := start()
	get := func(addr, host string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	put := func(url, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, url+"/v1/waf/kubernetes", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if got := get(addr, "k8s.example.com"); !strings.HasPrefix(got, "404") {
		t.Fatalf("before the push: %s", got)
	}
	doc := fmt.Sprintf("routes:\n  - name: ingress/shop/web/0/0\n    hosts: [k8s.example.com]\n    backends: [%q]\n    policy: store\n", kubeBE)
	code, out := put(admin.URL, doc)
	if code != 200 || !strings.Contains(out, `"generation": 1`) {
		t.Fatalf("push: %d %s", code, out)
	}
	if got := get(addr, "k8s.example.com"); got != "200 kube" {
		t.Fatalf("the pushed route: %s", got)
	}
	if got := get(addr, "store.example.com"); got != "200 file" {
		t.Fatalf("the file's route: %s", got)
	}

	// GET: hash, counts and the listeners.
	resp, err := http.Get(admin.URL + "/v1/waf/kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	st := WAFKubernetesInfo{WAFKubernetesStatus: &WAFKubernetesStatus{}}
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if fr := st.FileRoutes["store-front"]; len(fr) != 1 || fr[0].Listener != "web" || fr[0].Host != "store.example.com" {
		t.Fatalf("fileRoutes: %+v", st.FileRoutes)
	}
	if st.Generation != 1 || st.Routes != 1 || len(st.Hash) != 64 || len(st.Listeners) != 1 || st.Listeners[0].Address != addr || st.Listeners[0].TLS || st.Listeners[0].Port == 0 {
		t.Fatalf("GET /v1/waf/kubernetes: %+v", st)
	}
	if s := d.Status().WAF; s.Kubernetes == nil || s.Kubernetes.Hash != st.Hash {
		t.Fatalf("status: %+v", s)
	}

	// A bad document: 422 naming the field; the route stays.
	bad := strings.Replace(doc, kubeBE, "nohost", 1) + "  - name: x\n    redirect: {statusCode: 200}\n"
	code, out = put(admin.URL, bad)
	if code != http.StatusUnprocessableEntity || !strings.Contains(out, `kubernetes.routes[0].backends[0]`) || !strings.Contains(out, "kubernetes.routes[1].redirect.statusCode") {
		t.Fatalf("bad push: %d %s", code, out)
	}
	if code, out := put(admin.URL, "routes: [{name: a, bogus: 1}]"); code != http.StatusUnprocessableEntity || !strings.Contains(out, `unknown field \"bogus\"`) {
		t.Fatalf("unknown field: %d %s", code, out)
	}
	if got := get(addr, "k8s.example.com"); got != "200 kube" {
		t.Fatalf("after a refused push: %s", got)
	}

	// Kept, private.
	state := filepath.Join(dir, "waf-kubernetes.yaml")
	fi, err := os.Stat(state)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	// A reload of the file keeps the pushed routes.
	if err := d.ReloadWAF("test"); err != nil {
		t.Fatal(err)
	}
	if got := get(addr, "k8s.example.com"); got != "200 kube" {
		t.Fatalf("after a file reload: %s", got)
	}
	// A restarted daemon serves them before any push.
	_, _, addr2 := start()
	if got := get(addr2, "k8s.example.com"); got != "200 kube" {
		t.Fatalf("after a restart: %s", got)
	}

	// A daemon without a WAF says so.
	noWAF := loadTestDaemon(t, writeDaemonConfig(t, t.TempDir(), ""), &fakeDataplane{}, nil, nil)
	srv := httptest.NewServer(noWAF.AdminHandler())
	defer srv.Close()
	if code, out := put(srv.URL, doc); code != http.StatusNotFound || !strings.Contains(out, "runs no WAF") {
		t.Fatalf("no WAF: %d %s", code, out)
	}
}

package waf

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzKubernetes feeds arbitrary documents to what the daemon does with a
// PUT /v1/waf/kubernetes body: decode strictly, merge into a WAF config,
// validate. Whatever the bytes: no panic; an error or a configuration a
// server can be built from and that answers a request with a valid status.
// Seeds: testdata/fuzz/FuzzKubernetes.
func FuzzKubernetes(f *testing.F) {
	dir := f.TempDir()
	writeTestCert(f, dir, "default", "default.example")
	cfg := mustConfig(f, `
listeners:
  - name: web
    address: 127.0.0.1:0
  - name: websecure
    address: 127.0.0.1:0
    tls:
      certificates: [{certFile: $DIR/default.crt, keyFile: $DIR/default.key}]
routes:
  - name: file
    hosts: [file.example]
    backends: ["127.0.0.1:1"]
policies:
  - name: default
    mode: Off
`, map[string]string{"DIR": dir})
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKubernetes("kubernetes", data)
		if err != nil {
			return
		}
		merged, err := cfg.WithKubernetes(k)
		if err != nil {
			if !strings.Contains(err.Error(), "kubernetes.") && !strings.Contains(err.Error(), "routes[") {
				// Errors are about the document's fields.
				t.Logf("error without a field: %v", err)
			}
			return
		}
		s, err := NewServer(merged, Options{})
		if err != nil {
			t.Fatalf("a merged configuration the server refuses: %v", err)
		}
		for _, raw := range []string{
			"GET /api/x?mode=beta HTTP/1.1\r\nHost: a.example.com\r\nX-Env: canary\r\n\r\n",
			"POST /old/y HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 0\r\n\r\n",
		} {
			req, _ := http.ReadRequest(bufio.NewReader(bytes.NewReader([]byte(raw))))
			req.RemoteAddr = "192.0.2.7:4242"
			rec := httptest.NewRecorder()
			s.Handler("web").ServeHTTP(rec, req)
			if rec.Code < 100 || rec.Code > 599 {
				t.Fatalf("status %d", rec.Code)
			}
		}
		s.state.Load().stopChecks()
	})
}

package waf

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

var (
	fuzzOnce   sync.Once
	fuzzServer *Server
)

// FuzzWAFRequest feeds raw bytes through Go's request parser into the WAF
// handler (routing, Coraza phases 1-5, protocol checks, proxying to a
// loopback backend): whatever the bytes, no panic and a valid status.
func FuzzWAFRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
		"GET /?id=1'%20OR%20'1'='1 HTTP/1.1\r\nHost: a.example\r\n\r\n",
		"POST /form HTTP/1.1\r\nHost: a.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\nq=<script>alert(1)</script>",
		"POST /j HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\":[1,",
		"POST /u HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; boundary=x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n--x\r\n\r\n0\r\n\r\n",
		"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://other/x#f HTTP/1.0\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	fuzzOnce.Do(func() {
		_, addr := startBackend(f, "fuzz")
		cfg := mustConfig(f, `
listeners:
  - name: web
    address: 127.0.0.1:0
    limits: {maxBodyBytes: 64KiB}
routes:
  - name: app
    backends: ["$BACKEND"]
  - name: api
    hosts: ["*.example"]
    pathPrefix: /api
    backends: ["127.0.0.1:1"]
policies:
  - name: default
    paranoiaLevel: 2
    responseInspection: true
    requestBodyLimit: 32KiB
`, map[string]string{"BACKEND": addr})
		s, err := NewServer(cfg, Options{Events: &bytes.Buffer{}})
		if err != nil {
			f.Fatal(err)
		}
		fuzzServer = s
	})
	h := fuzzServer.Handler("web")
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		req.RemoteAddr = "192.0.2.7:4242"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code < 100 || rec.Code > 599 {
			t.Fatalf("status %d", rec.Code)
		}
		if rec.Header().Get("X-Correlation-Id") == "" {
			t.Fatal("no correlation id")
		}
	})
}

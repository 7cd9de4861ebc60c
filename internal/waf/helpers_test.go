package waf

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer collects the event log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// events decodes the lines written so far.
func (s *syncBuffer) events(t testing.TB) []Event {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Event
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event line is not JSON: %v: %s", err, sc.Text())
		}
		out = append(out, e)
	}
	return out
}

// eventFor finds the event with a correlation ID.
func (s *syncBuffer) eventFor(t testing.TB, id string) *Event {
	t.Helper()
	for _, e := range s.events(t) {
		if e.CorrelationID == id {
			return &e
		}
	}
	return nil
}

// echoBackend answers with what it received, as JSON; /slow waits for
// release; /sqlerror answers with a database error page.
type echoBackend struct {
	name    string
	release chan struct{}
	started chan struct{}
}

type echo struct {
	Backend string      `json:"backend"`
	Method  string      `json:"method"`
	URI     string      `json:"uri"`
	Host    string      `json:"host"`
	Header  http.Header `json:"header"`
	Body    string      `json:"body"`
}

func (b *echoBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	switch r.URL.Path {
	case "/slow":
		b.started <- struct{}{}
		<-b.release
	case "/sqlerror":
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html><body>You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near ''' at line 1</body></html>")
		return
	case "/healthz":
		if strings.HasPrefix(b.name, "sick") {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Backend", b.name)
	json.NewEncoder(w).Encode(echo{Backend: b.name, Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header, Body: string(body)})
}

// startBackend serves an echoBackend on loopback.
func startBackend(t testing.TB, name string) (*echoBackend, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &echoBackend{name: name, release: make(chan struct{}), started: make(chan struct{}, 4)}
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b, ln.Addr().String()
}

// startWAF parses config text (with $VARS replaced) and starts a server.
func startWAF(t testing.TB, config string, vars map[string]string) (*Server, *syncBuffer) {
	t.Helper()
	cfg := mustConfig(t, config, vars)
	events := &syncBuffer{}
	srv, err := NewServer(cfg, Options{Events: events})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, events
}

func mustConfig(t testing.TB, config string, vars map[string]string) *Config {
	t.Helper()
	for k, v := range vars {
		config = strings.ReplaceAll(config, "$"+k, v)
	}
	cfg, err := ParseConfig("test.yaml", []byte(config))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, config)
	}
	return cfg
}

func baseURL(s *Server, listener string) string {
	return "http://" + s.Addr(listener).String()
}

// get sends a request and returns the response with its body read.
func do(t testing.TB, req *http.Request) (*http.Response, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func get(t testing.TB, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, req)
}

package waf

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// rawResponse sends raw bytes on a new connection and returns everything
// the server writes until it closes the connection.
func rawResponse(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer: %v (got %q)", err, b)
	}
	return string(b)
}

func TestVersionGate(t *testing.T) {
	_, addr := startBackend(t, "b1")
	for _, mode := range []string{"Detection", "Prevention"} {
		t.Run(mode, func(t *testing.T) {
			s, events := startWAF(t, simpleConfig, map[string]string{"BACKEND": addr, "MODE": mode})
			waddr := s.Addr("web").String()
			tests := []struct {
				name, raw  string
				status     int    // 0: an HTTP/0.9 answer (no status line)
				detectWant int    // status in Detection
				reason     string // in the event
			}{
				{"HTTP/0.9 with a version token", "GET / HTTP/0.9\r\nHost: a.example\r\nUser-Agent: t\r\n\r\n", 403, 400, "HTTP/0.9"},
				{"HTTP/0.8", "GET / HTTP/0.8\r\nHost: a.example\r\n\r\n", 403, 400, "HTTP/0.8"},
				{"HTTP/4.0", "GET /x?a=1 HTTP/4.0\r\nHost: a.example\r\nUser-Agent: t\r\n\r\n", 403, 505, "HTTP/4.0"},
				{"simple request", "GET /\r\n", 0, 0, "HTTP/0.9 request"},
				{"simple request, trailing space", "GET / \r\nHost: a.example\r\n\r\n", 0, 0, "HTTP/0.9 request"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					before := len(events.events(t))
					out := rawResponse(t, waddr, tt.raw)
					want := tt.status
					if mode == "Detection" {
						want = tt.detectWant
					}
					var id string
					if want == 0 {
						if strings.HasPrefix(out, "HTTP/") || !strings.Contains(out, "<html>") {
							t.Fatalf("want an HTTP/0.9 answer (a page, no status line), got %q", out)
						}
						// The page names the correlation ID.
						i := strings.Index(out, "<code>")
						j := strings.Index(out, "</code>")
						if i < 0 || j < i {
							t.Fatalf("no correlation ID in %q", out)
						}
						id = out[i+6 : j]
					} else {
						res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
						if err != nil {
							t.Fatalf("%v: %q", err, out)
						}
						if res.StatusCode != want {
							t.Errorf("status %d, want %d", res.StatusCode, want)
						}
						if !res.Close {
							t.Error("no Connection: close")
						}
						id = res.Header.Get("X-Correlation-Id")
					}
					e := events.eventFor(t, id)
					if e == nil {
						t.Fatalf("no event for correlation ID %q (%d new events)", id, len(events.events(t))-before)
					}
					if !slices.Contains(e.RuleIDs, 920430) {
						t.Errorf("rule 920430 not logged: %v", e.RuleIDs)
					}
					if e.Action != ActionBlocked || e.Listener != "web" || e.Mode != mode || !strings.Contains(e.Reason, tt.reason) {
						t.Errorf("event %+v", e)
					}
				})
			}
			// HTTP/1.x passes the gate: two pipelined requests on one
			// connection, the second already in the gate's buffer.
			t.Run("pipelined HTTP/1.1", func(t *testing.T) {
				c, err := net.Dial("tcp", waddr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				req := "GET /a HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"
				io.WriteString(c, req+strings.Replace(req, "/a", "/b", 1))
				br := bufio.NewReader(c)
				for _, p := range []string{"/a", "/b"} {
					res, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := io.ReadAll(res.Body)
					if res.StatusCode != 200 || !strings.Contains(string(b), `"uri":"`+p+`"`) {
						t.Errorf("%s: %d %s", p, res.StatusCode, b)
					}
				}
			})
			t.Run("HTTP/1.0", func(t *testing.T) {
				out := rawResponse(t, waddr, "GET / HTTP/1.0\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n")
				if !strings.HasPrefix(out, "HTTP/1.0 200") {
					t.Errorf("got %.80q", out)
				}
			})
		})
	}
}

func TestParseGateLine(t *testing.T) {
	tests := []struct {
		line         string
		method       string
		proto        string
		major, minor int
		simple       bool
	}{
		{"GET / HTTP/1.1\r\n", "GET", "HTTP/1.1", 1, 1, false},
		{"GET / HTTP/0.9\r\n", "GET", "HTTP/0.9", 0, 9, false},
		{"PRI * HTTP/2.0\r\n", "PRI", "HTTP/2.0", 2, 0, false},
		{"GET /\r\n", "GET", "HTTP/0.9", 0, 9, true},
		{"GET / \n", "GET", "HTTP/0.9", 0, 9, true},
		{"GET / HTTP/2\r\n", "", "", 0, 0, false},   // not HTTP/d.d: Go answers 400
		{"GET / 1.1\r\n", "", "", 0, 0, false},      // idem
		{"G(T / HTTP/4.0\r\n", "", "", 0, 0, false}, // bad method: Go answers
		{"GET\r\n", "", "", 0, 0, false},
		{"GET / HTTP/1.1 x\r\n", "", "", 0, 0, false},
	}
	for _, tt := range tests {
		m, _, p, maj, min, simple := parseGateLine([]byte(tt.line))
		if m != tt.method || p != tt.proto || maj != tt.major || min != tt.minor || simple != tt.simple {
			t.Errorf("%q: got %q %q %d.%d simple=%v", tt.line, m, p, maj, min, simple)
		}
	}
}

// FuzzParseGateLine: any first line parses without panicking, and what the
// gate would take is a well-formed request line of a version Go refuses.
func FuzzParseGateLine(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1\r\n", "GET / HTTP/0.9\r\n", "GET /\r\n", "PRI * HTTP/2.0\r\n", "GET / HTTP/4.0\n", " / \r\n", "\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		method, target, proto, major, minor, simple := parseGateLine(line)
		if method == "" {
			return
		}
		if target == "" || !validMethod(method) {
			t.Fatalf("%q: took method %q target %q", line, method, target)
		}
		if simple && proto != "HTTP/0.9" {
			t.Fatalf("%q: simple request with proto %q", line, proto)
		}
		if !simple && (major < 0 || major > 9 || minor < 0 || minor > 9 || proto != fmt.Sprintf("HTTP/%d.%d", major, minor)) {
			t.Fatalf("%q: proto %q %d.%d", line, proto, major, minor)
		}
	})
}

package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseRequestHead(t *testing.T) {
	tests := []struct {
		name   string
		head   string
		form   TargetForm
		host   string
		port   uint16
		status int    // 0: accepted
		msg    string // part of the error
	}{
		{"origin form", "GET /x HTTP/1.1\r\nHost: Example.COM\r\nUser-Agent: t\r\n\r\n", FormOrigin, "example.com", 0, 0, ""},
		{"origin form with port", "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", FormOrigin, "example.com", 8080, 0, ""},
		{"IPv6 host", "GET / HTTP/1.1\r\nHost: [2001:DB8::1]:80\r\n\r\n", FormOrigin, "2001:db8::1", 80, 0, ""},
		{"IPv4 host", "GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n", FormOrigin, "10.0.0.1", 0, 0, ""},
		{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", FormOrigin, "", 0, 0, ""},
		{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", FormOrigin, "", 0, 0, ""},
		{"absolute form", "GET http://Example.com:81/a?b HTTP/1.1\r\nHost: example.com:81\r\n\r\n", FormAbsolute, "example.com", 81, 0, ""},
		{"absolute form without path", "GET http://example.com HTTP/1.1\r\n\r\n", FormAbsolute, "example.com", 0, 0, ""},
		{"CONNECT", "CONNECT ghcr.io:443 HTTP/1.1\r\nHost: ghcr.io:443\r\n\r\n", FormAuthority, "ghcr.io", 443, 0, ""},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n", FormAsterisk, "a.example", 0, 0, ""},
		{"tab around value", "GET / HTTP/1.1\r\nHost:\t a.example \t\r\n\r\n", FormOrigin, "a.example", 0, 0, ""},

		{"two Host fields", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", 0, "", 0, 400, "more than one Host"},
		{"host case variants", "GET / HTTP/1.1\r\nHost: a.example\r\nhOST: b.example\r\n\r\n", 0, "", 0, 400, "more than one Host"},
		{"absolute form Host mismatch", "GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", 0, "", 0, 400, "does not match"},
		{"CONNECT without port", "CONNECT ghcr.io HTTP/1.1\r\n\r\n", 0, "", 0, 400, "no port"},
		{"userinfo", "GET http://u:p@a.example/ HTTP/1.1\r\n\r\n", 0, "", 0, 400, "userinfo"},
		{"bare LF", "GET / HTTP/1.1\nHost: a.example\r\n\r\n", 0, "", 0, 400, "bare CR or LF"},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a.example\r\n folded\r\n\r\n", 0, "", 0, 400, "line folding"},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", 0, "", 0, 400, "bad header field name"},
		{"control byte in value", "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", 0, "", 0, 400, "bad byte"},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, "", 0, 400, "HTTP/2"},
		{"HTTP/0.9", "GET /\r\n\r\n", 0, "", 0, 400, "not METHOD TARGET VERSION"},
		{"two spaces", "GET  / HTTP/1.1\r\n\r\n", 0, "", 0, 400, "not METHOD TARGET VERSION"},
		{"bad port", "GET / HTTP/1.1\r\nHost: a.example:99999\r\n\r\n", 0, "", 0, 400, "out of range"},
		{"empty port", "GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n", 0, "", 0, 400, "empty port"},
		{"bad host byte", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 0, "", 0, 400, "bad host"},
		{"fragment in target", "GET http://a.example/#x HTTP/1.1\r\n\r\n", 0, "", 0, 400, "byte 0x23"},
		{"ftp scheme", "GET ftp://a.example/ HTTP/1.1\r\n\r\n", 0, "", 0, 400, "unsupported URI scheme"},
		{"relative target", "GET a.example HTTP/1.1\r\n\r\n", 0, "", 0, 400, "neither a path"},
		{"zone in IPv6", "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", 0, "", 0, 400, "bad IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseRequestHead([]byte(tt.head))
			if tt.status != 0 {
				he, ok := err.(*HeadError)
				if !ok || he.Status != tt.status || !strings.Contains(he.Msg, tt.msg) {
					t.Fatalf("err = %v, want %d containing %q", err, tt.status, tt.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Form != tt.form || h.Host != tt.host || h.Port != tt.port || h.Len != len(tt.head) {
				t.Errorf("got form %d host %q port %d len %d; want %d %q %d %d", h.Form, h.Host, h.Port, h.Len, tt.form, tt.host, tt.port, len(tt.head))
			}
		})
	}
}

func TestReadRequestHead(t *testing.T) {
	t.Run("body after head stays in the buffer", func(t *testing.T) {
		in := "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello"
		buf := make([]byte, 1024)
		h, n, err := ReadRequestHead(strings.NewReader(in), buf, 0)
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[h.Len:n]) != "hello" {
			t.Errorf("rest = %q", buf[h.Len:n])
		}
	})
	t.Run("one byte at a time", func(t *testing.T) {
		in := "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"
		h, _, err := ReadRequestHead(iotest.OneByteReader(strings.NewReader(in)), make([]byte, 1024), 0)
		if err != nil || h.Host != "a.example" {
			t.Fatalf("%v %+v", err, h)
		}
	})
	t.Run("never-ending header is cut at the buffer", func(t *testing.T) {
		r := io.MultiReader(strings.NewReader("GET / HTTP/1.1\r\nX: "), &repeatReader{pat: []byte("a")})
		buf := make([]byte, 4096)
		_, n, err := ReadRequestHead(r, buf, 0)
		he, ok := err.(*HeadError)
		if !ok || he.Status != 431 || n != len(buf) {
			t.Fatalf("err = %v, n = %d", err, n)
		}
	})
	t.Run("garbage is refused at the first byte", func(t *testing.T) {
		r := &repeatReader{pat: []byte{0x01, 0x02}}
		_, n, err := ReadRequestHead(iotest.OneByteReader(r), make([]byte, 4096), 0)
		he, ok := err.(*HeadError)
		if !ok || he.Status != 400 || n != 1 {
			t.Fatalf("err = %v after %d bytes", err, n)
		}
	})
	t.Run("closed mid-head", func(t *testing.T) {
		_, _, err := ReadRequestHead(strings.NewReader("GET / HTTP/1.1\r\nHo"), make([]byte, 1024), 0)
		he, ok := err.(*HeadError)
		if !ok || !he.Truncated {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestRewrite(t *testing.T) {
	tests := []struct {
		name            string
		in              string
		toOrigin, close bool
		want            string
	}{
		{"force close replaces keep-alive", "GET /a HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX: 1\r\n\r\n", false, true,
			"GET /a HTTP/1.1\r\nHost: a.example\r\nX: 1\r\nConnection: close\r\n\r\n"},
		{"upgrade is left alone", "GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false, true,
			"GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"absolute to origin", "GET http://a.example:8080/p?q=1 HTTP/1.1\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic x\r\nAccept: */*\r\n\r\n", true, true,
			"GET /p?q=1 HTTP/1.1\r\nAccept: */*\r\nHost: a.example:8080\r\nConnection: close\r\n\r\n"},
		{"absolute with Host keeps its place", "GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n", true, false,
			"GET / HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseRequestHead([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			got := string(h.rewrite(tt.toOrigin, tt.close))
			if got != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func seedHeads() [][]byte {
	return [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"),
		[]byte("GET http://a.example:81/x HTTP/1.1\r\nHost: a.example:81\r\nProxy-Connection: keep-alive\r\n\r\n"),
		[]byte("CONNECT ghcr.io:443 HTTP/1.1\r\nHost: ghcr.io:443\r\n\r\n\x16\x03\x01"),
		[]byte("GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
		[]byte("OPTIONS * HTTP/1.0\r\n\r\n"),
		[]byte("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
		[]byte("GET / HTTP/1.1\nHost: a\n\n"),
		[]byte("\x16\x03\x01\x00\x05"),
	}
}

// FuzzHTTPHead: the parser never panics; the streaming reader agrees with
// it; an accepted head is also accepted by net/http with the same host;
// and the rewritten head parses back to the same request.
func FuzzHTTPHead(f *testing.F) {
	for _, s := range seedHeads() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		buf := make([]byte, 4096)
		h, _, err := ReadRequestHead(iotest.OneByteReader(bytes.NewReader(data)), buf, 0)
		if i := bytes.Index(data, crlfcrlf); i >= 0 && i+4 <= len(buf) {
			h2, err2 := ParseRequestHead(data[:i+4])
			if (err == nil) != (err2 == nil) {
				// The reader may refuse early on a bad method byte.
				if err2 == nil {
					t.Fatalf("reader: %v, parser accepted", err)
				}
			}
			if err == nil && err2 == nil && (h.Host != h2.Host || h.Port != h2.Port || h.Form != h2.Form) {
				t.Fatalf("reader %+v, parser %+v", h, h2)
			}
		}
		if err != nil {
			return
		}
		if h.Host != strings.ToLower(h.Host) {
			t.Fatalf("host %q not lower case", h.Host)
		}
		// net/http agrees that this is a request for the same host.
		req, herr := http.ReadRequest(bufio.NewReader(bytes.NewReader(data[:h.Len])))
		if herr != nil {
			t.Fatalf("we accepted a head net/http rejects (%v): %q", herr, data[:h.Len])
		}
		if h.Host != "" && req.Host != "" {
			host, port, aerr := parseAuthority(req.Host)
			if aerr != nil || host != h.Host || (port != h.Port && h.Form != FormAuthority) {
				t.Fatalf("net/http host %q, ours %q:%d", req.Host, h.Host, h.Port)
			}
		}
		for _, mode := range [][2]bool{{false, true}, {true, true}, {true, false}} {
			out := h.rewrite(mode[0], mode[1])
			h3, err := ParseRequestHead(out)
			if err != nil {
				t.Fatalf("rewrite %v of %q gave unparsable %q: %v", mode, data[:h.Len], out, err)
			}
			if h3.Host != h.Host || h3.Method != h.Method {
				t.Fatalf("rewrite %v changed host/method: %+v -> %+v", mode, h, h3)
			}
		}
	})
}

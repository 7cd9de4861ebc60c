package waf

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

const hostileConfig = `
listeners:
  - name: web
    address: 127.0.0.1:0
    limits: {maxHeaderBytes: 4KiB, maxBodyBytes: 1KiB, maxConnections: 64}
    timeouts: {readHeader: 300ms, read: 2s}
routes:
  - name: app
    backends: ["$BACKEND"]
policies:
  - name: default
`

// rawExchange sends raw bytes and reads one response.
func rawExchange(t *testing.T, addr string, raw string) (int, string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return 0, "", err
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), nil
}

// multipartBomb: many parts and no closing boundary.
var multipartBomb = strings.Repeat("--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n", 16)

func TestHostileInput(t *testing.T) {
	_, addr := startBackend(t, "b1")
	s, events := startWAF(t, hostileConfig, map[string]string{"BACKEND": addr})
	waddr := s.Addr("web").String()
	ok := func(t *testing.T) {
		t.Helper()
		code, _, err := rawExchange(t, waddr, "GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n")
		if err != nil || code != 200 {
			t.Fatalf("the server stopped serving others: %d %v", code, err)
		}
	}
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"oversized headers", "GET / HTTP/1.1\r\nHost: a.example\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n", 431},
		{"oversized body by length", "POST / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("a", 5000), 413},
		{"oversized chunked body", "POST / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("100\r\n"+strings.Repeat("a", 256)+"\r\n", 8) + "0\r\n\r\n", 413},
		{"malformed request line", "GET/ HTTP/1.1 junk\r\n\r\n", 400},
		{"header without colon", "GET / HTTP/1.1\r\nHost: a.example\r\nnocolon\r\n\r\n", 400},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
		{"fragment in target", "GET /#x HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n", 403}, // CRS 920610 blocks first; in Detection the protocol check answers 400
		{"percent in host", "GET / HTTP/1.1\r\nHost: a%00b\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n", 403},          // CRS blocks first
		{"unterminated multipart with many parts", "POST /upload HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: " + fmt.Sprint(len(multipartBomb)) + "\r\n\r\n" + multipartBomb, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, err := rawExchange(t, waddr, tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			if code != tt.status {
				t.Errorf("status %d, want %d: %.200s", code, tt.status, body)
			}
			ok(t)
		})
	}
	t.Run("slow headers time out", func(t *testing.T) {
		c, err := net.Dial("tcp", waddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example\r\n")
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				break // closed by the server (or 408 then closed)
			}
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("slow client held the connection %s", d)
		}
		ok(t)
	})
	t.Run("413 is logged", func(t *testing.T) {
		found := false
		for _, e := range events.events(t) {
			if e.Status == 413 && e.Action == ActionBlocked && e.Reason != "" {
				found = true
			}
		}
		if !found {
			t.Error("no Blocked event with status 413")
		}
	})
}

func TestMaxConnections(t *testing.T) {
	_, addr := startBackend(t, "b1")
	s, _ := startWAF(t, strings.Replace(hostileConfig, "maxConnections: 64", "maxConnections: 2", 1), map[string]string{"BACKEND": addr})
	waddr := s.Addr("web").String()
	// Two idle connections take both slots; a third is not served until
	// one of them goes.
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", waddr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n")
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	c, err := net.Dial("tcp", waddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		t.Fatal("a third connection was served while two were open")
	}
	held[0].Close()
	c2, err := net.Dial("tcp", waddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	held[1].Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("after closing: %v", err)
	}
	_ = bytes.MinRead
}

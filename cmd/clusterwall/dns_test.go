//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestDNSServeFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no upstream", []string{"dns", "serve", "--listen", "127.0.0.1:0"}, "--upstream is required"},
		{"upstream by name", []string{"dns", "serve", "--listen", "127.0.0.1:0", "--upstream", "dns.google"}, "upstreams[0]"},
		{"second upstream bad port", []string{"dns", "serve", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1,127.0.0.2:99999"}, "upstreams[1]"},
		{"bad listen address", []string{"dns", "serve", "--listen", "localhost", "--upstream", "127.0.0.1"}, "listen address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v (output %q), want one mentioning %q", err, out, tc.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the command's log goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDNSServe(t *testing.T) {
	// A real upstream on loopback.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		a, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2.7")
		m.Answer = []dns.RR{a}
		w.WriteMsg(m)
	})}
	go up.ActivateAndServe()
	defer up.Shutdown()

	// A free port for the proxy.
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := probe.LocalAddr().String()
	probe.Close()

	root := newRootCmd()
	var stdout, stderr syncBuffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"dns", "serve", "--listen", listen, "--upstream", pc.LocalAddr().String()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	var r *dns.Msg
	m := new(dns.Msg)
	m.SetQuestion("svc.example.test.", dns.TypeA)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c := &dns.Client{Timeout: 500 * time.Millisecond}
		if r, _, err = c.Exchange(m, listen); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no answer from dns serve: %v\nstderr: %s", err, stderr.String())
	}
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
		t.Fatalf("answer %v", r)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dns serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dns serve did not stop")
	}
	var rec map[string]any
	line, _, _ := strings.Cut(stdout.String(), "\n")
	if err := json.Unmarshal([]byte(line), &rec); err != nil {
		t.Fatalf("query log line %q: %v", line, err)
	}
	if rec["category"] != "AZFWDnsQuery" || rec["QueryName"] != "svc.example.test." || rec["ResponseCode"] != "NOERROR" {
		t.Errorf("query log line %v", rec)
	}
}

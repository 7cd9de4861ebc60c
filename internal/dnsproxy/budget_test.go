package dnsproxy

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestBudgetsHoldUnderFlood fills every bound a client can grow — the
// cache (random names), the learned-address table (names, and addresses:
// ever new CNAMEs to a name whose server hands out a new address every
// time), the queries waiting for upstreams (a slow zone), and the TCP
// clients (idle connections) — all at once, while a normal client keeps
// asking from another address. Every budget stays within its bound and
// turns some away, and the normal client is answered throughout: when the
// queries waiting for upstreams are at their bound, the flooder's are
// shed for it (before fair shedding, it got SERVFAIL for about one query
// in six here).
func TestBudgetsHoldUnderFlood(t *testing.T) {
	z := newZone(t)
	tb := NewTable(TableOptions{MaxNames: 100, MaxAddrs: 300, MaxAddrsPerName: 32})
	h := startProxy(t, Config{Upstreams: []string{z.addr}, CacheSize: 64, CacheBytes: 64 << 10,
		MaxInflight: 16, MaxTCPConns: 4, TCPIdle: 10 * time.Second, Timeout: 2 * time.Second}, Options{Table: tb})
	over := func() (msg string) {
		for _, b := range h.p.Budgets() {
			if b.Used > b.Limit {
				msg += fmt.Sprintf("%s: %d of %d; ", b.Name, b.Used, b.Limit)
			}
		}
		return msg
	}
	// Idle TCP clients: the first four hold every slot.
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range 6 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Int64
	flood := func(format string) {
		defer wg.Done()
		c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf(format, i, time.Now().UnixNano()%1000), dns.TypeA)
			c.Exchange(m, h.addr)
			sent.Add(1)
		}
	}
	for _, f := range []string{"r%d-%d.any.example.test.", "c%d-%d.rot.example.test."} {
		for range 4 {
			wg.Add(1)
			go flood(f)
		}
	}
	// Slow names, without waiting for the answers: the queries waiting
	// for the upstream pile up.
	uc, err := net.Dial("udp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("s%d.slow.example.test.", i), dns.TypeA)
			wire, _ := m.Pack()
			uc.Write(wire)
			sent.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			uc.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := uc.Read(buf); err != nil {
				select {
				case <-stop:
					return
				default:
				}
			}
		}
	}()
	// The normal client, from another address.
	normal := &dns.Client{Net: "udp", Timeout: 2 * time.Second,
		Dialer: &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}}}
	var asked, answered int
	var worst string
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, name := range []string{"www.example.test.", "bad.example.test."} {
			asked++
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			r, _, err := normal.Exchange(m, h.addr)
			if err == nil && r.Rcode == dns.RcodeSuccess && len(aRecords(r)) > 0 {
				answered++
			}
		}
		if m := over(); m != "" {
			worst = m
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("flood: %d queries; normal client: %d of %d answered", sent.Load(), answered, asked)
	for _, b := range h.p.Budgets() {
		t.Logf("budget %-20s used %6d limit %8d refused %d", b.Name, b.Used, b.Limit, b.Refused)
		if b.Refused == 0 && b.Name != "dns_cache_bytes" {
			t.Errorf("%s: nothing refused; the flood did not fill it", b.Name)
		}
	}
	if worst != "" {
		t.Errorf("over budget during the flood: %s", worst)
	}
	if answered*100 < asked*99 {
		t.Errorf("the normal client got %d answers of %d during the flood (want ≥ 99%%)", answered, asked)
	}
	// The target name kept at most its own bound of addresses.
	if n := len(tb.Addrs("target.example.test")); n > 32 {
		t.Errorf("target.example.test: %d addresses, bound 32", n)
	}
}

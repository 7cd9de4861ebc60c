package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// TestHAFQDNReplicated: the gateways' own resolutions of example.org
// differ (fw2's upstream answers 192.0.2.99, as a round-robin or CDN name
// would), so re-resolution by the new active gateway does not cover a
// client that resolved through the old one. The client resolves through
// fw (192.0.2.14), fw dies, and the client's new flow to 192.0.2.14 passes
// through fw2 because fw replicated the answer. TestHAFQDNNotReplicated
// is the control (replicateDNS: false): the same flow is denied.
func TestHAFQDNReplicated(t *testing.T) { t.Parallel(); haFQDN(t, true) }

// TestHAFQDNNotReplicated is TestHAFQDNReplicated's control.
func TestHAFQDNNotReplicated(t *testing.T) { t.Parallel(); haFQDN(t, false) }

func haFQDN(t *testing.T, replicate bool) {
	h := newHALab(t)
	other := netip.AddrPortFrom(nonazure4, 53)
	h.otherDNS(t, other, "example.org", nonazure4)
	edit := func(file string, f func(string) string) {
		p := filepath.Join(h.Dir(), file)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f(string(data))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit(lab.Daemon2ConfigFile, func(s string) string { return s + "dns:\n  upstreams: [\"" + other.String() + "\"]\n" })
	restart := []string{lab.HostFW2}
	if !replicate {
		edit(lab.DaemonConfigFile, func(s string) string { return strings.Replace(s, "\nha:\n", "\nha:\n  replicateDNS: false\n", 1) })
		restart = append(restart, lab.HostFW)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, host := range restart {
		if err := h.Stop(lab.DaemonProcOf(host)); err != nil {
			t.Fatal(err)
		}
		if host == lab.HostFW2 {
			// fw2's first daemon resolved example.org through the lab's
			// DNS (192.0.2.14) and its kernel set keeps that address
			// until the TTL ends: a restarted daemon adopts the sets of
			// the same content. Flush the table, so that fw2 holds only
			// what its own upstream (192.0.2.99) and replication give it.
			if out, err := h.cw(t, host, "dataplane", "flush"); err != nil {
				t.Fatalf("dataplane flush on %s: %v: %s", host, err, out)
			}
		}
		if err := h.Start(ctx, h.DaemonProcFor(host)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.WaitRoles(ctx, map[string]string{lab.HostFW: "active", lab.HostFW2: "backup"}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	example := lab.MustLookup(lab.NameExample).V4
	mcr := lab.MustLookup("mcr.microsoft.com")
	const sent = `clusterwall_ha_dns_answers_total{result="sent"}`
	before := h.metric(t, lab.HostFW, sent)
	if a := h.dig(t, "example.org"); a != example {
		t.Fatalf("example.org through fw: %v, want %s", a, example)
	}
	// A name no rule makes the gateways resolve themselves, for an
	// application rule: the L7 proxy's spoofing check needs it learned.
	if a := h.dig(t, mcr.Name); a != mcr.V4 {
		t.Fatalf("%s through fw: %v, want %s", mcr.Name, a, mcr.V4)
	}
	if replicate {
		deadline := time.Now().Add(5 * time.Second)
		for h.metric(t, lab.HostFW, sent) < before+1 || h.metric(t, lab.HostFW2, `clusterwall_ha_dns_answers_total{result="received"}`) < 2 {
			if time.Now().After(deadline) {
				t.Fatal("fw did not replicate the answers to fw2 within 5s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	} else {
		time.Sleep(500 * time.Millisecond) // what replication would have taken
	}
	if err := h.Crash(lab.HostFW); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitRoles(ctx, map[string]string{lab.HostFW2: "active"}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// fw2's own resolution is another address: re-resolving does not help.
	if a := h.dig(t, "example.org"); a != nonazure4 {
		t.Fatalf("example.org through fw2: %v, want its own upstream's %s", a, nonazure4)
	}
	// The client's new HTTPS connection through the L7 proxy to the
	// address it got from fw: fw2 cannot resolve the name itself (its
	// upstream refuses it), so only a replicated answer passes the
	// spoofing check.
	pbody, _, perr := h.httpGetName(lab.HostNode, mcr)
	switch {
	case replicate && (perr != nil || pbody != mcr.Name):
		t.Errorf("HTTPS to %s (resolved through fw) through fw2's L7 proxy: %q %v; want it allowed", mcr.Name, pbody, perr)
	case !replicate && perr == nil:
		t.Errorf("without replicateDNS, HTTPS to %s passed fw2's spoofing check (%q): the control proves nothing", mcr.Name, pbody)
	default:
		t.Logf("replicateDNS %v: HTTPS to %s (resolved through fw) through fw2's L7 proxy: %q %v", replicate, mcr.Name, pbody, perr)
	}
	// The client's new flow to the address it got from fw, without resolving again.
	body, _, err := h.httpGet(lab.HostNode, netip.Addr{}, "http", ap(example, 80))
	switch {
	case replicate && (err != nil || body != "example.org"):
		t.Errorf("new flow to %s (resolved through fw) after the failover: %q %v; want it allowed by the replicated answer", example, body, err)
	case !replicate && err == nil:
		t.Errorf("without replicateDNS the new flow to %s passed through fw2 (%q): the control proves nothing", example, body)
	default:
		t.Logf("replicateDNS %v: new flow to %s (resolved through fw) after the failover: %q %v", replicate, example, body, err)
	}
}

// otherDNS answers name with addr (A, TTL 60) at ap in inet, REFUSED for
// anything else, until the test ends.
func (h *haLab) otherDNS(t *testing.T, ap netip.AddrPort, name string, addr netip.Addr) {
	t.Helper()
	var pc net.PacketConn
	if err := h.Do(lab.HostInet, func() error {
		var err error
		pc, err = net.ListenPacket("udp", ap.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch {
		case strings.EqualFold(strings.TrimSuffix(q.Name, "."), name) && q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: addr.AsSlice()})
		case strings.EqualFold(strings.TrimSuffix(q.Name, "."), name):
		default:
			m.Rcode = dns.RcodeRefused
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
}

// dig resolves name (A) from node through the cluster's DNS server, the
// active gateway's DNS proxy.
func (h *haLab) dig(t *testing.T, name string) netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := h.Exec(ctx, lab.HostNode, "dig", "+short", "+time=2", "+tries=2", name, "A", "@"+lab.FWPrivateV4.String())
	a, perr := netip.ParseAddr(strings.TrimSpace(string(out)))
	if err != nil || perr != nil {
		t.Fatalf("dig %s: %v %q", name, err, out)
	}
	return a
}

// metric reads one sample from host's daemon's /metrics (0 when absent).
func (h *haLab) metric(t *testing.T, host, series string) float64 {
	t.Helper()
	code, body, err := h.AdminOf(context.Background(), host, http.MethodGet, "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s /metrics: %d %v", host, code, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// httpGetName fetches https://NAME/ from host at the name's lab address,
// with the name as SNI and Host (through the L7 proxy); peer is where the
// server saw the connection come from.
func (h *haLab) httpGetName(host string, n lab.Name) (string, netip.AddrPort, error) {
	pool, err := h.CAPool()
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return h.dial(host, netip.Addr{}, "tcp", ap(n.V4, 443), denyWait)
		},
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: n.Name},
		DisableKeepAlives: true,
	}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get("https://" + n.Name + "/")
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", netip.AddrPort{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", netip.AddrPort{}, fmt.Errorf("%s", resp.Status)
	}
	peer, _ := netip.ParseAddrPort(resp.Header.Get(lab.PeerHeader))
	return strings.TrimSpace(string(data)), peer, nil
}

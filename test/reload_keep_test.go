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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// keepPolicy allows one flow of every kind the firewall keeps across
// reloads: a DNAT rule (the outside client to the store's port 9102 through
// the public IPs), a network rule (the echo servers on nonazure port 9101)
// and application rules, decided by the L7 proxy by name (HTTP on 9080 and
// HTTPS on 9443 to nonazure.example.net, and, while CUT is in, to ghcr.io).
// TOGGLE is a network rule's port that reloads change (an unrelated rule);
// CUT is replaced by the ghcr.io application rule or nothing.
const keepPolicy = `name: e2e-keep
ruleCollectionGroups:
  - name: publish
    priority: 100
    ruleCollections:
      - name: dnat
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - name: stream4
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [203.0.113.32]
            destinationPorts: ['9102']
            translatedAddress: 10.42.1.100
            translatedPort: '9102'
          - name: stream6
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: ['2001:db8:cafe::32']
            destinationPorts: ['9102']
            translatedAddress: '2001:db8:42:1::100'
            translatedPort: '9102'
  - name: net
    priority: 200
    ruleCollections:
      - name: egress
        kind: Network
        priority: 200
        action: Allow
        rules:
          - name: stream-keep
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.99, '2001:db8:192::99']
            destinationPorts: ['9101']
          - name: toggle
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.200]
            destinationPorts: ['TOGGLE']
  - name: apps
    priority: 300
    ruleCollections:
      - name: web
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: nonazure
            protocols: ['Http:9080', 'Https:9443']
            sourceAddresses: ['*']
            targetFqdns: [nonazure.example.net]
CUT`

const keepCutRule = `          - name: ghcr
            protocols: ['Http:9080', 'Https:9443']
            sourceAddresses: ['*']
            targetFqdns: [ghcr.io]
`

func keepPolicyWith(toggle int, ghcr bool) string {
	p := strings.Replace(keepPolicy, "TOGGLE", strconv.Itoa(20000+toggle), 1)
	cut := ""
	if ghcr {
		cut = keepCutRule
	}
	return strings.Replace(p, "CUT", cut, 1)
}

// Ports of the streaming servers the tests below run in inet.
const (
	streamHTTPPort  = 9080
	streamHTTPSPort = 9443
)

// streamServer serves endless downloads for name on its v4 and v6 address
// in inet, over HTTP on streamHTTPPort and HTTPS (the lab CA's certificate
// for name) on streamHTTPSPort: after the request head, a 200 response
// whose body never ends (32 KiB every 5 ms), until the client goes away.
func (f *fwLab) streamServer(t *testing.T, name string) {
	t.Helper()
	cert, err := f.Certificate(name)
	if err != nil {
		t.Fatal(err)
	}
	n := lab.MustLookup(name)
	for _, a := range []netip.Addr{n.V4, n.V6} {
		f.serveTCP(t, lab.HostInet, netip.AddrPortFrom(a, streamHTTPPort), serveStream)
		f.serveTCP(t, lab.HostInet, netip.AddrPortFrom(a, streamHTTPSPort), serveStream, func(ln net.Listener) net.Listener {
			return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
		})
	}
}

func serveStream(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	req.Body.Close()
	c.SetReadDeadline(time.Time{})
	if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"); err != nil {
		return
	}
	chunk := make([]byte, 32<<10)
	for {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(chunk); err != nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// download is a client reading an endless stream through the L7 proxy.
type download struct {
	what  string // "https://name (v4)"
	conn  net.Conn
	r     *bufio.Reader
	bytes atomic.Int64
	err   atomic.Pointer[error]
	done  chan struct{}
}

// startDownload connects from node to dst as scheme://name, sends the
// request, checks the 200 and reads the body on a goroutine until the
// connection ends or the test does.
func (f *fwLab) startDownload(t *testing.T, scheme, name string, dst netip.AddrPort) *download {
	t.Helper()
	c, err := f.dial(lab.HostNode, netip.Addr{}, "tcp", dst, 2*time.Second)
	if err != nil {
		t.Fatalf("connect %s: %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	if scheme == "https" {
		pool, err := f.CAPool()
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(c, &tls.Config{ServerName: name, RootCAs: pool})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS to %s (%s): %v", name, dst, err)
		}
		c = tc
	}
	fam := "v4"
	if dst.Addr().Is6() {
		fam = "v6"
	}
	d := &download{what: fmt.Sprintf("%s://%s (%s)", scheme, name, fam), conn: c, r: bufio.NewReaderSize(c, 64<<10), done: make(chan struct{})}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /stream HTTP/1.1\r\nHost: %s\r\nUser-Agent: e2e\r\n\r\n", name); err != nil {
		t.Fatalf("%s: %v", d.what, err)
	}
	resp, err := http.ReadResponse(d.r, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: response %v %v", d.what, resp, err)
	}
	c.SetDeadline(time.Time{})
	go func() {
		defer close(d.done)
		buf := make([]byte, 64<<10)
		for {
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := resp.Body.Read(buf)
			d.bytes.Add(int64(n))
			if err != nil {
				d.err.Store(&err)
				return
			}
		}
	}()
	return d
}

// failed returns the error that ended the download, or nil while it runs.
func (d *download) failed() error {
	if e := d.err.Load(); e != nil {
		return *e
	}
	return nil
}

// progressing reports whether the download still moves data: more bytes
// after wait than before.
func (d *download) progressing(wait time.Duration) bool {
	before := d.bytes.Load()
	time.Sleep(wait)
	return d.failed() == nil && d.bytes.Load() > before
}

// TestReloadKeepsAllowedConnections reloads 20 times — 10 reloads of the
// same policy (SIGHUP and POST /v1/reload in turn) and 10 that change an
// unrelated rule (the file rewritten) — while long transfers run over IPv4
// and IPv6 that every generation allows:
//   - HTTPS and HTTP downloads by name through the L7 proxy (application
//     rules): the conntrack cut must leave the proxy's redirected entries
//     alone (deleting one loses the NAT of the proxy's next packet and the
//     client answers it with a reset) and the proxy keeps them;
//   - echo streams a network rule allows;
//   - echo streams from the outside client through DNAT to the store.
//
// Every transfer must keep moving without an error, no connection may be
// counted as cut, and the echo streams must see no TCP retransmission.
func TestReloadKeepsAllowedConnections(t *testing.T) {
	t.Parallel()
	f := newFWLab(t, keepPolicyWith(0, false))
	nonazure := lab.MustLookup(lab.NameNonAzure)
	f.streamServer(t, lab.NameNonAzure)
	net4, net6 := ap(nonazure.V4, 9101), ap(nonazure.V6, 9101)
	f.echoServer(t, net4)
	f.echoServer(t, net6)
	f.echoServerIn(t, lab.HostStore, ap(lab.StoreV4, 9102))
	f.echoServerIn(t, lab.HostStore, ap(lab.StoreV6, 9102))

	var downloads []*download
	for _, a := range []netip.Addr{nonazure.V4, nonazure.V6} {
		downloads = append(downloads,
			f.startDownload(t, "https", lab.NameNonAzure, ap(a, streamHTTPSPort)),
			f.startDownload(t, "http", lab.NameNonAzure, ap(a, streamHTTPPort)))
	}
	streams := []*echoConn{
		f.echoDial(t, lab.HostNode, net4), f.echoDial(t, lab.HostNode, net6),
		f.echoDial(t, lab.HostClient, ap(lab.FWPublicV4, 9102)), f.echoDial(t, lab.HostClient, ap(lab.FWPublicV6, 9102)),
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	var exchanges atomic.Int64
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := s.roundTrip(1024, 2*time.Second); err != nil {
					mu.Lock()
					problems = append(problems, fmt.Sprintf("echo stream to %s: %v", s.RemoteAddr(), err))
					mu.Unlock()
					return
				}
				exchanges.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}

	st0 := f.status(t)
	const reloads = 20
	// 100 ms between reloads: the transfers send their next packets
	// through each new generation before the next reload.
	f.reloads(t, reloads, func(i int) (reloadHow, string) {
		switch i % 4 {
		case 1:
			return reloadSIGHUP, "" // the same policy
		case 3:
			return reloadAPI, ""
		}
		return reloadFile, keepPolicyWith(i, false) // an unrelated rule changed
	}, 100*time.Millisecond)
	for _, d := range downloads {
		if !d.progressing(500 * time.Millisecond) {
			t.Errorf("%s stopped after the reloads: %v (%d bytes)", d.what, d.failed(), d.bytes.Load())
		}
	}
	stop()
	wg.Wait()
	for _, p := range problems {
		t.Error(p)
	}
	st := f.status(t)
	if st.ConnsCut != st0.ConnsCut {
		t.Errorf("connectionsCut grew from %d to %d across reloads that deny nothing", st0.ConnsCut, st.ConnsCut)
	}
	for _, s := range streams {
		if n, err := retransmits(s.Conn); err != nil || n != 0 {
			t.Errorf("echo stream to %s: %d TCP retransmissions (%v), want 0", s.RemoteAddr(), n, err)
		}
	}
	var total int64
	for _, d := range downloads {
		total += d.bytes.Load()
	}
	t.Logf("%d reloads: %d MiB downloaded through the L7 proxy by %d connections, %d echo round trips on %d network and DNAT connections",
		reloads, total>>20, len(downloads), exchanges.Load(), len(streams))
}

// TestReloadCutsDeniedProxiedConnections: an apply that removes the
// application rule allowing ghcr.io cuts the proxied HTTPS and HTTP
// downloads from ghcr.io (IPv4 and IPv6) at once — the L7 proxy decides its
// open connections again with the new policy — logs why, and counts them
// in connectionsCut; the downloads from nonazure.example.net, still
// allowed, go on.
func TestReloadCutsDeniedProxiedConnections(t *testing.T) {
	t.Parallel()
	f := newFWLab(t, keepPolicyWith(0, true))
	ghcr, nonazure := lab.MustLookup(lab.NameGHCR), lab.MustLookup(lab.NameNonAzure)
	f.streamServer(t, lab.NameGHCR)
	f.streamServer(t, lab.NameNonAzure)
	var cut, kept []*download
	for _, fam := range []func(lab.Name) netip.Addr{func(n lab.Name) netip.Addr { return n.V4 }, func(n lab.Name) netip.Addr { return n.V6 }} {
		cut = append(cut,
			f.startDownload(t, "https", lab.NameGHCR, ap(fam(ghcr), streamHTTPSPort)),
			f.startDownload(t, "http", lab.NameGHCR, ap(fam(ghcr), streamHTTPPort)))
		kept = append(kept,
			f.startDownload(t, "https", lab.NameNonAzure, ap(fam(nonazure), streamHTTPSPort)),
			f.startDownload(t, "http", lab.NameNonAzure, ap(fam(nonazure), streamHTTPPort)))
	}
	for _, d := range append(cut, kept...) {
		if !d.progressing(200 * time.Millisecond) {
			t.Fatalf("%s does not move before the reload: %v", d.what, d.failed())
		}
	}
	st0 := f.status(t)
	f.writePolicy(t, keepPolicyWith(1, false))
	st := f.waitStatus(t, "the reload", 5*time.Second, func(s daemonStatus) bool { return s.LastReloadAt.After(st0.LastReloadAt) })
	if st.LastReload != "ok" {
		t.Fatalf("reload: %q", st.LastReload)
	}
	if got := st.ConnsCut - st0.ConnsCut; got != uint64(len(cut)) {
		t.Errorf("connectionsCut grew by %d, want %d (the ghcr.io downloads)", got, len(cut))
	}
	for _, d := range cut {
		select {
		case <-d.done:
			t.Logf("%s cut: %v", d.what, d.failed())
		case <-time.After(2 * time.Second):
			t.Errorf("%s still runs 2 s after its rule was removed (%d bytes)", d.what, d.bytes.Load())
		}
	}
	for _, d := range kept {
		if !d.progressing(300 * time.Millisecond) {
			t.Errorf("%s (still allowed) stopped: %v", d.what, d.failed())
		}
	}
	// Each cut connection has its decision line: Deny, the reload's reason.
	keys := map[string]bool{}
	deadline := time.Now().Add(3 * time.Second)
	for len(keys) < len(cut) && time.Now().Before(deadline) {
		clear(keys)
		for _, r := range f.decisions(t) {
			if r.Category == telemetry.CategoryApplicationRule && r.Fqdn == lab.NameGHCR && r.Action == "Deny" &&
				strings.Contains(r.ActionReason, "policy changed") {
				keys[fmt.Sprintf("%s:%d", r.SourceIp, r.SourcePort)] = true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(keys) != len(cut) {
		t.Errorf("%d decision lines for the cut connections, want %d", len(keys), len(cut))
	}
	// New connections to ghcr.io are denied by the proxy.
	c, err := f.dial(lab.HostNode, netip.Addr{}, "tcp", ap(ghcr.V4, streamHTTPPort), time.Second)
	if err == nil {
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", lab.NameGHCR)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil && resp.StatusCode == http.StatusOK {
			t.Errorf("a new HTTP connection to ghcr.io passes after its rule was removed")
		}
	}
}

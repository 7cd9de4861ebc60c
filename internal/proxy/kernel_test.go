package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/namespace"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// The kernel test's network, all inside three namespaces it creates:
//
//	client ns            proxy ns                         server ns
//	c0 10.77.1.2  ────  g-c 10.77.1.1   g-s 10.77.2.1  ────  s0 10.77.2.2 (ok.test)
//	   fd77:1::2           fd77:1::1       fd77:2::1             10.77.2.3 (not ok.test)
//	                                                             fd77:2::2, fd77:2::3
//
// The proxy ns does not forward: the only way from client to server is
// the nft redirect of TCP 80/443 arriving on g-c to the proxy's port.
const (
	kProxyPort = 15001
	kGood4     = "10.77.2.2"
	kSpoof4    = "10.77.2.3"
	kGood6     = "fd77:2::2"
	kSpoof6    = "fd77:2::3"
)

// inNS runs fn inside ns (namespace.DoHandle: a fresh OS thread, thrown
// away afterwards). Sockets made in fn stay in ns.
func inNS(ns netns.NsHandle, fn func() error) error { return namespace.DoHandle(ns, fn) }

type kernelLab struct {
	names              [3]string // client, proxy, server
	client, gw, server netns.NsHandle
}

func setupKernelLab(t *testing.T) *kernelLab {
	t.Helper()
	l := &kernelLab{}
	handles := []*netns.NsHandle{&l.client, &l.gw, &l.server}
	for i, role := range []string{"c", "g", "s"} {
		// Loopback up, no duplicate address detection (it would hold IPv6
		// for a second or two after the links come up).
		l.names[i] = namespace.ForTest(t, "cwpx-"+role)
		h, err := netns.GetFromName(l.names[i])
		if err != nil {
			t.Fatal(err)
		}
		*handles[i] = h
		t.Cleanup(func() { h.Close() })
	}

	nh := func(ns netns.NsHandle) *netlink.Handle {
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatalf("netlink: %v", err)
		}
		t.Cleanup(h.Close)
		return h
	}
	hc, hg, hs := nh(l.client), nh(l.gw), nh(l.server)
	// Both veth pairs are created inside the proxy ns, with their peers
	// put straight into the client and server namespaces.
	for _, v := range []*netlink.Veth{
		{LinkAttrs: netlink.LinkAttrs{Name: "g-c"}, PeerName: "c0", PeerNamespace: netlink.NsFd(l.client)},
		{LinkAttrs: netlink.LinkAttrs{Name: "g-s"}, PeerName: "s0", PeerNamespace: netlink.NsFd(l.server)},
	} {
		if err := hg.LinkAdd(v); err != nil {
			t.Fatalf("veth %s: %v", v.Name, err)
		}
	}
	type cfg struct {
		h      *netlink.Handle
		link   string
		addrs  []string
		routes map[string]string // destination → gateway
	}
	for _, c := range []cfg{
		{hc, "c0", []string{"10.77.1.2/24", "fd77:1::2/64"}, map[string]string{"0.0.0.0/0": "10.77.1.1", "::/0": "fd77:1::1"}},
		{hg, "g-c", []string{"10.77.1.1/24", "fd77:1::1/64"}, nil},
		{hg, "g-s", []string{"10.77.2.1/24", "fd77:2::1/64"}, nil},
		{hs, "s0", []string{kGood4 + "/24", kSpoof4 + "/24", kGood6 + "/64", kSpoof6 + "/64"}, map[string]string{"0.0.0.0/0": "10.77.2.1", "::/0": "fd77:2::1"}},
	} {
		lo, _ := c.h.LinkByName("lo")
		c.h.LinkSetUp(lo)
		link, err := c.h.LinkByName(c.link)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range c.addrs {
			addr, _ := netlink.ParseAddr(a)
			if strings.Contains(a, ":") {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := c.h.AddrAdd(link, addr); err != nil {
				t.Fatalf("%s %s: %v", c.link, a, err)
			}
		}
		if err := c.h.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
		for dst, gw := range c.routes {
			_, n, _ := net.ParseCIDR(dst)
			if err := c.h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: n, Gw: net.ParseIP(gw)}); err != nil {
				t.Fatalf("route %s via %s: %v", dst, gw, err)
			}
		}
	}
	if err := installRedirect(l.gw, "g-c", kProxyPort, 80, 443); err != nil {
		t.Fatalf("nftables: %v", err)
	}
	return l
}

// installRedirect adds, in ns, `table inet cwproxytest { chain pre { type
// nat hook prerouting priority dstnat; iifname IFACE tcp dport PORT
// redirect to :TO } }` for each port.
func installRedirect(ns netns.NsHandle, iface string, to uint16, ports ...uint16) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return err
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "cwproxytest"})
	ch := c.AddChain(&nftables.Chain{
		Name: "pre", Table: tbl, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest,
	})
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, iface)
	for _, port := range ports {
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(to)},
			&expr.Redir{RegisterProtoMin: 1},
		}})
	}
	return c.Flush()
}

// serverHits counts connections per local address on the server.
type serverHits struct {
	mu sync.Mutex
	m  map[string]int
}

func (h *serverHits) get(a string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[a]
}

// TestKernelRedirect: real clients in a client namespace reach servers
// through an nft redirect to the proxy in another namespace. The proxy
// recovers the original destination with SO_ORIGINAL_DST (IPv4) and
// IP6T_SO_ORIGINAL_DST (IPv6), passes allowed traffic, and refuses a
// ClientHello for ok.test sent to an address that is not ok.test's.
func TestKernelRedirect(t *testing.T) {
	l := setupKernelLab(t)

	// Servers: HTTPS on 443 and HTTP on 80, on every server address.
	hits := &serverHits{m: map[string]int{}}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		la := r.Context().Value(http.LocalAddrContextKey).(net.Addr).String()
		fmt.Fprintf(w, "server local=%s host=%s", la, r.Host)
	})
	var lns []net.Listener
	if err := inNS(l.server, func() error {
		for _, port := range []int{443, 80} {
			ln, err := net.Listen("tcp", fmt.Sprintf("[::]:%d", port))
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i, ln := range lns {
		var ll net.Listener = hitListener{ln, hits}
		if i == 0 {
			ll = tls.NewListener(ll, &tls.Config{Certificates: []tls.Certificate{getPKI(t).server}})
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ll)
		t.Cleanup(func() { srv.Close() })
	}

	// The proxy, listening and dialling in the proxy namespace; the
	// original destination comes from the kernel.
	var pln net.Listener
	if err := inNS(l.gw, func() error {
		var err error
		pln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", kProxyPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	m := compile(t, `
name: kernel-test
ruleCollectionGroups:
  - name: app
    priority: 300
    ruleCollections:
      - name: allowset
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: ok
            protocols: ['Https:443', 'Http:80']
            sourceAddresses: [10.77.1.0/24, 'fd77:1::/64']
            targetFqdns: [ok.test]
`)
	sink := newLogSink()
	p := New(Config{
		Matcher:  m,
		Resolver: StaticResolver{"ok.test": {netip.MustParseAddr(kGood4), netip.MustParseAddr(kGood6)}},
		Log:      sink.log,
		Dial: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = inNS(l.gw, func() error {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		HelloTimeout: 3 * time.Second,
	})
	go p.Serve(pln)
	t.Cleanup(func() { p.Close() })

	clientDial := func(addr string) (net.Conn, error) {
		var c net.Conn
		err := inNS(l.client, func() error {
			var err error
			c, err = net.DialTimeout("tcp", addr, 5*time.Second)
			return err
		})
		return c, err
	}
	tlsGetVia := func(dst, sni string) (string, error) {
		c, err := clientDial(net.JoinHostPort(dst, "443"))
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Client(c, &tls.Config{ServerName: sni, RootCAs: getPKI(t).pool})
		if err := tc.Handshake(); err != nil {
			return "", err
		}
		fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
		b := make([]byte, 4096)
		var out []byte
		for {
			n, err := tc.Read(b)
			out = append(out, b[:n]...)
			if err != nil {
				break
			}
		}
		return string(out), nil
	}
	findRec := func(what, orig string) telemetry.Record {
		return sink.wait(t, what, func(r telemetry.Record) bool { return r.OriginalDestinationIp == orig })
	}

	for _, fam := range []struct{ name, good, spoof, src string }{
		{"IPv4", kGood4, kSpoof4, "10.77.1.2"},
		{"IPv6", kGood6, kSpoof6, "fd77:1::2"},
	} {
		t.Run(fam.name+" allowed through the redirect", func(t *testing.T) {
			body, err := tlsGetVia(fam.good, "ok.test")
			if err != nil {
				t.Fatalf("%v\nlog:\n%s", err, sink.dump())
			}
			if want := "local=" + net.JoinHostPort(fam.good, "443"); !strings.Contains(body, want) {
				t.Errorf("body %q, want %q", body, want)
			}
			r := findRec("allow", fam.good)
			if r.Action != "Allow" || r.SourceIp != fam.src || r.ResolvedDestinationIp != fam.good || r.DestinationPort != 443 || r.Fqdn != "ok.test" {
				t.Errorf("record %+v", r)
			}
		})
		t.Run(fam.name+" spoofed SNI refused", func(t *testing.T) {
			before := hits.get(net.JoinHostPort(fam.spoof, "443"))
			_, err := tlsGetVia(fam.spoof, "ok.test")
			if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
				t.Fatalf("err = %v, want a TLS alert", err)
			}
			r := findRec("spoof", fam.spoof)
			if want := fmt.Sprintf("destination %s is not an address of ok.test (spoofed SNI/Host?)", fam.spoof); r.Action != "Deny" || r.ActionReason != want {
				t.Errorf("record %+v, want reason %q", r, want)
			}
			if hits.get(net.JoinHostPort(fam.spoof, "443")) != before {
				t.Error("the spoofed destination was contacted")
			}
		})
	}

	t.Run("HTTP through the redirect", func(t *testing.T) {
		c, err := clientDial(kGood4 + ":80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n")
		b := make([]byte, 4096)
		n, _ := c.Read(b)
		if !strings.Contains(string(b[:n]), "200 OK") || !strings.Contains(string(b[:n]), "local=10.77.2.2:80") {
			t.Errorf("response %q", b[:n])
		}
	})

	t.Run("direct connection to the proxy port", func(t *testing.T) {
		c, err := clientDial(fmt.Sprintf("10.77.1.1:%d", kProxyPort))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		r := sink.wait(t, "not redirected", func(r telemetry.Record) bool { return strings.Contains(r.ActionReason, "not redirected") })
		if r.Action != "Deny" {
			t.Errorf("%+v", r)
		}
	})

	t.Run("curl", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("no curl")
		}
		ca := filepath.Join(t.TempDir(), "ca.pem")
		os.WriteFile(ca, getPKI(t).caPEM, 0o644)
		run := func(args ...string) (string, error) {
			cmd := exec.Command("ip", append([]string{"netns", "exec", l.names[0], "curl", "-sS", "--max-time", "5", "--cacert", ca}, args...)...)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		out, err := run("--resolve", "ok.test:443:"+kGood4, "https://ok.test/")
		if err != nil || !strings.Contains(out, "local=10.77.2.2:443") {
			t.Errorf("curl to ok.test: %v %s", err, out)
		}
		out, err = run("--connect-to", "ok.test:443:"+kSpoof4+":443", "https://ok.test/")
		if err == nil || !strings.Contains(out, "unrecognized name") {
			t.Errorf("curl with a spoofed destination: %v %s", err, out)
		}
		out, err = run("--resolve", "ok.test:80:"+kSpoof4, "http://ok.test/")
		if err != nil || !strings.Contains(out, "not an address of ok.test") {
			t.Errorf("curl HTTP with a spoofed destination: %v %s", err, out)
		}
	})
}

type hitListener struct {
	net.Listener
	hits *serverHits
}

func (l hitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.hits.mu.Lock()
		l.hits.m[c.LocalAddr().String()]++
		l.hits.mu.Unlock()
	}
	return c, err
}

package lab

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestMain(m *testing.M) {
	ServeIfAsked()
	// `TESTBIN run ARGS...` (Config.DaemonArgs) acts as a stand-in daemon:
	// it writes its arguments to its log and waits for SIGTERM.
	if len(os.Args) >= 2 && os.Args[1] == "run" {
		fmt.Println("fake daemon:", strings.Join(os.Args[2:], " "))
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		<-ch
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// rootSnapshot is what the root namespace must not gain from a lab.
type rootSnapshot struct {
	links   []string
	routes  []string
	sysctls map[string]string
}

var expires = regexp.MustCompile(`expires \S+`)

func snapshotRoot(t *testing.T) rootSnapshot {
	t.Helper()
	var s rootSnapshot
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		s.links = append(s.links, fmt.Sprintf("%d:%s", l.Attrs().Index, l.Attrs().Name))
	}
	for _, args := range [][]string{{"route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"}} {
		out, err := exec.Command("ip", args...).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			s.routes = append(s.routes, expires.ReplaceAllString(line, ""))
		}
	}
	s.sysctls = map[string]string{}
	for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
		"net.ipv6.conf.default.accept_dad", "net.ipv6.conf.default.accept_ra"} {
		v, err := readSysctl(k) // the test's threads are in the root namespace
		if err != nil {
			t.Fatal(err)
		}
		s.sysctls[k] = v
	}
	sort.Strings(s.links)
	sort.Strings(s.routes)
	return s
}

func (s rootSnapshot) diff(t *testing.T, after rootSnapshot, when string) {
	t.Helper()
	if !slices.Equal(s.links, after.links) {
		t.Errorf("%s: root namespace links changed:\nbefore %v\nafter  %v", when, s.links, after.links)
	}
	if !slices.Equal(s.routes, after.routes) {
		t.Errorf("%s: root namespace routes changed:\nbefore %q\nafter  %q", when, s.routes, after.routes)
	}
	for k, v := range s.sysctls {
		if after.sysctls[k] != v {
			t.Errorf("%s: root sysctl %s changed from %s to %s", when, k, v, after.sysctls[k])
		}
	}
}

// TestLab brings one lab up and checks it with real clients (curl, dig)
// and Go clients from inside its namespaces, then that Up is idempotent,
// Down removes everything, and the root namespace never changed.
func TestLab(t *testing.T) {
	RequireLab(t)
	for _, tool := range []string{"curl", "dig"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (apt-get install -y curl dnsutils)", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := UniqueName()
	before := snapshotRoot(t)
	start := time.Now()
	l, err := Up(ctx, Config{Name: name})
	t.Cleanup(func() { Remove(name) }) // in case a check below stops the test
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab up took %s", time.Since(start))
	before.diff(t, snapshotRoot(t), "after up")

	t.Run("status", func(t *testing.T) {
		s := l.Status()
		if !s.OK() {
			t.Fatalf("status not ok: %v", s.Problems)
		}
		if len(s.Procs) != 4 {
			t.Errorf("processes %+v, want inet, store, api, dnsfwd", s.Procs)
		}
		o, err := Open(name)
		if err != nil || !o.Status().OK() {
			t.Errorf("Open(%s): %v", name, err)
		}
	})
	t.Run("no-extra-links", func(t *testing.T) { checkOnlySpecLinks(t, l) })
	t.Run("isolated", func(t *testing.T) {
		// The internet has no default route: nothing leaves the lab.
		for _, dst := range []string{"8.8.8.8", "2001:4860:4860::8888"} {
			out, err := l.Exec(ctx, HostInet, "ip", "route", "get", dst)
			if err == nil || !strings.Contains(err.Error(), "unreachable") {
				t.Errorf("inet: ip route get %s = %q, %v; want unreachable", dst, out, err)
			}
		}
	})
	t.Run("curl-https-ghcr", func(t *testing.T) {
		for _, a := range []string{"192.0.2.10", "[2001:db8:192::10]"} {
			out, err := l.Exec(ctx, HostNode, "curl", "-sS", "--max-time", "5", "--cacert", l.CAFile(),
				"--resolve", "ghcr.io:443:"+strings.Trim(a, "[]"), "https://ghcr.io/v2/")
			if err != nil || string(out) != "ghcr.io\n" {
				t.Errorf("curl https://ghcr.io via %s from node = %q, %v", a, out, err)
			}
		}
	})
	t.Run("dig-via-firewall", func(t *testing.T) {
		tests := []struct{ args, want string }{
			{"+short ghcr.io", "192.0.2.10"},                       // node's resolv.conf: 10.42.2.4
			{"+short AAAA ghcr.io @10.42.2.4", "2001:db8:192::10"}, // explicit
			{"+short +tcp ntp.ubuntu.com @2001:db8:42:2::4", "192.0.2.13"},
			{"+noall +comments nosuch.ghcr.io", "status: NXDOMAIN"},
			{"+noall +comments google.com", "status: REFUSED"},
		}
		for _, tt := range tests {
			out, err := l.Exec(ctx, HostNode, append([]string{"dig", "+time=2", "+tries=1"}, strings.Fields(tt.args)...)...)
			if err != nil || !strings.Contains(string(out), tt.want) {
				t.Errorf("dig %s from node = %q, %v; want %q", tt.args, out, err, tt.want)
			}
		}
	})
	t.Run("every-name", func(t *testing.T) { checkEveryName(t, l) })
	t.Run("dns-every-name", func(t *testing.T) {
		for _, n := range Names {
			for _, q := range []struct {
				qtype uint16
				want  netip.Addr
			}{{dns.TypeA, n.V4}, {dns.TypeAAAA, n.V6}} {
				for _, server := range []netip.Addr{FWPrivateV4, FWPrivateV6} {
					r, err := query(l, HostNode, "udp", server, n.Name, q.qtype)
					if err != nil {
						t.Errorf("%s %s via %s: %v", n.Name, dns.TypeToString[q.qtype], server, err)
						continue
					}
					if got := answerAddrs(r); len(got) != 1 || got[0] != q.want {
						t.Errorf("%s %s via %s = %v, want %s", n.Name, dns.TypeToString[q.qtype], server, got, q.want)
					}
				}
			}
		}
	})
	t.Run("ntp", func(t *testing.T) {
		ntp := MustLookup(NameNTP)
		for _, a := range []netip.Addr{ntp.V4, ntp.V6} {
			if err := checkNTP(l, HostNode, a); err != nil {
				t.Errorf("NTP %s: %v", a, err)
			}
		}
	})
	t.Run("tunnel-ports", func(t *testing.T) {
		for _, n := range []Name{MustLookup(NameAzureCloud), MustLookup(NameNonAzure)} {
			for _, a := range []netip.Addr{n.V4, n.V6} {
				got, err := tcpRead(l, HostNode, netip.AddrPortFrom(a, 9000))
				if err != nil || got != n.Name+"\n" {
					t.Errorf("TCP %s:9000 = %q, %v", a, got, err)
				}
				if err := udpEcho(l, HostNode, netip.AddrPortFrom(a, 1194)); err != nil {
					t.Errorf("UDP %s:1194: %v", a, err)
				}
			}
		}
		// Only the tunnel endpoints have port 9000.
		if _, err := tcpRead(l, HostNode, netip.AddrPortFrom(MustLookup(NameGHCR).V4, 9000)); err == nil {
			t.Errorf("ghcr.io answers TCP 9000")
		}
	})
	t.Run("store-any-method", func(t *testing.T) {
		c, err := l.HTTPClient(HostNode)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
			for _, a := range []netip.Addr{StoreV4, StoreV6} {
				body, peer, err := get(c, m, "http://"+netip.AddrPortFrom(a, 80).String()+"/some/path?q=1", "")
				if err != nil || body != StoreBody {
					t.Errorf("%s store %s = %q, %v", m, a, body, err)
				}
				if !strings.HasPrefix(peer, "10.42.1.10:") && !strings.HasPrefix(peer, "[2001:db8:42:1::10]:") {
					t.Errorf("store saw peer %q, want node", peer)
				}
			}
		}
	})
	t.Run("api-https", func(t *testing.T) {
		for _, a := range []string{"10.42.1.200", "2001:db8:42:1::200"} {
			out, err := l.Exec(ctx, HostNode, "curl", "-sS", "--max-time", "5", "--cacert", l.CAFile(),
				"--resolve", APIServerName+":443:"+a, "https://"+APIServerName+"/version")
			if err != nil || string(out) != APIBody {
				t.Errorf("curl api %s = %q, %v", a, out, err)
			}
		}
	})
	t.Run("client-two-sources", func(t *testing.T) {
		for _, src := range []netip.Addr{ClientAuthorizedV4, ClientUnauthorizedV4, ClientAuthorizedV6, ClientUnauthorizedV6} {
			dst := MustLookup(NameExample).V4
			if src.Is6() {
				dst = MustLookup(NameExample).V6
			}
			out, err := l.Exec(ctx, HostClient, "curl", "-sS", "--max-time", "5", "-D", "-", "--interface", src.String(),
				"http://"+netip.AddrPortFrom(dst, 80).String()+"/")
			peer := netip.AddrPortFrom(src, 0).String()
			peer = peer[:len(peer)-1] // "198.51.100.8:" / "[2001:db8:c11e::8]:"
			if err != nil || !strings.Contains(string(out), PeerHeader+": "+peer) || !strings.HasSuffix(string(out), "example.org\n") {
				t.Errorf("client from %s: %q, %v", src, out, err)
			}
		}
	})
	t.Run("forward-without-nat", func(t *testing.T) {
		c, _ := l.HTTPClient(HostNode)
		_, peer, err := get(c, "GET", "https://192.0.2.16/", "")
		if err != nil || !strings.HasPrefix(peer, NodeV4.String()+":") {
			t.Errorf("raw.githubusercontent.com saw %q, %v; want node's own address", peer, err)
		}
	})
	t.Run("exec-exit-status", func(t *testing.T) {
		_, err := l.Exec(ctx, HostFW, "sh", "-c", "echo oops >&2; exit 7")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 || !strings.Contains(err.Error(), "oops") {
			t.Errorf("exit 7 in fw: %v", err)
		}
		if _, err := l.Exec(ctx, "nosuch", "true"); err == nil {
			t.Errorf("exec in an unknown host succeeded")
		}
		out, err := l.Exec(ctx, HostFW, "cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")
		if err != nil || string(out) != "1\n1\n" {
			t.Errorf("fw forwarding = %q, %v", out, err)
		}
	})
	t.Run("dns-forwarder-restart", func(t *testing.T) {
		if err := l.Stop(RoleDNSFwd); err != nil {
			t.Fatal(err)
		}
		if _, err := query(l, HostNode, "udp", FWPrivateV4, NameGHCR, dns.TypeA); err == nil {
			t.Fatalf("DNS via 10.42.2.4 works with the forwarder stopped")
		}
		// The forwarder is optional (NoDNSForwarder): a clean Stop is no fault.
		if s := l.Status(); !s.OK() {
			t.Errorf("status after a clean Stop: %v", s.Problems)
		}
		// Up again: the lab is kept and the forwarder comes back.
		l2, err := Up(ctx, Config{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := query(l2, HostNode, "udp", FWPrivateV4, NameGHCR, dns.TypeA); err != nil {
			t.Errorf("DNS after Up: %v", err)
		}
		l = l2
	})
	t.Run("idempotent-up", func(t *testing.T) {
		pids := map[string]int{}
		for _, p := range l.Status().Procs {
			pids[p.Name] = p.Pid
		}
		l2, err := Up(ctx, Config{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range l2.Status().Procs {
			if pids[p.Name] != p.Pid {
				t.Errorf("second Up restarted %s (pid %d -> %d)", p.Name, pids[p.Name], p.Pid)
			}
		}
		// A dead server is noticed by Status and restarted by Up.
		if err := l2.Signal(RoleStore, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitDead(t, l2, RoleStore)
		if s := l2.Status(); s.OK() {
			t.Errorf("status ok with store killed")
		}
		l3, err := Up(ctx, Config{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if s := l3.Status(); !s.OK() || l3.Pid(RoleStore) == 0 || l3.Pid(RoleStore) == pids[RoleStore] {
			t.Errorf("after Up: ok=%v problems=%v store pid %d (was %d)", s.OK(), s.Problems, l3.Pid(RoleStore), pids[RoleStore])
		}
		c, _ := l3.HTTPClient(HostNode)
		if body, _, err := get(c, "GET", "http://10.42.1.100/", ""); err != nil || body != StoreBody {
			t.Errorf("store after restart: %q, %v", body, err)
		}
		checkOnlySpecLinks(t, l3)
		l = l3
	})
	t.Run("rebuild-partial", func(t *testing.T) {
		// A namespace deleted by hand: Status says broken, Up rebuilds,
		// and the server left in the orphaned namespace is stopped.
		old := l.Pid(RoleStore)
		if err := deleteNamed(l.NS(HostStore)); err != nil {
			t.Fatal(err)
		}
		if s := l.Status(); s.OK() {
			t.Fatalf("status ok without the store namespace")
		}
		l2, err := Up(ctx, Config{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if s := l2.Status(); !s.OK() {
			t.Errorf("after rebuild: %v", s.Problems)
		}
		time.Sleep(50 * time.Millisecond) // reaping
		if !isZombie(old) {
			t.Errorf("old store server (pid %d) survived the rebuild", old)
		}
		c, _ := l2.HTTPClient(HostNode)
		if body, _, err := get(c, "GET", "http://10.42.1.100/", ""); err != nil || body != StoreBody {
			t.Errorf("store after rebuild: %q, %v", body, err)
		}
		l = l2
	})
	t.Run("daemon-hook", func(t *testing.T) {
		cfg := Config{Name: name, DaemonArgs: []string{"--config", "daemon.yaml"},
			Files: map[string][]byte{"daemon.yaml": []byte("policy: a\n")}}
		l2, err := Up(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		pid := l2.Pid(DaemonProc)
		if pid == 0 {
			t.Fatalf("daemon not running")
		}
		if ino := nsInode(l2.NS(HostFW)); !pidAliveIn(pid, ino) {
			t.Errorf("daemon (pid %d) is not in fw's namespace", pid)
		}
		if data, err := os.ReadFile(filepath.Join(l2.Dir(), "daemon.yaml")); err != nil || string(data) != "policy: a\n" {
			t.Errorf("daemon.yaml = %q, %v", data, err)
		}
		waitLog(t, l2.LogFile(DaemonProc), "fake daemon: --config daemon.yaml")
		// Same config: kept. Changed file: restarted. No daemon: stopped.
		if l3, err := Up(ctx, cfg); err != nil || l3.Pid(DaemonProc) != pid {
			t.Errorf("same config restarted the daemon: %v", err)
		}
		cfg.Files["daemon.yaml"] = []byte("policy: b\n")
		l3, err := Up(ctx, cfg)
		if err != nil || l3.Pid(DaemonProc) == pid || l3.Pid(DaemonProc) == 0 {
			t.Errorf("changed config: daemon pid %d (was %d), %v", l3.Pid(DaemonProc), pid, err)
		}
		l4, err := Up(ctx, Config{Name: name})
		if err != nil || l4.Pid(DaemonProc) != 0 {
			t.Errorf("Up without DaemonArgs left the daemon running: %v", err)
		}
		l = l4
	})
	t.Run("failing-proc", func(t *testing.T) {
		// The store role cannot bind 10.42.1.100 in the client's namespace.
		err := l.Start(ctx, Proc{Name: "bad", Host: HostClient, ReadyFD: true,
			Args: []string{"lab", "serve", "--role", RoleStore, "--dir", l.Dir(), "--ready-fd", "3"}})
		if err == nil || !strings.Contains(err.Error(), "cannot assign requested address") {
			t.Errorf("Start of a failing server: %v", err)
		}
		if l.Pid("bad") != 0 || !l.Status().OK() {
			t.Errorf("a failed process is left recorded")
		}
		if o, err := Open(name); err != nil || !o.Status().OK() {
			t.Errorf("a failed process is left in state.json: %v", err)
		}
	})

	// A process started by hand in the lab must not survive Down.
	stray, err := l.Command(ctx, HostNode, "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	go stray.Wait()
	var pids []int
	for _, p := range l.Status().Procs {
		pids = append(pids, p.Pid)
	}
	pids = append(pids, stray.Process.Pid)

	start = time.Now()
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	t.Logf("lab down took %s", time.Since(start))
	for _, h := range HostNames {
		ns := nsName(name, h)
		if nsExists(ns) {
			t.Errorf("namespace %s left", ns)
		}
		if _, err := os.Stat(filepath.Join(etcNetnsDir, ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("/etc/netns/%s left: %v", ns, err)
		}
	}
	if _, err := os.Stat(StateDir(name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir left: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // let the reaper goroutines collect the children
	for _, pid := range pids {
		if !isZombie(pid) {
			t.Errorf("process %d survived Down", pid)
		}
	}
	if err := l.Down(); err != nil {
		t.Errorf("second Down: %v", err)
	}
	if _, err := Open(name); err == nil {
		t.Errorf("Open after Down succeeded")
	}
	before.diff(t, snapshotRoot(t), "after down")
}

// checkOnlySpecLinks checks that every namespace holds exactly the links
// of the spec (and lo): in particular no link leads anywhere else.
func checkOnlySpecLinks(t *testing.T, l *Lab) {
	t.Helper()
	for _, h := range specFor(l.ha) {
		want := []string{"lo"}
		for _, i := range h.ifaces {
			want = append(want, i.name)
		}
		if h.name == HostSwitch {
			for _, p := range bridgePorts(specFor(l.ha)) {
				want = append(want, p.name)
			}
		}
		ns, err := netns.GetFromName(l.NS(h.name))
		if err != nil {
			t.Fatal(err)
		}
		nh, err := netlink.NewHandleAt(ns)
		ns.Close()
		if err != nil {
			t.Fatal(err)
		}
		links, err := nh.LinkList()
		nh.Close()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range links {
			got = append(got, k.Attrs().Name)
			if v, ok := k.(*netlink.Veth); ok {
				// The peer of every veth is in a lab namespace.
				if k.Attrs().NetNsID < 0 {
					t.Errorf("%s: veth %s has its peer in the namespace itself or unknown (%d)", h.name, v.Name, k.Attrs().NetNsID)
				}
			}
		}
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: links %v, want %v", h.name, got, want)
		}
	}
}

// checkEveryName fetches http://ADDR/ and https://ADDR/ for every name and
// address with Go clients in node; the body is the address's name, the
// certificate verifies for it, and a different Host/SNI does not change
// where the connection lands.
func checkEveryName(t *testing.T, l *Lab) {
	pool, err := l.CAPool()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range Names {
		for _, a := range []netip.Addr{n.V4, n.V6} {
			if t.Failed() {
				return // one broken path is enough; do not wait out every timeout
			}
			t.Run(n.Name+"/"+a.String(), func(t *testing.T) {
				for _, scheme := range []string{"http", "https"} {
					port := map[string]uint16{"http": 80, "https": 443}[scheme]
					url := scheme + "://" + netip.AddrPortFrom(a, port).String() + "/any/path"
					c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
						DialContext:     l.DialContext(HostNode),
						TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: n.Name},
					}}
					body, _, err := get(c, "GET", url, "")
					if err != nil || body != n.Name+"\n" {
						t.Errorf("%s = %q, %v", url, body, err)
					}
					// Another name in Host and SNI: still this address's name.
					c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true, ServerName: "example.org"}
					body, _, err = get(c, "POST", url, "example.org")
					if err != nil || body != n.Name+"\n" {
						t.Errorf("%s with Host example.org = %q, %v", url, body, err)
					}
				}
			})
		}
	}
	// A name's certificate does not verify for another name.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:     l.DialContext(HostNode),
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: NameExample},
	}}
	if _, _, err := get(c, "GET", "https://192.0.2.10/", ""); err == nil {
		t.Errorf("ghcr.io's address verified as example.org")
	}
}

func get(c *http.Client, method, url, host string) (body, peer string, err error) {
	req, err := http.NewRequest(method, url, strings.NewReader(""))
	if err != nil {
		return "", "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), "", fmt.Errorf("status %s", resp.Status)
	}
	return string(b), resp.Header.Get(PeerHeader), err
}

// query sends one DNS query from host to server.
func query(l *Lab, host, network string, server netip.Addr, name string, qtype uint16) (*dns.Msg, error) {
	var conn net.Conn
	err := l.Do(host, func() error {
		var err error
		conn, err = net.DialTimeout(network, netip.AddrPortFrom(server, 53).String(), 2*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.ExchangeWithConn(m, &dns.Conn{Conn: conn})
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return r, fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	return r, nil
}

func answerAddrs(r *dns.Msg) []netip.Addr {
	var out []netip.Addr
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			a, _ := netip.AddrFromSlice(rr.A)
			out = append(out, a.Unmap())
		case *dns.AAAA:
			a, _ := netip.AddrFromSlice(rr.AAAA)
			out = append(out, a)
		}
	}
	return out
}

func dialFrom(l *Lab, host, network string, ap netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := l.Do(host, func() error {
		var err error
		c, err = net.DialTimeout(network, ap.String(), 2*time.Second)
		return err
	})
	if err == nil {
		c.SetDeadline(time.Now().Add(3 * time.Second))
	}
	return c, err
}

func tcpRead(l *Lab, host string, ap netip.AddrPort) (string, error) {
	c, err := dialFrom(l, host, "tcp", ap)
	if err != nil {
		return "", err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	return string(b), err
}

func udpEcho(l *Lab, host string, ap netip.AddrPort) error {
	c, err := dialFrom(l, host, "udp", ap)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := []byte("ping " + ap.String())
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != string(msg) {
		return fmt.Errorf("echo %q", buf[:n])
	}
	return nil
}

// checkNTP is a minimal SNTP client (RFC 4330).
func checkNTP(l *Lab, host string, server netip.Addr) error {
	c, err := dialFrom(l, host, "udp", netip.AddrPortFrom(server, 123))
	if err != nil {
		return err
	}
	defer c.Close()
	req := make([]byte, 48)
	req[0] = 4<<3 | 3
	sent := time.Now()
	binary.BigEndian.PutUint64(req[40:], ntpTime(sent))
	if _, err := c.Write(req); err != nil {
		return err
	}
	resp := make([]byte, 100)
	n, err := c.Read(resp)
	if err != nil {
		return err
	}
	if n != 48 || resp[0]&7 != 4 || resp[1] == 0 || resp[1] > 15 || resp[0]>>6 == 3 {
		return fmt.Errorf("bad reply % x", resp[:n])
	}
	if string(resp[24:32]) != string(req[40:48]) {
		return fmt.Errorf("origin timestamp does not echo ours")
	}
	tx := binary.BigEndian.Uint64(resp[40:])
	at := time.Unix(int64(tx>>32)-ntpEpochOffset, int64((tx&0xffffffff)*1e9>>32))
	if d := at.Sub(sent); d < -time.Second || d > time.Second {
		return fmt.Errorf("server time off by %s", d)
	}
	return nil
}

func waitDead(t *testing.T, l *Lab, name string) {
	t.Helper()
	r, _ := l.record(name)
	for i := 0; i < 200 && l.alive(r); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if l.alive(r) {
		t.Fatalf("%s still alive", name)
	}
}

func waitLog(t *testing.T, path, want string) {
	t.Helper()
	var data []byte
	for i := 0; i < 200; i++ {
		data, _ = os.ReadFile(path)
		if strings.Contains(string(data), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s: %q not found in %q", path, want, data)
}

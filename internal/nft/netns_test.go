package nft

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	xipv4 "golang.org/x/net/ipv4"
	xipv6 "golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/clusterwall/clusterwall/internal/namespace"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// Kernel tests run only as root, each in network namespaces it creates
// (uniquely named, removed in t.Cleanup) and never touch the root
// namespace: every link is created inside a test namespace.

func requireRoot(t testing.TB) {
	t.Helper()
	namespace.RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("kernel test: needs the ip command (iproute2)")
	}
}

// nsSeq numbers the ICMP echo identifiers of the tests' pings.
var nsSeq atomic.Int64

// newNS creates a network namespace with a unique name (its loopback up),
// removed at cleanup (namespace.ForTest).
func newNS(t testing.TB, role string) string {
	t.Helper()
	return namespace.ForTest(t, "cwnft-"+role+"-")
}

// nsFD opens namespace ns for the test (closed when it ends) and
// returns its descriptor (NetlinkOptions.NetNSFd).
func nsFD(t testing.TB, ns string) int {
	f, err := OpenNetNS(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// nsRunner is a runner in a new namespace of role's name (newNS).
func nsRunner(t testing.TB, role string) *NetlinkRunner {
	return NewNetlinkRunner(NetlinkOptions{NetNSFd: nsFD(t, newNS(t, role))})
}

func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// veth links namespace a (interface an) with namespace b (interface bn).
// The pair is created inside a and its peer moved to b.
func veth(t testing.TB, a, an, b, bn string) {
	t.Helper()
	run(t, "ip", "-n", a, "link", "add", an, "type", "veth", "peer", "name", bn, "netns", b)
	run(t, "ip", "-n", a, "link", "set", an, "up")
	run(t, "ip", "-n", b, "link", "set", bn, "up")
}

func addr(t testing.TB, ns, dev string, prefixes ...string) {
	t.Helper()
	for _, p := range prefixes {
		args := []string{"ip", "-n", ns, "addr", "add", p, "dev", dev}
		if strings.Contains(p, ":") {
			args = append(args, "nodad")
		}
		run(t, args...)
	}
}

// inNS runs f on a thread switched into namespace ns; sockets f creates
// belong to ns for their whole life.
func inNS(t testing.TB, ns string, f func()) {
	t.Helper()
	if err := doInNS(ns, f); err != nil {
		t.Fatal(err)
	}
}

func doInNS(ns string, f func()) error {
	return namespace.Do(ns, func() error { f(); return nil })
}

func sysctl(t testing.TB, ns, key, val string) {
	t.Helper()
	if err := namespace.Do(ns, func() error { return namespace.WriteSysctl(key, val) }); err != nil {
		t.Fatalf("%s: %v", ns, err)
	}
}

// lab is the minimal three-namespace topology of the kernel tests:
//
//	node (10.42.1.10, 2001:db8:42:1::10)
//	  | inside
//	fw   inside 10.42.1.1/24 2001:db8:42:1::1/64
//	     outside 203.0.113.32/24 2001:db8:cafe::32/64 (the public IP)
//	  | outside
//	inet (203.0.113.10, 2001:db8:cafe::10, plus 198.18.10.5,
//	      2001:db8:ac:10::5, 198.51.100.7, 198.18.20.5 on its loopback)
type lab struct {
	node, fw, inet string
	fwFD           int
}

// fwHandle is a netlink handle in l's fw namespace (conntrack and links
// there), closed when the test ends.
func (l *lab) fwHandle(t testing.TB) *netlink.Handle {
	t.Helper()
	h, err := netns.GetFromPath("/run/netns/" + l.fw)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ct, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ct.Close)
	return ct
}

func newLab(t testing.TB) *lab {
	t.Helper()
	requireRoot(t)
	l := &lab{node: newNS(t, "node"), fw: newNS(t, "fw"), inet: newNS(t, "inet")}
	veth(t, l.fw, "inside", l.node, "eth0")
	veth(t, l.fw, "outside", l.inet, "eth0")
	addr(t, l.node, "eth0", "10.42.1.10/24", "2001:db8:42:1::10/64")
	addr(t, l.fw, "inside", "10.42.1.1/24", "2001:db8:42:1::1/64")
	addr(t, l.fw, "outside", "203.0.113.32/24", "2001:db8:cafe::32/64")
	addr(t, l.inet, "eth0", "203.0.113.10/24", "2001:db8:cafe::10/64")
	addr(t, l.inet, "lo", "198.18.10.5/32", "198.18.10.53/32", "198.18.10.123/32", "198.18.20.5/32", "198.51.100.7/32",
		"2001:db8:ac:10::5/128", "2001:db8:ac:20::5/128")
	run(t, "ip", "-n", l.node, "route", "add", "default", "via", "10.42.1.1")
	run(t, "ip", "-n", l.node, "-6", "route", "add", "default", "via", "2001:db8:42:1::1")
	run(t, "ip", "-n", l.inet, "route", "add", "default", "via", "203.0.113.32")
	run(t, "ip", "-n", l.inet, "-6", "route", "add", "default", "via", "2001:db8:cafe::32")
	for _, r := range [][]string{
		{"198.18.0.0/16", "via", "203.0.113.10"},
		{"198.51.100.0/24", "via", "203.0.113.10"},
		{"2001:db8:ac::/48", "via", "2001:db8:cafe::10"},
	} {
		run(t, append([]string{"ip", "-n", l.fw, "route", "add"}, r...)...)
	}
	sysctl(t, l.fw, "net.ipv4.ip_forward", "1")
	sysctl(t, l.fw, "net.ipv6.conf.all.forwarding", "1")
	f, err := OpenNetNS(l.fw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	l.fwFD = int(f.Fd())
	return l
}

func (l *lab) runner() *NetlinkRunner {
	return NewNetlinkRunner(NetlinkOptions{NetNSFd: l.fwFD})
}

// labConfig is the data plane config of the lab's firewall.
func labConfig() Config {
	return Config{
		Inside: "inside", Outside: "outside",
		PublicIPs:  []netip.Addr{netip.MustParseAddr("203.0.113.32"), netip.MustParseAddr("2001:db8:cafe::32")},
		PrivateIPs: []netip.Addr{netip.MustParseAddr("10.42.1.1")},
	}
}

// server is a TCP and UDP echo-the-peer server in a namespace: it answers
// every connection or datagram with the remote address it saw.
type server struct {
	addr netip.AddrPort
}

func serve(t testing.TB, ns string, ap netip.AddrPort) *server {
	t.Helper()
	var (
		ln  net.Listener
		pc  net.PacketConn
		err error
	)
	inNS(t, ns, func() {
		ln, err = net.Listen("tcp", ap.String())
		if err != nil {
			return
		}
		pc, err = net.ListenPacket("udp", ap.String())
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", ap, ns, err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", c.RemoteAddr())
				// Keep long-lived connections open: echo lines back.
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(from.String()), from)
		}
	}()
	return &server{addr: ap}
}

// outcome of a probe.
type outcome string

const (
	passed  outcome = "pass"
	blocked outcome = "blocked" // timeout: dropped
	refused outcome = "refused" // RST or ICMP error
)

// dialTCP connects from ns to dst and returns the outcome and the source
// address the server saw.
func dialTCP(t testing.TB, ns string, dst netip.AddrPort, timeout time.Duration) (outcome, string) {
	t.Helper()
	return dialTCPFrom(t, ns, netip.Addr{}, dst, timeout)
}

// dialTCPFrom is dialTCP from a given source address (invalid: any).
func dialTCPFrom(t testing.TB, ns string, src netip.Addr, dst netip.AddrPort, timeout time.Duration) (outcome, string) {
	t.Helper()
	var (
		c   net.Conn
		err error
	)
	inNS(t, ns, func() {
		d := net.Dialer{Timeout: timeout}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		c, err = d.Dial("tcp", dst.String())
	})
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return blocked, ""
		}
		if strings.Contains(err.Error(), "refused") || strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "unreachable") {
			return refused, ""
		}
		t.Fatalf("dial %s from %s: %v", dst, ns, err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		return blocked, ""
	}
	return passed, strings.TrimSpace(string(buf[:n]))
}

// udpProbe sends one datagram from ns to dst and waits for the answer.
func udpProbe(t testing.TB, ns string, dst netip.AddrPort, timeout time.Duration) (outcome, string) {
	t.Helper()
	var (
		c   net.Conn
		err error
	)
	inNS(t, ns, func() {
		c, err = net.Dial("udp", dst.String())
	})
	if err != nil {
		t.Fatalf("udp dial: %v", err)
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 256)
	for time.Now().Before(deadline) {
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			return passed, string(buf[:n])
		}
		if strings.Contains(err.Error(), "refused") {
			return refused, ""
		}
	}
	return blocked, ""
}

// ping sends ICMP echo requests from ns to dst until one is answered.
func ping(t testing.TB, ns string, dst netip.Addr, timeout time.Duration) outcome {
	t.Helper()
	var (
		c     *icmp.PacketConn
		err   error
		proto = 1
		typ   icmp.Type
		reply icmp.Type
	)
	inNS(t, ns, func() {
		if dst.Is4() {
			c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
			typ, reply = xipv4.ICMPTypeEcho, xipv4.ICMPTypeEchoReply
		} else {
			c, err = icmp.ListenPacket("ip6:ipv6-icmp", "::")
			proto, typ, reply = 58, xipv6.ICMPTypeEchoRequest, xipv6.ICMPTypeEchoReply
		}
	})
	if err != nil {
		t.Fatalf("icmp listen in %s: %v", ns, err)
	}
	defer c.Close()
	id := int(nsSeq.Add(1) & 0xffff)
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for seq := 1; time.Now().Before(deadline); seq++ {
		m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("clusterwall")}}
		b, _ := m.Marshal(nil)
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			t.Fatalf("icmp send: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			rm, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || rm.Type != reply {
				continue
			}
			if e, ok := rm.Body.(*icmp.Echo); ok && e.ID == id && from.String() == dst.String() {
				return passed
			}
		}
	}
	return blocked
}

func loadPolicyBytes(name string, data []byte) (*policy.Policy, error) {
	return policy.Load(name, data, policy.Options{})
}

// keepConn is a long-lived TCP connection to an echo server.
type keepConn struct {
	c   net.Conn
	buf []byte
	n   int
}

func dialKeep(t testing.TB, ns string, dst netip.AddrPort) *keepConn {
	t.Helper()
	var (
		c   net.Conn
		err error
	)
	inNS(t, ns, func() { c, err = net.DialTimeout("tcp", dst.String(), time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	k := &keepConn{c: c, buf: make([]byte, 256)}
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(k.buf); err != nil { // the greeting
		t.Fatal(err)
	}
	return k
}

// echo sends one numbered line and waits for it to come back.
func (k *keepConn) echo(timeout time.Duration) error {
	k.n++
	msg := fmt.Sprintf("%d\n", k.n)
	k.c.SetDeadline(time.Now().Add(timeout))
	if _, err := k.c.Write([]byte(msg)); err != nil {
		return err
	}
	got := ""
	for len(got) < len(msg) {
		n, err := k.c.Read(k.buf)
		if err != nil {
			return err
		}
		got += string(k.buf[:n])
	}
	if got != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

func (k *keepConn) Close() error { return k.c.Close() }

// dialSYNs connects from ns to dst and returns how many times the kernel
// retransmitted during the connection's life: a lost SYN or SYN-ACK shows
// as 1 even when the connection then succeeds (after the 1 s SYN timeout).
func dialSYNs(t testing.TB, ns string, dst netip.AddrPort) (retrans int, err error) {
	t.Helper()
	var c net.Conn
	inNS(t, ns, func() { c, err = net.DialTimeout("tcp", dst.String(), 5*time.Second) })
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var info *unix.TCPInfo
	if cerr := raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); cerr != nil {
		return 0, cerr
	}
	if err != nil {
		return 0, err
	}
	return int(info.Total_retrans), nil
}

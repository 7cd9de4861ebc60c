package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

func a4(s string) netip.Addr { return netip.MustParseAddr(s) }

// fill admits n connections from addr and returns their handles.
func fill(t *testing.T, l *limiter, addr string, n int) []*connHandle {
	t.Helper()
	var hs []*connHandle
	for range n {
		h := new(connHandle)
		if v, reason := l.admit(h, a4(addr)); reason != "" || v != nil {
			t.Fatalf("admit %s: victim %v, %q", addr, v, reason)
		}
		hs = append(hs, h)
	}
	return hs
}

// TestLimiterShedsHeaviest: the scenarios of issue 17's finding — a few
// sources holding the global limit — and what each newcomer gets.
func TestLimiterShedsHeaviest(t *testing.T) {
	l := newLimiter(100, 60, 80)
	// Four attackers in four /24s fill the proxy: 40 + 30 + 20 + 10.
	a := fill(t, l, "10.0.1.1", 40)
	fill(t, l, "10.0.2.1", 30)
	fill(t, l, "10.0.3.1", 20)
	fill(t, l, "10.0.4.1", 10)
	// A newcomer from a fresh network: the heaviest network's oldest
	// connection makes room.
	v, reason := l.admit(new(connHandle), a4("10.0.9.1"))
	if reason != "" || v != a[0] {
		t.Fatalf("newcomer: victim %p (want the heaviest source's oldest %p), %q", v, a[0], reason)
	}
	// The heaviest source itself cannot push anyone out.
	if v, reason := l.admit(new(connHandle), a4("10.0.1.1")); reason != reasonLimitGlobal || v != nil {
		t.Fatalf("heaviest source at the global limit: victim %v, %q", v, reason)
	}
	// A newcomer in the heaviest network but with a light address sheds
	// the heavy address of its own network.
	v, reason = l.admit(new(connHandle), a4("10.0.1.2"))
	if reason != "" || v == nil || v.src != nil || v != a[1] {
		t.Fatalf("light address in the heaviest network: victim %v, %q", v, reason)
	}
	if l.total != 100 || l.addrs[a4("10.0.1.1")].n != 38 {
		t.Fatalf("total %d, heavy source %d", l.total, l.addrs[a4("10.0.1.1")].n)
	}
	checkLimiter(t, l)
}

// TestLimiterNetworkLimit: a /64 full of addresses with one connection
// each (what one IPv6 host can make) stops at the per-network limit
// without shedding anyone (they are equally light), while another network
// still gets in.
func TestLimiterNetworkLimit(t *testing.T) {
	l := newLimiter(100, 10, 8)
	for i := range 8 {
		fill(t, l, fmt.Sprintf("2001:db8:1:2::%x", i+1), 1)
	}
	if v, reason := l.admit(new(connHandle), a4("2001:db8:1:2::99")); reason != reasonLimitNetwork || v != nil {
		t.Fatalf("ninth address of a full /64: %v, %q", v, reason)
	}
	fill(t, l, "2001:db8:1:3::1", 1)
	// One address of the /64 holding several: a light newcomer of the
	// same /64 takes one of them.
	l2 := newLimiter(100, 10, 8)
	heavy := fill(t, l2, "2001:db8:1:2::1", 6)
	fill(t, l2, "2001:db8:1:2::2", 2)
	if v, reason := l2.admit(new(connHandle), a4("2001:db8:1:2::3")); reason != "" || v != heavy[0] {
		t.Fatalf("light address of a full /64: %v, %q", v, reason)
	}
	// Per-address limit: the address's own quota, never shed.
	l3 := newLimiter(100, 3, 50)
	fill(t, l3, "10.1.1.1", 3)
	if v, reason := l3.admit(new(connHandle), a4("10.1.1.1")); reason != reasonLimitSource || v != nil {
		t.Fatalf("fourth connection of an address with a limit of 3: %v, %q", v, reason)
	}
	checkLimiter(t, l)
	checkLimiter(t, l2)
}

// checkLimiter checks the limiter's bookkeeping against its entries.
func checkLimiter(t *testing.T, l *limiter) {
	t.Helper()
	total, top := 0, 0
	for a, s := range l.addrs {
		n := 0
		for h := s.head; h != nil; h = h.next {
			if h.src != s || !h.counted {
				t.Fatalf("handle of %s points elsewhere", a)
			}
			n++
		}
		if n != s.n || s.addr != a || s.n <= 0 {
			t.Fatalf("%s: %d handles, count %d", a, n, s.n)
		}
	}
	for k, p := range l.pfxs {
		n := 0
		for s := p.addrs; s != nil; s = s.next {
			if s.pfx != p || networkOf(s.addr) != k {
				t.Fatalf("address %s in network %s", s.addr, k)
			}
			n += s.n
		}
		if n != p.n {
			t.Fatalf("network %s: %d by its addresses, count %d", k, n, p.n)
		}
		total += n
		top = max(top, n)
		if l.buckets != nil {
			found := false
			for q := l.buckets[p.n]; q != nil; q = q.next {
				found = found || q == p
			}
			if !found {
				t.Fatalf("network %s not in bucket %d", k, p.n)
			}
		}
	}
	if total != l.total || (l.buckets != nil && top != l.top) {
		t.Fatalf("total %d (counted %d), top %d (counted %d)", l.total, total, l.top, top)
	}
}

// TestLimiterModel runs random admits, releases and sheds against a
// brute-force model of the rules in limits.go: the same decisions, the
// victim from a source of the expected weight, consistent bookkeeping.
func TestLimiterModel(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 1))
	for round := range 200 {
		maxT, maxA, maxP := 5+r.IntN(60), 1+r.IntN(20), 1+r.IntN(40)
		l := newLimiter(maxT, maxA, maxP)
		var live []*connHandle
		addrs := []netip.Addr{}
		for i := range 2 + r.IntN(12) {
			if r.IntN(2) == 0 {
				addrs = append(addrs, netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(3)), byte(i)}))
			} else {
				addrs = append(addrs, netip.MustParseAddr(fmt.Sprintf("2001:db8:0:%x::%x", r.IntN(3), i+1)))
			}
		}
		for step := range 400 {
			if len(live) > 0 && r.IntN(3) == 0 {
				i := r.IntN(len(live))
				l.release(live[i])
				live = append(live[:i], live[i+1:]...)
				continue
			}
			a := addrs[r.IntN(len(addrs))]
			// The model's expectation, from counts alone.
			cnt := map[netip.Addr]int{}
			net := map[netip.Prefix]int{}
			for _, h := range live {
				cnt[h.src.addr]++
				net[networkOf(h.src.addr)]++
			}
			heavyIn := func(p netip.Prefix) int {
				m := 0
				for x, n := range cnt {
					if networkOf(x) == p {
						m = max(m, n)
					}
				}
				return m
			}
			top := 0
			for _, n := range net {
				top = max(top, n)
			}
			p := networkOf(a)
			var want string
			var wantVictimWeight int // the victim's address count before the shed; 0: none
			switch {
			case cnt[a] >= maxA:
				want = reasonLimitSource
			case net[p] >= maxP:
				if h := heavyIn(p); cnt[a]+1 < h {
					wantVictimWeight = h
				} else {
					want = reasonLimitNetwork
				}
			}
			if want == "" && wantVictimWeight == 0 && len(live) >= maxT {
				switch {
				case net[p]+1 < top:
					wantVictimWeight = -1 // from a network of weight top
				case net[p] == top:
					if h := heavyIn(p); cnt[a]+1 < h {
						wantVictimWeight = h
					} else {
						want = reasonLimitGlobal
					}
				default:
					want = reasonLimitGlobal
				}
			}
			h := new(connHandle)
			var victimAddr netip.Addr
			v, reason := l.admit(h, a)
			if v != nil {
				for i, x := range live {
					if x == v {
						victimAddr = addrOfModel(live, i, cnt)
						live = append(live[:i], live[i+1:]...)
						break
					}
				}
			}
			if reason != want {
				t.Fatalf("round %d step %d: admit %s = %q, want %q (counts %v)", round, step, a, reason, want, cnt)
			}
			switch {
			case wantVictimWeight > 0 && (v == nil || cnt[victimAddr] != wantVictimWeight):
				t.Fatalf("round %d step %d: victim %v (%d), want one of weight %d", round, step, victimAddr, cnt[victimAddr], wantVictimWeight)
			case wantVictimWeight < 0 && (v == nil || net[networkOf(victimAddr)] != top):
				t.Fatalf("round %d step %d: victim %v of network weight %d, want %d", round, step, victimAddr, net[networkOf(victimAddr)], top)
			case wantVictimWeight == 0 && v != nil:
				t.Fatalf("round %d step %d: unexpected victim", round, step)
			}
			if reason == "" {
				live = append(live, h)
			}
			checkLimiter(t, l)
		}
	}
}

// addrOfModel finds the address a shed handle had: the model keeps no
// pointer back (release cleared it), so it is the address whose count in
// the model exceeds the limiter's now.
func addrOfModel(live []*connHandle, i int, cnt map[netip.Addr]int) netip.Addr {
	now := map[netip.Addr]int{}
	for j, h := range live {
		if j != i && h.src != nil {
			now[h.src.addr]++
		}
	}
	for a, n := range cnt {
		if now[a] < n {
			return a
		}
	}
	return netip.Addr{}
}

// TestLimiterNoAllocs: admitting and releasing a connection of a known
// source allocates nothing.
func TestLimiterNoAllocs(t *testing.T) {
	l := newLimiter(DefaultMaxConns, DefaultMaxConnsPerSource, DefaultMaxConnsPerPrefix)
	fill(t, l, "10.0.0.1", 3)
	h := new(connHandle)
	a := a4("10.0.0.2")
	if n := testing.AllocsPerRun(1000, func() {
		l.admit(h, a)
		l.release(h)
	}); n != 0 {
		t.Errorf("%v allocations per admit and release", n)
	}
}

// TestFairConnectionLimits is the regression test for issue 17's "the L7
// proxy's global connection limit can be filled from 40 addresses with
// idle connections; every other client is then reset": eight addresses in
// eight /24s hold every slot with idle connections (no ClientHello); a
// client from another address still gets its TLS request through, and an
// attacker's connection is the one reset. Before fair limits the newcomer
// was refused ("global connection limit reached").
func TestFairConnectionLimits(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.good.addr)
	cfg.MaxConns = 64
	cfg.MaxConnsPerSource = 32
	cfg.HelloTimeout = time.Minute
	e := startProxy(t, cfg)
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for i := range 8 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte(10+i), 1)}}
		for range 8 {
			c, err := d.Dial("tcp", e.addr)
			if err != nil {
				t.Fatalf("attacker %d: %v", i, err)
			}
			idle = append(idle, c)
		}
	}
	waitFor(t, "64 active", func() bool { return e.p.Stats().Active == 64 })
	// Another client: served.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 99, 1)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, &tls.Config{ServerName: "ok.test", RootCAs: getPKI(t).pool})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("a client outside the attackers' networks at the global limit: %v (stats %+v)", err, e.p.Stats())
	}
	// Exactly one attacker connection was shed (reset), with a line.
	e.sink.wait(t, "shed line", func(r telemetry.Record) bool { return r.ActionReason == reasonShed })
	waitFor(t, "the shed connection closed", func() bool { return e.p.Stats().Active == 64 })
	reset := 0
	for _, ic := range idle {
		ic.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := ic.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			reset++
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("shed connection: %v, want a reset", err)
			}
		}
	}
	if st := e.p.Stats(); reset != 1 || st.Shed != 1 || st.RefusedGlobal != 0 {
		t.Errorf("%d attacker connections reset, stats %+v; want 1 shed", reset, st)
	}
	// An attacker opening more is refused: it is the heaviest.
	ad := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 10, 1)}}
	if ac, err := ad.Dial("tcp", e.addr); err == nil {
		ac.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := ac.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("an attacker's new connection at the limit was kept")
		}
		ac.Close()
	}
}

// BenchmarkLimiterAdmitRelease is the limiter's cost per connection (one
// admit and one release of a source with other connections).
func BenchmarkLimiterAdmitRelease(b *testing.B) {
	l := newLimiter(DefaultMaxConns, DefaultMaxConnsPerSource, DefaultMaxConnsPerPrefix)
	for i := range 200 {
		h := new(connHandle)
		l.admit(h, netip.AddrFrom4([4]byte{10, 0, byte(i / 50), byte(i)}))
	}
	h := new(connHandle)
	a := a4("10.0.1.7")
	b.ReportAllocs()
	for range b.N {
		l.admit(h, a)
		l.release(h)
	}
}

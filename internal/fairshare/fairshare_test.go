package fairshare

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func a4(s string) netip.Addr { return netip.MustParseAddr(s) }

// fill admits n connections from addr and returns their handles.
func fill(t *testing.T, l *Limiter, addr string, n int) []*Handle {
	t.Helper()
	var hs []*Handle
	for range n {
		h := new(Handle)
		if v, reason := l.Admit(h, a4(addr)); reason != OK || v != nil {
			t.Fatalf("admit %s: victim %v, %v", addr, v, reason)
		}
		hs = append(hs, h)
	}
	return hs
}

// TestLimiterShedsHeaviest: the scenarios of issue 17's finding — a few
// sources holding the global limit — and what each newcomer gets.
func TestLimiterShedsHeaviest(t *testing.T) {
	l := New(100, 60, 80)
	// Four attackers in four /24s fill the proxy: 40 + 30 + 20 + 10.
	a := fill(t, l, "10.0.1.1", 40)
	fill(t, l, "10.0.2.1", 30)
	fill(t, l, "10.0.3.1", 20)
	fill(t, l, "10.0.4.1", 10)
	// A newcomer from a fresh network: the heaviest network's oldest
	// connection makes room.
	v, reason := l.Admit(new(Handle), a4("10.0.9.1"))
	if reason != OK || v != a[0] {
		t.Fatalf("newcomer: victim %p (want the heaviest source's oldest %p), %v", v, a[0], reason)
	}
	// The heaviest source itself cannot push anyone out.
	if v, reason := l.Admit(new(Handle), a4("10.0.1.1")); reason != LimitGlobal || v != nil {
		t.Fatalf("heaviest source at the global limit: victim %v, %v", v, reason)
	}
	// A newcomer in the heaviest network but with a light address sheds
	// the heavy address of its own network.
	v, reason = l.Admit(new(Handle), a4("10.0.1.2"))
	if reason != OK || v == nil || v.src != nil || v != a[1] {
		t.Fatalf("light address in the heaviest network: victim %v, %v", v, reason)
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
	l := New(100, 10, 8)
	for i := range 8 {
		fill(t, l, fmt.Sprintf("2001:db8:1:2::%x", i+1), 1)
	}
	if v, reason := l.Admit(new(Handle), a4("2001:db8:1:2::99")); reason != LimitNetwork || v != nil {
		t.Fatalf("ninth address of a full /64: %v, %v", v, reason)
	}
	fill(t, l, "2001:db8:1:3::1", 1)
	// One address of the /64 holding several: a light newcomer of the
	// same /64 takes one of them.
	l2 := New(100, 10, 8)
	heavy := fill(t, l2, "2001:db8:1:2::1", 6)
	fill(t, l2, "2001:db8:1:2::2", 2)
	if v, reason := l2.Admit(new(Handle), a4("2001:db8:1:2::3")); reason != OK || v != heavy[0] {
		t.Fatalf("light address of a full /64: %v, %v", v, reason)
	}
	// Per-address limit: the address's own quota, never shed.
	l3 := New(100, 3, 50)
	fill(t, l3, "10.1.1.1", 3)
	if v, reason := l3.Admit(new(Handle), a4("10.1.1.1")); reason != LimitSource || v != nil {
		t.Fatalf("fourth connection of an address with a limit of 3: %v, %v", v, reason)
	}
	checkLimiter(t, l)
	checkLimiter(t, l2)
}

// checkLimiter checks the limiter's bookkeeping against its entries.
func checkLimiter(t *testing.T, l *Limiter) {
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
		l := New(maxT, maxA, maxP)
		var live []*Handle
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
				l.Release(live[i])
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
			var want Reason
			var wantVictimWeight int // the victim's address count before the shed; 0: none
			switch {
			case cnt[a] >= maxA:
				want = LimitSource
			case net[p] >= maxP:
				if h := heavyIn(p); cnt[a]+1 < h {
					wantVictimWeight = h
				} else {
					want = LimitNetwork
				}
			}
			if want == OK && wantVictimWeight == 0 && len(live) >= maxT {
				switch {
				case net[p]+1 < top:
					wantVictimWeight = -1 // from a network of weight top
				case net[p] == top:
					if h := heavyIn(p); cnt[a]+1 < h {
						wantVictimWeight = h
					} else {
						want = LimitGlobal
					}
				default:
					want = LimitGlobal
				}
			}
			h := new(Handle)
			var victimAddr netip.Addr
			v, reason := l.Admit(h, a)
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
				t.Fatalf("round %d step %d: admit %s = %v, want %v (counts %v)", round, step, a, reason, want, cnt)
			}
			switch {
			case wantVictimWeight > 0 && (v == nil || cnt[victimAddr] != wantVictimWeight):
				t.Fatalf("round %d step %d: victim %v (%d), want one of weight %d", round, step, victimAddr, cnt[victimAddr], wantVictimWeight)
			case wantVictimWeight < 0 && (v == nil || net[networkOf(victimAddr)] != top):
				t.Fatalf("round %d step %d: victim %v of network weight %d, want %d", round, step, victimAddr, net[networkOf(victimAddr)], top)
			case wantVictimWeight == 0 && v != nil:
				t.Fatalf("round %d step %d: unexpected victim", round, step)
			}
			if reason == OK {
				live = append(live, h)
			}
			checkLimiter(t, l)
		}
	}
}

// addrOfModel finds the address a shed handle had: the model keeps no
// pointer back (release cleared it), so it is the address whose count in
// the model exceeds the limiter's now.
func addrOfModel(live []*Handle, i int, cnt map[netip.Addr]int) netip.Addr {
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
	l := New(16384, 512, 4096)
	fill(t, l, "10.0.0.1", 3)
	h := new(Handle)
	a := a4("10.0.0.2")
	if n := testing.AllocsPerRun(1000, func() {
		l.Admit(h, a)
		l.Release(h)
	}); n != 0 {
		t.Errorf("%v allocations per admit and release", n)
	}
}

// BenchmarkLimiterAdmitRelease is the limiter's cost per connection (one
// admit and one release of a source with other connections).
func BenchmarkLimiterAdmitRelease(b *testing.B) {
	l := New(16384, 512, 4096)
	for i := range 200 {
		h := new(Handle)
		l.Admit(h, netip.AddrFrom4([4]byte{10, 0, byte(i / 50), byte(i)}))
	}
	h := new(Handle)
	a := a4("10.0.1.7")
	b.ReportAllocs()
	for range b.N {
		l.Admit(h, a)
		l.Release(h)
	}
}

// TestSetLimits: limits change under counted holders, from off to on too.
func TestSetLimits(t *testing.T) {
	l := New(-1, -1, -1)
	fill(t, l, "10.0.1.1", 5)
	fill(t, l, "10.0.2.1", 3)
	l.SetLimits(8, -1, -1)
	checkLimiter(t, l)
	if v, reason := l.Admit(new(Handle), a4("10.0.9.9")); reason != OK || v == nil || v.src != nil {
		t.Fatalf("newcomer after turning the limit on: %v, %v", v, reason)
	}
	l.SetLimits(100, -1, -1)
	fill(t, l, "10.0.3.1", 50)
	checkLimiter(t, l)
}

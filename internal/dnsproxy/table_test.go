package dnsproxy

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
)

// The table is the daemon's match.FQDNResolver.
var _ match.FQDNResolver = (*Table)(nil)

func TestTableResolved(t *testing.T) {
	clk := newFakeClock()
	tb := NewTable(TableOptions{Grace: time.Minute, Now: clk.Now})
	exp := clk.Now().Add(time.Minute).UnixNano()
	tb.learn("api.example.com", []netip.Addr{mustAddr("192.0.2.1"), mustAddr("2001:db8::1")}, exp, false)
	tests := []struct {
		name string
		qn   string
		addr string
		want bool
	}{
		{"exact", "api.example.com", "192.0.2.1", true},
		{"IPv6", "api.example.com", "2001:db8::1", true},
		{"upper case and trailing dot", "API.Example.COM.", "192.0.2.1", true},
		{"4in6 form", "api.example.com", "::ffff:192.0.2.1", true},
		{"other address", "api.example.com", "192.0.2.9", false},
		{"other name", "www.example.com", "192.0.2.1", false},
		{"suffix is not the name", "example.com", "192.0.2.1", false},
		{"empty", "", "192.0.2.1", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tb.Resolved(tc.qn, mustAddr(tc.addr)); got != tc.want {
				t.Errorf("Resolved(%q, %s) = %v", tc.qn, tc.addr, got)
			}
		})
	}
	clk.Advance(time.Minute)
	if tb.Resolved("api.example.com", mustAddr("192.0.2.1")) {
		t.Error("Resolved after expiry")
	}
}

func TestTableResolvedDoesNotAllocate(t *testing.T) {
	tb := NewTable(TableOptions{})
	tb.learn("api.example.com", []netip.Addr{mustAddr("192.0.2.1")}, time.Now().Add(time.Hour).UnixNano(), false)
	a := mustAddr("192.0.2.1")
	for _, name := range []string{"api.example.com", "API.example.com.", "missing.example.com"} {
		if n := testing.AllocsPerRun(1000, func() { tb.Resolved(name, a) }); n != 0 {
			t.Errorf("Resolved(%q) allocates %v times", name, n)
		}
	}
}

func TestTableLearnAndSweep(t *testing.T) {
	clk := newFakeClock()
	asked := 0
	keep := true
	tb := NewTable(TableOptions{Grace: 30 * time.Second, Now: clk.Now, MaxNames: 2,
		OnExpire: func(string, netip.Addr) bool { asked++; return keep }})
	t0 := clk.Now().UnixNano()
	a, b := mustAddr("192.0.2.1"), mustAddr("192.0.2.2")
	tb.learn("one.example", []netip.Addr{a}, t0+int64(10*time.Second), false)
	// A later answer extends, an earlier one never shortens.
	tb.learn("one.example", []netip.Addr{a, b}, t0+int64(20*time.Second), false)
	tb.learn("one.example", []netip.Addr{a}, t0+int64(5*time.Second), false)
	if !tb.covers("one.example", []netip.Addr{a, b}, t0+int64(20*time.Second)) {
		t.Error("covers: the later expiry was not kept")
	}
	if tb.covers("one.example", []netip.Addr{a}, t0+int64(21*time.Second)) {
		t.Error("covers: claims an expiry it does not have")
	}
	// Full: a new name is learned only when forced (a rule needs it).
	tb.learn("two.example", []netip.Addr{a}, t0+int64(20*time.Second), false)
	tb.learn("three.example", []netip.Addr{a}, t0+int64(20*time.Second), false)
	if tb.Len() != 2 || tb.Dropped() != 1 {
		t.Errorf("len %d dropped %d, want 2 and 1", tb.Len(), tb.Dropped())
	}
	tb.learn("three.example", []netip.Addr{a}, t0+int64(20*time.Second), true)
	if tb.Len() != 3 {
		t.Errorf("forced learn: len %d", tb.Len())
	}
	if got := tb.Lookup(a); !slices.Equal(got, []string{"one.example", "three.example", "two.example"}) {
		t.Errorf("Lookup = %v", got)
	}

	clk.Advance(20 * time.Second)
	tb.Sweep()
	if asked != 4 {
		t.Errorf("OnExpire asked %d times, want 4 (every address)", asked)
	}
	if tb.Len() != 3 || !tb.Resolved("one.example", b) {
		t.Error("kept addresses were removed")
	}
	clk.Advance(29 * time.Second)
	tb.Sweep()
	if asked != 4 {
		t.Errorf("asked again before the grace period ended")
	}
	clk.Advance(time.Second)
	keep = false
	tb.Sweep()
	if tb.Len() != 0 || len(tb.Lookup(a)) != 0 || len(tb.byAddr) != 0 {
		t.Errorf("after expiry: %d names, reverse index %v", tb.Len(), tb.byAddr)
	}
}

// TestTableAddressBounds: a name whose server hands out a new address for
// every answer keeps at most MaxAddrsPerName (its soonest-expiring ones
// make room); all names together at most MaxAddrs, beyond which only
// names a rule needs learn more.
func TestTableAddressBounds(t *testing.T) {
	clk := newFakeClock()
	tb := NewTable(TableOptions{Now: clk.Now, MaxAddrs: 10, MaxAddrsPerName: 4})
	t0 := clk.Now().UnixNano()
	for i := range 100 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		tb.learn("rot.example", []netip.Addr{a}, t0+int64(time.Duration(i+1)*time.Second), false)
	}
	got := tb.Addrs("rot.example")
	if len(got) != 4 || !slices.Contains(got, mustAddr("10.0.0.99")) || slices.Contains(got, mustAddr("10.0.0.0")) {
		t.Errorf("rot.example: %v, want the 4 newest", got)
	}
	if st := tb.Stats(); st.Addrs != 4 || st.Replaced != 96 {
		t.Errorf("stats %+v", st)
	}
	for i := range 10 {
		tb.learn(fmt.Sprintf("n%d.example", i), []netip.Addr{netip.AddrFrom4([4]byte{10, 1, 0, byte(i)})}, t0+int64(time.Hour), false)
	}
	if st := tb.Stats(); st.Addrs != 10 || st.Dropped != 4 {
		t.Errorf("full table: %+v, want 10 addresses and 4 dropped", st)
	}
	tb.learn("rule.example", []netip.Addr{mustAddr("192.0.2.1")}, t0+int64(time.Hour), true)
	if !tb.Resolved("rule.example", mustAddr("192.0.2.1")) {
		t.Error("a name a rule needs was not learned in a full table")
	}
	// The reverse index follows the replacements.
	if names := tb.Lookup(mustAddr("10.0.0.0")); len(names) != 0 {
		t.Errorf("a replaced address still maps to %v", names)
	}
	clk.Advance(2 * time.Hour)
	tb.Sweep()
	if st := tb.Stats(); st.Addrs != 0 || st.Names != 0 || len(tb.byAddr) != 0 {
		t.Errorf("after expiry: %+v, reverse %d", st, len(tb.byAddr))
	}
}

package threatintel

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

func TestBlockedRanges(t *testing.T) {
	feed := mustParse(t, "ips", FormatPlain, `
192.0.2.0/24
192.0.2.66
198.51.100.10-198.51.100.20
198.51.100.21
10.0.0.0/8
2001:db8::/32
2001:db8:192::66
0.0.0.0/32
255.255.255.255
`)
	al := allowlist(t, []string{"192.0.2.14", "10.1.0.0/16", "2001:db8:1::/48"}, nil)
	s := Compile([]*FeedData{feed}, al)
	v4, v6 := s.BlockedRanges()
	got := fmt.Sprint(v4, v6)
	want := "[{0.0.0.0 0.0.0.0} {10.0.0.0 10.0.255.255} {10.2.0.0 10.255.255.255} {192.0.2.0 192.0.2.13} {192.0.2.15 192.0.2.255} " +
		"{198.51.100.10 198.51.100.21} {255.255.255.255 255.255.255.255}] " +
		"[{2001:db8:: 2001:db8:0:ffff:ffff:ffff:ffff:ffff} {2001:db8:2:: 2001:db8:ffff:ffff:ffff:ffff:ffff:ffff}]"
	if got != want {
		t.Errorf("BlockedRanges =\n%s\nwant\n%s", got, want)
	}
	if v4, v6 := (*Set)(nil).BlockedRanges(); v4 != nil || v6 != nil {
		t.Error("nil set has ranges")
	}
	if v4, v6 := Compile([]*FeedData{feed}, allowlist(t, []string{"*"}, nil)).BlockedRanges(); v4 != nil || v6 != nil {
		t.Error("allowlist * leaves ranges")
	}
}

// TestBlockedRangesAgreeWithLookup checks BlockedRanges against LookupAddr
// on random feeds and allowlists: an address is in a range exactly when
// LookupAddr reports it.
func TestBlockedRangesAgreeWithLookup(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	addr := func() netip.Addr {
		if rnd.IntN(2) == 0 {
			return netip.AddrFrom4([4]byte{10, 0, byte(rnd.IntN(4)), byte(rnd.IntN(256))})
		}
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 15: byte(rnd.IntN(256)), 14: byte(rnd.IntN(4))})
	}
	for round := 0; round < 50; round++ {
		var feedText string
		for i := 0; i < 20; i++ {
			a := addr()
			feedText += fmt.Sprintf("%s\n", netip.PrefixFrom(a, a.BitLen()-rnd.IntN(9)).Masked())
		}
		var allow []string
		for i := 0; i < 5; i++ {
			a := addr()
			allow = append(allow, netip.PrefixFrom(a, a.BitLen()-rnd.IntN(5)).Masked().String())
		}
		s := Compile([]*FeedData{mustParse(t, "r", FormatPlain, feedText)}, allowlist(t, allow, nil))
		v4, v6 := s.BlockedRanges()
		in := func(a netip.Addr) bool {
			rs := v6
			if a.Is4() {
				rs = v4
			}
			for _, r := range rs {
				if !a.Less(r.From) && !r.To.Less(a) {
					return true
				}
			}
			return false
		}
		for _, rs := range [][]policy.AddrRange{v4, v6} {
			for i := 1; i < len(rs); i++ {
				if !rs[i-1].To.Next().Less(rs[i].From) {
					t.Fatalf("ranges %v and %v overlap or touch", rs[i-1], rs[i])
				}
			}
		}
		for i := 0; i < 2000; i++ {
			a := addr()
			_, listed := s.LookupAddr(a)
			if listed != in(a) {
				t.Fatalf("round %d: %s: LookupAddr %v, in BlockedRanges %v (feed %q allow %v)", round, a, listed, in(a), feedText, allow)
			}
		}
	}
}

package iprange

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func TestAddrRoundTrip(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "10.42.1.10", "255.255.255.255", "::", "2001:db8::1", "::ffff:10.0.0.1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		a := netip.MustParseAddr(s)
		if got := From(a).Addr(a.Is4()); got != a {
			t.Errorf("%s -> %v -> %s", a, From(a), got)
		}
	}
	if From(netip.MustParseAddr("0.0.0.1")) != (U128{0, 1}) || From(netip.MustParseAddr("::1:0:0:0:0")) != (U128{1, 0}) {
		t.Error("From puts the address in the wrong bits")
	}
}

// TestArithmeticAgainstNetip: Next, Prev, Less and Sub agree with netip's
// own arithmetic on random addresses of both families, carries included.
func TestArithmeticAgainstNetip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	edges := []U128{{}, {0, ^uint64(0)}, {1, 0}, Max, {^uint64(0), 0}}
	for i := 0; i < 20000; i++ {
		var u, v U128
		if i < len(edges)*len(edges) {
			u, v = edges[i%len(edges)], edges[i/len(edges)]
		} else {
			u, v = U128{r.Uint64(), r.Uint64()}, U128{r.Uint64(), r.Uint64()}
			if i%3 == 0 {
				u.Hi = v.Hi // carries across the low word
			}
		}
		a, b := u.Addr6(), v.Addr6()
		if got, want := u.Less(v), a.Less(b); got != want {
			t.Fatalf("%v.Less(%v) = %v", u, v, got)
		}
		if got, want := u.Compare(v), a.Compare(b); got != want {
			t.Fatalf("%v.Compare(%v) = %d, want %d", u, v, got, want)
		}
		if n := a.Next(); n.IsValid() && u.Next().Addr6() != n {
			t.Fatalf("%v.Next() = %v, want %v", u, u.Next().Addr6(), n)
		}
		if p := a.Prev(); p.IsValid() && u.Prev().Addr6() != p {
			t.Fatalf("%v.Prev() = %v, want %v", u, u.Prev().Addr6(), p)
		}
		if d := u.Sub(v); v.Less(u) || u == v {
			// v + (u - v) == u, checked by adding back bit by bit words.
			lo := d.Lo + v.Lo
			carry := uint64(0)
			if lo < d.Lo {
				carry = 1
			}
			if (U128{d.Hi + v.Hi + carry, lo}) != u {
				t.Fatalf("%v.Sub(%v) = %v", u, v, d)
			}
		}
	}
	if Max.Next() != (U128{}) || (U128{}).Prev() != Max {
		t.Error("Next and Prev must wrap")
	}
}

func TestOnesAndPrefixes(t *testing.T) {
	for n := 0; n <= 128; n++ {
		o := Ones(n)
		c := 0
		for k := 0; k < 16; k++ {
			for b := o.Byte(k); b != 0; b &= b - 1 {
				c++
			}
		}
		if c != n || (n < 128 && o.Next() != (U128{}) && o.Next().AndNot(Ones(n+1)) != (U128{})) {
			t.Fatalf("Ones(%d) = %v", n, o)
		}
	}
	for s, last := range map[string]string{"10.0.0.0/8": "10.255.255.255", "10.1.2.3/32": "10.1.2.3", "0.0.0.0/0": "255.255.255.255",
		"2001:db8::/32": "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "::/0": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "10.1.2.3/24": "10.1.2.255"} {
		if got := LastAddr(netip.MustParsePrefix(s)); got.String() != last {
			t.Errorf("LastAddr(%s) = %s, want %s", s, got, last)
		}
	}
}

// TestAppendPrefixes: the prefixes cover exactly from..to, are the fewest
// (none could merge with its neighbour), in order.
func TestAppendPrefixes(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	check := func(from, to netip.Addr) {
		t.Helper()
		ps := AppendPrefixes(nil, from, to)
		next := from
		for i, p := range ps {
			if p.Addr() != next || p.Masked() != p {
				t.Fatalf("%s-%s: prefix %d %s does not start at %s or is not masked: %v", from, to, i, p, next, ps)
			}
			last := LastAddr(p)
			if i > 0 && ps[i-1].Bits() == p.Bits() && ps[i-1].Bits() > 0 {
				if up, _ := ps[i-1].Addr().Prefix(p.Bits() - 1); up.Addr() == ps[i-1].Addr() && LastAddr(up) == last {
					t.Fatalf("%s-%s: %s and %s could be one prefix: %v", from, to, ps[i-1], p, ps)
				}
			}
			next = last.Next()
		}
		if LastAddr(ps[len(ps)-1]) != to {
			t.Fatalf("%s-%s: prefixes end at %s: %v", from, to, LastAddr(ps[len(ps)-1]), ps)
		}
	}
	check(netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255"))
	check(netip.MustParseAddr("::"), netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
	check(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.254"))
	for range 2000 {
		a, b := U128{0, uint64(r.Uint32())}, U128{0, uint64(r.Uint32())}
		if b.Less(a) {
			a, b = b, a
		}
		check(a.Addr4(), b.Addr4())
		x, y := U128{r.Uint64() >> r.IntN(64), r.Uint64()}, U128{r.Uint64() >> r.IntN(64), r.Uint64()}
		if y.Less(x) {
			x, y = y, x
		}
		check(x.Addr6(), y.Addr6())
	}
}

// TestMergeAndSubtract against a bitmap of 0..255 (and the ends of the
// number line for Max).
func TestMergeAndSubtract(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	gen := func() ([]Range, [256]bool) {
		var set [256]bool
		var rs []Range
		for range r.IntN(6) {
			lo := r.IntN(256)
			hi := min(255, lo+r.IntN(40))
			rs = append(rs, Range{U128{0, uint64(lo)}, U128{0, uint64(hi)}})
			for i := lo; i <= hi; i++ {
				set[i] = true
			}
		}
		return rs, set
	}
	bitmap := func(rs []Range) (set [256]bool) {
		for _, x := range rs {
			for i := x.Lo.Lo; i <= x.Hi.Lo; i++ {
				set[i] = true
			}
		}
		return
	}
	canonical := func(rs []Range) bool {
		for i := 1; i < len(rs); i++ {
			if !rs[i-1].Hi.Next().Less(rs[i].Lo) {
				return false
			}
		}
		return true
	}
	for range 5000 {
		a, aset := gen()
		b, bset := gen()
		ma, mb := Merge(slices.Clone(a)), Merge(slices.Clone(b))
		if bitmap(ma) != aset || !canonical(ma) {
			t.Fatalf("Merge(%v) = %v", a, ma)
		}
		var want [256]bool
		for i := range want {
			want[i] = aset[i] && !bset[i]
		}
		if d := Subtract(ma, mb); bitmap(d) != want || !canonical(d) {
			t.Fatalf("Subtract(%v, %v) = %v", ma, mb, d)
		}
	}
	if got := Merge([]Range{{U128{0, 5}, Max}, {Max, Max}, {U128{}, U128{0, 4}}}); len(got) != 1 || got[0] != (Range{U128{}, Max}) {
		t.Errorf("Merge at the ends of the number line: %v", got)
	}
}

// TestPrefixBits: a range is one prefix exactly when it is some prefix's
// range; every prefix's range is.
func TestPrefixBits(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for range 5000 {
		is4 := r.IntN(2) == 0
		width := 128
		a := U128{r.Uint64(), r.Uint64()}
		if is4 {
			width, a = 32, U128{0, uint64(r.Uint32())}
		}
		p := netip.PrefixFrom(a.Addr(is4), r.IntN(width+1)).Masked()
		if b, ok := OfPrefix(p).PrefixBits(width); !ok || b != p.Bits() {
			t.Fatalf("OfPrefix(%s).PrefixBits = %d, %v", p, b, ok)
		}
		// A range one off at either end is no prefix (unless it happens to
		// be another one: check against the definition).
		for _, x := range []Range{{OfPrefix(p).Lo.Next(), OfPrefix(p).Hi}, {OfPrefix(p).Lo, OfPrefix(p).Hi.Prev()}} {
			if x.Hi.Less(x.Lo) {
				continue
			}
			b, ok := x.PrefixBits(width)
			isOne := ok && netip.PrefixFrom(x.Lo.Addr(is4), b).Masked().Addr() == x.Lo.Addr(is4) && OfPrefix(netip.PrefixFrom(x.Lo.Addr(is4), b)) == x
			if ok != isOne {
				t.Fatalf("%v.PrefixBits(%d) = %d, %v", x, width, b, ok)
			}
			if !ok && x.Lo == x.Hi {
				t.Fatalf("a single address %v is a prefix", x)
			}
		}
	}
	if _, ok := (Range{U128{0, 5}, U128{0, 4}}).PrefixBits(32); ok {
		t.Error("an empty range is a prefix")
	}
	if b, ok := (Range{U128{}, Max}).PrefixBits(128); !ok || b != 0 {
		t.Error("::/0")
	}
}

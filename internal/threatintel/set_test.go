package threatintel

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/iprange"
	"github.com/clusterwall/clusterwall/internal/policy"
)

func mustParse(t testing.TB, name string, format Format, in string) *FeedData {
	t.Helper()
	d, err := Parse(name, name+".txt", format, strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if d.Invalid != 0 {
		t.Fatalf("feed %s: %v", name, d.Errors)
	}
	return d
}

func allowlist(t testing.TB, addrs []string, fqdns []string) Allowlist {
	t.Helper()
	var b policy.AddrSetBuilder
	for _, a := range addrs {
		if _, err := policy.ParseAddrToken(a, &b); err != nil {
			t.Fatal(err)
		}
	}
	al := Allowlist{Addrs: b.Build()}
	for _, f := range fqdns {
		p, err := policy.ParseFQDNPattern(f)
		if err != nil {
			t.Fatal(err)
		}
		al.FQDNs = append(al.FQDNs, p)
	}
	return al
}

func TestLookupName(t *testing.T) {
	feed := mustParse(t, "domains", FormatPlain, `
evil.example
*.tracker.example
deep.a.b.example
Upper.Example.
x
`)
	s := Compile([]*FeedData{feed}, Allowlist{})
	long := strings.Repeat("abcdefghij.", 40) + "evil.example"
	tests := []struct {
		name string
		want string // indicator, "" for no match
	}{
		{"evil.example", "evil.example"},
		{"EVIL.Example.", "evil.example"},
		{"a.evil.example", "evil.example"},
		{"a.b.c.d.evil.example.", "evil.example"},
		{"A.EVIL.EXAMPLE", "evil.example"},
		{long, "evil.example"},
		{"notevil.example", ""},
		{"evil.example.com", ""},
		{"evil.examplex", ""},
		{"vil.example", ""},
		{"example", ""},
		{"tracker.example", ""},
		{"x.tracker.example", "*.tracker.example"},
		{"y.x.tracker.example", "*.tracker.example"},
		{"deep.a.b.example", "deep.a.b.example"},
		{"z.deep.a.b.example", "deep.a.b.example"},
		{"a.b.example", ""},
		{"upper.example", "upper.example"},
		{"x", "x"},
		{"y.x", "x"},
		{"xx", ""},
		{"", ""},
		{".", ""},
		{"..", ""},
		{".evil.example", "evil.example"},
		{"evil.example..", ""},
		{"a..evil.example", "evil.example"},
		{"evil\x00.example", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.40q", tt.name), func(t *testing.T) {
			m, ok := s.LookupName(tt.name)
			if ok != (tt.want != "") || m.Indicator != tt.want {
				t.Fatalf("LookupName(%q) = %q, %v; want %q", tt.name, m.Indicator, ok, tt.want)
			}
			if ok && (m.Feed != "domains" || m.Line == 0 || !strings.HasPrefix(m.Description, "domains: "+tt.want)) {
				t.Errorf("match = %+v", m)
			}
		})
	}
}

func TestLookupAddr(t *testing.T) {
	wide := mustParse(t, "wide", FormatDROP, `
10.0.0.0/8 ; SBL1
192.0.2.0/24 ; SBL2
2001:db8::/32 ; SBL3
0.0.0.0/32
255.255.255.255
ffff:ffff:ffff:ffff:ffff:ffff:ffff:0/112
`)
	narrow := mustParse(t, "narrow", FormatPlain, `
10.1.2.3
10.1.2.0-10.1.2.10 # a range inside
192.0.2.0/24 # same as wide's, listed later
2001:db8:1::/48
`)
	s := Compile([]*FeedData{wide, narrow}, Allowlist{})
	tests := []struct {
		addr string
		feed string // "" for no match
		ind  string
	}{
		{"10.1.2.3", "narrow", "10.1.2.3"},
		{"10.1.2.4", "narrow", "10.1.2.0-10.1.2.10"},
		{"10.1.2.0", "narrow", "10.1.2.0-10.1.2.10"},
		{"10.1.2.10", "narrow", "10.1.2.0-10.1.2.10"},
		{"10.1.2.11", "wide", "10.0.0.0/8"},
		{"10.0.0.0", "wide", "10.0.0.0/8"},
		{"10.255.255.255", "wide", "10.0.0.0/8"},
		{"11.0.0.0", "", ""},
		{"9.255.255.255", "", ""},
		{"192.0.2.200", "wide", "192.0.2.0/24"},
		{"::ffff:10.9.9.9", "wide", "10.0.0.0/8"},
		{"0.0.0.0", "wide", "0.0.0.0/32"},
		{"0.0.0.1", "", ""},
		{"255.255.255.255", "wide", "255.255.255.255"},
		{"255.255.255.254", "", ""},
		{"2001:db8:1::5", "narrow", "2001:db8:1::/48"},
		{"2001:db8:2::5", "wide", "2001:db8::/32"},
		{"2001:db8:1::5%eth0", "narrow", "2001:db8:1::/48"},
		{"2001:db9::", "", ""},
		{"::a00:1", "", ""}, // 10.0.0.1's bits as IPv6: another family
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "wide", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:0/112"},
		{"ffff:ffff:ffff:ffff:ffff:ffff:fffe:ffff", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			m, ok := s.LookupAddr(netip.MustParseAddr(tt.addr))
			if ok != (tt.feed != "") || m.Feed != tt.feed || m.Indicator != tt.ind {
				t.Fatalf("LookupAddr(%s) = %s %s %v; want %s %s", tt.addr, m.Feed, m.Indicator, ok, tt.feed, tt.ind)
			}
		})
	}
	if _, ok := s.LookupAddr(netip.Addr{}); ok {
		t.Error("invalid address matched")
	}
	var nilSet *Set
	if _, ok := nilSet.LookupAddr(netip.MustParseAddr("10.0.0.1")); ok {
		t.Error("nil set matched")
	}
	if _, ok := nilSet.LookupName("evil.example"); ok {
		t.Error("nil set matched")
	}
}

func TestAllowlistWins(t *testing.T) {
	ips := mustParse(t, "ips", FormatPlain, "192.0.2.0/24\n198.51.100.7\n2001:db8::/32\n")
	names := mustParse(t, "names", FormatPlain, "evil.example\ncdn.example\nshared.example\nbad.contoso.com\n")
	s := Compile([]*FeedData{ips, names}, allowlist(t,
		[]string{"192.0.2.128/25", "2001:db8::1"},
		[]string{"cdn.example", "*.shared.example", "*contoso.com"}))
	tests := []struct {
		q    string
		want bool
	}{
		{"192.0.2.1", true},
		{"192.0.2.127", true},
		{"192.0.2.128", false},
		{"192.0.2.255", false},
		{"::ffff:192.0.2.200", false},
		{"198.51.100.7", true},
		{"2001:db8::1", false},
		{"2001:db8::2", true},
		{"evil.example", true},
		{"cdn.example", false},
		{"CDN.example.", false},
		{"img.cdn.example", true}, // exact allowlist entry: subdomains stay listed
		{"shared.example", true},  // "*.shared.example" does not cover shared.example
		{"a.shared.example", false},
		{"bad.contoso.com", false},
		{"x.bad.contoso.com", false},
	}
	for _, tt := range tests {
		var ok bool
		if a, err := netip.ParseAddr(tt.q); err == nil {
			_, ok = s.LookupAddr(a)
		} else {
			_, ok = s.LookupName(tt.q)
		}
		if ok != tt.want {
			t.Errorf("%s: listed = %v, want %v", tt.q, ok, tt.want)
		}
	}
	any := Compile([]*FeedData{names}, allowlist(t, []string{"*"}, []string{"*"}))
	if _, ok := any.LookupName("evil.example"); ok {
		t.Error(`allowlist "*" did not win`)
	}
}

func TestDuplicateNames(t *testing.T) {
	a := mustParse(t, "a", FormatPlain, "*.evil.example\ndup.example # first\n")
	b := mustParse(t, "b", FormatHosts, "0.0.0.0 evil.example dup.example\n")
	s := Compile([]*FeedData{a, b}, Allowlist{})
	if m, _ := s.LookupName("x.evil.example"); m.Feed != "a" {
		t.Errorf("x.evil.example from %q, want a (listed first)", m.Feed)
	}
	if m, _ := s.LookupName("evil.example"); m.Feed != "b" {
		t.Errorf("evil.example from %q, want b (a lists only its subdomains)", m.Feed)
	}
	if m, _ := s.LookupName("dup.example"); m.Feed != "a" || m.Comment != "first" {
		t.Errorf("dup.example = %+v, want feed a's entry", m)
	}
	if _, names := s.Len(); names != 3 {
		t.Errorf("names = %d, want 3 (*.evil.example, evil.example, dup.example)", names)
	}
}

// refAddr is the reference semantics of LookupAddr without an allowlist:
// the narrowest covering entry, the earliest among equals.
func refAddr(entries []AddrEntry, a netip.Addr) int {
	best := -1
	var bestW iprange.U128
	for i, e := range entries {
		if e.From.Is4() != a.Is4() || a.Less(e.From) || e.To.Less(a) {
			continue
		}
		w := iprange.From(e.To).Sub(iprange.From(e.From))
		if best < 0 || w.Less(bestW) {
			best, bestW = i, w
		}
	}
	return best
}

// refName is the reference semantics of LookupName without an allowlist:
// some entry matches (which one is checked separately).
func refName(entries []NameEntry, q string) bool {
	q = strings.ToLower(strings.TrimSuffix(q, "."))
	for _, e := range entries {
		if q == e.Name && !e.SubdomainsOnly || strings.HasSuffix(q, "."+e.Name) {
			return true
		}
	}
	return false
}

func TestLookupsAgreeWithReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 20; round++ {
		// Addresses from a small space so that ranges overlap a lot.
		var lines []string
		for i := 0; i < 200; i++ {
			switch r.IntN(4) {
			case 0:
				lines = append(lines, fmt.Sprintf("10.0.%d.%d", r.IntN(4), r.IntN(256)))
			case 1:
				lines = append(lines, fmt.Sprintf("10.0.%d.%d/%d", r.IntN(4), r.IntN(256), 20+r.IntN(13)))
			case 2:
				a := r.IntN(1024)
				b := a + r.IntN(300)
				lines = append(lines, fmt.Sprintf("10.0.%d.%d-10.0.%d.%d", a/256, a%256, b/256%256, b%256))
			case 3:
				lines = append(lines, fmt.Sprintf("2001:db8::%x/%d", r.IntN(4096), 116+r.IntN(13)))
			}
		}
		d, err := Parse("r", "r", FormatPlain, strings.NewReader(strings.Join(lines, "\n")))
		if err != nil {
			t.Fatal(err)
		}
		s := Compile([]*FeedData{d}, Allowlist{})
		for i := 0; i < 2000; i++ {
			var a netip.Addr
			if r.IntN(2) == 0 {
				a = netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(6)), byte(r.IntN(256))})
			} else {
				a = netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", r.IntN(8192)))
			}
			want := refAddr(d.Addrs, a)
			m, ok := s.LookupAddr(a)
			if ok != (want >= 0) {
				t.Fatalf("round %d: %s: listed = %v, reference says %d", round, a, ok, want)
			}
			if ok {
				w := d.Addrs[want]
				if m.Line != w.Line {
					t.Fatalf("round %d: %s: got %s (line %d), want %s (line %d)", round, a, m.Indicator, m.Line, w.Indicator, w.Line)
				}
			}
		}

		// Names from a small alphabet so that suffixes are shared.
		labels := []string{"a", "b", "evil", "ex", "com"}
		rname := func() string {
			n := 1 + r.IntN(4)
			parts := make([]string, n)
			for i := range parts {
				parts[i] = labels[r.IntN(len(labels))]
				if r.IntN(5) == 0 {
					parts[i] = strings.ToUpper(parts[i])
				}
			}
			return strings.Join(parts, ".")
		}
		lines = lines[:0]
		for i := 0; i < 30; i++ {
			n := strings.ToLower(rname())
			if round%2 == 1 && !strings.Contains(n, ".") {
				// No single-label entry: lookups go through the
				// two-label prefilter (nameTable.pre).
				i--
				continue
			}
			if r.IntN(3) == 0 {
				n = "*." + n
			}
			lines = append(lines, n)
		}
		d, err = Parse("n", "n", FormatPlain, strings.NewReader(strings.Join(lines, "\n")))
		if err != nil || d.Invalid != 0 {
			t.Fatal(err, d.Errors)
		}
		s = Compile([]*FeedData{d}, Allowlist{})
		if round%2 == 1 && (s.names.tlds || s.names.pre == nil) {
			t.Fatalf("round %d: the prefilter is off", round)
		}
		for i := 0; i < 2000; i++ {
			q := rname()
			if r.IntN(4) == 0 {
				q += "."
			}
			m, ok := s.LookupName(q)
			if want := refName(d.Names, q); ok != want {
				t.Fatalf("round %d: %q: listed = %v, reference says %v (feed %q)", round, q, ok, want, lines)
			}
			if ok {
				// The reported entry must itself match q.
				e := d.Names[m.Line-1]
				if !refName([]NameEntry{e}, q) {
					t.Fatalf("round %d: %q: reported %s, which does not match", round, q, m.Indicator)
				}
			}
		}
	}
}

func TestDisjoint(t *testing.T) {
	n := func(s string) iprange.U128 { return iprange.From(netip.MustParseAddr(s)) }
	got := disjoint([]rng{
		{n("10.0.0.0"), n("10.0.0.255"), 0},
		{n("10.0.0.10"), n("10.0.0.20"), 1},
		{n("10.0.0.15"), n("10.0.0.30"), 2},
		{n("10.0.0.15"), n("10.0.0.16"), 3},
		{n("10.0.1.0"), n("10.0.1.0"), 4},
		{n("10.0.1.1"), n("10.0.1.5"), 4},
	})
	var s []string
	for _, r := range got {
		s = append(s, fmt.Sprintf("%d-%d:%d", r.lo.Lo&0xffff, r.hi.Lo&0xffff, r.m))
	}
	want := "0-9:0 10-14:1 15-16:3 17-20:1 21-30:2 31-255:0 256-261:4"
	if strings.Join(s, " ") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(s, " "), want)
	}
	all := disjoint([]rng{{iprange.U128{}, iprange.Max, 7}, {n("::5"), n("::5"), 8}})
	if len(all) != 3 || all[2].hi != iprange.Max || all[1].m != 8 {
		t.Errorf("full range: %+v", all)
	}
}

func TestLookupsDoNotAllocate(t *testing.T) {
	ips := mustParse(t, "ips", FormatPlain, "192.0.2.0/24\n2001:db8::/32\n")
	names := mustParse(t, "names", FormatPlain, "evil.example\n*.sub.example\n")
	s := Compile([]*FeedData{ips, names}, allowlist(t, []string{"192.0.2.7"}, []string{"ok.evil.example", "*.fine.evil.example", "*contoso.com"}))
	v4, v6 := netip.MustParseAddr("192.0.2.66"), netip.MustParseAddr("2001:db8::66%eth0")
	mapped, miss := netip.MustParseAddr("::ffff:192.0.2.7"), netip.MustParseAddr("203.0.113.1")
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"addr v4 hit", func() { s.LookupAddr(v4) }},
		{"addr v6 zone hit", func() { s.LookupAddr(v6) }},
		{"addr mapped allowlisted", func() { s.LookupAddr(mapped) }},
		{"addr miss", func() { s.LookupAddr(miss) }},
		{"name hit", func() { s.LookupName("a.b.EVIL.example.") }},
		{"name allowlisted", func() { s.LookupName("x.Fine.evil.example") }},
		{"name miss", func() { s.LookupName("www.kubernetes.io") }},
	} {
		if n := testing.AllocsPerRun(1000, tc.f); n != 0 {
			t.Errorf("%s: %v allocations", tc.name, n)
		}
	}
}

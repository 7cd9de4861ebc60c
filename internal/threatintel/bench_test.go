package threatintel

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

var benchSizes = []int{1000, 100000}

// genAddrFeed returns a plain feed of n address entries: 70 % IPv4
// addresses, 20 % IPv4 networks (/16 to /30), 10 % IPv6 networks.
func genAddrFeed(r *rand.Rand, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		switch x := r.IntN(10); {
		case x < 7:
			fmt.Fprintf(&b, "%d.%d.%d.%d\n", 1+r.IntN(222), r.IntN(256), r.IntN(256), r.IntN(256))
		case x < 9:
			fmt.Fprintf(&b, "%d.%d.%d.0/%d # net\n", 1+r.IntN(222), r.IntN(256), r.IntN(256), 16+r.IntN(15))
		default:
			fmt.Fprintf(&b, "2001:db8:%x:%x::/%d\n", r.IntN(65536), r.IntN(65536), 48+r.IntN(17))
		}
	}
	return b.String()
}

const letters = "abcdefghijklmnopqrstuvwxyz0123456789"

func genLabel(r *rand.Rand) string {
	n := 3 + r.IntN(10)
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[r.IntN(len(letters))]
	}
	return string(b)
}

var tlds = []string{"com", "net", "org", "io", "ru", "xyz", "top", "info"}

// genNames returns n distinct random names of 2 to 4 labels.
func genNames(r *rand.Rand, n int) []string {
	seen := make(map[string]bool, n)
	out := make([]string, 0, n)
	for len(out) < n {
		parts := []string{tlds[r.IntN(len(tlds))]}
		for k := 1 + r.IntN(3); k > 0; k-- {
			parts = append([]string{genLabel(r)}, parts...)
		}
		s := strings.Join(parts, ".")
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func benchSet(b *testing.B, n int) (*Set, *rand.Rand, []string) {
	b.Helper()
	r := rand.New(rand.NewPCG(uint64(n), 7))
	ips, err := Parse("ips", "ips", FormatPlain, strings.NewReader(genAddrFeed(r, n)))
	if err != nil || ips.Invalid != 0 {
		b.Fatal(err, ips.Errors)
	}
	names := genNames(r, n)
	dom, err := Parse("domains", "domains", FormatPlain, strings.NewReader(strings.Join(names, "\n")))
	if err != nil || dom.Invalid != 0 {
		b.Fatal(err, dom.Errors)
	}
	var ab policy.AddrSetBuilder
	policy.ParseAddrToken("10.0.0.0/8", &ab)
	pats := []policy.FQDNPattern{}
	for _, s := range []string{"*.kubernetes.io", "mcr.microsoft.com", "*contoso.com"} {
		p, _ := policy.ParseFQDNPattern(s)
		pats = append(pats, p)
	}
	return Compile([]*FeedData{ips, dom}, Allowlist{Addrs: ab.Build(), FQDNs: pats}), r, names
}

func BenchmarkLookupAddr(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			s, r, _ := benchSet(b, n)
			// Queries: random IPv4 (mostly misses) and IPv6 in and out of
			// the documentation prefix.
			q := make([]netip.Addr, 4096)
			hits := 0
			for i := range q {
				if i%8 == 7 {
					q[i] = netip.MustParseAddr(fmt.Sprintf("2001:db8:%x:%x::1", r.IntN(65536), r.IntN(65536)))
				} else {
					q[i] = netip.AddrFrom4([4]byte{byte(1 + r.IntN(222)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
				}
				if _, ok := s.LookupAddr(q[i]); ok {
					hits++
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.LookupAddr(q[i&4095])
			}
			b.ReportMetric(float64(hits)/40.96, "%hit")
		})
	}
}

// BenchmarkLookupName runs three query mixes per size: "entries=N" is
// traffic as a firewall sees it — 90 % unlisted names (3 to 6 labels, some
// in upper case), 5 % listed names, 5 % subdomains of listed names (upper
// case, trailing dot); "-listed" and "-unlisted" are the two halves alone.
func BenchmarkLookupName(b *testing.B) {
	for _, n := range benchSizes {
		s, r, names := benchSet(b, n)
		listed := func(i int) string {
			if i%2 == 0 {
				return names[r.IntN(len(names))]
			}
			return "WWW." + strings.ToUpper(names[r.IntN(len(names))]) + "."
		}
		unlisted := func(i int) string {
			q := "api." + genLabel(r) + "." + genNames(r, 1)[0]
			if i%10 == 0 {
				q = strings.ToUpper(q)
			}
			return q
		}
		for _, mix := range []struct {
			name string
			gen  func(i int) string
		}{
			{"", func(i int) string {
				if i%20 < 2 {
					return listed(i)
				}
				return unlisted(i)
			}},
			{"-listed", listed},
			{"-unlisted", unlisted},
		} {
			q := make([]string, 4096)
			hits := 0
			for i := range q {
				q[i] = mix.gen(i)
				if _, ok := s.LookupName(q[i]); ok {
					hits++
				}
			}
			b.Run(fmt.Sprintf("entries=%d%s", n, mix.name), func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					s.LookupName(q[i&4095])
				}
				b.ReportMetric(float64(hits)/40.96, "%hit")
			})
		}
	}
}

// BenchmarkCheck is a whole Engine.Check of a flow with a destination, a
// source and a name, all unlisted (the common case: every check runs).
func BenchmarkCheck(b *testing.B) {
	s, _, _ := benchSet(b, 100000)
	e := New(Options{})
	e.cur.Store(&state{mode: policy.ActionDeny, set: s})
	src, dst := netip.MustParseAddr("10.42.1.10"), netip.MustParseAddr("20.50.60.70")
	if v := e.Check(src, dst, "api.github.com"); v.Action != policy.ActionInvalid {
		b.Fatalf("listed by chance: %+v", v)
	}
	b.Run("entries=100000", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			e.Check(src, dst, "api.github.com")
		}
	})
}

// BenchmarkParseCompile measures loading: parsing 100,000 lines of each
// kind and compiling them.
func BenchmarkParseCompile(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	addrs := []byte(genAddrFeed(r, 100000))
	names := []byte(strings.Join(genNames(r, 100000), "\n"))
	b.Run("entries=200000", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			a, _ := Parse("a", "a", FormatPlain, bytes.NewReader(addrs))
			n, _ := Parse("n", "n", FormatPlain, bytes.NewReader(names))
			Compile([]*FeedData{a, n}, Allowlist{})
		}
	})
}

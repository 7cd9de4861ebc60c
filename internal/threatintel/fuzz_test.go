package threatintel

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// FuzzParseFeed parses arbitrary bytes in every format (format selects
// one: 0 plain, 1 drop, 2 hosts) and checks what came out: positions are
// sane, every entry is canonical and re-parses to itself, and the compiled
// Set finds every entry. Seeds live in testdata/fuzz/FuzzParseFeed.
func FuzzParseFeed(f *testing.F) {
	f.Add([]byte("192.0.2.66\nevil.example.net # the lab's evil host\n*.tracker.example\n"), uint8(0))
	f.Add([]byte("; DROP\n1.10.16.0/20 ; SBL256894\n{\"cidr\":\"2001:db8::/32\",\"sblid\":\"SBL1\"}\n"), uint8(1))
	f.Add([]byte("127.0.0.1 localhost\r\n0.0.0.0 evil.example.net ads.example\r\n"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, fmtByte uint8) {
		format := []Format{FormatPlain, FormatDROP, FormatHosts}[int(fmtByte)%3]
		d, err := Parse("fuzz", "fuzz.txt", format, bytes.NewReader(data))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if max := bytes.Count(data, []byte("\n")) + 1; d.Lines > max {
			t.Fatalf("Lines = %d, input has at most %d", d.Lines, max)
		}
		if d.Invalid < len(d.Errors) || len(d.Errors) > MaxReportedErrors {
			t.Fatalf("Invalid = %d, %d errors", d.Invalid, len(d.Errors))
		}
		for _, e := range d.Errors {
			if e.Line < 1 || e.Line > d.Lines || e.Col < 1 || e.Col > MaxLineLength+1 {
				t.Fatalf("error position %d:%d of %d lines: %v", e.Line, e.Col, d.Lines, e)
			}
			if !strings.HasPrefix(e.Error(), "fuzz.txt:") {
				t.Fatalf("error does not name the source: %v", e)
			}
		}
		for _, e := range d.Addrs {
			// To may be IPv4-mapped: the end of a wider IPv6 range such as
			// ::/80 (lookups of mapped addresses go to IPv4).
			if !e.From.IsValid() || e.From.Is4() != e.To.Is4() || e.From.Is4In6() ||
				e.To.Less(e.From) || e.From.Zone() != "" || e.To.Zone() != "" {
				t.Fatalf("bad range %v-%v from %q", e.From, e.To, e.Indicator)
			}
			if e.Line < 1 || e.Line > d.Lines {
				t.Fatalf("entry line %d of %d", e.Line, d.Lines)
			}
			r, err := parseAddrEntry(e.Indicator)
			if err != nil || r.From != e.From || r.To != e.To || r.Indicator != e.Indicator {
				t.Fatalf("indicator %q re-parses to %+v, %v; want %v-%v", e.Indicator, r, err, e.From, e.To)
			}
		}
		if format == FormatDROP && len(d.Names) > 0 {
			t.Fatalf("drop feed produced names: %+v", d.Names)
		}
		for _, e := range d.Names {
			if n, err := policy.NormalizeFQDN(e.Name); err != nil || n != e.Name {
				t.Fatalf("name %q is not canonical: %q, %v", e.Name, n, err)
			}
			if format == FormatHosts && (e.SubdomainsOnly || localNames[e.Name]) {
				t.Fatalf("hosts feed produced %+v", e)
			}
			r, err := parseNameEntry(e.Indicator)
			if err != nil || r.Name != e.Name || r.SubdomainsOnly != e.SubdomainsOnly || r.Indicator != e.Indicator {
				t.Fatalf("indicator %q re-parses to %+v, %v", e.Indicator, r, err)
			}
		}

		s := Compile([]*FeedData{d}, Allowlist{})
		for _, e := range d.Addrs {
			for _, a := range []netip.Addr{e.From, e.To} {
				if a.Is4In6() {
					continue
				}
				if _, ok := s.LookupAddr(a); !ok {
					t.Fatalf("%v (from %q) not found", a, e.Indicator)
				}
			}
		}
		for _, e := range d.Names {
			if _, ok := s.LookupName("x." + strings.ToUpper(e.Name) + "."); !ok {
				t.Fatalf("subdomain of %q not found", e.Indicator)
			}
			if _, ok := s.LookupName(e.Name); !ok && !e.SubdomainsOnly {
				t.Fatalf("%q not found", e.Indicator)
			}
		}
	})
}

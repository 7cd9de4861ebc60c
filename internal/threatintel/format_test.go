package threatintel

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// summary renders parsed entries one a line, for comparison:
// "A 192.0.2.0/24 @3 (comment)", "N evil.example @4", "S *.evil.example @5".
func summary(d *FeedData) []string {
	var out []string
	for _, e := range d.Addrs {
		s := fmt.Sprintf("A %s @%d", e.Indicator, e.Line)
		if e.Comment != "" {
			s += " (" + e.Comment + ")"
		}
		out = append(out, s)
	}
	for _, e := range d.Names {
		k := "N"
		if e.SubdomainsOnly {
			k = "S"
		}
		s := fmt.Sprintf("%s %s @%d", k, e.Indicator, e.Line)
		if e.Comment != "" {
			s += " (" + e.Comment + ")"
		}
		out = append(out, s)
	}
	return out
}

// errSummary renders errors as "LINE:COL: MESSAGE".
func errSummary(d *FeedData) []string {
	var out []string
	for _, e := range d.Errors {
		out = append(out, fmt.Sprintf("%d:%d: %s", e.Line, e.Col, e.Msg))
	}
	return out
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		format  Format
		in      string
		want    []string
		errs    []string // each is a prefix of the corresponding error
		ignored int
		lines   int
	}{
		{
			name:   "plain addresses",
			format: FormatPlain,
			in: "# a comment\n" +
				"192.0.2.66\n" +
				"198.51.100.0/24 # C2 servers\n" +
				"\n" +
				"2001:db8:bad::1\n" +
				"2001:db8:dead::/48 ; sinkhole\n" +
				"203.0.113.10-203.0.113.20\n" +
				"::ffff:192.0.2.77\n" +
				"::ffff:198.51.100.128/121\n" +
				"10.1.2.3/8\n",
			want: []string{
				"A 192.0.2.66 @2", "A 198.51.100.0/24 @3 (C2 servers)", "A 2001:db8:bad::1 @5",
				"A 2001:db8:dead::/48 @6 (sinkhole)", "A 203.0.113.10-203.0.113.20 @7", "A 192.0.2.77 @8",
				"A 198.51.100.128/25 @9", "A 10.0.0.0/8 @10",
			},
			lines: 10,
		},
		{
			name:   "plain domains",
			format: FormatPlain,
			in: "evil.example.net\n" +
				"Malware.EXAMPLE.\n" +
				"*.tracker.example # its subdomains only\n" +
				".dnsmasq-style.example\n" +
				"_dmarc.odd.example\n" +
				"xn--bcher-kva.example\n",
			want: []string{
				"N evil.example.net @1", "N malware.example @2", "S *.tracker.example @3 (its subdomains only)",
				"N dnsmasq-style.example @4", "N _dmarc.odd.example @5", "N xn--bcher-kva.example @6",
			},
			lines: 6,
		},
		{
			name:   "awkward whitespace: BOM, CRLF, tabs, trailing spaces, form feed",
			format: FormatPlain,
			in:     "\xEF\xBB\xBF192.0.2.1\r\n\t 192.0.2.2 \t\r\n  evil.example\t#\ttabbed comment  \r\n\f\r\n\r\n   # indented comment\r\nlast.example",
			want:   []string{"A 192.0.2.1 @1", "A 192.0.2.2 @2", "N evil.example @3 (tabbed comment)", "N last.example @7"},
			lines:  7,
		},
		{
			name:   "plain invalid entries are counted and the rest parsed",
			format: FormatPlain,
			in: "300.1.1.1\n" +
				"192.0.2.1\n" +
				"1.2.3\n" +
				"10.0.0.0/33\n" +
				"fe80::1%eth0\n" +
				"http://evil.example/payload\n" +
				"good.example two.example\n" +
				"bad!name.example\n" +
				"a..b.example\n" +
				"*.\n" +
				"203.0.113.9-203.0.113.1\n" +
				"192.0.2.1-2001:db8::1\n" +
				"*bad.example\n" +
				strings.Repeat("x", 64) + ".example\n" +
				"\xff\xfe.example\n" +
				"ok.example\n",
			want: []string{"A 192.0.2.1 @2", "N ok.example @16"},
			errs: []string{
				`1:1: bad IP address "300.1.1.1"`,
				`3:1: bad IP address "1.2.3"`,
				`4:1: bad CIDR "10.0.0.0/33"`,
				`5:1: bad IP address "fe80::1%eth0": zones are not allowed`,
				`6:1: bad entry "http://evil.example/payload": URLs are not supported`,
				`7:14: unexpected "two.example" after the entry`,
				`8:1: bad domain "bad!name.example"`,
				`9:1: bad domain "a..b.example": empty label`,
				`10:1: bad domain "*."`,
				`11:1: bad address range "203.0.113.9-203.0.113.1": start is after end`,
				`12:1: bad address range "192.0.2.1-2001:db8::1": both ends must be of one family`,
				`13:1: bad domain "*bad.example"`,
				`14:1: bad domain "` + strings.Repeat("x", 64) + `.example": label`,
				`15:1: line is not valid UTF-8`,
			},
			lines: 16,
		},
		{
			name:   "drop text",
			format: FormatDROP,
			in: "; Spamhaus DROP List 2024/01/01 - (c) 2024 The Spamhaus Project\n" +
				"; https://www.spamhaus.org/drop/drop.txt\n" +
				"1.10.16.0/20 ; SBL256894\n" +
				"1.19.0.0/16;SBL434604\n" +
				"2001:db8:66::/48 ; SBL9999\n" +
				"192.0.2.66\n" +
				"evil.example ; SBL1\n" +
				"1.2.3.0/24 junk ; SBL2\n",
			want: []string{"A 1.10.16.0/20 @3 (SBL256894)", "A 1.19.0.0/16 @4 (SBL434604)", "A 2001:db8:66::/48 @5 (SBL9999)", "A 192.0.2.66 @6"},
			errs: []string{
				`7:1: bad CIDR "evil.example": the drop format lists networks only`,
				`8:12: unexpected "junk" after the CIDR`,
			},
			lines: 8,
		},
		{
			name:   "drop JSON lines",
			format: FormatDROP,
			in: `{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}` + "\n" +
				`  {"cidr":"2001:db8:77::/48","sblid":"SBL1"}` + "\n" +
				`{"cidr":"not-a-cidr","sblid":"SBL2"}` + "\n" +
				`{"cidr":"10.0.0.0/99"}` + "\n" +
				`{"sblid":"SBL3"}` + "\n" +
				`{"cidr": 12}` + "\n" +
				`{"type":"metadata","timestamp":1700000000,"size":3,"records":3}` + "\n",
			want: []string{"A 1.10.16.0/20 @1 (SBL256894)", "A 2001:db8:77::/48 @2 (SBL1)"},
			errs: []string{
				`3:1: bad CIDR "not-a-cidr"`,
				`4:1: bad CIDR "10.0.0.0/99"`,
				`5:1: JSON line without "cidr"`,
				`6:1: bad JSON`,
			},
			lines: 7,
		},
		{
			name:   "hosts",
			format: FormatHosts,
			in: "# StevenBlack-style header\n" +
				"127.0.0.1 localhost\n" +
				"127.0.0.1 localhost.localdomain\n" +
				"127.0.0.1 local\n" +
				"255.255.255.255 broadcasthost\n" +
				"::1 localhost ip6-localhost ip6-loopback\n" +
				"fe80::1%lo0 localhost\n" +
				"ff00::0 ip6-localnet\n" +
				"ff02::1 ip6-allnodes\n" +
				"0.0.0.0 0.0.0.0\n" +
				"\n" +
				"0.0.0.0 evil.example.net\n" +
				"127.0.0.1\tads.example # ad server\n" +
				"0.0.0.0 one.example two.example. THREE.example\n" +
				"::  v6sink.example\n" +
				"::1 LocalHost\n",
			want: []string{
				"N evil.example.net @12", "N ads.example @13 (ad server)", "N one.example @14",
				"N two.example @14", "N three.example @14", "N v6sink.example @15",
			},
			ignored: 12,
			lines:   16,
		},
		{
			name:   "hosts invalid",
			format: FormatHosts,
			in: "bad.example\n" +
				"0.0.0.300 bad.example\n" +
				"0.0.0.0 *.wild.example ok.example bad!.example\n",
			want: []string{"N ok.example @3"},
			errs: []string{
				`1:1: expected an address followed by names, found only "bad.example"`,
				`2:1: bad address "0.0.0.300"`,
				`3:9: bad domain "*.wild.example": hosts files cannot hold wildcards`,
				`3:35: bad domain "bad!.example"`,
			},
			lines: 3,
		},
		{
			name:   "line too long is skipped",
			format: FormatPlain,
			in:     "192.0.2.1\n" + strings.Repeat("a", MaxLineLength+1) + "\n192.0.2.2\n" + strings.Repeat("b", 100000) + "\n192.0.2.3",
			want:   []string{"A 192.0.2.1 @1", "A 192.0.2.2 @3", "A 192.0.2.3 @5"},
			errs:   []string{"2:1: line longer than", "4:1: line longer than"},
			lines:  5,
		},
		{
			name:   "longest accepted line",
			format: FormatPlain,
			in:     "192.0.2.1 #" + strings.Repeat("c", MaxLineLength-11) + "\r\n",
			want:   []string{"A 192.0.2.1 @1 (" + strings.Repeat("c", MaxLineLength-11) + ")"},
			lines:  1,
		},
		{
			name:   "old Mac line endings make one long line",
			format: FormatPlain,
			in:     "192.0.2.1\r192.0.2.2\r",
			errs:   []string{`1:11: unexpected "192.0.2.2"`},
			lines:  1,
		},
		{
			name:   "empty",
			format: FormatHosts,
			in:     "",
			lines:  0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse("test", "feed.txt", tt.format, strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(d); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			got := errSummary(d)
			if len(got) != len(tt.errs) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.errs, "\n"))
			} else {
				for i := range got {
					if !strings.HasPrefix(got[i], tt.errs[i]) {
						t.Errorf("error %d = %q, want prefix %q", i, got[i], tt.errs[i])
					}
				}
			}
			if d.Invalid != len(tt.errs) {
				t.Errorf("Invalid = %d, want %d", d.Invalid, len(tt.errs))
			}
			if d.Ignored != tt.ignored {
				t.Errorf("Ignored = %d, want %d", d.Ignored, tt.ignored)
			}
			if d.Lines != tt.lines {
				t.Errorf("Lines = %d, want %d", d.Lines, tt.lines)
			}
		})
	}
}

func TestParseErrorNamesFeedAndLine(t *testing.T) {
	d, err := Parse("lab-ips", "/etc/clusterwall/bad-ips.txt", FormatPlain, strings.NewReader("192.0.2.1\n\n  999.1.1.1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Errors) != 1 {
		t.Fatalf("errors = %v", d.Errors)
	}
	want := `/etc/clusterwall/bad-ips.txt:3:3: feed lab-ips: bad IP address "999.1.1.1": IPv4 field has value >255`
	if got := d.Errors[0].Error(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestParseCountsBeyondReportedErrors(t *testing.T) {
	in := strings.Repeat("not an entry\n", MaxReportedErrors+50) + "192.0.2.1\n"
	d, err := Parse("f", "f.txt", FormatPlain, strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if d.Invalid != MaxReportedErrors+50 || len(d.Errors) != MaxReportedErrors || len(d.Addrs) != 1 {
		t.Errorf("Invalid=%d errors=%d addrs=%d", d.Invalid, len(d.Errors), len(d.Addrs))
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		r.n--
		return copy(p, "192.0.2.1\n"), nil
	}
	return 0, errors.New("disk on fire")
}

func TestParseReadError(t *testing.T) {
	_, err := Parse("f", "f.txt", FormatPlain, &failingReader{n: 3})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), "f.txt") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Parse("f", "f.txt", FormatInvalid, strings.NewReader("")); err == nil {
		t.Fatal("invalid format accepted")
	}
	var _ io.Reader = (*failingReader)(nil)
}

func TestParseFormat(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Format
		ok   bool
	}{
		{"", FormatPlain, true}, {"plain", FormatPlain, true}, {"DROP", FormatDROP, true},
		{"Hosts", FormatHosts, true}, {"csv", FormatInvalid, false},
	} {
		got, ok := ParseFormat(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseFormat(%q) = %v, %v", tt.in, got, ok)
		}
		if ok && got.String() != strings.ToLower(tt.in) && tt.in != "" {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
}

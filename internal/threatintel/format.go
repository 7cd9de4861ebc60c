package threatintel

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/clusterwall/clusterwall/internal/iprange"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// Format is the syntax of a feed. The zero value is invalid.
type Format uint8

const (
	FormatInvalid Format = iota
	// FormatPlain is one entry a line: an IP address, a CIDR, a range
	// "a-b", a domain ("evil.example", which also bans its subdomains) or
	// "*.evil.example" (its subdomains only).
	FormatPlain
	// FormatDROP is Spamhaus' DROP list: "CIDR ; SBLnnnn" lines, or the
	// JSON-lines variant ({"cidr":"...","sblid":"..."}).
	FormatDROP
	// FormatHosts is a hosts file: "0.0.0.0 bad.example [more names]"; the
	// address column is ignored and so are localhost entries.
	FormatHosts
)

func (f Format) String() string {
	switch f {
	case FormatPlain:
		return "plain"
	case FormatDROP:
		return "drop"
	case FormatHosts:
		return "hosts"
	}
	return "invalid"
}

// ParseFormat accepts plain (also ""), drop and hosts, in any case.
func ParseFormat(s string) (Format, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "plain":
		return FormatPlain, true
	case "drop":
		return FormatDROP, true
	case "hosts":
		return FormatHosts, true
	}
	return FormatInvalid, false
}

// Limits of the parser.
const (
	// MaxLineLength is the longest line accepted; longer lines are
	// counted as invalid and skipped.
	MaxLineLength = 8 << 10
	// MaxReportedErrors is how many ParseErrors a FeedData keeps; Invalid
	// counts them all.
	MaxReportedErrors = 100
)

// AddrEntry is a listed address range: one address, a CIDR or a range.
type AddrEntry struct {
	// From and To are inclusive, of one family, never IPv4-mapped IPv6.
	From, To netip.Addr
	// Indicator is the entry in canonical form: "192.0.2.66",
	// "198.51.100.0/24", "192.0.2.1-192.0.2.9".
	Indicator string
	// Comment is the text of the line's comment ("SBL256894" in DROP).
	Comment string
	Line    int
}

// NameEntry is a listed domain.
type NameEntry struct {
	// Name is lower case without a trailing dot.
	Name string
	// SubdomainsOnly is set for "*.evil.example": evil.example itself is
	// not listed. A plain "evil.example" lists the name and its subdomains.
	SubdomainsOnly bool
	// Indicator is the entry in canonical form ("evil.example",
	// "*.evil.example").
	Indicator string
	Comment   string
	Line      int
}

// FeedData is a parsed feed.
type FeedData struct {
	Name   string // the feed's name in the policy
	Source string // the file or URL it came from, for messages
	Format Format
	Addrs  []AddrEntry
	Names  []NameEntry
	// Lines is the number of lines read.
	Lines int
	// Ignored counts hosts-file entries that are skipped on purpose
	// (localhost and friends, IP literals in the name column).
	Ignored int
	// Invalid counts entries that could not be parsed; Errors holds the
	// first MaxReportedErrors of them.
	Invalid int
	Errors  []*ParseError
}

// Entries is the number of valid entries.
func (d *FeedData) Entries() int { return len(d.Addrs) + len(d.Names) }

// ParseError is one bad line (or one bad name of a hosts line).
type ParseError struct {
	Feed   string
	Source string
	Line   int
	Col    int // byte column, from 1
	Msg    string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s:%d:%d: feed %s: %s", e.Source, e.Line, e.Col, e.Feed, e.Msg)
}

// Parse reads a feed in the given format. Bad lines are counted in Invalid
// and reported in Errors; they never stop the other entries. The error is
// non-nil only when r fails (the feed is then unusable as a whole).
func Parse(name, source string, format Format, r io.Reader) (*FeedData, error) {
	if format == FormatInvalid {
		return nil, fmt.Errorf("feed %s: invalid format", name)
	}
	p := &parser{d: &FeedData{Name: name, Source: source, Format: format}}
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := readLine(br)
		if len(line) > 0 || err == nil || errors.Is(err, errLineTooLong) {
			p.d.Lines++
			if errors.Is(err, errLineTooLong) {
				p.errorf(1, "line longer than %d bytes", MaxLineLength)
			} else {
				p.line(line)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, errLineTooLong) {
			return nil, fmt.Errorf("feed %s: reading %s: %w", name, source, err)
		}
	}
	return p.d, nil
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its line ending. A line longer
// than MaxLineLength is consumed and reported as errLineTooLong.
func readLine(br *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > MaxLineLength+2 { // +2: the line ending
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil && err != io.EOF {
				return nil, err
			}
			return nil, errLineTooLong
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			buf = append(buf, chunk...)
			continue
		}
		if buf != nil {
			chunk = append(buf, chunk...)
		}
		chunk = bytes.TrimSuffix(chunk, []byte("\n"))
		chunk = bytes.TrimSuffix(chunk, []byte("\r"))
		if len(chunk) > MaxLineLength {
			return nil, errLineTooLong
		}
		return chunk, err
	}
}

type parser struct {
	d      *FeedData
	fields []field // reused from line to line
}

func (p *parser) errorf(col int, format string, args ...any) {
	p.d.Invalid++
	if len(p.d.Errors) < MaxReportedErrors {
		p.d.Errors = append(p.d.Errors, &ParseError{Feed: p.d.Name, Source: p.d.Source, Line: p.d.Lines, Col: col, Msg: fmt.Sprintf(format, args...)})
	}
}

// field is one whitespace-separated token and its byte column.
type field struct {
	s   string
	col int
}

func (p *parser) line(raw []byte) {
	if p.d.Lines == 1 {
		raw = bytes.TrimPrefix(raw, []byte("\xEF\xBB\xBF")) // UTF-8 BOM
	}
	if !utf8.Valid(raw) {
		p.errorf(1, "line is not valid UTF-8")
		return
	}
	if p.d.Format == FormatDROP {
		if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '{' {
			p.dropJSON(t, bytes.Index(raw, t)+1)
			return
		}
	}
	body, comment := raw, ""
	if i := bytes.IndexAny(raw, "#;"); i >= 0 {
		body = raw[:i]
		comment = strings.TrimSpace(strings.TrimLeft(string(raw[i:]), "#; \t"))
	}
	p.fields = splitFields(p.fields[:0], body)
	fields := p.fields
	if len(fields) == 0 {
		return
	}
	switch p.d.Format {
	case FormatPlain:
		if len(fields) > 1 {
			p.errorf(fields[1].col, "unexpected %q after the entry (one entry a line; comments start with # or ;)", fields[1].s)
			return
		}
		p.entry(fields[0], comment, true)
	case FormatDROP:
		if len(fields) > 1 {
			p.errorf(fields[1].col, "unexpected %q after the CIDR (expected \"CIDR ; SBLnnnn\")", fields[1].s)
			return
		}
		p.entry(fields[0], comment, false)
	case FormatHosts:
		p.hosts(fields, comment)
	}
}

// splitFields appends the whitespace-separated fields of b to out.
func splitFields(out []field, b []byte) []field {
	i := 0
	for i < len(b) {
		for i < len(b) && isSpace(b[i]) {
			i++
		}
		start := i
		for i < len(b) && !isSpace(b[i]) {
			i++
		}
		if i > start {
			out = append(out, field{string(b[start:i]), start + 1})
		}
	}
	return out
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r' }

// entry parses one plain or DROP indicator; names only if names is set.
func (p *parser) entry(f field, comment string, names bool) {
	tok := f.s
	if strings.Contains(tok, "://") {
		p.errorf(f.col, "bad entry %q: URLs are not supported, list the host name", tok)
		return
	}
	if looksLikeAddr(tok) {
		e, err := parseAddrEntry(tok)
		if err != nil {
			p.errorf(f.col, "%v", err)
			return
		}
		e.Comment, e.Line = comment, p.d.Lines
		p.d.Addrs = append(p.d.Addrs, e)
		return
	}
	if !names {
		p.errorf(f.col, "bad CIDR %q: the drop format lists networks only", tok)
		return
	}
	e, err := parseNameEntry(tok)
	if err != nil {
		p.errorf(f.col, "%v", err)
		return
	}
	e.Comment, e.Line = comment, p.d.Lines
	p.d.Names = append(p.d.Names, e)
}

// looksLikeAddr reports whether tok is meant as an address, CIDR or range:
// it holds a ':' or '/', or only digits, dots and '-'. "10.0.0.300" is then
// a bad address rather than a strange name.
func looksLikeAddr(tok string) bool {
	if strings.ContainsAny(tok, ":/") {
		return true
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !(c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return tok != "" && strings.Trim(tok, "-.") != ""
}

func parseAddrEntry(tok string) (AddrEntry, error) {
	switch {
	case strings.Contains(tok, "/"):
		pfx, err := netip.ParsePrefix(tok)
		if err != nil {
			return AddrEntry{}, fmt.Errorf("bad CIDR %q: %v", tok, netipErr(err))
		}
		if pfx.Addr().Is4In6() {
			if pfx.Bits() < 96 {
				return AddrEntry{}, fmt.Errorf("bad CIDR %q: an IPv4-mapped prefix shorter than /96", tok)
			}
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
		}
		pfx = pfx.Masked()
		return AddrEntry{From: pfx.Addr(), To: iprange.LastAddr(pfx), Indicator: pfx.String()}, nil
	case strings.Contains(tok, "-"):
		lo, hi, _ := strings.Cut(tok, "-")
		a, err1 := netip.ParseAddr(lo)
		b, err2 := netip.ParseAddr(hi)
		if err1 != nil || err2 != nil {
			return AddrEntry{}, fmt.Errorf("bad address range %q", tok)
		}
		if a.Zone() != "" || b.Zone() != "" {
			return AddrEntry{}, fmt.Errorf("bad address range %q: zones are not allowed", tok)
		}
		a, b = a.Unmap(), b.Unmap()
		if a.Is4() != b.Is4() {
			return AddrEntry{}, fmt.Errorf("bad address range %q: both ends must be of one family", tok)
		}
		if b.Less(a) {
			return AddrEntry{}, fmt.Errorf("bad address range %q: start is after end", tok)
		}
		ind := a.String() + "-" + b.String()
		if a == b {
			ind = a.String()
		}
		return AddrEntry{From: a, To: b, Indicator: ind}, nil
	}
	a, err := netip.ParseAddr(tok)
	if err != nil {
		return AddrEntry{}, fmt.Errorf("bad IP address %q: %v", tok, netipErr(err))
	}
	if a.Zone() != "" {
		return AddrEntry{}, fmt.Errorf("bad IP address %q: zones are not allowed", tok)
	}
	a = a.Unmap()
	return AddrEntry{From: a, To: a, Indicator: a.String()}, nil
}

func parseNameEntry(tok string) (NameEntry, error) {
	sub := false
	rest := tok
	switch {
	case strings.HasPrefix(tok, "*."):
		sub, rest = true, tok[2:]
	case strings.HasPrefix(tok, "."):
		// ".evil.example" (squid, dnsmasq): the name and its subdomains.
		rest = tok[1:]
	}
	name, err := policy.NormalizeFQDN(rest)
	if err != nil {
		return NameEntry{}, fmt.Errorf("bad domain %q: %v", tok, err)
	}
	ind := name
	if sub {
		ind = "*." + name
	}
	return NameEntry{Name: name, SubdomainsOnly: sub, Indicator: ind}, nil
}

// localNames are hosts-file entries that describe the machine, not a
// blocked domain; they are skipped without complaint.
var localNames = map[string]bool{
	"localhost": true, "localhost.localdomain": true, "local": true, "broadcasthost": true,
	"localhost4": true, "localhost4.localdomain4": true, "localhost6": true, "localhost6.localdomain6": true,
	"ip6-localhost": true, "ip6-loopback": true, "ip6-localnet": true, "ip6-mcastprefix": true,
	"ip6-allnodes": true, "ip6-allrouters": true, "ip6-allhosts": true,
}

func (p *parser) hosts(fields []field, comment string) {
	if len(fields) < 2 {
		p.errorf(fields[0].col, "expected an address followed by names, found only %q (use format plain for a list of names)", fields[0].s)
		return
	}
	if _, err := netip.ParseAddr(fields[0].s); err != nil {
		p.errorf(fields[0].col, "bad address %q: a hosts line starts with an address", fields[0].s)
		return
	}
	for _, f := range fields[1:] {
		lower := strings.ToLower(strings.TrimSuffix(f.s, "."))
		if localNames[lower] {
			p.d.Ignored++
			continue
		}
		if _, err := netip.ParseAddr(f.s); err == nil {
			p.d.Ignored++ // "0.0.0.0 0.0.0.0"
			continue
		}
		if strings.HasPrefix(f.s, "*") {
			p.errorf(f.col, "bad domain %q: hosts files cannot hold wildcards", f.s)
			continue
		}
		name, err := policy.NormalizeFQDN(f.s)
		if err != nil {
			p.errorf(f.col, "bad domain %q: %v", f.s, err)
			continue
		}
		p.d.Names = append(p.d.Names, NameEntry{Name: name, Indicator: name, Comment: comment, Line: p.d.Lines})
	}
}

// dropJSON parses one line of Spamhaus' JSON-lines DROP format.
func (p *parser) dropJSON(t []byte, col int) {
	var v struct {
		CIDR  string `json:"cidr"`
		SBLID string `json:"sblid"`
		Type  string `json:"type"`
	}
	if err := json.Unmarshal(t, &v); err != nil {
		p.errorf(col, "bad JSON: %v", err)
		return
	}
	if v.CIDR == "" {
		if v.Type != "" { // {"type":"metadata",...}
			return
		}
		p.errorf(col, "JSON line without \"cidr\"")
		return
	}
	if !looksLikeAddr(v.CIDR) {
		p.errorf(col, "bad CIDR %q", v.CIDR)
		return
	}
	e, err := parseAddrEntry(v.CIDR)
	if err != nil {
		p.errorf(col, "%v", err)
		return
	}
	e.Comment, e.Line = v.SBLID, p.d.Lines
	p.d.Addrs = append(p.d.Addrs, e)
}

func netipErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

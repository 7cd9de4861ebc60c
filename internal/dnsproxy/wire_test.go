package dnsproxy

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/miekg/dns"
)

func packQuery(t *testing.T, name string, qtype uint16, edit ...func(*dns.Msg)) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0xbeef
	for _, e := range edit {
		e(m)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseQuery(t *testing.T) {
	edns := func(size uint16, do bool) func(*dns.Msg) { return func(m *dns.Msg) { m.SetEdns0(size, do) } }
	tests := []struct {
		name    string
		wire    []byte
		wantErr *parseError
		check   func(t *testing.T, q *query)
	}{
		{"plain A", packQuery(t, "WWW.Example.com.", dns.TypeA), nil, func(t *testing.T, q *query) {
			if q.id != 0xbeef || q.fqdn != "www.example.com." || q.name != "www.example.com" || q.qtype != dns.TypeA || q.qclass != 1 || !q.rd() || q.edns {
				t.Errorf("parsed %+v", q)
			}
			if string(q.question[1:4]) != "WWW" {
				t.Errorf("question %q does not keep the client's case", q.question)
			}
		}},
		{"root NS", packQuery(t, ".", dns.TypeNS), nil, func(t *testing.T, q *query) {
			if q.fqdn != "." || q.name != "" {
				t.Errorf("root parsed as %q/%q", q.fqdn, q.name)
			}
		}},
		{"EDNS with DO and a cookie", packQuery(t, "a.example.", dns.TypeAAAA, edns(4096, true), func(m *dns.Msg) {
			o := m.IsEdns0()
			o.Option = append(o.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		}), nil, func(t *testing.T, q *query) {
			if !q.edns || !q.do || q.udpSize != 4096 || q.maxUDP() != 4096 {
				t.Errorf("EDNS parsed as %+v", q)
			}
		}},
		{"EDNS size below 512 means 512", packQuery(t, "a.example.", dns.TypeA, edns(100, false)), nil, func(t *testing.T, q *query) {
			if q.maxUDP() != 512 {
				t.Errorf("maxUDP %d", q.maxUDP())
			}
		}},
		{"underscore and star", packQuery(t, "_srv._tcp.*.example.", dns.TypeSRV), nil, nil},
		{"too short", []byte{1, 2, 3}, errShort, nil},
		{"response", packQuery(t, "a.example.", dns.TypeA, func(m *dns.Msg) { m.Response = true }), errResponse, nil},
		{"notify", packQuery(t, "a.example.", dns.TypeSOA, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), errOpcode, nil},
		{"no question", header(1, 0, 0, 0, 0, 0), errQdcount, nil},
		{"EDNS version 1", packQuery(t, "a.example.", dns.TypeA, edns(1232, false), func(m *dns.Msg) { m.IsEdns0().SetVersion(1) }), errBadVers, nil},
		{"two OPT", packQuery(t, "a.example.", dns.TypeA, edns(1232, false), func(m *dns.Msg) { m.Extra = append(m.Extra, m.Extra[0]) }), errTwoOPT, nil},
		{"space in a label", packQuery(t, `a\032b.example.`, dns.TypeA), errCharset, nil},
		{"dot in a label", packQuery(t, `a\.b.example.`, dns.TypeA), errCharset, nil},
		{"class CHAOS", packQuery(t, "version.bind.", dns.TypeTXT, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), errClass, nil},
		{"IXFR", packQuery(t, "example.", dns.TypeIXFR), errXfr, nil},
		{"TSIG as qtype", packQuery(t, "example.", dns.TypeTSIG), errMetaQType, nil},
		{"OPT owner not root", func() []byte {
			b := packQuery(t, "a.example.", dns.TypeA)
			binary.BigEndian.PutUint16(b[10:], 1)
			return append(b, 1, 'x', 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0)
		}(), errOPTOwner, nil},
		{"name over 255 octets", func() []byte {
			b := header(1, 0, 1, 0, 0, 0)
			for range 5 {
				b = append(b, 63)
				b = append(b, strings.Repeat("a", 63)...)
			}
			return append(b, 0, 0, 1, 0, 1)
		}(), errLongName, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var q query
			var nb [maxName + 1]byte
			err := parseQuery(tc.wire, &q, &nb)
			if err != tc.wantErr {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, &q)
			}
		})
	}
}

func TestParseQueryAgreesWithMiekg(t *testing.T) {
	// Every query miekg/dns packs for a plain name parses to the same
	// question.
	for _, name := range []string{"a.", "example.com.", "x-1.y_2.z.example.", strings.Repeat("a.", 100), "*.wild.example."} {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeMX, dns.TypeANY, 65000} {
			b := packQuery(t, name, qt, func(m *dns.Msg) { m.SetEdns0(1232, qt%2 == 0) })
			var q query
			var nb [maxName + 1]byte
			if err := parseQuery(b, &q, &nb); err != nil {
				t.Fatalf("%s %d: %v", name, qt, err)
			}
			m := new(dns.Msg)
			m.Unpack(b)
			if q.fqdn != strings.ToLower(m.Question[0].Name) || q.qtype != m.Question[0].Qtype || q.do != m.IsEdns0().Do() {
				t.Errorf("%s %d: parsed %q %d do=%v", name, qt, q.fqdn, q.qtype, q.do)
			}
		}
	}
}

func TestRender(t *testing.T) {
	var q query
	var nb [maxName + 1]byte
	wire := packQuery(t, "Big.Example.", dns.TypeA)
	if err := parseQuery(wire, &q, &nb); err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.Rcode = dns.RcodeSuccess
	for i := range 40 {
		m.Answer = append(m.Answer, rr(fmt.Sprintf("big.example. 100 IN A 10.0.0.%d", i)))
	}
	now := time.Now().UnixNano()
	resp, err := makeResponse(m, &q, now, ttlCaps{max: time.Hour, maxNeg: time.Hour}, false)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		at      time.Duration
		max     int
		wantTC  bool
		wantTTL uint32
	}{
		{"fits", 0, 0, false, 100},
		{"decremented", 42500 * time.Millisecond, 0, false, 58},
		{"past expiry clamps at 0", 200 * time.Second, 0, false, 0},
		{"too big for 512", 0, 512, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := resp.render(nil, &q, now+int64(tc.at), tc.max)
			got := new(dns.Msg)
			if err := got.Unpack(out); err != nil {
				t.Fatal(err)
			}
			if got.Id != 0xbeef || got.Question[0].Name != "Big.Example." || got.Truncated != tc.wantTC {
				t.Errorf("header/question: %v", got)
			}
			if tc.max > 0 && len(out) > tc.max {
				t.Errorf("%d octets, limit %d", len(out), tc.max)
			}
			if tc.wantTC {
				if len(got.Answer) != 0 {
					t.Errorf("truncated answer has %d records", len(got.Answer))
				}
				return
			}
			if len(got.Answer) != 40 {
				t.Fatalf("%d records", len(got.Answer))
			}
			for _, a := range got.Answer {
				if a.Header().Ttl != tc.wantTTL {
					t.Fatalf("TTL %d, want %d", a.Header().Ttl, tc.wantTTL)
				}
			}
		})
	}
	if len(resp.addrs) != 40 || resp.names[0] != "big.example" {
		t.Errorf("addrs %d names %v", len(resp.addrs), resp.names)
	}
}

// A reused query keeps its name string when the next query asks the same
// name (no allocation), and never leaks it into a different or broken one.
func TestParseQueryReusesName(t *testing.T) {
	var q query
	var nb [maxName + 1]byte
	if err := parseQuery(packQuery(t, "WWW.Example.Test.", dns.TypeA), &q, &nb); err != nil {
		t.Fatal(err)
	}
	first := q.fqdn
	if err := parseQuery(packQuery(t, "www.example.test.", dns.TypeAAAA), &q, &nb); err != nil {
		t.Fatal(err)
	}
	if q.fqdn != "www.example.test." || q.name != "www.example.test" || unsafe.StringData(q.fqdn) != unsafe.StringData(first) {
		t.Errorf("same name: fqdn %q name %q, reused %v", q.fqdn, q.name, unsafe.StringData(q.fqdn) == unsafe.StringData(first))
	}
	if err := parseQuery(packQuery(t, "other.test.", dns.TypeA), &q, &nb); err != nil || q.fqdn != "other.test." || q.name != "other.test" {
		t.Errorf("other name: fqdn %q name %q err %v", q.fqdn, q.name, err)
	}
	if err := parseQuery([]byte{1, 2}, &q, &nb); err == nil || q.fqdn != "" || q.name != "" {
		t.Errorf("short query after a named one: fqdn %q name %q err %v", q.fqdn, q.name, err)
	}
	wire := packQuery(t, "other.test.", dns.TypeA)
	parseQuery(wire, &q, &nb)
	if n := testing.AllocsPerRun(100, func() { parseQuery(wire, &q, &nb) }); n != 0 {
		t.Errorf("parsing the same name again allocates %.0f times", n)
	}
}

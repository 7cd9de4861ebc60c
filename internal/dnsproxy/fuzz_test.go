package dnsproxy

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
	"github.com/miekg/dns"
)

// FuzzServeDNS feeds raw bytes to the top of the chain, as the UDP reader
// does, with a real upstream behind it. Whatever comes in, the proxy does
// not panic, and it either stays silent (a message too short for a header,
// or a response) or answers with a message that parses, carries the
// query's ID and fits the client's UDP size; a non-error answer echoes the
// question. The seed corpus is in testdata/fuzz/FuzzServeDNS.
func FuzzServeDNS(f *testing.F) {
	z := newZone(f)
	enc := json.NewEncoder(io.Discard)
	p, err := New(Config{Upstreams: []string{z.addr}, Timeout: time.Second, CacheSize: 1000},
		Options{Log: func(r telemetry.Record) { enc.Encode(r) }})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"www.example.test.", "big.example.test.", "nx.example.test.", "WwW.ExAmPlE.TeSt."} {
		m := new(dns.Msg)
		m.SetQuestion(s, dns.TypeA)
		b, _ := m.Pack()
		f.Add(b)
		m.SetEdns0(4096, true)
		b, _ = m.Pack()
		f.Add(b)
	}
	src := netip.MustParseAddrPort("127.0.0.1:5353")
	f.Fuzz(func(t *testing.T, in []byte) {
		ctx := context.Background()
		var r request
		wire := append([]byte(nil), in...)
		out, deferred := p.serveWire(ctx, &r, wire, src, "udp", false, nil)
		if deferred {
			t.Fatal("deferred although not inline")
		}
		if out == nil {
			if len(in) >= headerLen && in[2]&0x80 == 0 {
				t.Fatalf("no answer to a %d-byte query", len(in))
			}
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatalf("answer does not parse: %v\nin  %x\nout %x", err, in, out)
		}
		if m.Id != binary.BigEndian.Uint16(in) || !m.Response {
			t.Fatalf("answer id %d qr %v for query id %d", m.Id, m.Response, binary.BigEndian.Uint16(in))
		}
		if len(out) > r.q.maxUDP() {
			t.Fatalf("answer %d octets, client accepts %d", len(out), r.q.maxUDP())
		}
		switch m.Rcode {
		case dns.RcodeFormatError, dns.RcodeNotImplemented:
			return
		}
		var q query
		var nb [maxName + 1]byte
		if pe := parseQuery(in, &q, &nb); pe != nil && !pe.withQuestion {
			t.Fatalf("rcode %s for a query that does not parse (%v)", dns.RcodeToString[m.Rcode], pe)
		}
		if len(m.Question) != 1 || m.Question[0].Qtype != q.qtype || m.Question[0].Qclass != q.qclass {
			t.Fatalf("answer question %v for query %q %d %d", m.Question, q.fqdn, q.qtype, q.qclass)
		}
	})
}

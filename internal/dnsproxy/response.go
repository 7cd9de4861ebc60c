package dnsproxy

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterwall/clusterwall/internal/ascii"
)

// response is an answer ready to be rendered for any client that asked the
// same question. It is immutable once made: the cache shares it between
// clients and goroutines.
type response struct {
	rcode int
	// wire is the packed message with ID 0, the canonical (lower-case)
	// question and no OPT record; qlen is the length of its question
	// section, ttlOffs the offsets of the records' TTL fields and ttls their
	// values (already capped) at stored.
	wire    []byte
	qlen    int
	ttlOffs []uint32
	ttls    []uint32
	ad      bool // upstream set AD
	tc      bool // upstream set TC (only when TCP was not possible)
	stored  int64
	expires int64 // unix nanoseconds: stored + the TTL the cache keeps it for
	cache   bool  // may be cached
	// addrs are the A/AAAA records of the answer that belong to the name
	// (following CNAMEs); names are the query name then the CNAME targets
	// that lead to them (canonical, without trailing dots).
	addrs []netip.Addr
	names []string
	// synthetic responses are made by the proxy (errors, blocks): never
	// cached and never learned.
	synthetic bool
	negative  bool
}

// staleTTL is the TTL of an answer served stale (RFC 8767 recommends 30 s).
const staleTTL = 30

// stale returns r, expired, as an answer valid for staleTTL from now (a
// copy: r is shared). It is not cached again, and its addresses are not
// learned again: the table keeps them only until the original answer's
// grace period ends, so a stale answer never extends what is allowed.
func (r *response) stale(now int64) *response {
	s := *r
	s.addrs = nil
	s.ttls = make([]uint32, len(r.ttls))
	for i := range s.ttls {
		s.ttls[i] = staleTTL
	}
	s.stored, s.expires, s.cache = now, now+int64(staleTTL*time.Second), false
	return &s
}

// cacheable says whether the response may be stored in the cache.
func (r *response) cacheable() bool { return r.cache }

// ttlAt is the remaining time to live at now.
func (r *response) ttlAt(now int64) time.Duration {
	if r.expires <= now {
		return 0
	}
	return time.Duration(r.expires - now)
}

// ttlCaps limits the TTLs the cache hands out.
type ttlCaps struct {
	max    time.Duration // positive answers
	maxNeg time.Duration // NXDOMAIN / NODATA
}

// makeResponse turns a message (from an upstream, or made by the proxy)
// into a response for the question q. m is modified.
func makeResponse(m *dns.Msg, q *query, now int64, caps ttlCaps, synthetic bool) (*response, error) {
	r := &response{rcode: m.Rcode, ad: m.AuthenticatedData, tc: m.Truncated, stored: now, synthetic: synthetic}
	// Drop OPT records: the proxy adds its own per client.
	extra := m.Extra[:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	m.Id = 0
	m.Response = true
	m.Authoritative = false
	m.Compress = true
	m.Question = []dns.Question{{Name: q.fqdn, Qtype: q.qtype, Qclass: q.qclass}}

	// TTL: positive answers by the smallest record TTL; NXDOMAIN and NODATA
	// by the SOA (RFC 2308: min of its TTL and MINIMUM). Without an SOA a
	// negative answer is not cached.
	var ttl uint32
	cacheable := !synthetic && !m.Truncated
	switch {
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
		ttl = capTTL(minTTL(m), caps.max)
		capAll(m, caps.max)
	case m.Rcode == dns.RcodeNameError || (m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0):
		r.negative = true
		var soa *dns.SOA
		for _, rr := range m.Ns {
			if s, ok := rr.(*dns.SOA); ok {
				soa = s
				break
			}
		}
		if soa == nil {
			cacheable = false
			break
		}
		ttl = min(soa.Hdr.Ttl, soa.Minttl)
		ttl = capTTL(ttl, caps.maxNeg)
		capAll(m, time.Duration(ttl)*time.Second)
	default:
		cacheable = false
	}
	if synthetic {
		ttl = minTTL(m)
	}
	r.expires = now + int64(ttl)*int64(time.Second)
	r.cache = cacheable && ttl > 0

	if q.qtype == dns.TypeA || q.qtype == dns.TypeAAAA {
		r.addrs, r.names = chainAddrs(m, q.name, q.qtype)
	}

	wire, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack response: %w", err)
	}
	qlen, offs, err := recordOffsets(wire)
	if err != nil {
		return nil, err
	}
	if qlen != len(q.question) && len(q.question) != 0 {
		return nil, fmt.Errorf("packed question is %d octets, the query's %d", qlen, len(q.question))
	}
	r.wire, r.qlen, r.ttlOffs = wire, qlen, offs
	r.ttls = make([]uint32, len(offs))
	for i, o := range offs {
		r.ttls[i] = binary.BigEndian.Uint32(wire[o:])
	}
	return r, nil
}

func capTTL(ttl uint32, max time.Duration) uint32 {
	if m := uint32(max / time.Second); ttl > m {
		return m
	}
	return ttl
}

func minTTL(m *dns.Msg) uint32 {
	first := true
	var ttl uint32
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if t := rr.Header().Ttl; first || t < ttl {
				ttl, first = t, false
			}
		}
	}
	return ttl
}

func capAll(m *dns.Msg, max time.Duration) {
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			h := rr.Header()
			h.Ttl = capTTL(h.Ttl, max)
		}
	}
}

// chainAddrs returns the addresses of type qtype that answer name,
// following CNAMEs (at most 16), and the names of the chain.
func chainAddrs(m *dns.Msg, name string, qtype uint16) ([]netip.Addr, []string) {
	names := []string{name}
	cur := name
	for range 16 {
		next := ""
		for _, rr := range m.Answer {
			if c, ok := rr.(*dns.CNAME); ok && canonical(c.Hdr.Name) == cur {
				next = canonical(c.Target)
				break
			}
		}
		if next == "" || contains(names, next) {
			break
		}
		names = append(names, next)
		cur = next
	}
	var addrs []netip.Addr
	for _, rr := range m.Answer {
		var a netip.Addr
		switch v := rr.(type) {
		case *dns.A:
			if qtype != dns.TypeA {
				continue
			}
			a, _ = netip.AddrFromSlice(v.A.To4())
		case *dns.AAAA:
			if qtype != dns.TypeAAAA {
				continue
			}
			a, _ = netip.AddrFromSlice(v.AAAA.To16())
		default:
			continue
		}
		if !a.IsValid() || !contains(names, canonical(rr.Header().Name)) || containsAddr(addrs, a) {
			continue
		}
		addrs = append(addrs, a)
	}
	return addrs, names
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func containsAddr(s []netip.Addr, v netip.Addr) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// canonical lower-cases a name (ASCII) and drops the trailing dot.
func canonical(name string) string { return ascii.ToLower(strings.TrimSuffix(name, ".")) }

// render writes the response for the client's query q into dst: the
// client's ID, RD and CD bits and question (with its letter case), TTLs
// decremented by the time spent in the cache, an OPT record when the client
// sent one, and truncation (TC, no records) when max > 0 and the message
// would be larger.
func (r *response) render(dst []byte, q *query, now int64, max int) []byte {
	dst = append(dst[:0], r.wire...)
	binary.BigEndian.PutUint16(dst[0:], q.id)
	flags := uint16(flagQR|flagRA) | q.flags&(flagRD|flagCD) | uint16(r.rcode&0xF)
	if r.tc {
		flags |= flagTC
	}
	if r.ad && (q.ad() || q.do) {
		flags |= flagAD
	}
	binary.BigEndian.PutUint16(dst[2:], flags)
	if len(q.question) == r.qlen {
		copy(dst[headerLen:], q.question)
	}
	elapsed := uint32(0)
	if now > r.stored {
		elapsed = uint32((now - r.stored) / int64(time.Second))
	}
	for i, off := range r.ttlOffs {
		t := r.ttls[i]
		if t > elapsed {
			t -= elapsed
		} else {
			t = 0
		}
		binary.BigEndian.PutUint32(dst[off:], t)
	}
	ar := binary.BigEndian.Uint16(dst[10:])
	if q.edns {
		dst = appendOPT(dst, q.do, uint8(r.rcode>>4))
		binary.BigEndian.PutUint16(dst[10:], ar+1)
	}
	if max > 0 && len(dst) > max {
		dst = dst[:headerLen+r.qlen]
		binary.BigEndian.PutUint16(dst[2:], flags|flagTC)
		binary.BigEndian.PutUint16(dst[6:], 0)
		binary.BigEndian.PutUint16(dst[8:], 0)
		binary.BigEndian.PutUint16(dst[10:], 0)
		if q.edns {
			dst = appendOPT(dst, q.do, uint8(r.rcode>>4))
			binary.BigEndian.PutUint16(dst[10:], 1)
		}
	}
	return dst
}

// synthesize makes a response the proxy answers itself: an rcode and
// optionally answer records.
func synthesize(q *query, rcode int, answer []dns.RR, now int64) *response {
	m := new(dns.Msg)
	m.Rcode = rcode
	m.Answer = answer
	r, err := makeResponse(m, q, now, ttlCaps{max: time.Hour, maxNeg: 30 * time.Minute}, true)
	if err != nil {
		// Cannot happen for a question that parsed; answer without the
		// question rather than not at all.
		return &response{rcode: rcode, wire: make([]byte, headerLen), synthetic: true, stored: now}
	}
	return r
}

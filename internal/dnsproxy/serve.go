package dnsproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/recovery"
	"github.com/clusterwall/clusterwall/internal/telemetry"
	"github.com/miekg/dns"
)

// serveWire is the top of the chain: it parses the query (answering
// FORMERR/NOTIMP/REFUSED itself), runs the chain, turns errors into
// SERVFAIL, renders the answer into dst and writes the log line. It returns
// nil when the message deserves no answer (shorter than a header, or a
// response), and deferred=true when inline is set and the query needs work
// that may block (the caller then serves it again from a goroutine).
func (p *Proxy) serveWire(ctx context.Context, r *request, wire []byte, src netip.AddrPort, proto string, inline bool, dst []byte) (out []byte, deferred bool) {
	parsed := false
	defer func() {
		if v := recover(); v != nil {
			out, deferred = p.recoverQuery(v, r, parsed, len(wire), dst), false
		}
	}()
	start := p.now()
	r.reset()
	r.src, r.proto, r.inline = src, proto, inline
	r.cfg = p.cfg.Load()
	r.now = start.UnixNano()
	if pe := parseQuery(wire, &r.q, &r.namebuf); pe != nil {
		if pe.drop {
			p.logQuery(r, start, start, len(wire), nil, -1, ErrMalformed, pe.msg)
			return nil, false
		}
		out = errorReply(dst, wire, &r.q, pe)
		num := ErrMalformed
		switch pe.rcode {
		case rcodeNotImp:
			num = ErrNotImpl
		case rcodeRefused:
			num = ErrRefused
		case rcodeBadVers:
			num = ErrBadVersion
		}
		p.logQuery(r, start, start, len(wire), out, pe.rcode, num, pe.msg)
		return out, false
	}
	parsed = true
	resp, err := p.chain.serve(ctx, r)
	if err == errDefer {
		return nil, true
	}
	errNum, errMsg := 0, ""
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = &Error{Num: ErrInternal, Rcode: rcodeServFail, Msg: "internal error", Err: err}
		}
		errNum, errMsg = e.Num, e.Error()
		if e.Num == ErrHook {
			p.log.Error("dns answer withheld: OnAnswer failed", "name", r.q.name, "type", typeString(r.q.qtype), "client", src, "err", err)
		} else {
			p.log.Debug("dns query failed", "name", r.q.name, "type", typeString(r.q.qtype), "client", src, "err", err)
		}
		resp = synthesize(&r.q, e.Rcode, nil, r.now)
	}
	limit := 0
	if proto == "udp" {
		limit = r.q.maxUDP()
	}
	end := p.now()
	out = resp.render(dst, &r.q, end.UnixNano(), limit)
	p.logQuery(r, start, end, len(wire), out, resp.rcode, errNum, errMsg)
	return out, false
}

// recoverQuery handles a panic of one query (recovery.Report: logged,
// counted — or, when it left shared state corrupt, the process stops):
// the client gets SERVFAIL when its question was parsed, else nothing.
func (p *Proxy) recoverQuery(v any, r *request, parsed bool, reqSize int, dst []byte) (out []byte) {
	recovery.Report(p.log, recovery.DNS, v, "client", r.src.String(), "name", r.q.name, "proto", r.proto)
	p.panics.Add(1)
	if !parsed {
		return nil
	}
	defer func() {
		if recover() != nil {
			out = nil // the question itself is what breaks: no answer
		}
	}()
	now := p.now()
	limit := 0
	if r.proto == "udp" {
		limit = r.q.maxUDP()
	}
	out = synthesize(&r.q, rcodeServFail, nil, now.UnixNano()).render(dst[:0], &r.q, now.UnixNano(), limit)
	p.logQuery(r, now, now, reqSize, out, rcodeServFail, ErrInternal, "internal error: panic recovered (see the daemon's log)")
	return out
}

// serveOverloaded answers SERVFAIL at once when too many queries wait.
func (p *Proxy) serveOverloaded(r *request, wire []byte, src netip.AddrPort, proto string, dst []byte) []byte {
	start := p.now()
	r.reset()
	r.src, r.proto = src, proto
	if pe := parseQuery(wire, &r.q, &r.namebuf); pe != nil {
		return nil // it parsed a moment ago; cannot happen
	}
	resp := synthesize(&r.q, rcodeServFail, nil, start.UnixNano())
	out := resp.render(dst, &r.q, start.UnixNano(), r.q.maxUDP())
	p.logQuery(r, start, start, len(wire), out, rcodeServFail, ErrOverloaded, "too many queries waiting for upstreams")
	return out
}

func (r *request) reset() {
	r.q = query{fqdn: r.q.fqdn} // a hint for parseQuery, see there
	r.src, r.proto, r.cfg, r.inline, r.refresh, r.now = netip.AddrPort{}, "", nil, false, false, 0
	r.blocked, r.blockedName, r.cacheHit = "", "", false
}

// logQuery writes the AZFWDnsQuery line. rcode < 0: no answer was sent.
func (p *Proxy) logQuery(r *request, start, end time.Time, reqSize int, out []byte, rcode, errNum int, errMsg string) {
	if p.sink == nil || r.proto == "internal" {
		return
	}
	rec := telemetry.Record{
		Time:                start.UTC(),
		Category:            telemetry.CategoryDNSQuery,
		Source:              "dns",
		SourceIp:            r.srcString(),
		SourcePort:          int(r.src.Port()),
		Protocol:            r.proto,
		QueryId:             int(r.q.id),
		QueryName:           r.q.fqdn,
		RequestSize:         reqSize,
		DnssecOkBit:         r.q.do,
		ResponseSize:        len(out),
		RequestDurationSecs: end.Sub(start).Seconds(),
		ErrorNumber:         errNum,
		ErrorMessage:        errMsg,
	}
	if r.q.qclass != 0 || r.q.qtype != 0 {
		rec.QueryType = typeString(r.q.qtype)
		rec.QueryClass = classString(r.q.qclass)
	}
	if r.q.edns {
		rec.EDNS0BufferSize = int(r.q.udpSize)
	}
	if rcode >= 0 && len(out) >= headerLen {
		rec.ResponseCode = rcodeString(rcode)
		rec.ResponseFlags = flagsString(binary.BigEndian.Uint16(out[2:]))
	}
	if r.blocked != "" {
		rec.Action = "Deny"
		rec.ActionReason = r.blocked
		if r.blockedName != r.q.name {
			rec.ActionReason += " (CNAME " + r.blockedName + ")"
		}
	}
	p.sink(rec)
}

// srcString is the client address as a string, kept from the reader's
// previous query when the client is the same (clients ask many times).
func (r *request) srcString() string {
	a := r.src.Addr().Unmap()
	if a != r.lastSrc || r.lastSrcStr == "" {
		r.lastSrc, r.lastSrcStr = a, a.String()
	}
	return r.lastSrcStr
}

func typeString(t uint16) string {
	switch t { // the common ones without a map lookup
	case dns.TypeA:
		return "A"
	case dns.TypeAAAA:
		return "AAAA"
	case dns.TypeHTTPS:
		return "HTTPS"
	case dns.TypeCNAME:
		return "CNAME"
	case dns.TypeSRV:
		return "SRV"
	case dns.TypePTR:
		return "PTR"
	case dns.TypeTXT:
		return "TXT"
	}
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return dns.Type(t).String()
}

func classString(c uint16) string {
	if c == dns.ClassINET {
		return "IN"
	}
	if s, ok := dns.ClassToString[c]; ok {
		return s
	}
	return dns.Class(c).String()
}

func rcodeString(rc int) string {
	switch rc { // the common ones without a map lookup
	case rcodeSuccess:
		return "NOERROR"
	case rcodeNXDomain:
		return "NXDOMAIN"
	case rcodeServFail:
		return "SERVFAIL"
	}
	if rc == rcodeBadVers {
		return "BADVERS"
	}
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}

// responseFlags are CoreDNS-style flag strings ("qr,rd,ra"), precomputed
// for the seven header bits.
var responseFlags = func() [128]string {
	var t [128]string
	names := []string{"qr", "aa", "tc", "rd", "ra", "ad", "cd"}
	for i := range t {
		var parts []string
		for b, n := range names {
			if i&(1<<b) != 0 {
				parts = append(parts, n)
			}
		}
		t[i] = strings.Join(parts, ",")
	}
	return t
}()

func flagsString(f uint16) string {
	i := 0
	for b, bit := range []uint16{flagQR, flagAA, flagTC, flagRD, flagRA, flagAD, flagCD} {
		if f&bit != 0 {
			i |= 1 << b
		}
	}
	return responseFlags[i]
}

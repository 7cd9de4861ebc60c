package dnsproxy

import (
	"encoding/binary"
	"errors"

	"github.com/clusterwall/clusterwall/internal/ascii"
)

// Wire-level helpers. Client queries are parsed by a small, strict, fuzzed
// parser (parseQuery) instead of dns.Msg.Unpack: the proxy only needs the
// header, the one question and the EDNS OPT record, and answers from the
// cache are rendered by patching a packed response (ID, flags, question
// case, TTLs) rather than building and packing a dns.Msg per query.

const (
	headerLen = 12
	maxName   = 255 // octets of a name in wire form

	flagQR = 1 << 15
	flagAA = 1 << 10
	flagTC = 1 << 9
	flagRD = 1 << 8
	flagRA = 1 << 7
	flagZ  = 1 << 6
	flagAD = 1 << 5
	flagCD = 1 << 4

	typeOPT  = 41
	classIN  = 1
	ednsDO   = 1 << 15 // in the OPT TTL field
	ednsSize = 1232    // the UDP payload size the proxy advertises and uses upstream
)

// query is the parsed view of a client's query.
type query struct {
	id     uint16
	flags  uint16 // header flags as received
	opcode int
	// fqdn is the canonical name: lower-case, with the trailing dot ("." for
	// the root); name is the same without the trailing dot ("" for the root).
	fqdn   string
	name   string
	qtype  uint16
	qclass uint16
	// question is the question section as the client sent it (name, type,
	// class); it aliases the request buffer, so it is only valid while the
	// request is being served.
	question []byte

	edns        bool
	ednsVersion uint8
	do          bool
	udpSize     uint16
}

func (q *query) rd() bool { return q.flags&flagRD != 0 }
func (q *query) cd() bool { return q.flags&flagCD != 0 }
func (q *query) ad() bool { return q.flags&flagAD != 0 }

// maxUDP is the largest UDP response the client accepts.
func (q *query) maxUDP() int {
	if !q.edns || q.udpSize < 512 {
		return 512
	}
	return int(q.udpSize)
}

// parseError says how to answer a query that cannot be served normally.
type parseError struct {
	drop  bool // no answer at all (too short for a header, or a response)
	rcode int  // FORMERR, NOTIMP, REFUSED, BADVERS
	// withQuestion: the question parsed, so the answer can echo it.
	withQuestion bool
	msg          string
}

func (e *parseError) Error() string { return e.msg }

var (
	errShort      = &parseError{drop: true, msg: "message shorter than a DNS header"}
	errResponse   = &parseError{drop: true, msg: "message is a response"}
	errOpcode     = &parseError{rcode: rcodeNotImp, msg: "opcode not implemented"}
	errQdcount    = &parseError{rcode: rcodeFormErr, msg: "question count is not 1"}
	errSections   = &parseError{rcode: rcodeFormErr, msg: "query has answer or authority records"}
	errTruncName  = &parseError{rcode: rcodeFormErr, msg: "truncated name"}
	errCompressed = &parseError{rcode: rcodeFormErr, msg: "compressed or extended label in question"}
	errLongName   = &parseError{rcode: rcodeFormErr, msg: "name longer than 255 octets"}
	errTruncQ     = &parseError{rcode: rcodeFormErr, msg: "truncated question"}
	errTruncRR    = &parseError{rcode: rcodeFormErr, msg: "truncated additional record"}
	errOPTOwner   = &parseError{rcode: rcodeFormErr, msg: "OPT record with a non-root owner"}
	errTwoOPT     = &parseError{rcode: rcodeFormErr, msg: "more than one OPT record"}
	errOPTData    = &parseError{rcode: rcodeFormErr, msg: "malformed EDNS options"}
	errMetaQType  = &parseError{rcode: rcodeFormErr, msg: "meta type in question"}
	errCharset    = &parseError{rcode: rcodeRefused, withQuestion: true, msg: "name has characters outside letters, digits, '-', '_', '*' and '/'"}
	errClass      = &parseError{rcode: rcodeRefused, withQuestion: true, msg: "only class IN is served"}
	errXfr        = &parseError{rcode: rcodeRefused, withQuestion: true, msg: "zone transfers are not served"}
	errBadVers    = &parseError{rcode: rcodeBadVers, withQuestion: true, msg: "unsupported EDNS version"}
)

// DNS response codes used here (the same values as miekg/dns's Rcode*).
const (
	rcodeSuccess  = 0
	rcodeFormErr  = 1
	rcodeServFail = 2
	rcodeNXDomain = 3
	rcodeNotImp   = 4
	rcodeRefused  = 5
	rcodeBadVers  = 16
)

// parseQuery parses a client's query into q. On error the returned
// *parseError says how to answer; q holds whatever was parsed (at least the
// ID and flags unless the error is a drop).
//
// q.fqdn on entry, if set, is reused when the new query asks the same name
// (a reader's previous query): the common case allocates no string.
func parseQuery(b []byte, q *query, namebuf *[maxName + 1]byte) *parseError {
	prev := q.fqdn
	*q = query{}
	if len(b) < headerLen {
		return errShort
	}
	q.id = binary.BigEndian.Uint16(b[0:])
	q.flags = binary.BigEndian.Uint16(b[2:])
	if q.flags&flagQR != 0 {
		return errResponse
	}
	q.opcode = int(q.flags>>11) & 0xF
	if q.opcode != 0 {
		return errOpcode
	}
	qd := binary.BigEndian.Uint16(b[4:])
	an := binary.BigEndian.Uint16(b[6:])
	ns := binary.BigEndian.Uint16(b[8:])
	ar := binary.BigEndian.Uint16(b[10:])
	if qd != 1 {
		return errQdcount
	}
	if an != 0 || ns != 0 {
		return errSections
	}

	// The question name: uncompressed labels, lower-cased into namebuf.
	off := headerLen
	n := 0
	badChar := false
	for {
		if off >= len(b) {
			return errTruncName
		}
		l := int(b[off])
		off++
		if l == 0 {
			break
		}
		if l&0xC0 != 0 {
			return errCompressed
		}
		if off+l > len(b) {
			return errTruncName
		}
		// Wire length so far: labels plus their length octets plus the root.
		if off-headerLen+l+1 > maxName {
			return errLongName
		}
		for _, c := range b[off : off+l] {
			switch c = ascii.Lower(c); {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '*', c == '/':
			default:
				badChar = true
			}
			namebuf[n] = c
			n++
		}
		namebuf[n] = '.'
		n++
		off += l
	}
	if off+4 > len(b) {
		return errTruncQ
	}
	q.qtype = binary.BigEndian.Uint16(b[off:])
	q.qclass = binary.BigEndian.Uint16(b[off+2:])
	off += 4
	q.question = b[headerLen:off]

	// Additional records: at most one OPT; others (e.g. TSIG, which the
	// proxy does not verify) are skipped.
	for i := 0; i < int(ar); i++ {
		root := off < len(b) && b[off] == 0
		var ok bool
		off, ok = skipName(b, off)
		if !ok || off+10 > len(b) {
			return errTruncRR
		}
		typ := binary.BigEndian.Uint16(b[off:])
		class := binary.BigEndian.Uint16(b[off+2:])
		ttl := binary.BigEndian.Uint32(b[off+4:])
		rdlen := int(binary.BigEndian.Uint16(b[off+8:]))
		off += 10
		if off+rdlen > len(b) {
			return errTruncRR
		}
		if typ == typeOPT {
			if !root {
				return errOPTOwner
			}
			if q.edns {
				return errTwoOPT
			}
			q.edns = true
			q.udpSize = class
			q.ednsVersion = uint8(ttl >> 16)
			q.do = ttl&ednsDO != 0
			// Options: code, length, data; they must tile the rdata.
			for o := off; o < off+rdlen; {
				if o+4 > off+rdlen {
					return errOPTData
				}
				ol := int(binary.BigEndian.Uint16(b[o+2:]))
				o += 4 + ol
				if o > off+rdlen {
					return errOPTData
				}
			}
		}
		off += rdlen
	}
	// Trailing bytes after the records are ignored, as most servers do.

	switch {
	case q.qtype == typeOPT || (q.qtype >= 128 && q.qtype <= 250):
		// OPT, TKEY, TSIG and other meta types never appear in a question.
		return errMetaQType
	}
	if n == 0 {
		namebuf[0] = '.'
		n = 1
	}
	if prev == string(namebuf[:n]) { // compared without allocating
		q.fqdn = prev
	} else {
		q.fqdn = string(namebuf[:n])
	}
	if n == 1 {
		q.name = ""
	} else {
		q.name = q.fqdn[:n-1]
	}
	switch {
	case q.edns && q.ednsVersion != 0:
		return errBadVers
	case badChar:
		return errCharset
	case q.qclass != classIN:
		return errClass
	case q.qtype == 251 || q.qtype == 252: // IXFR, AXFR
		return errXfr
	}
	return nil
}

// skipName returns the offset after the (possibly compressed) name at off.
func skipName(b []byte, off int) (int, bool) {
	for i := 0; i < 128; i++ {
		if off >= len(b) {
			return 0, false
		}
		l := int(b[off])
		switch l & 0xC0 {
		case 0x00:
			off++
			if l == 0 {
				return off, true
			}
			off += l
		case 0xC0:
			if off+2 > len(b) {
				return 0, false
			}
			return off + 2, true
		default:
			return 0, false
		}
	}
	return 0, false
}

// errBadWire is returned for a packed response the proxy cannot walk (it
// made it itself, so this only guards against bugs).
var errBadWire = errors.New("dnsproxy: malformed packed response")

// recordOffsets walks a packed message and returns the length of its
// question section and the offset of the TTL field of every record.
func recordOffsets(b []byte) (qlen int, ttlOffs []uint32, err error) {
	if len(b) < headerLen {
		return 0, nil, errBadWire
	}
	qd := int(binary.BigEndian.Uint16(b[4:]))
	rr := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:])) + int(binary.BigEndian.Uint16(b[10:]))
	off := headerLen
	var ok bool
	for i := 0; i < qd; i++ {
		if off, ok = skipName(b, off); !ok || off+4 > len(b) {
			return 0, nil, errBadWire
		}
		off += 4
	}
	qlen = off - headerLen
	ttlOffs = make([]uint32, 0, rr)
	for i := 0; i < rr; i++ {
		if off, ok = skipName(b, off); !ok || off+10 > len(b) {
			return 0, nil, errBadWire
		}
		ttlOffs = append(ttlOffs, uint32(off+4))
		rdlen := int(binary.BigEndian.Uint16(b[off+8:]))
		off += 10 + rdlen
		if off > len(b) {
			return 0, nil, errBadWire
		}
	}
	return qlen, ttlOffs, nil
}

// errorReply is the answer to a query that failed to parse: the header
// with the client's ID, opcode and RD bit, the rcode and no records; the
// question is echoed when it parsed.
func errorReply(dst []byte, req []byte, q *query, pe *parseError) []byte {
	dst = append(dst[:0], req[:headerLen]...)
	flags := flagQR | q.flags&(0xF<<11|flagRD|flagCD) | flagRA | uint16(pe.rcode&0xF)
	binary.BigEndian.PutUint16(dst[2:], flags)
	binary.BigEndian.PutUint16(dst[4:], 0)
	binary.BigEndian.PutUint16(dst[6:], 0)
	binary.BigEndian.PutUint16(dst[8:], 0)
	binary.BigEndian.PutUint16(dst[10:], 0)
	if pe.withQuestion && len(q.question) > 0 {
		binary.BigEndian.PutUint16(dst[4:], 1)
		dst = append(dst, q.question...)
	}
	if q.edns && (pe.withQuestion || pe.rcode > 15) {
		dst = appendOPT(dst, q.do, uint8(pe.rcode>>4))
		binary.BigEndian.PutUint16(dst[10:], 1)
	}
	return dst
}

// appendOPT appends the proxy's OPT record.
func appendOPT(dst []byte, do bool, extRcode uint8) []byte {
	var flags byte
	if do {
		flags = 0x80
	}
	return append(dst,
		0,          // root owner
		0, typeOPT, // type
		byte(ednsSize>>8), byte(ednsSize&0xFF), // UDP payload size
		extRcode, 0, flags, 0, // extended rcode, version, DO, Z
		0, 0, // no options
	)
}

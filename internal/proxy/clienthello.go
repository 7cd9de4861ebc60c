package proxy

import (
	"errors"
	"fmt"
	"io"

	"github.com/clusterwall/clusterwall/internal/ascii"
)

// Why a reader of our own instead of crypto/tls (tls.Server with
// GetConfigForClient on a replaying conn, as inetaf/tcpproxy once did):
//
//   - bounds: every length is checked against a limit the proxy chose before
//     a byte is buffered, and the bytes are read into the connection's one
//     fixed peek buffer; crypto/tls accepts handshake messages up to 64 KiB
//     and allocates its own record buffers and handshake state;
//   - answers: the proxy needs "not TLS", "no SNI", "truncated", "too large"
//     and "malformed" as distinct outcomes, for the log line and the alert;
//     crypto/tls folds them into one handshake error;
//   - cost: no per-connection TLS state, one read for the common one-record
//     ClientHello, and no copy unless the ClientHello is fragmented.
//
// The reader is strict where it matters for a decision (exact lengths, one
// server_name extension, one host_name, a well-formed DNS name) and lenient
// where it does not (unknown extensions and name types are skipped). The
// fuzz test FuzzClientHello checks it against crypto/tls's parser: whenever
// both accept an input, they must find the same server name.

// TLS constants used by the reader.
const (
	recordTypeHandshake  = 22
	recordHeaderLen      = 5
	maxRecordPayload     = 1 << 14 // TLSPlaintext.length limit (RFC 8446 5.1)
	handshakeHeaderLen   = 4
	handshakeClientHello = 1

	extServerName = 0
	extECH        = 0xfe0d // encrypted_client_hello

	// DefaultMaxClientHello is the default limit on the ClientHello
	// handshake message (its body; the 4-byte handshake header and the
	// record headers come on top).
	DefaultMaxClientHello = 16 << 10
)

// ClientHello is what the proxy takes from a TLS ClientHello.
type ClientHello struct {
	// ServerName is the host_name of the server_name extension (SNI), in
	// lower case; "" when the extension is absent.
	ServerName string
	// HasSNI reports whether a server_name extension with a host_name was
	// present.
	HasSNI bool
	// ECH reports an encrypted_client_hello extension. ServerName is then
	// the outer (public) name, the only one a proxy can see.
	ECH bool
	// Len is the number of bytes (record headers included) that carried
	// the ClientHello.
	Len int
}

// HelloError is a ClientHello the reader rejected.
type HelloError struct {
	// Kind classifies the failure.
	Kind HelloErrorKind
	// Msg says what was wrong.
	Msg string
}

// HelloErrorKind classifies HelloErrors.
type HelloErrorKind uint8

const (
	// HelloMalformed: the bytes are TLS but break the format.
	HelloMalformed HelloErrorKind = iota + 1
	// HelloNotTLS: the first record is not a TLS handshake record.
	HelloNotTLS
	// HelloTooLarge: the ClientHello exceeds the configured limit.
	HelloTooLarge
	// HelloTruncated: the peer closed the connection (or the input ended)
	// before the ClientHello was complete.
	HelloTruncated
)

func (e *HelloError) Error() string { return "ClientHello: " + e.Msg }

func helloErr(k HelloErrorKind, format string, args ...any) *HelloError {
	return &HelloError{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// helloKind returns the kind of a HelloError, or 0.
func helloKind(err error) HelloErrorKind {
	var he *HelloError
	if errors.As(err, &he) {
		return he.Kind
	}
	return 0
}

// helloParser assembles a ClientHello from TLS records as the bytes
// arrive. It keeps its place between calls, so a client trickling bytes
// costs work proportional to the bytes, not to their square.
type helloParser struct {
	maxHello int
	off      int    // start of the next unparsed record in raw
	hs       []byte // handshake bytes so far (aliases raw when unfragmented)
	owned    bool   // hs is a copy (fragmented ClientHello)
	records  int
}

// maxPeek is the most raw bytes a ClientHello of at most maxHello bytes
// may take: the message, its header, and a record header for each record.
// A client that splits its ClientHello into tiny records is bounded by
// this too: past it the ClientHello is "too large".
func maxPeek(maxHello int) int { return maxHello + handshakeHeaderLen + 4096 }

// advance parses the complete records in raw. It returns done when the
// ClientHello is complete, or the total number of raw bytes it needs
// before it can make progress.
func (p *helloParser) advance(raw []byte) (done bool, need int, err error) {
	for {
		if len(raw)-p.off < recordHeaderLen {
			return false, p.off + recordHeaderLen, nil
		}
		hdr := raw[p.off : p.off+recordHeaderLen]
		if hdr[0] != recordTypeHandshake {
			if p.off == 0 {
				if hdr[0]&0x80 != 0 && hdr[2] == 1 {
					return false, 0, helloErr(HelloNotTLS, "SSLv2-style ClientHello is not supported")
				}
				return false, 0, helloErr(HelloNotTLS, "not a TLS handshake record (first byte 0x%02x)", hdr[0])
			}
			return false, 0, helloErr(HelloMalformed, "record type %d before the ClientHello was complete", hdr[0])
		}
		if hdr[1] != 3 {
			return false, 0, helloErr(HelloMalformed, "record version 0x%02x%02x", hdr[1], hdr[2])
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		switch {
		case n == 0:
			return false, 0, helloErr(HelloMalformed, "empty handshake record")
		case n > maxRecordPayload:
			return false, 0, helloErr(HelloMalformed, "record length %d exceeds %d", n, maxRecordPayload)
		}
		end := p.off + recordHeaderLen + n
		if end > maxPeek(p.maxHello) {
			return false, 0, helloErr(HelloTooLarge, "ClientHello records exceed %d bytes", maxPeek(p.maxHello))
		}
		if len(raw) < end {
			return false, end, nil
		}
		frag := raw[p.off+recordHeaderLen : end]
		p.off = end
		p.records++
		switch {
		case p.records == 1:
			p.hs = frag
		case !p.owned:
			buf := make([]byte, 0, min(p.maxHello+handshakeHeaderLen, len(p.hs)+maxRecordPayload))
			p.hs = append(append(buf, p.hs...), frag...)
			p.owned = true
		default:
			p.hs = append(p.hs, frag...)
		}
		if len(p.hs) < handshakeHeaderLen {
			continue
		}
		if p.hs[0] != handshakeClientHello {
			return false, 0, helloErr(HelloMalformed, "first handshake message has type %d, not ClientHello", p.hs[0])
		}
		msgLen := int(p.hs[1])<<16 | int(p.hs[2])<<8 | int(p.hs[3])
		if msgLen > p.maxHello {
			return false, 0, helloErr(HelloTooLarge, "ClientHello of %d bytes exceeds the limit of %d", msgLen, p.maxHello)
		}
		if len(p.hs) >= handshakeHeaderLen+msgLen {
			p.hs = p.hs[:handshakeHeaderLen+msgLen]
			return true, 0, nil
		}
	}
}

// hello parses the ClientHello once advance said it is complete.
func (p *helloParser) hello() (ClientHello, error) {
	h, err := parseHelloBody(p.hs[handshakeHeaderLen:])
	h.Len = p.off
	return h, err
}

// ParseClientHello parses a ClientHello from data, which must hold all of
// its records; bytes after them are ignored. maxHello limits the handshake
// message (0: DefaultMaxClientHello).
func ParseClientHello(data []byte, maxHello int) (ClientHello, error) {
	if maxHello <= 0 {
		maxHello = DefaultMaxClientHello
	}
	p := helloParser{maxHello: maxHello}
	done, _, err := p.advance(data)
	if err != nil {
		return ClientHello{}, err
	}
	if !done {
		return ClientHello{}, helloErr(HelloTruncated, "truncated after %d bytes", len(data))
	}
	h, err := parseHelloBody(p.hs[handshakeHeaderLen:])
	h.Len = p.off
	return h, err
}

// ReadClientHello reads a ClientHello from r into buf, which already holds
// n bytes read before. It reads no more than len(buf) bytes in all and
// returns how many buf holds; all of them, the ClientHello and anything
// after it, must be replayed upstream. maxHello limits the handshake
// message (0: DefaultMaxClientHello).
func ReadClientHello(r io.Reader, buf []byte, n, maxHello int) (ClientHello, int, error) {
	if maxHello <= 0 {
		maxHello = DefaultMaxClientHello
	}
	p := helloParser{maxHello: maxHello}
	for {
		done, need, err := p.advance(buf[:n])
		if err != nil {
			return ClientHello{}, n, err
		}
		if done {
			h, err := p.hello()
			return h, n, err
		}
		if need > len(buf) {
			return ClientHello{}, n, helloErr(HelloTooLarge, "ClientHello does not fit in %d bytes", len(buf))
		}
		for n < need {
			m, err := r.Read(buf[n:])
			n += m
			if err != nil {
				if n >= need {
					break
				}
				if errors.Is(err, io.EOF) {
					if n == 0 {
						return ClientHello{}, n, helloErr(HelloTruncated, "connection closed before any byte")
					}
					return ClientHello{}, n, helloErr(HelloTruncated, "connection closed after %d bytes of the ClientHello", n)
				}
				return ClientHello{}, n, err
			}
		}
	}
}

// cursor reads big-endian fields from a byte slice.
type cursor struct{ b []byte }

func (c *cursor) u8() (int, bool) {
	if len(c.b) < 1 {
		return 0, false
	}
	v := int(c.b[0])
	c.b = c.b[1:]
	return v, true
}

func (c *cursor) u16() (int, bool) {
	if len(c.b) < 2 {
		return 0, false
	}
	v := int(c.b[0])<<8 | int(c.b[1])
	c.b = c.b[2:]
	return v, true
}

func (c *cursor) bytes(n int) ([]byte, bool) {
	if n < 0 || len(c.b) < n {
		return nil, false
	}
	v := c.b[:n]
	c.b = c.b[n:]
	return v, true
}

// vec8 and vec16 read a length-prefixed vector.
func (c *cursor) vec8() ([]byte, bool) {
	n, ok := c.u8()
	if !ok {
		return nil, false
	}
	return c.bytes(n)
}

func (c *cursor) vec16() ([]byte, bool) {
	n, ok := c.u16()
	if !ok {
		return nil, false
	}
	return c.bytes(n)
}

// parseHelloBody parses a ClientHello body (RFC 8446 4.1.2; RFC 5246 7.4.1.2).
func parseHelloBody(body []byte) (ClientHello, error) {
	var h ClientHello
	c := cursor{body}
	vers, ok := c.u16()
	if !ok {
		return h, helloErr(HelloMalformed, "short ClientHello")
	}
	if vers>>8 != 3 {
		return h, helloErr(HelloMalformed, "ClientHello version 0x%04x", vers)
	}
	if _, ok := c.bytes(32); !ok {
		return h, helloErr(HelloMalformed, "short random")
	}
	sid, ok := c.vec8()
	if !ok || len(sid) > 32 {
		return h, helloErr(HelloMalformed, "bad session id")
	}
	suites, ok := c.vec16()
	if !ok || len(suites) < 2 || len(suites)%2 != 0 {
		return h, helloErr(HelloMalformed, "bad cipher suites")
	}
	comp, ok := c.vec8()
	if !ok || len(comp) < 1 {
		return h, helloErr(HelloMalformed, "bad compression methods")
	}
	if len(c.b) == 0 {
		return h, nil // no extensions (TLS 1.0-1.2 allow it)
	}
	exts, ok := c.vec16()
	if !ok || len(c.b) != 0 {
		return h, helloErr(HelloMalformed, "extensions length does not match the message")
	}
	ec := cursor{exts}
	seenSNI := false
	for len(ec.b) > 0 {
		typ, ok1 := ec.u16()
		data, ok2 := ec.vec16()
		if !ok1 || !ok2 {
			return h, helloErr(HelloMalformed, "truncated extension")
		}
		switch typ {
		case extServerName:
			if seenSNI {
				return h, helloErr(HelloMalformed, "duplicate server_name extension")
			}
			seenSNI = true
			name, err := parseSNI(data)
			if err != nil {
				return h, err
			}
			if name != "" {
				h.ServerName, h.HasSNI = name, true
			}
		case extECH:
			h.ECH = true
		}
	}
	return h, nil
}

// parseSNI parses a server_name extension body (RFC 6066 3) and returns
// its host_name in lower case ("" when the list holds no host_name).
func parseSNI(data []byte) (string, error) {
	c := cursor{data}
	list, ok := c.vec16()
	if !ok || len(c.b) != 0 || len(list) == 0 {
		return "", helloErr(HelloMalformed, "bad server_name list")
	}
	lc := cursor{list}
	var host []byte
	for len(lc.b) > 0 {
		typ, ok1 := lc.u8()
		name, ok2 := lc.vec16()
		if !ok1 || !ok2 || len(name) == 0 {
			return "", helloErr(HelloMalformed, "bad server_name entry")
		}
		if typ != 0 {
			continue // unknown name type: skip, as crypto/tls does
		}
		if host != nil {
			return "", helloErr(HelloMalformed, "more than one host_name")
		}
		host = name
	}
	if host == nil {
		return "", nil
	}
	if err := checkHostName(host); err != nil {
		return "", helloErr(HelloMalformed, "bad SNI host_name %q: %v", truncate(host, 64), err)
	}
	return lowerASCII(host), nil
}

// checkHostName accepts a DNS name as SNI carries it: labels of letters,
// digits, '-' and '_' (seen in the wild), at most 63 bytes each, at most
// 253 bytes in all, no empty label and no trailing dot (RFC 6066 3). An
// IPv4 literal passes (its labels are digits); the proxy treats literals
// explicitly.
func checkHostName(b []byte) error {
	if len(b) > 253 {
		return errors.New("longer than 253 bytes")
	}
	label := 0
	for i, ch := range b {
		switch {
		case ch == '.':
			if label == 0 {
				if i == len(b)-1 {
					return errors.New("trailing dot")
				}
				return errors.New("empty label")
			}
			label = 0
			continue
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9', ch == '-', ch == '_':
		default:
			return fmt.Errorf("byte 0x%02x", ch)
		}
		label++
		if label > 63 {
			return errors.New("label longer than 63 bytes")
		}
	}
	if label == 0 {
		return errors.New("trailing dot")
	}
	return nil
}

func lowerASCII(b []byte) string { return ascii.ToLower(string(b)) }

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

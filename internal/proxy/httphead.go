package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultMaxHTTPHead is the default limit on an HTTP request head (request
// line and header fields, up to and including the empty line).
const DefaultMaxHTTPHead = 16 << 10

// TargetForm is the form of an HTTP request target (RFC 9112 3.2).
type TargetForm uint8

const (
	// FormOrigin is "/path?query", what a client sends to a server.
	FormOrigin TargetForm = iota + 1
	// FormAbsolute is "http://host[:port]/path", what a client sends to a
	// proxy.
	FormAbsolute
	// FormAuthority is "host:port", only with CONNECT.
	FormAuthority
	// FormAsterisk is "*", only with OPTIONS.
	FormAsterisk
)

// RequestHead is a parsed HTTP/1.x request head.
type RequestHead struct {
	Method string
	Target string // as sent
	Proto  string // "HTTP/1.0" or "HTTP/1.1"
	Form   TargetForm
	// Scheme is the scheme of an absolute-form target, in lower case.
	Scheme string
	// Host is the name the request is for, in lower case without port or
	// brackets: from the target when it carries an authority (absolute and
	// authority forms), else from the Host header. "" when there is none.
	Host string
	// Port is the port of the authority Host came from; 0 when it had none.
	Port uint16
	// HasHostHeader reports a Host header field.
	HasHostHeader bool
	// Len is the length of the head, including the final CRLF CRLF.
	Len int

	// Path is the origin-form of an absolute target ("/" when empty).
	Path   string
	fields []headerField
}

type headerField struct{ name, value string }

// HeadError is an HTTP request head the reader rejected.
type HeadError struct {
	// Status is the HTTP status to answer with: 400, 408 or 431.
	Status int
	Msg    string
	// Truncated is set when the peer closed the connection before the
	// head was complete (there is then no one to answer).
	Truncated bool
}

func (e *HeadError) Error() string { return "HTTP request head: " + e.Msg }

func headErr(status int, format string, args ...any) *HeadError {
	return &HeadError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

var crlfcrlf = []byte("\r\n\r\n")

// ReadRequestHead reads an HTTP request head from r into buf, which
// already holds n bytes. The head must fit in buf. It returns the head and
// how many bytes buf holds; bytes after the head (a body, a pipelined
// request, a tunnelled ClientHello) are buf[head.Len:n].
func ReadRequestHead(r io.Reader, buf []byte, n int) (*RequestHead, int, error) {
	scanned := 0
	for {
		if h, done, err := scanRequestHead(buf, n, &scanned); done || err != nil {
			return h, n, err
		}
		m, err := r.Read(buf[n:])
		n += m
		if err != nil && m == 0 {
			if errors.Is(err, io.EOF) {
				return nil, n, &HeadError{Status: 400, Msg: fmt.Sprintf("connection closed after %d bytes of the request head", n), Truncated: true}
			}
			return nil, n, err
		}
	}
}

// scanRequestHead looks for the end of a request head in buf[:n], the
// first *scanned bytes of which were searched before, and parses it when
// it is there (done). It fails early for a first line that cannot start a
// request, and when buf is full without the end of the head (431).
func scanRequestHead(buf []byte, n int, scanned *int) (h *RequestHead, done bool, err error) {
	if i := bytes.Index(buf[*scanned:n], crlfcrlf); i >= 0 {
		end := *scanned + i + len(crlfcrlf)
		h, err := ParseRequestHead(buf[:end])
		return h, true, err
	}
	// Early rejection: a first line that cannot be a request line need
	// not wait for the rest.
	if err := checkPrefix(buf[:n]); err != nil {
		return nil, false, err
	}
	*scanned = max(0, n-len(crlfcrlf)+1)
	if n == len(buf) {
		return nil, false, headErr(431, "request head larger than %d bytes", len(buf))
	}
	return nil, false, nil
}

// checkPrefix rejects early what cannot become a valid request line: a
// non-token byte in the method, or a bare LF before the first CRLF.
func checkPrefix(b []byte) error {
	for i, ch := range b {
		if ch == ' ' {
			if i == 0 {
				return headErr(400, "request line starts with a space")
			}
			return nil
		}
		if !isTokenChar(ch) {
			return headErr(400, "not an HTTP request (byte 0x%02x in the method)", ch)
		}
	}
	return nil
}

// ParseRequestHead parses a complete request head ending in CRLF CRLF.
// It is strict: CRLF line ends only, no obsolete line folding, no
// whitespace before a field's colon, exactly one Host field at most, and
// an authority that is a DNS name, an IPv4 address or a bracketed IPv6
// address with an optional port.
func ParseRequestHead(head []byte) (*RequestHead, error) {
	if !bytes.HasSuffix(head, crlfcrlf) {
		return nil, headErr(400, "request head does not end with an empty line")
	}
	h := &RequestHead{Len: len(head)}
	lines := head[:len(head)-len(crlfcrlf)]
	var line []byte
	line, lines = cutLine(lines)
	if err := h.parseRequestLine(line); err != nil {
		return nil, err
	}
	hostHeader := ""
	for len(lines) > 0 {
		line, lines = cutLine(lines)
		name, value, err := parseField(line)
		if err != nil {
			return nil, err
		}
		if strings.EqualFold(name, "Host") {
			if h.HasHostHeader {
				return nil, headErr(400, "more than one Host header field")
			}
			h.HasHostHeader = true
			hostHeader = value
		}
		h.fields = append(h.fields, headerField{name, value})
	}
	switch h.Form {
	case FormAbsolute, FormAuthority:
		if h.HasHostHeader && hostHeader != "" {
			host, port, err := parseAuthority(hostHeader)
			if err != nil {
				return nil, headErr(400, "Host header: %v", err)
			}
			if host != h.Host || (port != h.Port && port != 0 && h.Port != 0) {
				return nil, headErr(400, "Host header %q does not match the request target %q", hostHeader, h.Target)
			}
		}
	default:
		if h.HasHostHeader && hostHeader != "" {
			host, port, err := parseAuthority(hostHeader)
			if err != nil {
				return nil, headErr(400, "Host header: %v", err)
			}
			h.Host, h.Port = host, port
		}
	}
	return h, nil
}

// cutLine splits b at the first CRLF.
func cutLine(b []byte) (line, rest []byte) {
	if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
		return b[:i], b[i+2:]
	}
	return b, nil
}

func (h *RequestHead) parseRequestLine(line []byte) error {
	if bytes.IndexByte(line, '\n') >= 0 || bytes.IndexByte(line, '\r') >= 0 {
		return headErr(400, "bare CR or LF in the request line")
	}
	parts := bytes.Split(line, []byte(" "))
	if len(parts) != 3 {
		return headErr(400, "request line %q is not METHOD TARGET VERSION", truncate(line, 80))
	}
	method, target, proto := parts[0], parts[1], parts[2]
	if len(method) == 0 {
		return headErr(400, "empty method")
	}
	for _, ch := range method {
		if !isTokenChar(ch) {
			return headErr(400, "bad method %q", truncate(method, 40))
		}
	}
	if len(target) == 0 {
		return headErr(400, "empty request target")
	}
	for _, ch := range target {
		if ch <= ' ' || ch >= 0x7f || ch == '#' {
			return headErr(400, "byte 0x%02x in the request target", ch)
		}
	}
	switch string(proto) {
	case "HTTP/1.1", "HTTP/1.0":
	case "HTTP/2.0":
		return headErr(400, "HTTP/2 without TLS (prior knowledge) is not supported")
	default:
		return headErr(400, "unsupported protocol version %q", truncate(proto, 20))
	}
	h.Method, h.Target, h.Proto = string(method), string(target), string(proto)

	switch {
	case h.Method == "CONNECT":
		host, port, err := parseAuthority(h.Target)
		if err != nil {
			return headErr(400, "CONNECT target: %v", err)
		}
		if port == 0 {
			return headErr(400, "CONNECT target %q has no port", h.Target)
		}
		h.Form, h.Host, h.Port = FormAuthority, host, port
	case h.Target == "*":
		if h.Method != "OPTIONS" {
			return headErr(400, "request target * with method %s", h.Method)
		}
		h.Form = FormAsterisk
	case h.Target[0] == '/':
		h.Form = FormOrigin
	default:
		scheme, rest, ok := strings.Cut(h.Target, "://")
		if !ok {
			return headErr(400, "request target %q is neither a path nor an absolute URI", truncate(target, 80))
		}
		scheme = strings.ToLower(scheme)
		if scheme != "http" && scheme != "https" {
			return headErr(400, "unsupported URI scheme %q", scheme)
		}
		authority, path := rest, "/"
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			authority, path = rest[:i], rest[i:]
			if path[0] != '/' {
				path = "/" + path
			}
		}
		host, port, err := parseAuthority(authority)
		if err != nil {
			return headErr(400, "request target: %v", err)
		}
		h.Form, h.Scheme, h.Host, h.Port, h.Path = FormAbsolute, scheme, host, port, path
	}
	return nil
}

// parseField parses "name: value" (RFC 9112 5).
func parseField(line []byte) (name, value string, err error) {
	if len(line) == 0 {
		return "", "", headErr(400, "empty header line")
	}
	if line[0] == ' ' || line[0] == '\t' {
		return "", "", headErr(400, "obsolete line folding is not allowed")
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return "", "", headErr(400, "header line %q has no field name", truncate(line, 40))
	}
	for _, ch := range line[:colon] {
		if !isTokenChar(ch) {
			return "", "", headErr(400, "bad header field name %q", truncate(line[:colon], 40))
		}
	}
	v := bytes.Trim(line[colon+1:], " \t")
	for _, ch := range v {
		if (ch < ' ' && ch != '\t') || ch == 0x7f {
			return "", "", headErr(400, "bad byte in header field %q", truncate(line[:colon], 40))
		}
	}
	return string(line[:colon]), string(v), nil
}

// parseAuthority parses host[:port] where host is a DNS name, an IPv4
// address or a bracketed IPv6 address. The host is returned in lower case
// without brackets; port is 0 when absent. Userinfo is refused.
func parseAuthority(s string) (host string, port uint16, err error) {
	if s == "" {
		return "", 0, errors.New("empty authority")
	}
	if strings.IndexByte(s, '@') >= 0 {
		return "", 0, errors.New("userinfo in the authority is not allowed")
	}
	hostPart, portPart := s, ""
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, fmt.Errorf("unclosed '[' in %q", s)
		}
		a, err := netip.ParseAddr(s[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", 0, fmt.Errorf("bad IPv6 literal %q", s[:end+1])
		}
		host = a.String()
		rest := s[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", 0, fmt.Errorf("junk after IPv6 literal in %q", s)
			}
			portPart = rest[1:]
			if portPart == "" {
				return "", 0, fmt.Errorf("empty port in %q", s)
			}
		}
	} else {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			hostPart, portPart = s[:i], s[i+1:]
			if portPart == "" {
				return "", 0, fmt.Errorf("empty port in %q", s)
			}
		}
		if err := checkHostName([]byte(hostPart)); err != nil {
			return "", 0, fmt.Errorf("bad host %q: %v", hostPart, err)
		}
		host = strings.ToLower(hostPart)
	}
	if portPart != "" {
		if len(portPart) > 5 {
			return "", 0, fmt.Errorf("bad port %q", portPart)
		}
		for i := 0; i < len(portPart); i++ {
			if portPart[i] < '0' || portPart[i] > '9' {
				return "", 0, fmt.Errorf("bad port %q", portPart)
			}
		}
		p, _ := strconv.Atoi(portPart)
		if p < 1 || p > 65535 {
			return "", 0, fmt.Errorf("port %q out of range", portPart)
		}
		port = uint16(p)
	}
	return host, port, nil
}

// isTokenChar reports a tchar (RFC 9110 5.6.2).
func isTokenChar(ch byte) bool {
	switch {
	case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0
}

// Header returns the value of the first field called name (any case).
func (h *RequestHead) Header(name string) (string, bool) {
	for _, f := range h.fields {
		if strings.EqualFold(f.name, name) {
			return f.value, true
		}
	}
	return "", false
}

// hasToken reports whether a comma-separated field value lists tok.
func hasToken(v, tok string) bool {
	for part := range strings.SplitSeq(v, ",") {
		if strings.EqualFold(strings.TrimSpace(part), tok) {
			return true
		}
	}
	return false
}

// upgrading reports a request that asks for a protocol upgrade
// (WebSocket): after a 101 the connection is no longer HTTP.
func (h *RequestHead) upgrading() bool {
	for _, f := range h.fields {
		if strings.EqualFold(f.name, "Connection") && hasToken(f.value, "upgrade") {
			return true
		}
	}
	return false
}

// rewrite returns the head to send upstream.
//
//   - toOrigin turns an absolute-form target into origin-form and sets
//     Host from it (explicit proxy), dropping Proxy-Connection and
//     Proxy-Authorization;
//   - forceClose replaces Connection with "close" (unless the request
//     upgrades), so that every request on the wire is a new connection the
//     proxy decides on: a kept-alive connection could otherwise carry a
//     second request for another Host to the approved address.
func (h *RequestHead) rewrite(toOrigin, forceClose bool) []byte {
	var b bytes.Buffer
	b.Grow(h.Len + 32)
	target := h.Target
	if toOrigin && h.Form == FormAbsolute {
		target = h.Path
	}
	b.WriteString(h.Method + " " + target + " " + h.Proto + "\r\n")
	close := forceClose && !h.upgrading()
	wroteHost := false
	for _, f := range h.fields {
		switch {
		case toOrigin && (strings.EqualFold(f.name, "Proxy-Connection") || strings.EqualFold(f.name, "Proxy-Authorization")):
			continue
		case close && (strings.EqualFold(f.name, "Connection") || strings.EqualFold(f.name, "Keep-Alive")):
			continue
		case toOrigin && strings.EqualFold(f.name, "Host"):
			if wroteHost {
				continue
			}
			wroteHost = true
			b.WriteString("Host: " + h.authority() + "\r\n")
			continue
		}
		b.WriteString(f.name + ": " + f.value + "\r\n")
	}
	if toOrigin && !wroteHost {
		b.WriteString("Host: " + h.authority() + "\r\n")
	}
	if close {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// authority is Host[:Port] as a Host header carries it.
func (h *RequestHead) authority() string {
	host := h.Host
	if strings.IndexByte(host, ':') >= 0 {
		host = "[" + host + "]"
	}
	if h.Port != 0 {
		return host + ":" + strconv.Itoa(int(h.Port))
	}
	return host
}

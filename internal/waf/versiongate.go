package waf

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/corazawaf/coraza/v3/experimental"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// The version gate sits under Go's HTTP server on plain-HTTP listeners. Go
// answers request lines that are not HTTP/1.x itself (505 for "HTTP/0.9"
// or "HTTP/4.0", 400 for a line without a version), before any handler
// runs: such requests would never reach the WAF, so rule 920430 (HTTP
// protocol version not allowed) could not log them, and nothing would say
// that someone sent them. The gate reads the first request line of each
// connection; when it is one Go would refuse for its version, the gate
// inspects the request with the listener's policy (so the rules log it and
// the event is written like any other), and answers it itself:
//
//   - "GET / HTTP/0.9", "HTTP/0.8", ...: 400 Bad Request. No HTTP/0.x
//     request carries a version token, so the line is malformed (Apache
//     httpd answers the same).
//   - "GET / HTTP/2.0" (other than the h2c preface "PRI * HTTP/2.0"),
//     "HTTP/4.0", ...: 505 HTTP Version Not Supported.
//   - "GET /" (no version: an HTTP/0.9 simple request): an HTTP/0.9
//     response, which is the body alone, no status line.
//
// A rule's interruption (Prevention) takes precedence: its status and
// block page. The connection is closed afterwards in every case; nothing
// is forwarded. HTTPS listeners have no gate (Go's TLS server must see its
// own connection type); there Go's own answers stand.
//
// Only the first request of a connection is looked at: after a well-formed
// HTTP/1.x request line the connection is Go's, and the gate's buffer is
// handed back as soon as Go has read it, so the cost is one buffered read
// per connection.
type gateListener struct {
	net.Listener
	s        *Server
	listener string
}

func (l *gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &gateConn{Conn: c, s: l.s, listener: l.listener}, nil
}

// gateConn is a connection whose first request line the gate checks on the
// first Read (in the connection's goroutine, under the read deadline Go's
// server has set for the request header).
type gateConn struct {
	net.Conn
	s        *Server
	listener string
	checked  bool
	done     bool // the gate answered: the connection is over
	br       *bufio.Reader
}

// gateBufSize bounds the request line the gate reads; a longer line is
// left to Go's server.
const gateBufSize = 4096

var gateBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, gateBufSize) }}

func (c *gateConn) Read(p []byte) (int, error) {
	if !c.checked {
		c.checked = true
		c.br = gateBufs.Get().(*bufio.Reader)
		c.br.Reset(c.Conn)
		if c.check() {
			c.done = true
		}
	}
	if c.done {
		c.release()
		return 0, io.EOF
	}
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.release()
	}
	return c.Conn.Read(p)
}

func (c *gateConn) release() {
	if c.br != nil {
		c.br.Reset(nil)
		gateBufs.Put(c.br)
		c.br = nil
	}
}

// check peeks the first line and, for a version Go refuses, answers the
// request; it reports whether it did.
func (c *gateConn) check() bool {
	line, ok := c.peekLine()
	if !ok {
		return false
	}
	method, target, proto, major, minor, simple := parseGateLine(line)
	if method == "" {
		return false
	}
	if !simple {
		if major == 1 || major == 2 && minor == 0 && method == "PRI" && target == "*" {
			return false // Go's server serves it
		}
	}
	// The gate owns the connection now: consume the request line (and,
	// with a version, the header block) from the buffer.
	_, _ = c.br.Discard(len(line))
	var hdr http.Header
	if !simple {
		max := DefaultMaxHeaderBytes
		if st := c.s.state.Load(); st != nil {
			if ls := st.listeners[c.listener]; ls != nil && ls.l.MaxHeaderBytes > 0 {
				max = ls.l.MaxHeaderBytes
			}
		}
		tp := textproto.NewReader(bufio.NewReader(io.LimitReader(c.br, int64(max))))
		if mh, err := tp.ReadMIMEHeader(); err == nil || len(mh) > 0 {
			hdr = http.Header(mh)
		}
	}
	c.s.answerGated(c, method, target, proto, major, minor, simple, hdr)
	return true
}

// peekLine returns the first line (with its line end) once it is complete
// in the buffer; false if the connection ends first or the line does not
// fit.
func (c *gateConn) peekLine() ([]byte, bool) {
	n := 1
	for {
		_, err := c.br.Peek(n)
		b, _ := c.br.Peek(c.br.Buffered())
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			return b[:i+1], true
		}
		if err != nil || len(b) >= gateBufSize {
			return nil, false
		}
		// Wait for more than is buffered.
		n = c.br.Buffered() + 1
	}
}

// parseGateLine splits a request line. simple is an HTTP/0.9 simple
// request (no version); otherwise major and minor are the version digits,
// or -1 when the version is not HTTP/d.d (then Go's answer stands).
func parseGateLine(line []byte) (method, target, proto string, major, minor int, simple bool) {
	s := strings.TrimRight(string(line), "\r\n")
	parts := strings.Split(s, " ")
	switch {
	case len(parts) == 2 || len(parts) == 3 && parts[2] == "":
		if parts[0] == "" || parts[1] == "" || !validMethod(parts[0]) {
			return
		}
		return parts[0], parts[1], "HTTP/0.9", 0, 9, true
	case len(parts) == 3:
		v := parts[2]
		if len(v) != len("HTTP/X.Y") || !strings.HasPrefix(v, "HTTP/") || v[6] != '.' ||
			v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9' || parts[1] == "" || !validMethod(parts[0]) {
			return
		}
		return parts[0], parts[1], v, int(v[5] - '0'), int(v[7] - '0'), false
	}
	return
}

// validMethod is RFC 9110's token, as Go's server checks it.
func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return m != ""
}

// answerGated inspects a request the gate took and answers it on the
// connection.
func (s *Server) answerGated(c *gateConn, method, target, proto string, major, minor int, simple bool, hdr http.Header) {
	st := s.state.Load()
	ls := st.listeners[c.listener]
	if ls == nil {
		return
	}
	if hdr == nil {
		hdr = http.Header{}
	}
	r := &http.Request{Method: method, RequestURI: target, Proto: proto, ProtoMajor: major, ProtoMinor: minor,
		Header: hdr, Host: hdr.Get("Host"), RemoteAddr: c.RemoteAddr().String(), Body: http.NoBody}
	delete(hdr, "Host")
	if u, err := url.ParseRequestURI(target); err == nil {
		r.URL = u
	} else {
		r.URL = &url.URL{Path: target}
	}

	id := newCorrelationID()
	peer, peerPort := splitAddr(r.RemoteAddr)
	ev := &Event{
		Category: telemetry.CategoryWAF, ClientIP: peer.String(), ClientPort: peerPort, Host: r.Host, URI: target,
		Method: method, CorrelationID: id, Listener: c.listener, Action: ActionBlocked,
		Reason: fmt.Sprintf("request line with protocol %q: not HTTP/1.x", proto),
	}
	if !peer.IsValid() {
		ev.ClientIP, ev.ClientPort = "", 0
	}
	status := http.StatusHTTPVersionNotSupported
	if major == 0 {
		status = http.StatusBadRequest
	}
	if simple {
		ev.Reason = "HTTP/0.9 request (no version in the request line)"
	}
	pol := ls.l.Policy
	if rs := ls.match(hostOnly(r.Host), r); rs != nil {
		ev.Route = rs.r.Name
		if rs.policy != nil {
			pol = rs.policy
		}
	}
	var it *types.Interruption
	if pol != nil {
		ev.Policy, ev.Mode = pol.Name, string(pol.Mode)
		if pol.Mode != ModeOff && pol.waf != nil {
			var tx types.Transaction
			if wo, ok := pol.waf.(experimental.WAFWithOptions); ok {
				tx = wo.NewTransactionWithOptions(experimental.Options{ID: id})
			} else {
				tx = pol.waf.NewTransaction()
			}
			local := netipAddrPort(c.LocalAddr())
			it, _ = inspectRequest(tx, r, ev.ClientIP, ev.ClientPort, local)
			tx.ProcessLogging()
			fillMatches(ev, tx)
			_ = tx.Close()
		}
	}
	if it != nil {
		if it.Action == "drop" {
			ev.Status = 0
			ev.Time = time.Now().UTC()
			s.events.write(ev)
			return
		}
		status = interruptionStatus(it)
	}
	ev.Status = status
	ev.Time = time.Now().UTC()
	s.events.write(ev)

	rec := &pageRecorder{h: http.Header{}}
	writePage(rec, status, id)
	var out bytes.Buffer
	if !simple {
		fmt.Fprintf(&out, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
		rec.h.Set("Connection", "close")
		rec.h.Set("Content-Length", fmt.Sprint(rec.body.Len()))
		_ = rec.h.Write(&out)
		out.WriteString("\r\n")
	}
	out.Write(rec.body.Bytes())
	timeout := ls.l.WriteTimeout
	if timeout <= 0 || timeout > 10*time.Second {
		timeout = 10 * time.Second
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(timeout))
	_, _ = c.Conn.Write(out.Bytes())
}

// pageRecorder collects what writePage writes.
type pageRecorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (p *pageRecorder) Header() http.Header         { return p.h }
func (p *pageRecorder) WriteHeader(code int)        { p.status = code }
func (p *pageRecorder) Write(b []byte) (int, error) { return p.body.Write(b) }

func netipAddrPort(a net.Addr) netip.AddrPort {
	if a == nil {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

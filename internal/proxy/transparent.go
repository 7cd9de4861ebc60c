package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// handleTransparent serves one redirected connection: find the original
// destination, peek, decide, then replay and splice.
func (p *Proxy) handleTransparent(s *session, lnAddr netip.AddrPort) {
	start := time.Now()
	c := s.client
	var dst netip.AddrPort
	var err error
	if p.cfg.OriginalDst != nil {
		local, _ := addrPortOf(c.LocalAddr())
		dst, err = p.cfg.OriginalDst(s.src, local)
	} else {
		dst, err = KernelOriginalDst(c, lnAddr)
	}
	if err == nil && !dst.IsValid() {
		err = errors.New("invalid address")
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap().WithZone(""), dst.Port())
	req := &request{src: s.src, dst: dst, port: dst.Port(), start: start}
	m := p.matcher.Load()
	if err != nil {
		p.emit(m, req, &verdict{reason: "no original destination: " + err.Error()}, netip.AddrPort{})
		return
	}

	bp := p.getBuf()
	buf := *bp
	released := false
	release := func() {
		if !released {
			released = true
			p.putBuf(bp)
		}
	}
	defer release()

	c.SetReadDeadline(time.Now().Add(p.cfg.HelloTimeout))
	// The first read is capped at the head limit, so that the HTTP path
	// below never holds more than MaxHTTPHead bytes.
	n, err := readConn(c, buf[:min(len(buf), p.cfg.MaxHTTPHead)])
	if n == 0 {
		req.scheme = policy.SchemeNone
		p.emit(m, req, &verdict{reason: readFailure("the first bytes", 0, err)}, netip.AddrPort{})
		return
	}

	var out []byte // what to send upstream before splicing
	var v verdict
	switch {
	case buf[0] == recordTypeHandshake:
		req.scheme, req.what, req.missing = policy.SchemeHTTPS, "SNI", ReasonNoSNI
		hello, n2, err := ReadClientHello(c, buf, n, p.cfg.MaxClientHello)
		n = n2
		if err != nil {
			reason := readFailure("the TLS ClientHello", n, err)
			p.emit(m, req, &verdict{reason: reason}, netip.AddrPort{})
			if k := helloKind(err); k == HelloMalformed || k == HelloTooLarge {
				writeAlert(c, alertDecodeError)
			}
			return
		}
		req.name = hello.ServerName
		v = p.decideTransparent(m, req, true)
		if !v.allow {
			p.emit(m, req, &v, netip.AddrPort{})
			writeAlert(c, v.alert)
			return
		}
		out = buf[:n]
	case isTokenChar(buf[0]):
		req.scheme, req.what, req.missing = policy.SchemeHTTP, "Host", ReasonNoHost
		head, n2, err := ReadRequestHead(c, buf[:min(len(buf), p.cfg.MaxHTTPHead)], n)
		n = n2
		if err != nil {
			reason := readFailure("the HTTP request head", n, err)
			p.emit(m, req, &verdict{reason: reason}, netip.AddrPort{})
			var he *HeadError
			switch {
			case errors.As(err, &he) && !he.Truncated:
				writeHTTPError(c, he.Status, he.Msg)
			case isTimeout(err):
				writeHTTPError(c, 408, "timed out reading the request head")
			}
			return
		}
		req.name = head.Host
		if reason, status := p.checkTransparentHead(head, dst); reason != "" {
			v = verdict{}
			v.deny(reason, 0, status)
			p.emit(m, req, &v, netip.AddrPort{})
			writeDenyPage(c, status, req, &v)
			return
		}
		v = p.decideTransparent(m, req, true)
		if !v.allow {
			p.emit(m, req, &v, netip.AddrPort{})
			writeDenyPage(c, v.status, req, &v)
			return
		}
		if p.cfg.HTTPKeepAlive {
			out = buf[:n]
		} else {
			out = append(head.rewrite(false, true), buf[head.Len:n]...)
		}
	default:
		p.emit(m, req, &verdict{reason: fmt.Sprintf("neither a TLS ClientHello nor an HTTP request (first byte 0x%02x)", buf[0])}, netip.AddrPort{})
		return
	}

	p.emit(m, req, &v, v.dial[0])
	up, at, err := p.dialAny(v.dial)
	if err != nil {
		p.logger.Warn("proxy: upstream connect failed", "src", s.src, "name", req.name, "dst", v.dial[0], "err", err)
		if req.scheme == policy.SchemeHTTPS {
			writeAlert(c, alertInternalError)
		} else {
			writeHTTPError(c, 502, fmt.Sprintf("cannot connect to %s: %v", v.dial[0], err))
		}
		return
	}
	_ = at
	if !s.setUpstream(up) {
		return
	}
	up.SetWriteDeadline(time.Now().Add(p.cfg.DialTimeout))
	err = writeConn(up, out)
	release() // out may alias the buffer: only now is it free
	if err != nil {
		p.logger.Warn("proxy: upstream write failed", "src", s.src, "name", req.name, "err", err)
		return
	}
	up.SetWriteDeadline(time.Time{})
	c.SetReadDeadline(time.Time{})
	p.splice(s, c, up)
}

// checkTransparentHead applies the rules of a transparent HTTP request
// that come before the matcher: no CONNECT, only http:// targets, and a
// Host port equal to the TCP port (as Azure Firewall does).
func (p *Proxy) checkTransparentHead(h *RequestHead, dst netip.AddrPort) (reason string, status int) {
	switch {
	case h.Form == FormAuthority:
		return "CONNECT is only served on the explicit proxy port", 405
	case h.Form == FormAbsolute && h.Scheme != "http":
		return fmt.Sprintf("%s:// request target on a plain HTTP connection", h.Scheme), 400
	case h.Port != 0 && h.Port != dst.Port():
		return fmt.Sprintf("Host port %d differs from the destination port %d", h.Port, dst.Port()), 403
	}
	return "", 0
}

// readFailure describes a failed read of what for the log.
func readFailure(what string, n int, err error) string {
	switch {
	case isTimeout(err):
		return fmt.Sprintf("timed out reading %s (after %d bytes)", what, n)
	case err == nil:
		return "connection closed before " + what
	}
	var he *HelloError
	var hd *HeadError
	switch {
	case errors.As(err, &he):
		return "bad TLS ClientHello: " + he.Msg
	case errors.As(err, &hd):
		return "bad HTTP request: " + hd.Msg
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
		return "connection closed before " + what
	}
	return fmt.Sprintf("reading %s: %v", what, err)
}

func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// writeAlert sends a fatal TLS alert. The record version is TLS 1.2, which
// every client accepts before a version is negotiated.
func writeAlert(c net.Conn, desc byte) {
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	c.Write(alertRecord(desc))
}

// alertRecord is a fatal TLS alert record.
func alertRecord(desc byte) []byte { return []byte{21, 3, 3, 0, 2, 2, desc} }

var statusText = map[int]string{
	400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 408: "Request Timeout",
	431: "Request Header Fields Too Large", 502: "Bad Gateway",
}

// writeHTTPError sends a plain-text error response and leaves the
// connection to be closed.
func writeHTTPError(c net.Conn, status int, msg string) {
	writeHTTP(c, httpError(status, msg))
}

func writeHTTP(c net.Conn, resp []byte) {
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	c.Write(resp)
}

// httpError is a plain-text error response.
func httpError(status int, msg string) []byte {
	return httpResponse(status, "clusterwall: "+msg+"\n")
}

func httpResponse(status int, body string) []byte {
	text := statusText[status]
	if text == "" {
		text = "Error"
	}
	return []byte(fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n%s",
		status, text, len(body), body))
}

// writeDenyPage answers a denied HTTP request with a page that names the
// outcome the way Azure Firewall's does: the request, the action and the
// rule or reason.
func writeDenyPage(c net.Conn, status int, req *request, v *verdict) {
	writeHTTP(c, denyPage(status, req, v))
}

// denyPage is the response writeDenyPage sends.
func denyPage(status int, req *request, v *verdict) []byte {
	if status == 0 {
		status = 403
	}
	var b strings.Builder
	target := req.name
	if target == "" {
		target = "(no host)"
	}
	fmt.Fprintf(&b, "HTTP request from %s to %s:%d.\n", req.src, target, req.port)
	fmt.Fprintf(&b, "Action: Deny. Reason: %s.\n", v.reason)
	if r := v.d.Rule; r != nil && r.Collection != nil && r.Collection.Group != nil {
		fmt.Fprintf(&b, "Rule Collection Group: %s. Rule Collection: %s. Rule: %s.\n", r.Collection.Group.Name, r.Collection.Name, r.Name)
	} else {
		b.WriteString("Rule: none.\n")
	}
	return httpResponse(status, b.String())
}

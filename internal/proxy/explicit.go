package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// handleExplicit serves one explicit-proxy connection: one CONNECT tunnel
// or one absolute-URI request.
//
// CONNECT host:port is decided as HTTPS to host on port (whatever the
// port), then the tunnel must start with a TLS ClientHello whose SNI is
// host: the name decided is the name the TLS session is for. An IP-literal
// CONNECT target may come without SNI (clients send none for addresses).
//
// "GET http://host[:port]/path" is decided as HTTP to host on port (80 by
// default) and forwarded in origin-form with "Connection: close", so each
// request on a client's proxy connection is decided (the connection ends
// after one response and the client opens a new one).
func (p *Proxy) handleExplicit(s *session) {
	c := s.client
	m := p.matcher.Load()
	req := &request{src: s.src, start: time.Now()}

	bp := p.getBuf()
	buf := (*bp)[:min(len(*bp), p.cfg.MaxHTTPHead)]
	released := false
	release := func() {
		if !released {
			released = true
			p.putBuf(bp)
		}
	}
	defer release()

	c.SetReadDeadline(time.Now().Add(p.cfg.HelloTimeout))
	head, n, err := ReadRequestHead(c, buf, 0)
	if err != nil {
		p.emit(m, req, &verdict{reason: readFailure("the HTTP request head", n, err)}, netip.AddrPort{})
		var he *HeadError
		switch {
		case errors.As(err, &he) && !he.Truncated:
			writeHTTPError(c, he.Status, he.Msg)
		case isTimeout(err):
			writeHTTPError(c, 408, "timed out reading the request head")
		}
		return
	}
	req.name, req.port = head.Host, head.Port
	switch {
	case head.Form == FormAuthority:
		req.scheme, req.what = policy.SchemeHTTPS, "CONNECT host"
	case head.Form == FormAbsolute && head.Scheme == "http":
		req.scheme, req.what = policy.SchemeHTTP, "Host"
		if req.port == 0 {
			req.port = 80
		}
	case head.Form == FormAbsolute:
		req.scheme = policy.SchemeHTTPS
		if req.port == 0 {
			req.port = 443
		}
		v := verdict{}
		v.deny("https:// request without CONNECT", 0, 400)
		p.emit(m, req, &v, netip.AddrPort{})
		writeHTTPError(c, 400, "send https:// requests through CONNECT")
		return
	default:
		req.scheme = policy.SchemeHTTP
		v := verdict{}
		v.deny("not a proxy request (origin-form target on the explicit proxy port)", 0, 400)
		p.emit(m, req, &v, netip.AddrPort{})
		writeHTTPError(c, 400, "this is a proxy: use CONNECT host:port or an absolute URI")
		return
	}

	v := p.decideExplicit(m, req)
	if !v.allow {
		p.emit(m, req, &v, netip.AddrPort{})
		writeDenyPage(c, v.status, req, &v)
		return
	}
	up, at, err := p.dialAny(v.dial)
	if err != nil {
		p.emit(m, req, &v, v.dial[0])
		p.logger.Warn("proxy: upstream connect failed", "src", s.src, "name", req.name, "dst", v.dial[0], "err", err)
		writeHTTPError(c, 502, fmt.Sprintf("cannot connect to %s (%s): %v", req.name, v.dial[0], err))
		return
	}
	if !s.setUpstream(up) {
		return
	}

	var out []byte
	if req.scheme == policy.SchemeHTTP {
		p.emit(m, req, &v, at)
		out = append(head.rewrite(true, !p.cfg.HTTPKeepAlive), buf[head.Len:n]...)
	} else {
		// Tunnel: answer, then check the ClientHello against the CONNECT
		// host before a byte reaches upstream.
		c.SetWriteDeadline(time.Now().Add(p.cfg.DialTimeout))
		if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			return
		}
		c.SetWriteDeadline(time.Time{})
		full := *bp
		rest := copy(full, buf[head.Len:n])
		c.SetReadDeadline(time.Now().Add(p.cfg.HelloTimeout))
		hello, n2, err := ReadClientHello(c, full, rest, p.cfg.MaxClientHello)
		if err != nil {
			v.deny("inside CONNECT: "+readFailure("the TLS ClientHello", n2, err), alertDecodeError, 0)
			p.emit(m, req, &v, netip.AddrPort{})
			if k := helloKind(err); k == HelloMalformed || k == HelloTooLarge {
				writeAlert(c, alertDecodeError)
			}
			return
		}
		_, notLiteral := netip.ParseAddr(req.name)
		switch {
		case hello.ServerName == req.name:
		case !hello.HasSNI && notLiteral == nil: // IP-literal target: no SNI expected
		case !hello.HasSNI:
			v.deny(fmt.Sprintf("%s inside CONNECT %s", ReasonNoSNI, req.name), alertAccessDenied, 0)
		default:
			v.deny(fmt.Sprintf("SNI %s does not match the CONNECT host %s", hello.ServerName, req.name), alertAccessDenied, 0)
		}
		if !v.allow {
			p.emit(m, req, &v, netip.AddrPort{})
			writeAlert(c, v.alert)
			return
		}
		p.emit(m, req, &v, at)
		out = full[:n2]
	}
	up.SetWriteDeadline(time.Now().Add(p.cfg.DialTimeout))
	_, err = up.Write(out)
	release()
	if err != nil {
		p.logger.Warn("proxy: upstream write failed", "src", s.src, "name", req.name, "err", err)
		return
	}
	up.SetWriteDeadline(time.Time{})
	c.SetReadDeadline(time.Time{})
	if !s.decided(p, m, req, at) {
		return // a new policy denies it (Redecide)
	}
	p.splice(s, c, up)
}

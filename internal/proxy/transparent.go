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
)

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

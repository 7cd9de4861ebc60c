package waf

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/corazawaf/coraza/v3/experimental"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// Handler is the request path of one listener: route, inspect, proxy. It is
// what the listener serves; tests and fuzzing can call it directly.
func (s *Server) Handler(listener string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serve(listener, w, r)
	})
}

func (s *Server) serve(listener string, w http.ResponseWriter, r *http.Request) {
	st := s.state.Load()
	ls := st.listeners[listener]
	if ls == nil {
		http.Error(w, "unknown listener", http.StatusInternalServerError)
		return
	}
	id := newCorrelationID()
	w.Header().Set("X-Correlation-Id", id)

	peer, peerPort := splitAddr(r.RemoteAddr)
	trusted := inPrefixes(peer, ls.l.TrustedProxies)
	client := peer
	if trusted {
		client = clientFromXFF(r.Header.Values("X-Forwarded-For"), ls.l.TrustedProxies, peer)
	}
	host := hostOnly(r.Host)
	rs := ls.match(host, r)
	pol := ls.l.Policy
	routeName := ""
	if rs != nil {
		routeName = rs.r.Name
		if rs.policy != nil {
			pol = rs.policy
		}
	}
	info := &requestInfo{correlationID: id, trusted: trusted, https: r.TLS != nil}

	ev := &Event{
		Category: telemetry.CategoryWAF, ClientIP: client.String(), Host: r.Host, URI: r.RequestURI,
		Method: r.Method, CorrelationID: id, Listener: listener, Route: routeName,
	}
	if !client.IsValid() {
		ev.ClientIP = ""
	}
	if client == peer {
		ev.ClientPort = peerPort
	}
	if pol != nil {
		ev.Policy, ev.Mode = pol.Name, string(pol.Mode)
	}

	if r.ContentLength > ls.l.MaxBodyBytes {
		s.reject(w, ev, http.StatusRequestEntityTooLarge, "request body larger than the listener's maxBodyBytes")
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, ls.l.MaxBodyBytes)
	}

	if pol == nil || pol.Mode == ModeOff || pol.waf == nil {
		if reason := protocolError(r); reason != "" {
			s.reject(w, ev, http.StatusBadRequest, reason)
			return
		}
		s.forward(w, r, rs, info, nil)
		return
	}

	var tx types.Transaction
	if wo, ok := pol.waf.(experimental.WAFWithOptions); ok {
		tx = wo.NewTransactionWithOptions(experimental.Options{ID: id, Context: r.Context()})
	} else {
		tx = pol.waf.NewTransaction()
	}
	defer func() {
		tx.ProcessLogging()
		fillMatches(ev, tx)
		if tx.IsInterrupted() {
			ev.Action = ActionBlocked
			if it := tx.Interruption(); it != nil {
				ev.Status = interruptionStatus(it)
			}
		} else if len(ev.RuleIDs) > 0 && ev.Action == "" {
			// (A request refused after inspection, e.g. a body that could
			// not be read, stays Blocked.)
			ev.Action = ActionDetected
		}
		if ev.Action != "" {
			ev.Time = time.Now().UTC()
			s.events.write(ev)
		}
		_ = tx.Close()
	}()

	clientStr, clientPort := "", 0
	if client.IsValid() {
		clientStr = client.String()
	}
	if client == peer {
		clientPort = peerPort
	}
	limitMultipartParts(r, argumentsLimit) // see multipartlimit.go
	it, err := inspectRequest(tx, r, clientStr, clientPort, localAddr(r))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			ev.Reason = "request body larger than the listener's maxBodyBytes"
			ev.Action, ev.Status = ActionBlocked, http.StatusRequestEntityTooLarge
			writePage(w, http.StatusRequestEntityTooLarge, id)
			return
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// A body slower than the listener's read timeout. (Go's
			// server cancels the request context on a read error, so
			// without an answer here it would send an empty 200.)
			ev.Reason = "request body not received within the read timeout"
			ev.Action, ev.Status = ActionBlocked, http.StatusRequestTimeout
			writePage(w, http.StatusRequestTimeout, id)
			return
		}
		if r.Context().Err() != nil {
			// The client went away: nobody to answer, nothing to log;
			// the page stops Go's server from answering 200.
			writePage(w, http.StatusBadRequest, id)
			return
		}
		ev.Reason = "request could not be read: " + err.Error()
		ev.Action, ev.Status = ActionBlocked, http.StatusBadRequest
		writePage(w, http.StatusBadRequest, id)
		return
	}
	if it != nil {
		s.interrupt(w, r, it, id)
		return
	}
	// Requests the rules let through but that no origin server should see
	// are answered 400 after inspection, so that their rule matches are
	// still logged.
	if reason := protocolError(r); reason != "" {
		ev.Reason = reason
		ev.Action, ev.Status = ActionBlocked, http.StatusBadRequest
		writePage(w, http.StatusBadRequest, id)
		return
	}
	s.forward(w, r, rs, info, tx)
}

// protocolError checks what Go's HTTP server accepts but a reverse proxy in
// front of applications should not pass on (the checks Apache httpd makes,
// which the CRS tests assume): a fragment in the request target (RFC 9112
// allows none), CONNECT without host:port, an empty Host in HTTP/1.1, and a
// Host that is neither a DNS name nor an IP literal (percent signs, control
// characters).
func protocolError(r *http.Request) string {
	if strings.Contains(r.RequestURI, "#") {
		return "fragment in the request target"
	}
	if r.Method == http.MethodConnect {
		host, port, err := net.SplitHostPort(r.RequestURI)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return "CONNECT target is not host:port"
		}
	}
	if r.Host == "" {
		if r.ProtoAtLeast(1, 1) {
			return "empty Host header"
		}
		return ""
	}
	if !validHost(hostOnly(r.Host)) {
		return "invalid Host header"
	}
	return ""
}

// validHost accepts DNS names (with underscores, as some internal names
// have them) and IP literals.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return !strings.Contains(h, "%") // no IPv6 zones
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// forward proxies to the route's next backend; with a transaction, the
// response passes through the response inspector.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, rs *routeState, info *requestInfo, tx types.Transaction) {
	if rs == nil {
		writePage(w, http.StatusNotFound, info.correlationID)
		return
	}
	if rd := rs.r.Redirect; rd != nil {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		w.Header().Set("Location", rd.location(r, hostOnly(r.Host), scheme, int(localAddr(r).Port()), rs.r.PathPrefix))
		w.WriteHeader(rd.StatusCode)
		return
	}
	g := rs.pickGroup()
	switch {
	case g == nil:
		// Every backend group has weight 0: nothing may be sent anywhere.
		writePage(w, http.StatusInternalServerError, info.correlationID)
		return
	case g.pool == nil:
		writePage(w, g.emptyStatus, info.correlationID)
		return
	}
	b := g.pool.pick()
	ctx := context.WithValue(r.Context(), backendKey, b)
	ctx = context.WithValue(ctx, requestInfoKey, info)
	r = r.WithContext(ctx)
	if tx == nil || tx.IsRuleEngineOff() {
		rs.proxy.ServeHTTP(w, r)
		return
	}
	ri := newResponseInspector(w, r, tx, func(it *types.Interruption) {
		s.interrupt(w, r, it, info.correlationID)
	})
	rs.proxy.ServeHTTP(ri, r)
	ri.finish()
}

// interrupt answers a request a rule stopped: deny (the block page with
// the rule's status, 403 by default), redirect, or drop (close the
// connection).
func (s *Server) interrupt(w http.ResponseWriter, r *http.Request, it *types.Interruption, id string) {
	switch it.Action {
	case "drop":
		if rc := http.NewResponseController(w); rc != nil {
			if conn, _, err := rc.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	case "redirect":
		if it.Data != "" {
			w.Header().Set("X-Correlation-Id", id)
			w.Header().Set("Location", it.Data)
			status := it.Status
			if status < 300 || status > 399 {
				status = http.StatusFound
			}
			w.WriteHeader(status)
			return
		}
	}
	writePage(w, interruptionStatus(it), id)
}

func interruptionStatus(it *types.Interruption) int {
	if it.Status >= 200 && it.Status <= 599 && it.Action != "redirect" {
		return it.Status
	}
	if it.Action == "redirect" {
		return http.StatusFound
	}
	return http.StatusForbidden
}

// reject writes a page for a request refused before inspection and logs it.
func (s *Server) reject(w http.ResponseWriter, ev *Event, status int, reason string) {
	ev.Action, ev.Status, ev.Reason = ActionBlocked, status, reason
	ev.Time = time.Now().UTC()
	ev.RuleIDs, ev.Messages = []int{}, []string{}
	s.events.write(ev)
	writePage(w, status, ev.CorrelationID)
}

// inspectRequest runs phases 1 and 2 for r: connection, request line,
// headers, and the body (buffered by Coraza up to its limit, then handed on
// to the proxy). It stops at the first interruption.
func inspectRequest(tx types.Transaction, r *http.Request, client string, clientPort int, server netip.AddrPort) (*types.Interruption, error) {
	srv := ""
	if server.IsValid() {
		srv = server.Addr().String()
	}
	tx.ProcessConnection(client, clientPort, srv, int(server.Port()))
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	tx.ProcessURI(uri, r.Method, r.Proto)
	for k, vv := range r.Header {
		for _, v := range vv {
			tx.AddRequestHeader(k, v)
		}
	}
	if r.Host != "" {
		tx.AddRequestHeader("Host", r.Host)
		tx.SetServerName(hostOnly(r.Host))
	} else if r.ProtoAtLeast(1, 1) {
		// Go's server refuses HTTP/1.1 without a Host line, so an empty
		// r.Host here is an empty Host header (for HTTP/1.0 the two cannot
		// be told apart and the header is left out).
		tx.AddRequestHeader("Host", "")
	}
	for _, te := range r.TransferEncoding {
		tx.AddRequestHeader("Transfer-Encoding", te)
	}
	if it := tx.ProcessRequestHeaders(); it != nil {
		return it, nil
	}
	if tx.IsRequestBodyAccessible() && r.Body != nil && r.Body != http.NoBody {
		it, _, err := tx.ReadRequestBodyFrom(r.Body)
		if err != nil {
			return nil, err
		}
		if it != nil {
			return it, nil
		}
		rbr, err := tx.RequestBodyReader()
		if err != nil {
			return nil, err
		}
		// What Coraza buffered, then whatever lies beyond its limit (with
		// SecRequestBodyLimitAction ProcessPartial).
		r.Body = readCloser{io.MultiReader(rbr, r.Body), r.Body}
	}
	return tx.ProcessRequestBody()
}

type readCloser struct {
	io.Reader
	io.Closer
}

// writePage writes the small HTML page clusterwall answers with when it
// refuses a request, carrying the correlation ID.
func writePage(w http.ResponseWriter, status int, id string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Correlation-Id", id)
	h.Del("Content-Length")
	if status == http.StatusRequestEntityTooLarge || status == http.StatusBadRequest || status == http.StatusRequestTimeout {
		h.Set("Connection", "close")
	}
	w.WriteHeader(status)
	title := fmt.Sprintf("%d %s", status, http.StatusText(status))
	explain := "The request could not be served."
	switch status {
	case http.StatusForbidden:
		explain = "The request was blocked by the web application firewall."
	case http.StatusRequestEntityTooLarge:
		explain = "The request body is larger than this site accepts."
	case http.StatusNotFound:
		explain = "No route serves this host and path."
	case http.StatusBadGateway, http.StatusGatewayTimeout, http.StatusServiceUnavailable:
		explain = "The application behind the firewall did not answer."
	}
	fmt.Fprintf(w, `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>%[1]s</title></head>
<body><h1>%[1]s</h1><p>%[2]s</p>
<p>If you think this is a mistake, contact the site's operators and quote this correlation ID: <code>%[3]s</code></p></body></html>
`, html.EscapeString(title), html.EscapeString(explain), html.EscapeString(id))
}

func splitAddr(s string) (netip.Addr, int) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			return netip.Addr{}, 0
		}
		a, _ := netip.ParseAddr(host)
		p, _ := strconv.Atoi(port)
		return a.Unmap(), p
	}
	return ap.Addr().Unmap(), int(ap.Port())
}

func localAddr(r *http.Request) netip.AddrPort {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	return netip.AddrPort{}
}

func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientFromXFF walks X-Forwarded-For from the right, skipping trusted
// proxies: the first untrusted address is the client.
func clientFromXFF(values []string, trusted []netip.Prefix, peer netip.Addr) netip.Addr {
	var hops []string
	for _, v := range values {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hops = append(hops, h)
			}
		}
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			break
		}
		client = a.Unmap()
		if !inPrefixes(client, trusted) {
			break
		}
	}
	return client
}

// hostOnly lower-cases a Host header and drops its port.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(h, "]"), "["), ".")
	return strings.ToLower(h)
}

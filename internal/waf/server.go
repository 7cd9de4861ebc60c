package waf

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"

	"github.com/clusterwall/clusterwall/internal/recovery"
)

// Options configure a Server.
type Options struct {
	// Events receives one JSON line per blocked or detected request. Nil
	// discards them.
	Events io.Writer
	// Logger receives operational messages (listener errors, reloads).
	// Nil discards them.
	Logger *slog.Logger
	// OnEvent, when set, sees every event (before it is written to Events),
	// on the request's goroutine: it must not block and must not keep e.
	// The daemon turns events into decision log records with it.
	OnEvent func(e *Event)
}

// Server is the WAF reverse proxy: listeners, routes, compiled policies.
type Server struct {
	opts     Options
	log      *slog.Logger
	events   *eventLog
	registry registry

	state atomic.Pointer[state]

	tmu        sync.Mutex
	transports map[transportKey]*http.Transport

	mu        sync.Mutex
	servers   map[string]*http.Server
	addrs     map[string]net.Addr
	started   bool
	closed    bool
	serveErrs chan error
}

// state is one configuration, compiled: what a request needs, swapped as a
// whole by Reload.
type state struct {
	cfg       *Config
	listeners map[string]*listenerState
	cancel    context.CancelFunc // stops the active health checks
	checks    sync.WaitGroup
}

type listenerState struct {
	l       *Listener
	entries []routeEntry // in match order
	certs   *certSet
}

// routeEntry is one host pattern of one route.
type routeEntry struct {
	host   string // "" any, "*.x" wildcard, or exact
	single bool   // a wildcard matching one label only
	exact  bool   // path must equal path
	path   string // the exact path, or the prefix without trailing slash ("" for /)
	rs     *routeState
}

type routeState struct {
	r      *Route
	policy *Policy // effective policy, nil: the listener's
	groups []*groupState
	proxy  *httputil.ReverseProxy

	mu sync.Mutex // smooth weighted round robin over groups
}

// groupState is one weighted group of a route's backends.
type groupState struct {
	weight      int
	pool        *pool // nil: no backends, answer emptyStatus
	emptyStatus int
	current     int // smooth weighted round robin (under routeState.mu)
}

// pickGroup chooses the group for the next request by smooth weighted
// round robin (nginx's): over any window of sum(weights) requests each
// group gets exactly its weight. nil when every weight is 0.
func (rs *routeState) pickGroup() *groupState {
	switch len(rs.groups) {
	case 0:
		return nil
	case 1:
		if rs.groups[0].weight == 0 {
			return nil
		}
		return rs.groups[0]
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var best *groupState
	total := 0
	for _, g := range rs.groups {
		if g.weight == 0 {
			continue
		}
		g.current += g.weight
		total += g.weight
		if best == nil || g.current > best.current {
			best = g
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}

// NewServer compiles cfg (whose policies ParseConfig already compiled) into
// a server; Start opens its listeners.
func NewServer(cfg *Config, opts Options) (*Server, error) {
	s := &Server{opts: opts, log: opts.Logger, events: &eventLog{w: opts.Events, on: opts.OnEvent},
		servers: map[string]*http.Server{}, addrs: map[string]net.Addr{}, transports: map[transportKey]*http.Transport{}}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	st, err := s.build(cfg)
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	return s, nil
}

func (s *Server) build(cfg *Config) (*state, error) {
	for _, p := range cfg.Policies {
		if p.Mode != ModeOff && p.waf == nil {
			if err := p.compile(); err != nil {
				return nil, err
			}
		}
	}
	st := &state{cfg: cfg, listeners: map[string]*listenerState{}}
	for _, l := range cfg.Listeners {
		ls := &listenerState{l: l}
		if l.TLS != nil {
			cs, err := loadCerts(l.TLS)
			if err != nil {
				return nil, fmt.Errorf("listener %q: %w", l.Name, err)
			}
			ls.certs = cs
		}
		st.listeners[l.Name] = ls
	}
	for _, r := range cfg.Routes {
		rs := &routeState{r: r, policy: r.Policy}
		for _, g := range r.Groups {
			gs := &groupState{weight: g.Weight, emptyStatus: g.EmptyStatus}
			if len(g.Backends) > 0 {
				gs.pool = &pool{route: r}
				for _, a := range g.Backends {
					gs.pool.backends = append(gs.pool.backends, s.registry.get(r.Name, a))
				}
			}
			rs.groups = append(rs.groups, gs)
		}
		rs.proxy = s.newProxy(rs)
		hosts := r.Hosts
		if len(hosts) == 0 {
			hosts = []string{""}
		}
		e := routeEntry{single: r.SingleLabelWildcard, rs: rs}
		if r.PathExact != "" {
			e.exact, e.path = true, r.PathExact
		} else {
			e.path = strings.TrimSuffix(r.PathPrefix, "/")
		}
		for name, ls := range st.listeners {
			if len(r.Listeners) > 0 && !slices.Contains(r.Listeners, name) {
				continue
			}
			for _, h := range hosts {
				e.host = h
				ls.entries = append(ls.entries, e)
			}
		}
	}
	for _, ls := range st.listeners {
		sort.SliceStable(ls.entries, func(i, j int) bool { return ls.entries[i].before(&ls.entries[j]) })
	}
	return st, nil
}

// before orders route entries by precedence (the Gateway API's, which
// also gives the Kubernetes Ingress order): the host (exact, then the
// longest wildcard, then any host), an exact path, the longest path
// prefix, a method match, the most header matches, the most query
// parameter matches, then the order of the routes in the configuration.
func (a *routeEntry) before(b *routeEntry) bool {
	if ra, rb := hostRank(a.host), hostRank(b.host); ra != rb {
		return ra > rb
	}
	if len(a.host) != len(b.host) {
		return len(a.host) > len(b.host)
	}
	if a.exact != b.exact {
		return a.exact
	}
	if len(a.path) != len(b.path) {
		return len(a.path) > len(b.path)
	}
	ra, rb := a.rs.r, b.rs.r
	if (ra.Method != "") != (rb.Method != "") {
		return ra.Method != ""
	}
	if len(ra.Headers) != len(rb.Headers) {
		return len(ra.Headers) > len(rb.Headers)
	}
	if len(ra.QueryParams) != len(rb.QueryParams) {
		return len(ra.QueryParams) > len(rb.QueryParams)
	}
	return ra.Index < rb.Index
}

func hostRank(h string) int {
	switch {
	case h == "":
		return 0
	case h[0] == '*':
		return 1
	}
	return 2
}

// match finds the route for a request whose host is host (lower case, no
// port).
func (ls *listenerState) match(host string, r *http.Request) *routeState {
	path := r.URL.Path
	var query url.Values
	for i := range ls.entries {
		e := &ls.entries[i]
		switch {
		case e.host == "":
		case e.host[0] == '*':
			suffix := e.host[1:] // ".example.com"
			if !strings.HasSuffix(host, suffix) || len(host) <= len(suffix) {
				continue
			}
			if e.single && strings.IndexByte(host[:len(host)-len(suffix)], '.') >= 0 {
				continue
			}
		default:
			if host != e.host {
				continue
			}
		}
		if e.exact {
			if path != e.path {
				continue
			}
		} else if e.path != "" && path != e.path && !strings.HasPrefix(path, e.path+"/") {
			continue
		}
		rt := e.rs.r
		if rt.Method != "" && r.Method != rt.Method {
			continue
		}
		if !headersMatch(rt.Headers, r.Header) {
			continue
		}
		if len(rt.QueryParams) > 0 {
			if query == nil {
				query, _ = url.ParseQuery(r.URL.RawQuery)
			}
			if !queryMatch(rt.QueryParams, query) {
				continue
			}
		}
		return e.rs
	}
	return nil
}

// headersMatch: every match names a header the request has (several lines
// of one header are joined with ",", as RFC 9110 allows) with the value.
func headersMatch(ms []ValueMatch, h http.Header) bool {
	for _, m := range ms {
		vs := h[m.Name]
		if len(vs) == 0 {
			return false
		}
		v := vs[0]
		if len(vs) > 1 {
			v = strings.Join(vs, ",")
		}
		if !m.matches(v) {
			return false
		}
	}
	return true
}

// queryMatch: every match names a parameter the request has; its first
// value is compared.
func queryMatch(ms []ValueMatch, q url.Values) bool {
	for _, m := range ms {
		vs, ok := q[m.Name]
		if !ok || len(vs) == 0 || !m.matches(vs[0]) {
			return false
		}
	}
	return true
}

type ctxKey int

const (
	backendKey ctxKey = iota
	requestInfoKey
)

// proxyBuffers are the reverse proxies' copy buffers: without a pool,
// httputil.ReverseProxy allocates 32 KiB for every response.
var proxyBuffers = &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p sync.Pool }

func (bp *bufferPool) Get() []byte { return *bp.p.Get().(*[]byte) }

func (bp *bufferPool) Put(b []byte) {
	if cap(b) == 32<<10 {
		bp.p.Put(&b)
	}
}

// requestInfo travels with a request from the handler to the proxy hooks.
type requestInfo struct {
	correlationID string
	trusted       bool // the peer is a trusted proxy
	https         bool
}

// transportKey: routes with the same backend timeouts share one
// transport, across reloads too, so that connections to backends are kept
// alive through configuration changes (and none are left behind by a
// replaced route).
type transportKey struct{ dial, responseHeader time.Duration }

func (s *Server) transport(r *Route) *http.Transport {
	k := transportKey{r.DialTimeout, r.ResponseHeaderTimeout}
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if t := s.transports[k]; t != nil {
		return t
	}
	t := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: r.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: r.ResponseHeaderTimeout,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	s.transports[k] = t
	return t
}

func (s *Server) newProxy(rs *routeState) *httputil.ReverseProxy {
	r := rs.r
	return &httputil.ReverseProxy{
		Transport:  s.transport(r),
		BufferPool: proxyBuffers,
		Rewrite: func(pr *httputil.ProxyRequest) {
			b, _ := pr.In.Context().Value(backendKey).(*backend)
			info, _ := pr.In.Context().Value(requestInfoKey).(*requestInfo)
			addr := ""
			if b != nil {
				addr = b.addr
			}
			pr.SetURL(&url.URL{Scheme: "http", Host: addr})
			pr.Out.Host = pr.In.Host
			if info != nil && info.trusted {
				// Keep the chain a trusted proxy sent; SetXForwarded appends the peer.
				if v := pr.In.Header.Values("X-Forwarded-For"); len(v) > 0 {
					pr.Out.Header["X-Forwarded-For"] = v
				}
			}
			pr.SetXForwarded()
			if info != nil {
				if info.trusted && pr.In.Header.Get("X-Forwarded-Proto") != "" {
					pr.Out.Header.Set("X-Forwarded-Proto", pr.In.Header.Get("X-Forwarded-Proto"))
				}
				pr.Out.Header.Set("X-Correlation-Id", info.correlationID)
			}
			if f := r.RequestHeaders; f != nil {
				f.apply(pr.Out.Header)
				if h := pr.Out.Header.Get("Host"); h != "" {
					// Go sends Request.Host, not a Host header.
					pr.Out.Host = h
					pr.Out.Header.Del("Host")
				}
			}
		},
		ModifyResponse: func(res *http.Response) error {
			if b, ok := res.Request.Context().Value(backendKey).(*backend); ok {
				b.proxyResult(res.StatusCode < 500 || res.StatusCode > 504, r.MaxFails, r.FailTimeout)
			}
			r.ResponseHeaders.apply(res.Header)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			status := http.StatusBadGateway
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
				status = http.StatusGatewayTimeout
			}
			if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
				// The client went away; nothing to answer.
				return
			}
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				status = http.StatusRequestEntityTooLarge
			} else if b, ok := req.Context().Value(backendKey).(*backend); ok {
				b.proxyResult(false, r.MaxFails, r.FailTimeout)
				s.log.Warn("backend error", "route", r.Name, "backend", b.addr, "err", err)
			}
			info, _ := req.Context().Value(requestInfoKey).(*requestInfo)
			id := ""
			if info != nil {
				id = info.correlationID
			}
			writePage(w, status, id)
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// Start opens every listener and serves in the background. Serve errors
// are logged; Shutdown stops them.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("waf: server already started")
	}
	s.started = true
	st := s.state.Load()
	var opened []net.Listener
	for _, l := range st.cfg.Listeners {
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			for _, o := range opened {
				o.Close()
			}
			return fmt.Errorf("listener %q: %w", l.Name, err)
		}
		opened = append(opened, ln)
		s.addrs[l.Name] = ln.Addr()
		srv := s.httpServer(l)
		s.servers[l.Name] = srv
		var base net.Listener = ln
		if l.TLS == nil {
			// See versiongate.go: request lines Go would refuse for
			// their version are still inspected and logged.
			base = &gateListener{Listener: ln, s: s, listener: l.Name}
		}
		limited := netutil.LimitListener(base, l.MaxConnections)
		go func(l *Listener) {
			var err error
			if l.TLS != nil {
				err = srv.ServeTLS(limited, "", "")
			} else {
				err = srv.Serve(limited)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("listener stopped", "listener", l.Name, "err", err)
			}
		}(l)
		s.log.Info("listening", "listener", l.Name, "address", ln.Addr().String(), "tls", l.TLS != nil)
	}
	s.startChecks(st)
	return nil
}

func (s *Server) httpServer(l *Listener) *http.Server {
	srv := &http.Server{
		// A panic in one request: a 500, a log line and a count
		// (internal/recovery), not net/http's silent drop.
		Handler:           recovery.HTTP(s.log, recovery.WAF, s.Handler(l.Name)),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if l.TLS != nil {
		name := l.Name
		srv.TLSConfig = &tls.Config{
			MinVersion: l.TLS.MinVersion,
			GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				ls := s.state.Load().listeners[name]
				if ls == nil || ls.certs == nil {
					return nil, errors.New("no certificate")
				}
				return ls.certs.get(hello.ServerName), nil
			},
		}
	}
	return srv
}

func (s *Server) startChecks(st *state) {
	ctx, cancel := context.WithCancel(context.Background())
	st.cancel = cancel
	seen := map[*routeState]bool{}
	for _, ls := range st.listeners {
		for _, e := range ls.entries {
			if !seen[e.rs] {
				seen[e.rs] = true
				for _, g := range e.rs.groups {
					if g.pool != nil {
						runHealthChecks(ctx, g.pool, &st.checks)
					}
				}
			}
		}
	}
}

func (st *state) stopChecks() {
	if st.cancel != nil {
		st.cancel()
		st.checks.Wait()
	}
}

// Addr is the address a listener is bound to (after Start).
func (s *Server) Addr(listener string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs[listener]
}

// Config is the configuration in force.
func (s *Server) Config() *Config { return s.state.Load().cfg }

// Reload swaps in a new configuration: routes, backends, policies,
// certificates and per-request limits change at once; requests in flight
// finish with the state they started with. Listener addresses, TLS on/off,
// header limits, connection limits and timeouts are fixed while running: a
// config that changes them is rejected, and so is one that does not compile.
// On any error the running configuration stays.
func (s *Server) Reload(cfg *Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("waf: server is shut down")
	}
	old := s.state.Load()
	if s.started {
		if err := fixedListenersChanged(old.cfg, cfg); err != nil {
			return err
		}
	}
	st, err := s.build(cfg)
	if err != nil {
		return err
	}
	s.state.Store(st)
	s.registry.retain(st.cfg.Routes)
	if s.started {
		s.startChecks(st)
		old.stopChecks()
	}
	s.log.Info("configuration reloaded", "file", cfg.File, "routes", len(cfg.Routes), "policies", len(cfg.Policies))
	return nil
}

func fixedListenersChanged(old, cfg *Config) error {
	byName := map[string]*Listener{}
	for _, l := range old.Listeners {
		byName[l.Name] = l
	}
	if len(cfg.Listeners) != len(old.Listeners) {
		return fmt.Errorf("reload: the set of listeners changed (%d → %d); restart to change listeners", len(old.Listeners), len(cfg.Listeners))
	}
	for _, l := range cfg.Listeners {
		o := byName[l.Name]
		switch {
		case o == nil:
			return fmt.Errorf("reload: new listener %q; restart to change listeners", l.Name)
		case o.Address != l.Address:
			return fmt.Errorf("reload: listener %q address changed (%s → %s); restart to change it", l.Name, o.Address, l.Address)
		case (o.TLS == nil) != (l.TLS == nil):
			return fmt.Errorf("reload: listener %q switched between HTTP and HTTPS; restart to change it", l.Name)
		case o.MaxHeaderBytes != l.MaxHeaderBytes || o.MaxConnections != l.MaxConnections:
			return fmt.Errorf("reload: listener %q limits.maxHeaderBytes/maxConnections changed; restart to change them", l.Name)
		case o.ReadHeaderTimeout != l.ReadHeaderTimeout || o.ReadTimeout != l.ReadTimeout || o.WriteTimeout != l.WriteTimeout || o.IdleTimeout != l.IdleTimeout:
			return fmt.Errorf("reload: listener %q timeouts changed; restart to change them", l.Name)
		}
	}
	return nil
}

// Shutdown stops accepting, waits for requests in flight (until ctx ends)
// and stops the health checks.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	servers := make([]*http.Server, 0, len(s.servers))
	for _, srv := range s.servers {
		servers = append(servers, srv)
	}
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.state.Load().stopChecks()
	return errors.Join(errs...)
}

// certSet picks a listener's certificate by SNI name.
type certSet struct {
	exact     map[string]*tls.Certificate
	wildcard  map[string]*tls.Certificate // by suffix ".example.com"
	byDefault *tls.Certificate
}

// loadCerts loads a listener's certificates. The first is the default; for
// a name, the first certificate listing it in serverNames answers, else the
// first holding it (its DNS names and IP addresses).
func loadCerts(t *TLSConfig) (*certSet, error) {
	cs := &certSet{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	type loaded struct {
		cert  *tls.Certificate
		names []string
	}
	var explicit, implicit []loaded
	for _, c := range t.Certificates {
		pair, err := c.load()
		if err != nil {
			where := c.CertFile
			if c.CertPEM != nil {
				where = strings.Join(c.ServerNames, ",")
			}
			return nil, fmt.Errorf("certificate %s: %w", where, err)
		}
		cert := &pair
		if cs.byDefault == nil {
			cs.byDefault = cert
		}
		if len(c.ServerNames) > 0 {
			explicit = append(explicit, loaded{cert, c.ServerNames})
			continue
		}
		var names []string
		if cert.Leaf != nil {
			names = append(names, cert.Leaf.DNSNames...)
			for _, ip := range cert.Leaf.IPAddresses {
				names = append(names, ip.String())
			}
		}
		implicit = append(implicit, loaded{cert, names})
	}
	for _, l := range slices.Concat(explicit, implicit) {
		for _, n := range l.names {
			n = strings.ToLower(n)
			if strings.HasPrefix(n, "*.") {
				if _, dup := cs.wildcard[n[1:]]; !dup {
					cs.wildcard[n[1:]] = l.cert
				}
			} else if _, dup := cs.exact[n]; !dup {
				cs.exact[n] = l.cert
			}
		}
	}
	return cs, nil
}

func (cs *certSet) get(name string) *tls.Certificate {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if c := cs.exact[name]; c != nil {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c := cs.wildcard[name[i:]]; c != nil {
			return c
		}
	}
	return cs.byDefault
}

// Package dnsproxy is clusterwall's DNS proxy: it answers the cluster's
// queries on the firewall's private address (UDP and TCP), forwards them to
// upstream resolvers (random choice, health checks, failover), caches
// answers by TTL, and learns which addresses it handed out for which names
// (Table) — the data behind network rules' destinationFqdns and the L7
// proxy's spoofing check.
//
// A query goes down a short chain of small handlers, each returning errors
// upward; the top of the chain turns errors into SERVFAIL and writes the
// query's log line (AZFWDnsQuery fields):
//
//	top (parse, FORMERR, log) → learn (Table, OnAnswer hook; fail closed)
//	  → block (threat-intel hook) → cache → forward (upstreams)
//
// Answers from the cache are rendered from a packed copy (ID, question case
// and TTLs patched in place), so a cache hit does not build a dns.Msg.
package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterwall/clusterwall/internal/fairshare"
	"github.com/clusterwall/clusterwall/internal/telemetry"
	"github.com/miekg/dns"
)

// Config is the part of the proxy's settings that a reload may change
// (SetConfig swaps it atomically while serving). Zero values mean the
// defaults.
type Config struct {
	// Upstreams are resolvers as IP or IP:port (port 53 by default).
	Upstreams []string
	// Timeout is the time one upstream gets to answer (default 2 s).
	Timeout time.Duration
	// Attempts is how many different upstreams a query may try (default 3).
	Attempts int
	// HealthInterval is the time between active health checks (default 5 s).
	HealthInterval time.Duration
	// MaxFails is how many failures in a row mark an upstream down
	// (default 2).
	MaxFails int

	// CacheSize bounds the cache in entries (default 10,000) and
	// CacheBytes in bytes (default 32 MiB).
	CacheSize  int
	CacheBytes int
	// MaxTTL caps positive answers (default and maximum 1 h); MaxNegTTL
	// NXDOMAIN/NODATA answers (default and maximum 30 min).
	MaxTTL    time.Duration
	MaxNegTTL time.Duration

	// MaxTCPConns bounds concurrent TCP clients (default 512); TCPIdle is
	// how long a TCP client may take to send a whole query (default 10 s).
	MaxTCPConns int
	TCPIdle     time.Duration
	// MaxInflight bounds queries waiting for upstreams (default 4096);
	// beyond it clients get SERVFAIL at once.
	MaxInflight int

	// OnAnswer is called before an A/AAAA answer for a name Interesting
	// returns true for is handed to the client, when it brings addresses
	// (or a later expiry) the table did not have: the daemon adds them to
	// the kernel's sets with a timeout of ttl plus the table's grace. If it
	// fails, the client gets SERVFAIL (fail closed). ttl is the answer's
	// remaining TTL; ctx carries HookTimeout.
	OnAnswer func(ctx context.Context, name string, addrs []netip.Addr, ttl time.Duration) error
	// Interesting says whether some rule needs name (canonical: lower case,
	// no trailing dot). Other names are answered and learned, without the
	// hook.
	Interesting func(name string) bool
	// HookTimeout bounds OnAnswer (default 2 s).
	HookTimeout time.Duration

	// Block, when set and returning true for the query name or a name of its
	// CNAME chain, answers NXDOMAIN — or, if set, the sinkhole address of
	// the query's family (NODATA for the other family and other types).
	Block     func(name string) (blocked bool, reason string)
	Sinkhole4 netip.Addr
	Sinkhole6 netip.Addr
}

// Options are fixed for the proxy's life.
type Options struct {
	// Table receives the learned addresses; nil makes a table with default
	// options.
	Table *Table
	// Logger receives operational messages (upstream up/down, hook
	// failures); nil discards them.
	Logger *slog.Logger
	// Log receives one record per client query (category AZFWDnsQuery); nil
	// discards them. It must not block (telemetry.DecisionLog.Log).
	Log func(telemetry.Record)
}

// Error numbers in AZFWDnsQuery log lines (ErrorNumber).
const (
	ErrMalformed  = 1 // FORMERR: the query did not parse
	ErrNotImpl    = 2 // NOTIMP: opcode other than QUERY
	ErrRefused    = 3 // REFUSED: class, type or name the proxy does not serve
	ErrUpstream   = 4 // SERVFAIL: no upstream answered
	ErrHook       = 5 // SERVFAIL: OnAnswer failed (fail closed)
	ErrOverloaded = 6 // SERVFAIL: too many queries waiting for upstreams
	ErrInternal   = 7 // SERVFAIL: a bug (e.g. an answer that did not pack)
	ErrBadVersion = 8 // BADVERS: EDNS version other than 0
)

// Error is an error of the DNS path with the rcode the client gets.
type Error struct {
	Num   int
	Rcode int
	Msg   string
	Err   error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// errDefer tells the UDP reader that the query needs work that may block
// (a cache miss, a hook): it is handed to a goroutine.
var errDefer = errors.New("dnsproxy: deferred")

// runtimeConfig is a validated Config.
type runtimeConfig struct {
	upstreams      []*upstream
	timeout        time.Duration
	attempts       int
	healthInterval time.Duration
	maxFails       int
	cacheSize      int
	cacheBytes     int
	caps           ttlCaps
	maxTCP         int
	tcpIdle        time.Duration
	maxInflight    int
	onAnswer       func(ctx context.Context, name string, addrs []netip.Addr, ttl time.Duration) error
	interesting    func(name string) bool
	hookTimeout    time.Duration
	block          func(name string) (bool, string)
	sinkhole4      netip.Addr
	sinkhole6      netip.Addr
}

// Proxy is the DNS proxy.
type Proxy struct {
	cfg   atomic.Pointer[runtimeConfig]
	mu    sync.Mutex // serializes SetConfig
	table *Table
	cache *cache
	fl    flight
	log   *slog.Logger
	sink  func(telemetry.Record)
	chain handler
	now   func() time.Time

	inflight atomic.Int64
	tcpConns atomic.Int64
	panics   atomic.Uint64 // queries ended by a recovered panic

	overloaded  atomic.Uint64 // queries answered SERVFAIL at once: MaxInflight waiting
	shedQueries atomic.Uint64 // waiting queries ended to make room for a lighter client
	staleServed atomic.Uint64 // expired answers served while the upstreams failed
	tcpRefused  atomic.Uint64 // TCP clients closed at once: MaxTCPConns open

	// The queries waiting for upstreams, by source (server.go).
	qmu     sync.Mutex
	queries *fairshare.Limiter
	qmax    int
}

// New validates cfg and returns a proxy; it does not listen (see Serve).
func New(cfg Config, o Options) (*Proxy, error) {
	p := &Proxy{table: o.Table, log: o.Logger, sink: o.Log, now: time.Now}
	if p.table == nil {
		p.table = NewTable(TableOptions{})
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	rc, err := p.compile(cfg)
	if err != nil {
		return nil, err
	}
	p.cache = newCache(rc.cacheSize, rc.cacheBytes)
	p.queries, p.qmax = fairshare.New(rc.maxInflight, -1, -1), rc.maxInflight
	p.cfg.Store(rc)
	p.fl.calls = make(map[cacheKey]*call)
	// The chain, wired explicitly.
	p.chain = &learnHandler{p: p, next: &blockHandler{p: p, next: &cacheHandler{p: p, next: &forwardHandler{p: p}}}}
	return p, nil
}

// Table returns the learned-address table.
func (p *Proxy) Table() *Table { return p.table }

// SetConfig validates cfg and swaps it in atomically; queries being served
// finish with the configuration they started with. The cache, the table and
// the health of upstreams that stay are kept. A bad config leaves the old
// one in place.
func (p *Proxy) SetConfig(cfg Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	rc, err := p.compile(cfg)
	if err != nil {
		return err
	}
	p.cache.resize(rc.cacheSize, rc.cacheBytes)
	p.cfg.Store(rc)
	return nil
}

func (p *Proxy) compile(cfg Config) (*runtimeConfig, error) {
	def := func(v, d time.Duration) time.Duration {
		if v <= 0 {
			return d
		}
		return v
	}
	defInt := func(v, d int) int {
		if v <= 0 {
			return d
		}
		return v
	}
	rc := &runtimeConfig{
		timeout:        def(cfg.Timeout, 2*time.Second),
		attempts:       defInt(cfg.Attempts, 3),
		healthInterval: def(cfg.HealthInterval, 5*time.Second),
		maxFails:       defInt(cfg.MaxFails, 2),
		cacheSize:      defInt(cfg.CacheSize, 10_000),
		cacheBytes:     defInt(cfg.CacheBytes, 32<<20),
		caps:           ttlCaps{max: min(def(cfg.MaxTTL, time.Hour), time.Hour), maxNeg: min(def(cfg.MaxNegTTL, 30*time.Minute), 30*time.Minute)},
		maxTCP:         defInt(cfg.MaxTCPConns, 512),
		tcpIdle:        def(cfg.TCPIdle, 10*time.Second),
		maxInflight:    defInt(cfg.MaxInflight, 4096),
		onAnswer:       cfg.OnAnswer,
		interesting:    cfg.Interesting,
		hookTimeout:    def(cfg.HookTimeout, 2*time.Second),
		block:          cfg.Block,
	}
	if cfg.Sinkhole4.IsValid() {
		if !cfg.Sinkhole4.Unmap().Is4() {
			return nil, fmt.Errorf("sinkhole4: %s is not an IPv4 address", cfg.Sinkhole4)
		}
		rc.sinkhole4 = cfg.Sinkhole4.Unmap()
	}
	if cfg.Sinkhole6.IsValid() {
		if !cfg.Sinkhole6.Is6() || cfg.Sinkhole6.Is4In6() {
			return nil, fmt.Errorf("sinkhole6: %s is not an IPv6 address", cfg.Sinkhole6)
		}
		rc.sinkhole6 = cfg.Sinkhole6
	}
	var old []*upstream
	if cur := p.cfg.Load(); cur != nil {
		old = cur.upstreams
	}
	seen := map[netip.AddrPort]bool{}
	for i, s := range cfg.Upstreams {
		ap, err := ParseUpstream(s)
		if err != nil {
			return nil, fmt.Errorf("upstreams[%d]: %w", i, err)
		}
		if seen[ap] {
			return nil, fmt.Errorf("upstreams[%d]: %s is listed twice", i, ap)
		}
		seen[ap] = true
		var u *upstream
		for _, o := range old {
			if o.addr == ap {
				u = o
			}
		}
		if u == nil {
			u = newUpstream(ap)
		}
		rc.upstreams = append(rc.upstreams, u)
	}
	if len(rc.upstreams) == 0 {
		return nil, errors.New("upstreams: at least one upstream resolver is required")
	}
	return rc, nil
}

// ParseUpstream parses "IP" or "IP:port" (IPv6 as "[IP]:port"); the port
// defaults to 53.
func ParseUpstream(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not IP or IP:port", s)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: %q is not an IP address (upstreams are given by address)", s, host)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: bad port %q", s, port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(n)), nil
}

// Upstreams reports the state of the current upstreams.
func (p *Proxy) Upstreams() []UpstreamStatus {
	cfg := p.cfg.Load()
	out := make([]UpstreamStatus, 0, len(cfg.upstreams))
	for _, u := range cfg.upstreams {
		out = append(out, UpstreamStatus{
			Addr: u.addr, Healthy: !u.down.Load(), Fails: int(u.fails.Load()),
			Queries: u.queries.Load(), Failures: u.failures.Load(),
		})
	}
	return out
}

// Budget is one of the proxy's bounds and its fill (the daemon exports
// them as clusterwall_budget_*; docs/operations.md, Budgets).
type Budget struct {
	Name        string
	Used, Limit int64
	Refused     uint64 // turned away or evicted because the bound was reached
}

// Budgets returns the fill of every bound that queries can grow: the
// cache (entries, bytes), queries waiting for upstreams, TCP clients, and
// the learned-address table (names, addresses).
func (p *Proxy) Budgets() []Budget {
	cfg := p.cfg.Load()
	entries, bytes := p.cache.fill()
	ts := p.table.Stats()
	evicts := p.cache.evicts.Load()
	return []Budget{
		{Name: "dns_cache_entries", Used: int64(entries), Limit: int64(cfg.cacheSize), Refused: evicts},
		{Name: "dns_cache_bytes", Used: int64(bytes), Limit: int64(cfg.cacheBytes), Refused: evicts},
		{Name: "dns_inflight", Used: p.inflight.Load(), Limit: int64(cfg.maxInflight), Refused: p.overloaded.Load() + p.shedQueries.Load()},
		{Name: "dns_tcp_connections", Used: p.tcpConns.Load(), Limit: int64(cfg.maxTCP), Refused: p.tcpRefused.Load()},
		{Name: "dns_names", Used: int64(ts.Names), Limit: int64(ts.MaxNames), Refused: ts.Dropped},
		{Name: "dns_addresses", Used: int64(ts.Addrs), Limit: int64(ts.MaxAddrs), Refused: ts.Dropped + ts.Replaced},
	}
}

// StaleServed returns how many expired answers were served because the
// upstreams failed (RFC 8767).
func (p *Proxy) StaleServed() uint64 { return p.staleServed.Load() }

// Panics returns how many queries a recovered panic ended.
func (p *Proxy) Panics() uint64 { return p.panics.Load() }

// CacheStats returns cache hits, misses, evictions and current entries.
func (p *Proxy) CacheStats() (hits, misses, evictions uint64, entries int) {
	return p.cache.hits.Load(), p.cache.misses.Load(), p.cache.evicts.Load(), p.cache.len()
}

// request is one query going down the chain.
type request struct {
	q      query
	src    netip.AddrPort
	proto  string // "udp", "tcp", "internal"
	cfg    *runtimeConfig
	inline bool // on the UDP reader: must not block (cache misses defer)
	// refresh bypasses the cache lookup (periodic re-resolution).
	refresh bool
	now     int64 // unix nanoseconds when the query arrived
	// Set on the way back up, for the log line.
	blocked     string
	blockedName string
	cacheHit    bool
	namebuf     [maxName + 1]byte
	// Kept across queries (reset leaves them): the last client address
	// and its string form, for log lines.
	lastSrc    netip.Addr
	lastSrcStr string
}

// handler is one link of the chain.
type handler interface {
	serve(ctx context.Context, r *request) (*response, error)
}

// learnHandler records A/AAAA answers in the table and, for names a rule
// needs, calls OnAnswer before the answer goes back — and only then
// records them, so a concurrent query for the same name cannot overtake
// the hook.
type learnHandler struct {
	p    *Proxy
	next handler
}

func (h *learnHandler) serve(ctx context.Context, r *request) (*response, error) {
	resp, err := h.next.serve(ctx, r)
	if err != nil || resp.synthetic || len(resp.addrs) == 0 || resp.rcode != rcodeSuccess {
		return resp, err
	}
	t := h.p.table
	expires := resp.expires + t.grace.Load()
	for _, name := range resp.names {
		if t.covers(name, resp.addrs, expires) {
			continue
		}
		interesting := r.cfg.interesting != nil && r.cfg.interesting(name)
		if interesting && r.cfg.onAnswer != nil {
			if r.inline {
				return nil, errDefer
			}
			hctx, cancel := context.WithTimeout(ctx, r.cfg.hookTimeout)
			err := r.cfg.onAnswer(hctx, name, resp.addrs, resp.ttlAt(h.p.now().UnixNano()))
			cancel()
			if err != nil {
				return nil, &Error{Num: ErrHook, Rcode: rcodeServFail, Msg: "OnAnswer for " + name, Err: err}
			}
		}
		if t.learn(name, resp.addrs, expires, interesting) && t.onLearn != nil {
			t.onLearn(name, resp.addrs, time.Unix(0, expires)) // table_ha.go
		}
	}
	return resp, nil
}

// blockHandler asks the threat-intel hook about the query name before
// anything else happens, and about the CNAME chain of the answer.
type blockHandler struct {
	p    *Proxy
	next handler
}

func (h *blockHandler) serve(ctx context.Context, r *request) (*response, error) {
	block := r.cfg.block
	if block == nil {
		return h.next.serve(ctx, r)
	}
	if bad, why := block(r.q.name); bad {
		return h.blocked(r, r.q.name, why), nil
	}
	resp, err := h.next.serve(ctx, r)
	if err != nil || len(resp.names) < 2 {
		return resp, err
	}
	for _, n := range resp.names[1:] {
		if bad, why := block(n); bad {
			return h.blocked(r, n, why), nil
		}
	}
	return resp, nil
}

func (h *blockHandler) blocked(r *request, name, why string) *response {
	r.blocked, r.blockedName = why, name
	if r.blocked == "" {
		r.blocked = "blocked"
	}
	now := h.p.now().UnixNano()
	hdr := dns.RR_Header{Name: r.q.fqdn, Class: dns.ClassINET, Ttl: 60}
	switch {
	case r.q.qtype == dns.TypeA && r.cfg.sinkhole4.IsValid():
		hdr.Rrtype = dns.TypeA
		return synthesize(&r.q, rcodeSuccess, []dns.RR{&dns.A{Hdr: hdr, A: r.cfg.sinkhole4.AsSlice()}}, now)
	case r.q.qtype == dns.TypeAAAA && r.cfg.sinkhole6.IsValid():
		hdr.Rrtype = dns.TypeAAAA
		return synthesize(&r.q, rcodeSuccess, []dns.RR{&dns.AAAA{Hdr: hdr, AAAA: r.cfg.sinkhole6.AsSlice()}}, now)
	case r.cfg.sinkhole4.IsValid() || r.cfg.sinkhole6.IsValid():
		return synthesize(&r.q, rcodeSuccess, nil, now)
	}
	return synthesize(&r.q, rcodeNXDomain, nil, now)
}

// cacheHandler answers from the cache; misses go down the chain once per
// question however many clients ask at the same time.
type cacheHandler struct {
	p    *Proxy
	next handler
}

func (h *cacheHandler) serve(ctx context.Context, r *request) (*response, error) {
	k := keyOf(&r.q)
	if !r.refresh {
		if resp := h.p.cache.get(k, r.now); resp != nil {
			r.cacheHit = true
			return resp, nil
		}
		if r.inline {
			return nil, errDefer
		}
	}
	resp, err := h.p.fl.do(ctx, k, r.cfg, func(ctx context.Context) (*response, error) {
		resp, err := h.next.serve(ctx, r)
		if err == nil && resp.cacheable() {
			h.p.cache.put(k, resp, resp.stored)
		}
		return resp, err
	})
	if err != nil && !r.refresh {
		// Serve stale (RFC 8767) while the upstreams fail — a flood that
		// overwhelms them then does not take names everyone uses away —
		// but only within the table's grace period after the answer
		// expired: its addresses are still learned then, so nothing is
		// allowed that was not already.
		if old := h.p.cache.peek(k, r.now-h.p.table.grace.Load()); old != nil && old.expires <= r.now {
			h.p.staleServed.Add(1)
			return old.stale(r.now), nil
		}
	}
	return resp, err
}

// forwardHandler asks the upstreams.
type forwardHandler struct{ p *Proxy }

func (h *forwardHandler) serve(ctx context.Context, r *request) (*response, error) {
	m, err := h.p.forward(ctx, r.cfg, &r.q)
	if err != nil {
		return nil, err
	}
	resp, err := makeResponse(m, &r.q, h.p.now().UnixNano(), r.cfg.caps, false)
	if err != nil {
		return nil, &Error{Num: ErrInternal, Rcode: rcodeServFail, Msg: "upstream answer", Err: err}
	}
	return resp, nil
}

// flight makes concurrent misses for one question share one upstream
// exchange. The exchange runs under the first asker's context (the
// server's, or a Refresh caller's) with a deadline of all attempts.
type flight struct {
	mu    sync.Mutex
	calls map[cacheKey]*call
}

type call struct {
	done chan struct{}
	resp *response
	err  error
}

func (f *flight) do(ctx context.Context, k cacheKey, cfg *runtimeConfig, fn func(context.Context) (*response, error)) (*response, error) {
	f.mu.Lock()
	if c, ok := f.calls[k]; ok {
		f.mu.Unlock()
		select {
		case <-c.done:
			return c.resp, c.err
		case <-ctx.Done():
			return nil, &Error{Num: ErrUpstream, Rcode: rcodeServFail, Msg: "waiting for upstream", Err: ctx.Err()}
		}
	}
	c := &call{done: make(chan struct{})}
	f.calls[k] = c
	f.mu.Unlock()
	// The waiters and the next askers must not hang on a call whose
	// exchange panicked: end it, then let the panic go on to the query's
	// recovery.
	finished := false
	defer func() {
		if !finished {
			c.resp, c.err = nil, &Error{Num: ErrInternal, Rcode: rcodeServFail, Msg: "internal error"}
			f.end(k, c)
		}
	}()

	fctx, cancel := context.WithTimeout(ctx, cfg.timeout*time.Duration(cfg.attempts)+time.Second)
	c.resp, c.err = fn(fctx)
	cancel()
	finished = true
	f.end(k, c)
	return c.resp, c.err
}

func (f *flight) end(k cacheKey, c *call) {
	f.mu.Lock()
	delete(f.calls, k)
	f.mu.Unlock()
	close(c.done)
}

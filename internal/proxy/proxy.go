// Package proxy enforces application rules on the wire: a transparent
// proxy for TCP the kernel steers to it (nft redirect or tproxy) that
// decides HTTPS on the TLS ClientHello's SNI without terminating TLS and
// HTTP on the Host header, and an explicit proxy (HTTP CONNECT and
// absolute-URI requests) for clients that are configured to use one.
//
// Every decision is one call to the compiled matcher (internal/match); the
// proxy adds only what the wire needs:
//
//   - it connects only to an address the firewall resolved for the
//     SNI/Host name (the DNS proxy's answers, else one fresh lookup), never
//     blindly to the client's destination, so a client cannot reach an
//     arbitrary address by sending an allowed name;
//   - an IP-literal SNI/Host is decided like a name (a rule must list the
//     literal, or "*" allow it) and must equal the original destination;
//     in explicit mode the literal is the address dialled;
//   - a flow a network rule allows is dialled as addressed: network rules
//     are about addresses, so there is nothing to verify;
//   - it replays the peeked bytes upstream and then splices both directions
//     with splice(2) ((*net.TCPConn).ReadFrom), with half-close;
//   - it bounds everything a client can make it hold: one peek buffer of
//     fixed size per connection, read timeouts for the ClientHello and the
//     request head, an idle timeout read from TCP_INFO (no deadlines on the
//     data path), per-source and global connection limits.
//
// Each decision is one telemetry.Record with Azure's AZFWApplicationRule
// fields (AZFWNetworkRule when a network rule decided) plus the original
// and resolved destination addresses.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/fairshare"
	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/recovery"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// SpoofPolicy says what to do with a connection whose destination is not an
// address of the name it asks for.
type SpoofPolicy uint8

const (
	// SpoofRefuse refuses the connection (the default).
	SpoofRefuse SpoofPolicy = iota
	// SpoofReroute connects to the first address the firewall resolved for
	// the name instead, and logs that it did.
	SpoofReroute
)

func (s SpoofPolicy) String() string {
	if s == SpoofReroute {
		return "reroute"
	}
	return "refuse"
}

// ParseSpoofPolicy parses "refuse" or "reroute".
func ParseSpoofPolicy(s string) (SpoofPolicy, bool) {
	switch s {
	case "refuse", "":
		return SpoofRefuse, true
	case "reroute":
		return SpoofReroute, true
	}
	return SpoofRefuse, false
}

// Defaults for Config's zero values.
const (
	DefaultHelloTimeout      = 10 * time.Second
	DefaultDialTimeout       = 10 * time.Second
	DefaultResolveTimeout    = 5 * time.Second
	DefaultIdleTimeout       = 4 * time.Minute // Azure Firewall's TCP idle timeout
	DefaultMaxConns          = 16384
	DefaultMaxConnsPerSource = 512
	DefaultMaxConnsPerPrefix = 4096
)

// Config configures a Proxy. The zero value of every field but Matcher and
// Resolver is usable.
type Config struct {
	// Matcher is the initial compiled policy; SetMatcher swaps it. With no
	// matcher every connection is denied.
	Matcher *match.Matcher
	// Resolver answers which addresses belong to a name. Nil means no
	// name can be verified: only network-rule and IP-literal allows pass.
	Resolver Resolver
	// Log receives one record per decision. It must not block (a
	// telemetry.DecisionLog's Log does not). Nil drops them.
	Log func(telemetry.Record)
	// Logger gets operational messages (upstream failures, reroutes).
	// Nil discards them.
	Logger *slog.Logger
	// Latency, if set, sees the time from taking a connection (or an
	// explicit request) to its decision — for an allowed one, including
	// the upstream connect — e.g. for a metrics histogram. It runs on the
	// connection's goroutine and must not block.
	Latency func(allowed bool, d time.Duration)

	// OriginalDst returns the destination a transparent connection was
	// for. Nil means the kernel's answer (originalDst: SO_ORIGINAL_DST
	// or the TPROXY local address). Tests set a fixed one.
	// It gets the client's address and the local address it reached.
	OriginalDst func(src, local netip.AddrPort) (netip.AddrPort, error)
	// Dial connects upstream. Nil means a net.Dialer (without TCP
	// keep-alive: the idle timeout covers dead peers) bounded by
	// DialTimeout.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Spoof is what to do when a destination is not an address of its name.
	Spoof SpoofPolicy

	// HelloTimeout bounds reading the ClientHello or the request head
	// (slowloris). Default DefaultHelloTimeout.
	HelloTimeout time.Duration
	// DialTimeout bounds one upstream connection attempt.
	DialTimeout time.Duration
	// Mark, when non-zero, is the netfilter mark (SO_MARK) of every
	// upstream connection the proxy opens, so that the data plane can
	// tell them from the gateway's other connections (in an HA pair they
	// are source-translated to the public IP, the rest keep the gateway's
	// own address: nft.HA.ProxyMark). Setting it needs CAP_NET_ADMIN.
	Mark uint32
	// ResolveTimeout bounds the fresh lookup of a name.
	ResolveTimeout time.Duration
	// IdleTimeout closes a spliced connection that moved no data in either
	// direction for this long. Negative disables it.
	IdleTimeout time.Duration
	// MaxConns limits connections in all; MaxConnsPerSource limits them
	// per client address, MaxConnsPerPrefix per client network (/24 for
	// IPv4, /64 for IPv6). At a full global or network limit the heaviest
	// sources are shed first (limits.go). Negative disables a limit.
	MaxConns          int
	MaxConnsPerSource int
	MaxConnsPerPrefix int
	// Loops is the number of event loops serving a transparent listener
	// (evloop.go); 0 means DefaultLoops: half the CPUs (GOMAXPROCS),
	// rounded up.
	Loops int
	// MaxClientHello limits the ClientHello message (default
	// DefaultMaxClientHello); MaxHTTPHead the request head (default
	// DefaultMaxHTTPHead). Together they size the per-connection buffer.
	MaxClientHello int
	MaxHTTPHead    int
	// HTTPKeepAlive, when false (the default), makes every plain-HTTP
	// request its own connection: the proxy sets "Connection: close" on
	// the request it forwards, so that a second request for another Host
	// cannot ride on an approved connection. When true, transparent HTTP
	// bytes are replayed unchanged (and later requests on the connection
	// are not inspected).
	HTTPKeepAlive bool
}

// ErrClosed is returned by Serve after Close.
var ErrClosed = errors.New("proxy: closed")

// Proxy is the transparent and explicit L7 proxy. Its methods are safe for
// concurrent use.
type Proxy struct {
	cfg     Config
	matcher atomic.Pointer[match.Matcher]
	logger  *slog.Logger
	bufSize int
	bufs    sync.Pool
	// dialer connects upstream when Config.Dial is nil. No TCP
	// keep-alive: the idle timeout closes connections to dead peers, and
	// keep-alive would cost four setsockopt(2)s per connection.
	dialer net.Dialer
	ctx    context.Context
	cancel context.CancelFunc

	// redecideMu serialises Redecide.
	redecideMu sync.Mutex

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	loops     map[*loop]struct{} // the transparent listeners' event loops
	sessions  map[*session]struct{}
	lim       *fairshare.Limiter // the connection limits (limits.go)
	active    int                // sessions and event-loop connections
	wg        sync.WaitGroup

	stats struct {
		accepted, limited, idleClosed, allowed, denied, cut, shed, panics atomic.Uint64
		// futile: the event loops' pumps that found a direction's
		// destination still full and moved nothing (evloop.go pauseSrc
		// keeps them rare); read by tests.
		futile atomic.Uint64
	}
}

// Stats are the proxy's counters.
type Stats struct {
	Active   int    // connections being handled
	Accepted uint64 // connections admitted
	Limited  uint64 // connections refused by a connection limit
	Shed     uint64 // connections closed to make room for a lighter source (limits.go)
	Panics   uint64 // connections ended by a recovered panic (recover.go)
	// The limits and what the heaviest source and network hold now.
	MaxConns, MaxConnsPerSource, MaxConnsPerPrefix int
	HeaviestSource, HeaviestPrefix                 int
	// Refusals by limit.
	RefusedSource, RefusedPrefix, RefusedGlobal uint64
	Allowed                                     uint64 // decisions that allowed
	Denied                                      uint64 // decisions that denied (rules, spoofing, bad input)
	IdleClosed                                  uint64 // spliced connections closed by the idle timeout
	Cut                                         uint64 // open connections closed because a new policy denies them (Redecide)
}

// New returns a proxy for cfg. It does not listen: pass listeners to Serve
// (transparent) and ServeExplicit.
func New(cfg Config) *Proxy {
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = DefaultHelloTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ResolveTimeout <= 0 {
		cfg.ResolveTimeout = DefaultResolveTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerSource == 0 {
		cfg.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if cfg.MaxConnsPerPrefix == 0 {
		cfg.MaxConnsPerPrefix = DefaultMaxConnsPerPrefix
	}
	if cfg.MaxClientHello <= 0 {
		cfg.MaxClientHello = DefaultMaxClientHello
	}
	if cfg.MaxHTTPHead <= 0 {
		cfg.MaxHTTPHead = DefaultMaxHTTPHead
	}
	if cfg.Log == nil {
		cfg.Log = func(telemetry.Record) {}
	}
	p := &Proxy{
		cfg:       cfg,
		logger:    cfg.Logger,
		bufSize:   max(maxPeek(cfg.MaxClientHello), cfg.MaxHTTPHead),
		listeners: map[net.Listener]struct{}{},
		loops:     map[*loop]struct{}{},
		sessions:  map[*session]struct{}{},
		lim:       fairshare.New(cfg.MaxConns, cfg.MaxConnsPerSource, cfg.MaxConnsPerPrefix),
	}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	p.bufs.New = func() any { b := make([]byte, p.bufSize); return &b }
	p.dialer.KeepAlive = -1
	if mark := cfg.Mark; mark != 0 {
		p.dialer.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = setMark(int(fd), mark) }); err != nil {
				return err
			}
			return serr
		}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if cfg.Matcher != nil {
		p.matcher.Store(cfg.Matcher)
	}
	return p
}

// SetMatcher swaps the compiled policy. Connections already decided keep
// going; the next decision uses m. Redecide also decides the open
// connections again.
func (p *Proxy) SetMatcher(m *match.Matcher) { p.matcher.Store(m) }

// Matcher returns the current compiled policy.
func (p *Proxy) Matcher() *match.Matcher { return p.matcher.Load() }

// Listen listens on a TCP address for Serve or ServeExplicit, like
// net.Listen but without TCP keep-alive on the accepted connections (the
// proxy's idle timeout covers dead peers; Go's default keep-alive costs
// four setsockopt(2)s per connection).
func Listen(network, address string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), network, address)
}

// Serve accepts transparent connections on ln until the proxy is closed.
// Every connection must have been steered here by the kernel; its
// original destination comes from Config.OriginalDst. The proxy takes ln
// over: its event loops serve a duplicate of the socket, and ln itself is
// closed once they run.
func (p *Proxy) Serve(ln net.Listener) error { return p.serve(ln, false) }

// ServeExplicit accepts explicit-proxy connections (HTTP CONNECT and
// absolute-URI requests) on ln.
func (p *Proxy) ServeExplicit(ln net.Listener) error { return p.serve(ln, true) }

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	active := p.active
	ha, hp := p.lim.Heaviest()
	ra, rp, rt, _ := p.lim.Refused()
	p.mu.Unlock()
	return Stats{
		Active: active, Accepted: p.stats.accepted.Load(), Limited: p.stats.limited.Load(),
		Allowed: p.stats.allowed.Load(), Denied: p.stats.denied.Load(), IdleClosed: p.stats.idleClosed.Load(),
		Cut:  p.stats.cut.Load(),
		Shed: p.stats.shed.Load(), Panics: p.stats.panics.Load(),
		MaxConns: p.cfg.MaxConns, MaxConnsPerSource: p.cfg.MaxConnsPerSource, MaxConnsPerPrefix: p.cfg.MaxConnsPerPrefix,
		HeaviestSource: ha, HeaviestPrefix: hp, RefusedSource: ra, RefusedPrefix: rp, RefusedGlobal: rt,
	}
}

// Close stops every listener, closes every connection and waits for the
// handlers to return.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	lns := make([]net.Listener, 0, len(p.listeners))
	for ln := range p.listeners {
		lns = append(lns, ln)
	}
	ss := make([]*session, 0, len(p.sessions))
	for s := range p.sessions {
		ss = append(ss, s)
	}
	p.mu.Unlock()
	p.cancel()
	for _, ln := range lns {
		ln.Close()
	}
	for _, s := range ss {
		s.closeAll()
	}
	p.wg.Wait()
	return nil
}

// Start begins serving transparent connections on ln, as Serve does, and
// returns once its event loops run: an error means nothing was started.
// done receives Serve's result (ErrClosed after Close) when serving ends.
func (p *Proxy) Start(ln net.Listener) (done <-chan error, err error) {
	untrack, err := p.track(ln)
	if err != nil {
		return nil, err
	}
	wait, err := p.startTransparent(ln)
	if err != nil {
		untrack()
		return nil, err
	}
	ch := make(chan error, 1)
	go func() {
		defer untrack()
		ch <- wait()
	}()
	return ch, nil
}

// track registers a listener Close closes; untrack forgets it.
func (p *Proxy) track(ln net.Listener) (untrack func(), err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	p.listeners[ln] = struct{}{}
	return func() {
		p.mu.Lock()
		delete(p.listeners, ln)
		p.mu.Unlock()
	}, nil
}

// startTransparent starts the event loops of a transparent listener.
func (p *Proxy) startTransparent(ln net.Listener) (wait func() error, err error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("proxy: transparent mode needs a TCP listener (a kernel socket for the original destination), not %T", ln)
	}
	lnAddr, _ := addrPortOf(ln.Addr())
	return p.startLoops(tl, lnAddr)
}

func (p *Proxy) serve(ln net.Listener, explicit bool) error {
	untrack, err := p.track(ln)
	if err != nil {
		return err
	}
	defer untrack()
	if !explicit {
		wait, err := p.startTransparent(ln)
		if err != nil {
			return err
		}
		return wait()
	}
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return ErrClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE and the like: back off as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.logger.Warn("proxy: accept failed; retrying", "err", err, "delay", backoff)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return ErrClosed
			}
			continue
		}
		backoff = 0
		src, _ := addrPortOf(c.RemoteAddr())
		s, reason := p.admit(c, src)
		if s == nil {
			p.reject(c, src, reason)
			continue
		}
		go func() {
			defer p.finish(s)
			defer p.recoverSession(s)
			p.handleExplicit(s)
		}()
	}
}

// session is one client connection and, once dialled, its upstream.
type session struct {
	client net.Conn
	src    netip.AddrPort
	h      fairshare.Handle // its place in the limiter (limits.go)

	mu       sync.Mutex
	upstream net.Conn
	closed   bool
	// Once allowed (session.decided): the request, the address dialled and
	// the matcher that allowed it, for Redecide.
	req    request
	dialed netip.AddrPort
	m      *match.Matcher
}

// setUpstream records the upstream connection; it returns false (and
// closes up) when the session was closed meanwhile.
func (s *session) setUpstream(up net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		up.Close()
		return false
	}
	s.upstream = up
	return true
}

func (s *session) closeAll() {
	s.mu.Lock()
	s.closed = true
	up := s.upstream
	s.mu.Unlock()
	s.client.Close()
	if up != nil {
		up.Close()
	}
}

// admit applies the connection limits and registers the session.
func (p *Proxy) admit(c net.Conn, src netip.AddrPort) (*session, string) {
	s := &session{client: c, src: src}
	s.h.Owner = s
	p.mu.Lock()
	defer p.mu.Unlock()
	if reason := p.admitLocked(&s.h, src); reason != "" {
		return nil, reason
	}
	p.sessions[s] = struct{}{}
	return s, ""
}

// admitLocked applies the connection limits to a connection from src
// (limits.go), counts it in h and, when a heavier source must make room,
// sheds one of its connections; releaseLocked undoes it. It returns why
// it refused, or "".
func (p *Proxy) admitLocked(h *fairshare.Handle, src netip.AddrPort) string {
	defer recovery.Critical("proxy connection accounting")
	if p.closed {
		return "proxy is shutting down"
	}
	victim, reason := p.lim.Admit(h, src.Addr())
	if reason != fairshare.OK {
		return limitReason(reason)
	}
	p.active++
	p.wg.Add(1)
	p.stats.accepted.Add(1)
	if victim != nil {
		p.shedLocked(victim)
	}
	return ""
}

func (p *Proxy) releaseLocked(h *fairshare.Handle) {
	defer recovery.Critical("proxy connection accounting")
	p.lim.Release(h)
	p.active--
	p.wg.Done()
}

// shedLocked closes a connection the limiter gave up to make room for a
// lighter source: on its event loop, or by closing a session's sockets.
func (p *Proxy) shedLocked(v *fairshare.Handle) {
	p.stats.shed.Add(1)
	switch o := v.Owner.(type) {
	case *lconn:
		l, c := o.loop, o
		l.post(func() {
			if c.state != stClosed {
				l.cur = c
				l.shed(c)
			}
		})
	case *session:
		p.logShed(o.src)
		o.closeAll()
	}
}

func (p *Proxy) finish(s *session) {
	s.closeAll()
	p.mu.Lock()
	delete(p.sessions, s)
	p.releaseLocked(&s.h)
	p.mu.Unlock()
}

// logShed writes the decision line of a shed connection.
func (p *Proxy) logShed(src netip.AddrPort) {
	p.stats.denied.Add(1)
	p.cfg.Log(telemetry.Record{
		Time: time.Now().UTC(), Category: telemetry.CategoryApplicationRule, Source: "proxy",
		SourceIp: src.Addr().String(), SourcePort: int(src.Port()),
		Action: "Deny", ActionReason: reasonShed, Policy: p.policyName(p.matcher.Load()),
	})
}

// reject refuses a connection over a limit: a reset (no lingering state),
// and one log line.
func (p *Proxy) reject(c net.Conn, src netip.AddrPort, reason string) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
	p.logRejected(src, reason)
}

// logRejected counts and logs a connection refused by a limit.
func (p *Proxy) logRejected(src netip.AddrPort, reason string) {
	p.stats.limited.Add(1)
	p.stats.denied.Add(1)
	p.cfg.Log(telemetry.Record{
		Time: time.Now().UTC(), Category: telemetry.CategoryApplicationRule, Source: "proxy",
		SourceIp: src.Addr().String(), SourcePort: int(src.Port()),
		Action: "Deny", ActionReason: reason, Policy: p.policyName(p.matcher.Load()),
	})
}

func (p *Proxy) policyName(m *match.Matcher) string {
	if m == nil || m.Policy() == nil {
		return ""
	}
	return m.Policy().Name
}

func (p *Proxy) getBuf() *[]byte  { return p.bufs.Get().(*[]byte) }
func (p *Proxy) putBuf(b *[]byte) { p.bufs.Put(b) }

// dialAny connects to the first of addrs that answers.
func (p *Proxy) dialAny(addrs []netip.AddrPort) (net.Conn, netip.AddrPort, error) {
	var firstErr error
	for _, a := range addrs {
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.DialTimeout)
		dial := p.cfg.Dial
		if dial == nil {
			// Not DialTCP: with no local address it still binds one,
			// an extra bind(2).
			dial = p.dialer.DialContext
		}
		c, err := dial(ctx, "tcp", a.String())
		cancel()
		if err == nil {
			return c, a, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = errors.New("no address to dial")
	}
	return nil, netip.AddrPort{}, firstErr
}

// splice replays nothing: the caller has written the peeked bytes. It
// copies both directions until both are done, with half-close: when one
// side ends its stream, the other side's write half is shut and the other
// direction goes on.
func (p *Proxy) splice(s *session, client, up net.Conn) {
	stop := p.watchIdle(s, client)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer p.recoverSession(s)
		pipe(up, client, p.cfg.IdleTimeout, stop == nil)
	}()
	pipe(client, up, p.cfg.IdleTimeout, stop == nil)
	<-done
	if stop != nil {
		stop()
	}
}

// pipe copies src to dst. Between two *net.TCPConn, it copies the first
// small reads through user space (copySmall) and then
// (*TCPConn).ReadFrom moves the bytes with splice(2) through a pipe, never
// through user space. At EOF it shuts dst's write half; on an error it
// closes both.
func pipe(dst, src net.Conn, idle time.Duration, userspaceIdle bool) {
	var err error
	switch {
	case userspaceIdle && idle > 0:
		err = copyIdle(dst, src, idle)
	default:
		tc, ok := dst.(*net.TCPConn)
		if !ok {
			_, err = io.Copy(dst, src)
			break
		}
		if sc, ok := src.(*net.TCPConn); ok {
			var done bool
			if done, err = copySmall(tc, sc); done {
				break
			}
		}
		_, err = tc.ReadFrom(src)
	}
	if err != nil {
		dst.Close()
		src.Close()
		return
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		if shutdownWrite(tc) == nil {
			return
		}
	} else if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
}

// shutdownWrite is (*net.TCPConn).CloseWrite as a raw system call (see
// copySmall): shutdown(2) does not block.
func shutdownWrite(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if _, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, fd, unix.SHUT_WR, 0); e != 0 {
			serr = os.NewSyscallError("shutdown", e)
		}
	}); err != nil {
		return err
	}
	return serr
}

// Splicing starts when a read fills a copy buffer or after
// smallCopyMax bytes.
const (
	copyBufSize  = 16 << 10
	smallCopyMax = 256 << 10
)

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copySmall copies src to dst through user space while the reads are
// small: the first bytes of a connection (TLS handshake flights, HTTP
// heads, short responses) cost fewer CPU cycles with read(2)/write(2) than
// with splice(2), which takes each of them through a pipe (HAProxy's
// "splice-auto" decides the same way). It returns done=false, to splice
// the rest, once a read fills the buffer (a bulk transfer) or after
// smallCopyMax bytes; done=true at EOF (err nil) or on an error. The
// buffer comes from a pool for the read and write only: a connection
// waiting for data holds none.
//
// The reads and writes are raw system calls on the non-blocking sockets
// (rawRead, rawWrite): they return at once, with EAGAIN when they would
// block, and the runtime's poller does the waiting. Skipping the
// scheduler's syscall bookkeeping matters here: a goroutine entering a
// system call after the process was idle wakes the runtime's sysmon
// thread, which then polls every 20 µs; with a wake-up for every
// handshake message that thread cost about a fifth of the proxy's CPU.
func copySmall(dst, src *net.TCPConn) (done bool, err error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return false, nil
	}
	wc, err := dst.SyscallConn()
	if err != nil {
		return false, nil
	}
	for total := 0; total < smallCopyMax; {
		var bp *[]byte
		n, err := rawRead(rc, func() []byte { bp = copyBufs.Get().(*[]byte); return *bp }, func() { copyBufs.Put(bp); bp = nil })
		if err != nil || n == 0 {
			if bp != nil {
				copyBufs.Put(bp)
			}
			return true, err // n == 0: EOF
		}
		werr := rawWrite(wc, (*bp)[:n])
		full := n == len(*bp)
		copyBufs.Put(bp)
		if werr != nil {
			return true, werr
		}
		total += n
		if full {
			break
		}
	}
	return false, nil
}

// rawRead reads once from the socket of rc into the buffer get returns,
// waiting (with the runtime's poller, honouring the read deadline) until
// there is something to read; put is called when the buffer was not used.
// n == 0 with a nil error is EOF.
func rawRead(rc syscall.RawConn, get func() []byte, put func()) (n int, err error) {
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		b := get()
		for {
			r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case 0:
				n = int(r)
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				put()
				return false
			default:
				rerr = os.NewSyscallError("read", e)
			}
			return true
		}
	})
	if err == nil {
		err = rerr
	}
	return n, err
}

// rawWrite writes all of b to the socket of wc (see rawRead).
func rawWrite(wc syscall.RawConn, b []byte) error {
	var werr error
	err := wc.Write(func(fd uintptr) bool {
		for len(b) > 0 {
			r, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
			switch e {
			case 0:
				b = b[r:]
				continue
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			werr = os.NewSyscallError("write", e)
			return true
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return err
}

// copyIdle is the fallback for connections that are not kernel TCP
// sockets (no TCP_INFO): a user-space copy with a read deadline.
func copyIdle(dst, src net.Conn, idle time.Duration) error {
	buf := make([]byte, 32<<10)
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// watchIdle closes the session when TCP_INFO says the client socket moved
// no data for IdleTimeout. It returns nil (the caller then uses copyIdle)
// when the client is not a kernel TCP socket, and a no-op when the idle
// timeout is off.
func (p *Proxy) watchIdle(s *session, client net.Conn) (stop func()) {
	idle := p.cfg.IdleTimeout
	if idle <= 0 {
		return func() {}
	}
	if _, ok := client.(*net.TCPConn); !ok {
		return nil // no TCP_INFO
	}
	var mu sync.Mutex
	var t *time.Timer
	stopped := false
	check := func() {
		ms, ok := tcpIdle(client)
		if !ok {
			return // closed meanwhile
		}
		quiet := time.Duration(ms) * time.Millisecond
		if quiet >= idle {
			p.stats.idleClosed.Add(1)
			s.closeAll()
			return
		}
		mu.Lock()
		if !stopped {
			t.Reset(idle - quiet)
		}
		mu.Unlock()
	}
	mu.Lock()
	t = time.AfterFunc(idle, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

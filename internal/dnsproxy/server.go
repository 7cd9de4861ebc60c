package dnsproxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/fairshare"
	"github.com/clusterwall/clusterwall/internal/recovery"
)

// Listener holds the proxy's sockets: several UDP sockets bound to the same
// address with SO_REUSEPORT (the kernel spreads clients over them, one
// reader goroutine each) and one TCP listener.
type Listener struct {
	UDP []*net.UDPConn
	TCP *net.TCPListener
}

// Listen opens the proxy's sockets on addr ("IP:port"; port 0 picks a free
// one, the same for UDP and TCP). udpSockets <= 0 means one per CPU.
// Listen on a specific address: replies leave from the socket's address, so
// a wildcard address on a multi-homed host could answer from the wrong one.
func Listen(addr string, udpSockets int) (*Listener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	if udpSockets <= 0 {
		udpSockets = runtime.GOMAXPROCS(0)
	}
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			if strings.HasPrefix(network, "udp") {
				// Room for bursts while the readers are descheduled (a
				// loaded host, a flood): queries beyond it are dropped by
				// the kernel. SO_RCVBUFFORCE (CAP_NET_ADMIN) passes
				// net.core.rmem_max; without it the default stays.
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpReadBuffer)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ctx := context.Background()
	for attempt := 0; ; attempt++ {
		l, err := listenOnce(ctx, lc, ap, udpSockets)
		if err == nil {
			return l, nil
		}
		// With port 0 the kernel picked a UDP port whose TCP twin may be
		// taken: try another.
		if ap.Port() != 0 || attempt >= 10 {
			return nil, err
		}
	}
}

func listenOnce(ctx context.Context, lc net.ListenConfig, ap netip.AddrPort, n int) (*Listener, error) {
	l := &Listener{}
	pc, err := lc.ListenPacket(ctx, "udp", ap.String())
	if err != nil {
		return nil, err
	}
	first := pc.(*net.UDPConn)
	l.UDP = append(l.UDP, first)
	bound := first.LocalAddr().(*net.UDPAddr).AddrPort()
	port := bound.Port()
	at := netip.AddrPortFrom(ap.Addr(), port).String()
	for len(l.UDP) < n {
		pc, err := lc.ListenPacket(ctx, "udp", at)
		if err != nil {
			l.Close()
			return nil, err
		}
		l.UDP = append(l.UDP, pc.(*net.UDPConn))
	}
	tl, err := net.Listen("tcp", at)
	if err != nil {
		l.Close()
		return nil, err
	}
	l.TCP = tl.(*net.TCPListener)
	return l, nil
}

// Addr is the address the proxy listens on.
func (l *Listener) Addr() netip.AddrPort {
	return l.UDP[0].LocalAddr().(*net.UDPAddr).AddrPort()
}

// Close closes all sockets.
func (l *Listener) Close() error {
	var errs []error
	for _, c := range l.UDP {
		errs = append(errs, c.Close())
	}
	if l.TCP != nil {
		errs = append(errs, l.TCP.Close())
	}
	return errors.Join(errs...)
}

// ListenAndServe listens on addr and serves until ctx is done.
func (p *Proxy) ListenAndServe(ctx context.Context, addr string) error {
	l, err := Listen(addr, 0)
	if err != nil {
		return err
	}
	return p.Serve(ctx, l)
}

// Serve answers queries on l until ctx is done, then closes l and waits
// for the queries being served. It also runs the upstream health checks.
func (p *Proxy) Serve(ctx context.Context, l *Listener) error {
	wait, err := p.Start(ctx, l)
	if err != nil {
		return err
	}
	return wait()
}

// Start starts serving l as Serve does and returns once every socket is
// being served; an error means nothing was started (l is closed). wait
// blocks until ctx is done and everything Start started has returned.
func (p *Proxy) Start(ctx context.Context, l *Listener) (wait func() error, err error) {
	batchers := make([]*udpBatcher, len(l.UDP))
	for i, c := range l.UDP {
		if batchers[i], err = newUDPBatcher(c, udpBatch, maxUDPQuery); err != nil {
			l.Close()
			return nil, fmt.Errorf("dns udp socket %s unusable: %w", c.LocalAddr(), err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { p.healthLoop(ctx) })
	for i, c := range l.UDP {
		wg.Go(func() { p.serveUDP(ctx, c, batchers[i], &wg) })
	}
	conns := &connSet{m: map[net.Conn]struct{}{}}
	if l.TCP != nil {
		wg.Go(func() { p.serveTCP(ctx, l.TCP, conns, &wg) })
	}
	return func() error {
		defer cancel()
		<-ctx.Done()
		l.Close()
		conns.closeAll()
		wg.Wait()
		return nil
	}, nil
}

// udpReadBuffer is each UDP socket's receive buffer (kernel memory; one
// socket per CPU).
const udpReadBuffer = 4 << 20

// udpBatch is how many datagrams one recvmmsg/sendmmsg moves at most.
const udpBatch = 32

// udpReadRetries is how many more times a reader tries recvmmsg after
// EAGAIN before it parks (see udpBatcher).
const udpReadRetries = 0

// maxUDPQuery bounds a UDP query; larger datagrams (truncated on read) are
// dropped.
const maxUDPQuery = 4096

// serveUDP reads queries in batches (recvmmsg), answers cache hits inline
// and sends the answers of a batch together (sendmmsg); queries that must
// wait for an upstream or a hook are handed to goroutines, bounded by
// MaxInflight. The batches move with raw system calls (udpBatcher).
func (p *Proxy) serveUDP(ctx context.Context, c *net.UDPConn, b *udpBatcher, wg *sync.WaitGroup) {
	// A query's panic is recovered in serveWire; one in the batching
	// around it drops the batch and the reader starts again.
	for !p.serveUDPBatches(ctx, c, b, wg) {
	}
}

// serveUDPBatches is serveUDP's loop; it returns false after a recovered
// panic (to be called again), true when the socket or ctx is done.
func (p *Proxy) serveUDPBatches(ctx context.Context, c *net.UDPConn, b *udpBatcher, wg *sync.WaitGroup) (done bool) {
	defer func() {
		if v := recover(); v != nil {
			recovery.Report(p.log, recovery.DNS, v, "udp reader", c.LocalAddr().String())
			p.panics.Add(1)
			done = ctx.Err() != nil
		}
	}()
	b.retries = udpReadRetries
	outBufs := make([][]byte, udpBatch)
	for i := range outBufs {
		outBufs[i] = make([]byte, 0, 1232)
	}
	var r request
	var backoff time.Duration
	for {
		n, err := b.readBatch()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return true
			}
			// E.g. ENOMEM: wait a little rather than spin, as serveTCP does.
			if backoff == 0 {
				p.log.Warn("dns udp read failed; retrying with backoff", "addr", c.LocalAddr(), "err", err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-ctx.Done():
				return true
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		k := 0
		for i := range n {
			wire, src, ok := b.message(i)
			if !ok {
				continue
			}
			resp, deferred := p.serveWire(ctx, &r, wire, src, "udp", true, outBufs[k][:0])
			if deferred {
				resp = p.deferUDP(ctx, c, wg, &r, wire, src, outBufs[k][:0])
			}
			if len(resp) == 0 {
				continue
			}
			outBufs[k] = resp[:0]
			b.setReply(k, i, resp)
			k++
		}
		for sent := 0; sent < k; {
			w, err := b.writeBatch(sent, k)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return true
				}
				// Skip the message that failed (e.g. an unreachable
				// client) and go on with the rest.
				w = 1
			}
			sent += w
		}
	}
}

// deferUDP hands a query to a goroutine. When MaxInflight queries are
// already waiting, the source with the most of them gives up its oldest
// (fairshare: it gets SERVFAIL) if this client waits for fewer; otherwise
// this one gets SERVFAIL at once. So a client flooding names whose
// servers are slow fills the budget with its own queries only.
func (p *Proxy) deferUDP(ctx context.Context, c *net.UDPConn, wg *sync.WaitGroup, r *request, wire []byte, src netip.AddrPort, dst []byte) []byte {
	w := &waiting{}
	w.h.Owner = w
	qctx, cancel := context.WithCancelCause(ctx)
	w.cancel = cancel
	if !p.admitQuery(w, src.Addr()) {
		cancel(nil)
		p.overloaded.Add(1)
		return p.serveOverloaded(r, wire, src, "udp", dst)
	}
	wire = append([]byte(nil), wire...)
	wg.Go(func() {
		defer p.releaseQuery(w)
		defer cancel(nil)
		var r request
		resp, _ := p.serveWire(qctx, &r, wire, src, "udp", false, make([]byte, 0, 512))
		if resp != nil {
			c.WriteToUDPAddrPort(resp, src)
		}
	})
	return nil
}

// waiting is a query waiting for upstreams.
type waiting struct {
	h      fairshare.Handle
	cancel context.CancelCauseFunc
}

// errShed ends a query shed to make room for a lighter client.
var errShed = errors.New("shed: too many queries waiting for upstreams, and this client had the most")

// admitQuery counts w against MaxInflight (fairshare); false: refused.
func (p *Proxy) admitQuery(w *waiting, src netip.Addr) bool {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	defer recovery.Critical("dns query accounting")
	if max := p.cfg.Load().maxInflight; max != p.qmax {
		p.queries.SetLimits(max, -1, -1)
		p.qmax = max
	}
	victim, reason := p.queries.Admit(&w.h, src)
	if reason != fairshare.OK {
		return false
	}
	p.inflight.Add(1)
	if victim != nil {
		p.inflight.Add(-1)
		p.shedQueries.Add(1)
		victim.Owner.(*waiting).cancel(errShed)
	}
	return true
}

func (p *Proxy) releaseQuery(w *waiting) {
	p.qmu.Lock()
	defer p.qmu.Unlock()
	defer recovery.Critical("dns query accounting")
	if w.h.Counted() {
		p.queries.Release(&w.h)
		p.inflight.Add(-1)
	}
}

// connSet tracks TCP connections so Serve can close them on shutdown.
type connSet struct {
	mu     sync.Mutex
	m      map[net.Conn]struct{}
	closed bool
}

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.m[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.m {
		c.Close()
	}
}

func (p *Proxy) serveTCP(ctx context.Context, l *net.TCPListener, conns *connSet, wg *sync.WaitGroup) {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// E.g. EMFILE: wait a little rather than spin.
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if n := p.tcpConns.Add(1); n > int64(p.cfg.Load().maxTCP) {
			p.tcpConns.Add(-1)
			p.tcpRefused.Add(1)
			p.log.Debug("dns tcp connection refused: limit reached", "client", c.RemoteAddr(), "conns", n-1)
			c.Close()
			continue
		}
		if !conns.add(c) {
			p.tcpConns.Add(-1)
			c.Close()
			return
		}
		wg.Go(func() {
			defer p.tcpConns.Add(-1)
			defer conns.remove(c)
			defer c.Close()
			defer func() {
				if v := recover(); v != nil {
					recovery.Report(p.log, recovery.DNS, v, "client", c.RemoteAddr().String(), "proto", "tcp")
					p.panics.Add(1)
				}
			}()
			p.serveConn(ctx, c)
		})
	}
}

// serveConn answers length-prefixed queries on one TCP connection, one at a
// time. Each query must arrive whole within TCPIdle; a frame too short for
// a DNS header or a message that deserves no answer closes the connection.
// Memory per connection is bounded by one 64 KiB frame.
func (p *Proxy) serveConn(ctx context.Context, c *net.TCPConn) {
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	var r request
	var hdr [2]byte
	var buf []byte
	out := make([]byte, 0, 512)
	frame := make([]byte, 0, 514)
	for ctx.Err() == nil {
		cfg := p.cfg.Load()
		c.SetReadDeadline(time.Now().Add(cfg.tcpIdle))
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if n < headerLen {
			return
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		resp, _ := p.serveWire(ctx, &r, buf, src, "tcp", false, out[:0])
		if resp == nil || len(resp) > 65535 {
			return
		}
		out = resp[:0]
		frame = binary.BigEndian.AppendUint16(frame[:0], uint16(len(resp)))
		frame = append(frame, resp...)
		c.SetWriteDeadline(time.Now().Add(cfg.tcpIdle))
		if _, err := c.Write(frame); err != nil {
			return
		}
	}
}

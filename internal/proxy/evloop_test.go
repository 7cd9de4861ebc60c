package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// TestUpstreamUnreachable: an allowed connection whose upstream refuses
// gets a TLS internal_error alert or an HTTP 502 naming the address, and
// the proxy forgets it (no connection left counted).
func TestUpstreamUnreachable(t *testing.T) {
	f := newFixture(t)
	closedTLS := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), f.good.addr.Port())
	closedWeb := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), f.web.addr.Port())

	e := startProxy(t, f.config(t, closedTLS))
	_, err := tlsGet(t, e.addr, "127.0.0.3")
	if err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("TLS to a closed port: err = %v, want a TLS internal_error alert", err)
	}
	e.sink.wait(t, "allow line", func(r telemetry.Record) bool {
		return r.Action == "Allow" && r.ResolvedDestinationIp == "127.0.0.3" && r.Category == telemetry.CategoryNetworkRule
	})

	e2 := startProxy(t, f.config(t, closedWeb))
	resp, body, err := rawHTTP(t, e2.addr, fmt.Sprintf("GET / HTTP/1.1\r\nHost: 127.0.0.3:%d\r\n\r\n", closedWeb.Port()))
	if err != nil {
		t.Fatalf("HTTP to a closed port: %v", err)
	}
	if resp.StatusCode != 502 || !strings.Contains(body, "cannot connect to "+closedWeb.String()) {
		t.Fatalf("HTTP to a closed port: %d %q, want 502 naming %s", resp.StatusCode, body, closedWeb)
	}
	for _, p := range []*Proxy{e.p, e2.p} {
		waitFor(t, "no active connection", func() bool { return p.Stats().Active == 0 })
	}
}

// TestServeNeedsTCPListener: transparent mode reads the original
// destination from the kernel socket; another listener is refused.
func TestServeNeedsTCPListener(t *testing.T) {
	ln, err := Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := New(Config{})
	defer p.Close()
	var n atomic.Int64
	err = p.Serve(countingListener{ln, &n})
	if err == nil || !strings.Contains(err.Error(), "needs a TCP listener") {
		t.Fatalf("Serve(wrapped listener) = %v, want an error naming the TCP listener", err)
	}
}

// FuzzTransparentConn sends arbitrary first bytes, in two writes, through
// a real event loop: whatever they are, the proxy ends the connection
// (an answer, an alert, a relay to the upstream that then closes, or a
// plain close) well before the client's deadline, and keeps serving.
func FuzzTransparentConn(f *testing.F) {
	good := startUpstream(f, "good", "127.0.0.1:0", true)
	web := startUpstream(f, "web", "127.0.0.1:0", false)
	e := startProxy(f, Config{
		Matcher:      testPolicy(f, good.addr.Port(), web.addr.Port()),
		Resolver:     StaticResolver{"ok.test": {netip.MustParseAddr("127.0.0.1")}},
		OriginalDst:  fixedDst(good.addr),
		HelloTimeout: 2 * time.Second,
	})
	for _, h := range seedHellos(f) {
		f.Add(h, uint16(len(h)/2))
	}
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n",
		"GET http://ok.test/ HTTP/1.1\r\nHost: ok.test\r\n\r\nbody",
		"CONNECT ok.test:443 HTTP/1.1\r\n\r\n",
		"\x16\x03\x01\x00\x05\x01\x00\x00\x01",
		"\x80\x2e\x01\x03\x01",
		"",
	} {
		f.Add([]byte(s), uint16(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
		if err != nil {
			buf := make([]byte, 1<<20)
			t.Fatalf("the proxy stopped accepting: %v\n%s", err, buf[:runtime.Stack(buf, true)])
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		at := min(int(split), len(data))
		c.Write(data[:at])
		c.Write(data[at:])
		c.(*net.TCPConn).CloseWrite()
		if _, err := io.Copy(io.Discard, c); isTimeout(err) {
			t.Fatalf("the proxy did not end the connection: %v", err)
		}
	})
}

// TestLoopNoLeaks: hundreds of concurrent connections of every kind —
// allowed and denied TLS and HTTP, garbage, clients that vanish in the
// middle of a ClientHello or reset after the relay began — leave nothing
// behind: no connection counted, no descriptor open, no pipe kept beyond
// the loops' small pools.
func TestLoopNoLeaks(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.good.addr)
	// Long enough that a client starved by a loaded machine (-race, 350
	// goroutines) still gets its ClientHello in; short enough that the
	// silent clients below are ended by it, not by their own deadline.
	cfg.HelloTimeout = 4 * time.Second
	e := startProxy(t, cfg)
	webCfg := f.config(t, f.web.addr)
	webCfg.HelloTimeout = 4 * time.Second
	ew := startProxy(t, webCfg)
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		return len(ents)
	}
	// One round first, so that pools, pipes and the runtime's own
	// descriptors exist before the baseline.
	hello := seedHellos(t)[0]
	kinds := []func() error{
		func() error { _, err := tlsGet(t, e.addr, "ok.test"); return err },
		func() error {
			if _, err := tlsGet(t, e.addr, "bad.test"); err == nil {
				return fmt.Errorf("bad.test allowed")
			}
			return nil
		},
		func() error {
			resp, _, err := rawHTTP(t, ew.addr, "GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n")
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			return err
		},
		func() error { // garbage
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("\x00\x01garbage"))
			_, err = io.Copy(io.Discard, c)
			return ignoreReset(err)
		},
		func() error { // half a ClientHello, then gone
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				return err
			}
			c.Write(hello[:len(hello)/2])
			return c.Close()
		},
		func() error { // a reset once the relay runs
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				return err
			}
			c.Write(hello)
			time.Sleep(5 * time.Millisecond)
			c.(*net.TCPConn).SetLinger(0)
			return c.Close()
		},
		func() error { // says nothing: the hello timeout ends it
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(15 * time.Second))
			_, err = io.Copy(io.Discard, c)
			return ignoreReset(err)
		},
	}
	round := func(n int) {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := kinds[i%len(kinds)](); err != nil {
					errs <- fmt.Errorf("kind %d: %w", i%len(kinds), err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("connection: %v", err)
		}
		for _, p := range []*Proxy{e.p, ew.p} {
			waitFor(t, "no active connection", func() bool { return p.Stats().Active == 0 })
		}
	}
	round(len(kinds))
	before := fds()
	round(350)
	// Nothing here is spliced (no read fills a copy buffer), so the loops'
	// pipe pools stay empty; a few descriptors of slack for the runtime
	// and the test's own servers.
	const slack = 6
	waitFor(t, "descriptors back to the baseline", func() bool { return fds() <= before+slack })
	t.Logf("descriptors: %d before, %d after 350 connections", before, fds())
}

func ignoreReset(err error) error {
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return err
}

// TestLoopDefersAccept: the loops' listener has TCP_DEFER_ACCEPT (the
// kernel hands a connection over once its first bytes are there) and
// TCP_NODELAY (inherited by accepted sockets); a client that connects and
// sends nothing is still accepted — about a second later — and cut at the
// hello timeout with a decision line, and clients that speak are served
// meanwhile.
func TestLoopDefersAccept(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.good.addr)
	cfg.HelloTimeout = 300 * time.Millisecond
	e := startProxy(t, cfg)
	if _, err := tlsGet(t, e.addr, "ok.test"); err != nil {
		t.Fatal(err) // the loops are up
	}

	silent, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	if _, err := tlsGet(t, e.addr, "ok.test"); err != nil {
		t.Fatalf("a client that speaks, beside a silent one: %v", err)
	}
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := silent.Read(make([]byte, 1))
	if isTimeout(err) {
		t.Fatalf("the silent client was never accepted and cut (read %d, %v)", n, err)
	}
	if d := time.Since(start); d < cfg.HelloTimeout {
		t.Errorf("the silent client was cut after %v, before the hello timeout %v", d, cfg.HelloTimeout)
	}
	e.sink.wait(t, "hello timeout line", func(r telemetry.Record) bool {
		return strings.HasPrefix(r.ActionReason, "timed out reading the first bytes")
	})
	waitFor(t, "no active connection", func() bool { return e.p.Stats().Active == 0 })

	// The listener's options, read back from a loop's duplicate of it.
	lnfd := -1
	e.p.mu.Lock()
	for l := range e.p.loops {
		lnfd = l.lnfd
	}
	e.p.mu.Unlock()
	if v, err := syscall.GetsockoptInt(lnfd, syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT); err != nil || v == 0 {
		t.Errorf("listener TCP_DEFER_ACCEPT = %d, %v; want > 0", v, err)
	}
	if v, err := syscall.GetsockoptInt(lnfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY); err != nil || v != 1 {
		t.Errorf("listener TCP_NODELAY = %d, %v; want 1", v, err)
	}
}

// TestBlockingLoops: the loops block in epoll_wait on Ps of their own —
// the process has one P more per loop while they run and as many as
// before once Close returns. The garbage collector's stop-the-world is not
// held up by a loop blocked in the kernel (the runtime's preemption
// signal ends its epoll_wait; were EINTR retried there, each collection
// would wait for the loop's next sweep, up to 250 ms): with a connection
// open, 20 collections take a median under 50 ms. A loop with no
// connections parks on the runtime's poller, so an idle proxy costs no
// wake-ups (blocked in epoll_wait it was preempted by sysmon every 10-20
// ms: 200 context switches a second). With CW_PROXY_PARKED_LOOPS set the
// loops always park on the runtime's poller and the Ps stay as they were.
// Config.Loops sets the number of loops; by default half the CPUs.
func TestBlockingLoops(t *testing.T) {
	f := newFixture(t)
	hello := seedHellos(t)[0]
	switches := func() int64 { // the process's, all threads
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return ru.Nvcsw + ru.Nivcsw
	}
	for _, tc := range []struct {
		parked bool
		loops  int
	}{{false, 0}, {true, 0}, {false, 3}} {
		t.Run(fmt.Sprintf("parked=%v,loops=%d", tc.parked, tc.loops), func(t *testing.T) {
			if tc.parked {
				t.Setenv("CW_PROXY_PARKED_LOOPS", "1")
			}
			before := runtime.GOMAXPROCS(0)
			wantLoops := tc.loops
			if wantLoops == 0 {
				wantLoops = DefaultLoops() // half the Ps (other tests' loops may hold some)
			}
			cfg := f.config(t, f.good.addr)
			cfg.Loops = tc.loops
			cfg.HelloTimeout = 30 * time.Second // the loops' sweep every 250 ms
			e := startProxy(t, cfg)
			if _, err := tlsGet(t, e.addr, "ok.test"); err != nil {
				t.Fatal(err)
			}
			e.p.mu.Lock()
			loops, blocking := len(e.p.loops), 0
			for l := range e.p.loops {
				if l.block {
					blocking++
				}
			}
			e.p.mu.Unlock()
			want, wantProcs := loops, before+loops
			if tc.parked {
				want, wantProcs = 0, before
			}
			if loops != wantLoops || blocking != want || runtime.GOMAXPROCS(0) != wantProcs {
				t.Fatalf("%d loops (%d blocking), GOMAXPROCS %d (before %d); want %d loops (%d blocking), GOMAXPROCS %d", loops, blocking, runtime.GOMAXPROCS(0), before, wantLoops, want, wantProcs)
			}

			// Collections beside a loop that waits in epoll_wait for a
			// connection that has sent half its ClientHello.
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(hello[:len(hello)/2])
			waitFor(t, "the half hello accepted", func() bool { return e.p.Stats().Active == 1 })
			var took []time.Duration
			for range 20 {
				start := time.Now()
				runtime.GC()
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			if med := took[len(took)/2]; med > 50*time.Millisecond {
				t.Errorf("collections beside a waiting loop: median %v (all: %v), want < 50 ms", med, took)
			}
			c.Close()
			waitFor(t, "no active connection", func() bool { return e.p.Stats().Active == 0 })

			// Idle: nothing wakes.
			time.Sleep(100 * time.Millisecond)
			sw := switches()
			time.Sleep(time.Second)
			if n := switches() - sw; n > 60 {
				t.Errorf("idle proxy: %d context switches in a second, want few", n)
			}

			if _, err := tlsGet(t, e.addr, "ok.test"); err != nil {
				t.Fatalf("after the collections: %v", err)
			}
			e.p.Close()
			if n := runtime.GOMAXPROCS(0); n != before {
				t.Errorf("GOMAXPROCS %d once Close returned, want %d", n, before)
			}
		})
	}
}

// TestServeClosesListener: the proxy serves a duplicate of the listening
// socket and closes the listener it was given (left open, the runtime's
// poller woke a thread for every connection queued on it); connections
// are still served.
func TestServeClosesListener(t *testing.T) {
	f := newFixture(t)
	cfg := f.config(t, f.good.addr)
	cfg.Log = func(telemetry.Record) {}
	p := New(cfg)
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Start(ln); err != nil {
		t.Fatal(err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on the listener given to Start: %v, want net.ErrClosed", err)
	}
	if _, err := tlsGet(t, ln.Addr().String(), "ok.test"); err != nil {
		t.Fatal(err)
	}
}

// TestUpstreamAckRidesOnData: the proxy's connect to the upstream does not
// answer the SYN-ACK with a bare ACK; the ACK goes out with the client's
// first bytes (the ClientHello), so the upstream receives the handshake's
// SYN and then one segment that completes the connection and carries the
// data — not an ACK first and the data after it. Read back from the
// upstream's accepted socket (TCP_INFO: segments in, data segments in).
// After that the proxy acknowledges the server's data at once again (no
// delayed-ACK mode left over from the saved ACK: TCP_INFO unacked).
func TestUpstreamAckRidesOnData(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	up := netip.MustParseAddrPort(ln.Addr().String())
	e := startProxy(t, Config{
		Matcher:     testPolicy(t, up.Port(), f.web.addr.Port()),
		Resolver:    f.res,
		OriginalDst: fixedDst(up),
	})

	for i := range 3 { // the kernel's behaviour, not one lucky timing
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go tlsClientHello(c, "ok.test")
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		uc, err := ln.Accept()
		if err != nil {
			c.Close()
			t.Fatalf("the upstream saw no connection: %v", err)
		}
		uc.SetDeadline(time.Now().Add(10 * time.Second))
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(uc, hdr); err != nil || hdr[0] != 0x16 {
			t.Fatalf("upstream read %x, %v; want a TLS handshake record", hdr, err)
		}
		// The rest of the ClientHello may take more segments on another
		// MTU; loopback's carries it whole.
		rc, _ := uc.(*net.TCPConn).SyscallConn()
		tcpInfo := func() *unix.TCPInfo {
			var info *unix.TCPInfo
			var ierr error
			rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
			if ierr != nil {
				t.Fatal(ierr)
			}
			return info
		}
		// Segments in: the SYN and the ACK that carries the ClientHello
		// (a bare ACK before it would make 3).
		if info := tcpInfo(); info.Segs_in != 2 || info.Data_segs_in != 1 {
			t.Errorf("connection %d: the upstream received %d segments, %d with data; want 2 and 1 (the handshake's ACK carried by the ClientHello)", i, info.Segs_in, info.Data_segs_in)
		}
		// The server's first reply is acknowledged at once, as without
		// the saved ACK, not after the kernel's delayed-ACK timeout (40
		// ms or more): the start of a record the client waits to complete,
		// so nothing comes back to carry the ACK.
		if _, err := uc.Write(append([]byte{0x16, 0x03, 0x03, 0x03, 0xe8}, make([]byte, 100)...)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for tcpInfo().Unacked != 0 {
			if time.Since(start) > 30*time.Millisecond {
				t.Errorf("connection %d: the proxy did not acknowledge the server's first bytes within 30 ms (delayed ACK)", i)
				break
			}
			time.Sleep(time.Millisecond)
		}
		uc.Close()
		c.Close()
	}
}

// tlsClientHello sends a TLS ClientHello for sni on c (the handshake then
// fails or hangs until c is closed).
func tlsClientHello(c net.Conn, sni string) {
	tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
}

// TestLoopAcceptsQueuedConnections: one listener event takes every
// connection waiting in the accept queue, up to maxAcceptBatch, in the
// same round. Taking one per event left a standing queue under load: each
// connection waited a round of the loop per connection queued before it
// (bench/l7: 3.3 ms from the ClientHello to the upstream SYN against 0.5 ms
// for HAProxy, docs/benchmarks.md).
func TestLoopAcceptsQueuedConnections(t *testing.T) {
	p := New(Config{
		Matcher:     testPolicy(t, 443, 80),
		OriginalDst: fixedDst(netip.MustParseAddrPort("127.0.0.1:443")),
		Log:         newLogSink().log,
	})
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File() // a blocking duplicate
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lnfd := int(f.Fd())
	if err := unix.SetNonblock(lnfd, true); err != nil {
		t.Fatal(err)
	}
	l, err := newLoop(p, lnfd, netip.MustParseAddrPort(ln.Addr().String()), false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for fd, c := range l.conns {
			if fd == c.cfd {
				l.close(c)
			}
		}
		l.release()
	}()

	// queue dials n connections and waits until the kernel has them all
	// in the listener's accept queue (TCP_INFO of a listener: unacked is
	// the queue's length).
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	queue := func(n int) {
		t.Helper()
		for range n {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			info, err := unix.GetsockoptTCPInfo(lnfd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				t.Fatal(err)
			}
			if int(info.Unacked) >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("accept queue holds %d connections, want %d", info.Unacked, n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	queue(3)
	l.accept() // one listener event
	if got := len(l.conns); got != 3 {
		t.Fatalf("one listener event accepted %d of 3 queued connections; want all 3", got)
	}
	// More than a batch: the rest wait for the next event (the listener
	// is level-triggered), so one busy listener cannot hold the loop.
	queue(maxAcceptBatch + 2)
	l.accept()
	if got := len(l.conns); got != 3+maxAcceptBatch {
		t.Fatalf("one listener event took %d connections; want a batch of %d", got-3, maxAcceptBatch)
	}
	l.accept()
	if got := len(l.conns); got != 3+maxAcceptBatch+2 {
		t.Fatalf("the next event took %d connections; want the 2 left", got-3-maxAcceptBatch)
	}
	if st := p.Stats(); st.Active != 3+maxAcceptBatch+2 {
		t.Errorf("%d connections counted active; want %d", st.Active, 3+maxAcceptBatch+2)
	}
}

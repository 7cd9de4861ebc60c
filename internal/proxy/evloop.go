package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/clusterwall/clusterwall/internal/fairshare"
	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
	"golang.org/x/sys/unix"
)

// The transparent proxy's event loops.
//
// A goroutine per connection and direction (handleTransparent, splice)
// costs the Go scheduler a park and a wake-up for every handshake flight,
// and every system call that goes through the runtime's syscall
// bookkeeping wakes its sysmon thread after an idle spell, which then
// polls every 20 µs: on the lab's 2-vCPU machine that was a third of the
// proxy's context switches and most of its CPU gap to HAProxy. So
// transparent connections on a TCP listener are served by event loops
// instead (Config.Loops, by default half the CPUs), each a goroutine that
// owns its connections' descriptors: an epoll set of its own, waited on
// in epoll_wait by the loop itself on a P of its own (see reserveProcs at
// the end), raw non-blocking system calls for
// accept, connect, read, write, splice, shutdown and close, and no
// goroutine per connection. The decision is the same code as
// handleTransparent's (decideTransparent, emit); only a decision that
// must resolve a name afresh leaves the loop for a goroutine.
//
// Explicit-proxy connections keep a goroutine each (explicit.go): they
// speak HTTP with the client before anything is relayed.

// Connection states.
const (
	stHello    uint8 = iota // reading the ClientHello or request head
	stDeciding              // a fresh lookup runs off the loop
	stHookDial              // Config.Dial runs off the loop
	stDialing               // connecting upstream
	stRelay                 // copying / splicing both ways
	stClosed
)

// What the first bytes are.
const (
	kindUnknown uint8 = iota
	kindTLS
	kindHTTP
)

// connEvents is what the loop asks epoll about a client or upstream
// socket: edge-triggered, both ways, and the peer's end of stream.
const connEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

const (
	loopEvents    = 128
	loopPumpRound = 64      // reads or writes of one direction before others get a turn
	maxSpliceSize = 1 << 20 // as Go's own splice
	loopPipePool  = 64
	// maxAcceptBatch is the most connections accept takes per listener
	// event.
	maxAcceptBatch = 16
	// deferAcceptSeconds is the listener's TCP_DEFER_ACCEPT (startLoops):
	// the kernel turns it into one SYN-ACK retransmission.
	deferAcceptSeconds = 1
)

type loop struct {
	p      *Proxy
	lnfd   int // the listener (a duplicate owned by startLoops)
	lnAddr netip.AddrPort
	epfd   int
	// inheritNoDelay: accepted sockets have TCP_NODELAY from the listener.
	inheritNoDelay bool
	evfd           int // eventfd: posted work
	// block: the loop blocks in epoll_wait itself, on a P of its own
	// (reserveProcs); otherwise it parks on the runtime's poller (ep, rc).
	block bool
	ep    *os.File
	rc    syscall.RawConn

	base    time.Time
	now     int64 // nanoseconds since base, read once per round
	tick    int64
	sweep   int64 // next sweep
	armed   bool  // a park deadline is set
	armedAt int64 // when it was set
	paused  int64 // accepting paused until (EMFILE and the like)

	conns map[int]*lconn // by client and upstream descriptor
	again []*lconn       // connections whose pump ran out of its round

	// Where the round is (serve resumes there after a recovered panic)
	// and the connection being handled (recoverRound closes it).
	phase      uint8
	evi, evn   int
	againBatch []*lconn
	againAt    int
	cur        *lconn

	pipes  []lpipe
	seq    uint32 // registration ids, against stale events of a reused descriptor
	events [loopEvents]unix.EpollEvent

	mu         sync.Mutex
	posted     []func()
	postedRest []func() // posted functions not run yet when one panicked
	closed     bool
	stopping   bool
}

type lpipe struct{ r, w int }

type lconn struct {
	h        fairshare.Handle // its place in the limiter (limits.go)
	loop     *loop            // the loop that owns it
	cfd, ufd int
	cid, uid uint32 // registration ids of cfd and ufd
	state    uint8
	kind     uint8
	queued   bool

	req     request
	m       *match.Matcher
	bp      *[]byte // the head buffer (Proxy.bufs) while it is needed
	n       int
	hp      helloParser
	scanned int
	head    *RequestHead
	v       verdict
	out     []byte // what goes upstream first
	dialAt  int

	// hup: the client [0] or the upstream [1] reported end of stream or
	// an error; in: it became readable since the loop last drained it
	// (before the relay starts).
	hup, in  [2]bool
	deadline int64 // hello and dial phases
	active   int64 // relay: when data last moved
	dir      [2]ldir
}

// ldir is one direction of a relayed connection.
type ldir struct {
	src, dst int
	pend     []byte  // read, not yet written
	pbp      *[]byte // the buffer behind pend
	phead    bool    // pbp is a head buffer, not a copy buffer
	pipe     lpipe
	hasPipe  bool
	inPipe   int
	total    int
	splice   bool
	eof      bool
	done     bool
	// drained: nothing to read until the next event (see connected).
	drained bool
	// paused: the destination is full and the source's EPOLLIN is off
	// (pauseSrc) until the destination takes what this direction holds.
	paused bool
}

// startLoops starts the event loops (loopCount) on ln; wait returns (ErrClosed)
// once the proxy has closed and every loop has stopped. An error means no
// loop was started.
func (p *Proxy) startLoops(ln *net.TCPListener, lnAddr netip.AddrPort) (wait func() error, err error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	lnfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		lnfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("proxy: duplicating the listener: %w", derr)
	}
	// Accepted sockets inherit TCP_NODELAY from the listener: one
	// setsockopt per connection less. With TCP_DEFER_ACCEPT the kernel
	// queues a connection for accept only once its first bytes (the
	// ClientHello or request head: clients of the transparent proxy speak
	// first) have arrived, so the loop wakes once for the connection and
	// its first read finds the data, instead of waking for the accept and
	// again for the data. A client that sends nothing is still accepted,
	// about a second later (the kernel resends its SYN-ACK once and the
	// client's ACK then completes the connection): the hello timeout and
	// the per-source limits apply to it from then on. Both are best effort.
	inheritNoDelay := setNoDelay(lnfd) == nil
	setsockoptInt(lnfd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, deferAcceptSeconds)
	block := blockingLoops()
	loops := make([]*loop, p.loopCount())
	for i := range loops {
		l, err := newLoop(p, lnfd, lnAddr, block)
		if l != nil {
			l.inheritNoDelay = inheritNoDelay
		}
		if err != nil {
			for _, l := range loops[:i] {
				l.release()
			}
			unix.Close(lnfd)
			return nil, err
		}
		loops[i] = l
	}
	if block {
		reserveProcs(len(loops))
	}
	p.mu.Lock()
	for _, l := range loops {
		p.loops[l] = struct{}{}
	}
	// Close waits for the loops to stop and give their Ps back.
	counted := !p.closed
	if counted {
		p.wg.Add(1)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run()
		}()
	}
	// The loops hold a duplicate of the socket: ln itself goes. Left open,
	// it stays registered with the runtime's poller, which then wakes a
	// thread (one waiting in the runtime's own epoll_wait) for every
	// connection the listener queues, though nobody waits on it there.
	ln.Close()
	stop := func() {
		for _, l := range loops {
			l.post(nil)
		}
	}
	return func() error {
		// The proxy's Close closes ln too; the loops hold a duplicate, so
		// they stop on the proxy's context.
		<-p.ctx.Done()
		stop()
		wg.Wait()
		p.mu.Lock()
		for _, l := range loops {
			delete(p.loops, l)
		}
		p.mu.Unlock()
		if block {
			reserveProcs(-len(loops))
		}
		unix.Close(lnfd)
		if counted {
			p.wg.Done()
		}
		return ErrClosed
	}, nil
}

func newLoop(p *Proxy, lnfd int, lnAddr netip.AddrPort, block bool) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("proxy: epoll_create1: %w", err)
	}
	l := &loop{p: p, lnfd: lnfd, lnAddr: lnAddr, epfd: epfd, evfd: -1, block: block, base: time.Now(), conns: map[int]*lconn{}}
	fail := func(what string, err error) (*loop, error) {
		l.release()
		return nil, fmt.Errorf("proxy: %s: %w", what, err)
	}
	if l.evfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return fail("eventfd", err)
	}
	if err := epollCtl(epfd, unix.EPOLL_CTL_ADD, l.evfd, 0, unix.EPOLLIN); err != nil {
		return fail("epoll_ctl", err)
	}
	if err := epollCtl(epfd, unix.EPOLL_CTL_ADD, lnfd, 0, unix.EPOLLIN|unix.EPOLLEXCLUSIVE); err != nil {
		return fail("epoll_ctl", err)
	}
	// The runtime's poller takes only non-blocking descriptors (the flag
	// does not change epoll_wait, which blocks for its timeout).
	if err := unix.SetNonblock(epfd, true); err != nil {
		return fail("epoll fd", err)
	}
	if !block {
		l.ep = os.NewFile(uintptr(epfd), "proxy-epoll")
		if l.rc, err = l.ep.SyscallConn(); err != nil {
			return fail("epoll fd", err)
		}
	}
	cfg := &p.cfg
	tick := 250 * time.Millisecond
	for _, d := range []time.Duration{cfg.HelloTimeout / 4, cfg.DialTimeout / 4, cfg.IdleTimeout / 4} {
		if d > 0 {
			tick = min(tick, d)
		}
	}
	l.tick = int64(max(tick, 5*time.Millisecond))
	return l, nil
}

// release frees the loop's own descriptors.
func (l *loop) release() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	if l.evfd >= 0 {
		unix.Close(l.evfd)
	}
	if l.ep != nil {
		l.ep.Close()
	} else {
		unix.Close(l.epfd)
	}
	for _, pp := range l.pipes {
		closeFD(pp.r)
		closeFD(pp.w)
	}
	l.pipes = nil
}

// post runs fn on the loop; nil stops it. It never blocks. It returns
// false, dropping fn, when the loop has stopped.
func (l *loop) post(fn func()) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.posted = append(l.posted, fn)
	first := len(l.posted) == 1
	l.mu.Unlock()
	if first {
		one := uint64(1)
		unix.RawSyscall(unix.SYS_WRITE, uintptr(l.evfd), uintptr(unsafe.Pointer(&one)), 8)
	}
	return true
}

func (l *loop) run() {
	defer l.shutdown()
	for !l.stopping {
		l.serve()
	}
}

// The phases of a round of the loop.
const (
	phaseWait   uint8 = iota // wait for events
	phaseEvents              // handle them
	phaseAgain               // resume the connections whose pump ran out of its round
	phaseSweep               // timeouts
)

// serve runs rounds until the loop stops. A panic while handling one
// connection ends serve (recoverRound closes that connection, logs and
// counts it); run calls it again and it resumes the round where it was,
// so the other connections' events of that round are not lost.
func (l *loop) serve() {
	defer l.recoverRound()
	for !l.stopping {
		switch l.phase {
		case phaseWait:
			l.evn, l.evi = l.wait(), 0
			l.now = int64(time.Since(l.base))
			l.phase = phaseEvents
		case phaseEvents:
			for l.evi < l.evn && !l.stopping {
				ev := &l.events[l.evi]
				l.evi++
				l.event(ev)
			}
			if len(l.again) > 0 {
				l.againBatch, l.againAt, l.again = l.again, 0, nil
			}
			l.phase = phaseAgain
		case phaseAgain:
			for l.againAt < len(l.againBatch) {
				c := l.againBatch[l.againAt]
				l.againAt++
				l.cur = c
				c.queued = false
				l.pump(c, 0)
				l.pump(c, 1)
			}
			l.againBatch = nil
			l.phase = phaseSweep
		case phaseSweep:
			l.phase = phaseWait
			if l.now >= l.sweep {
				l.sweepConns()
			}
		}
	}
}

// wait returns the number of ready events, parking the goroutine on the
// runtime's poller when there are none (and no work queued). With
// connections open, the park ends after a tick for the timeouts.
func (l *loop) wait() int {
	if len(l.again) > 0 {
		return l.poll()
	}
	if l.block {
		return l.blockingWait()
	}
	// The park deadline moves only every half tick: setting a runtime
	// timer for every park costs more than the sweep's slack.
	if len(l.conns) > 0 || l.paused != 0 {
		if !l.armed || l.now-l.armedAt > l.tick/2 {
			l.ep.SetReadDeadline(l.base.Add(time.Duration(l.now + l.tick)))
			l.armed, l.armedAt = true, l.now
		}
	} else if l.armed {
		l.ep.SetReadDeadline(time.Time{})
		l.armed = false
	}
	n := 0
	// Read calls the function first: it parks only when poll finds nothing.
	err := l.rc.Read(func(uintptr) bool {
		n = l.poll()
		return n > 0
	})
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		l.stopping = true // the epoll file was closed: cannot go on
	}
	return n
}

// blockingWait is wait for a loop on a P of its own: epoll_wait blocks
// the goroutine's thread until an event or the next sweep, holding the P
// (a raw system call: the scheduler and sysmon see a running goroutine,
// not a system call to hand the P off from). The runtime's preemption
// signal (the garbage collector's stop-the-world, sysmon after 10 ms)
// interrupts it with EINTR; the loop then returns to Go code, where the
// goroutine can be preempted.
func (l *loop) blockingWait() int {
	timeout := int(max(0, (l.sweep-l.now+int64(time.Millisecond)-1)/int64(time.Millisecond)))
	if len(l.conns) == 0 && l.paused == 0 {
		// No connections: the next one usually comes soon under load;
		// park only after idleParkAfter without one.
		if n, ok := l.epollWait(idleParkAfter); n > 0 || !ok {
			return n
		}
		if n, ok := l.idleWait(); ok {
			return n
		}
		timeout = int(l.tick / int64(time.Millisecond)) // could not park: wait a tick here
	}
	n, _ := l.epollWait(timeout)
	return n
}

// idleParkAfter is how long (ms) a loop with no connections waits in
// epoll_wait before it parks (idleWait): parking costs the scheduler a
// park and a wake-up, which under load, where a loop's last connection
// closes often, was as much as the park saves.
const idleParkAfter = 5

// epollWait is epoll_wait for up to timeout ms; ok is false when it was
// interrupted (EINTR: the goroutine returns to Go code, where it can be
// preempted) or the epoll descriptor is gone (the loop stops).
func (l *loop) epollWait(timeout int) (n int, ok bool) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])), loopEvents, uintptr(timeout), 0, 0)
	if e != 0 {
		if e != unix.EINTR {
			l.stopping = true // the epoll descriptor is gone: cannot go on
		}
		return 0, false
	}
	return int(r), true
}

// idleWait is blockingWait for a loop with no connections: it parks on
// the runtime's poller, so that its P goes idle. A goroutine that stays
// in epoll_wait is preempted by sysmon every 10-20 ms, and sysmon itself
// never sleeps while a P is busy: an idle daemon spent 5.7 ms of CPU a
// second and 200 context switches on that. The epoll descriptor is
// registered with the runtime only for the park (a duplicate, closed
// after it): registered for good, every event would also wake the thread
// that waits in the runtime's own epoll_wait.
func (l *loop) idleWait() (n int, ok bool) {
	if n := l.poll(); n > 0 {
		return n, true
	}
	fd, err := unix.FcntlInt(uintptr(l.epfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, false // out of descriptors: blockingWait waits a tick
	}
	f := os.NewFile(uintptr(fd), "proxy-epoll")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, false
	}
	// Read calls the function first: it parks only when poll finds nothing.
	if err := rc.Read(func(uintptr) bool {
		n = l.poll()
		return n > 0
	}); err != nil {
		return 0, false
	}
	return n, true
}

// poll is epoll_wait without blocking.
func (l *loop) poll() int {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])), loopEvents, 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0
		}
		return int(r)
	}
}

func (l *loop) event(ev *unix.EpollEvent) {
	fd := int(ev.Fd)
	switch fd {
	case l.evfd:
		l.runPosted()
		return
	case l.lnfd:
		l.accept()
		return
	}
	c := l.conns[fd]
	if c == nil {
		return
	}
	l.cur = c
	var side int // 0: the client, 1: the upstream (also the direction whose source it is)
	switch id := uint32(ev.Pad); {
	case fd == c.cfd && id == c.cid:
		side = 0
	case fd == c.ufd && id == c.uid:
		side = 1
	default:
		return // a stale event of a closed descriptor's number
	}
	hup := ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
	c.hup[side] = c.hup[side] || hup
	c.in[side] = c.in[side] || ev.Events&unix.EPOLLIN != 0
	switch {
	case side == 0 && c.state == stHello:
		l.readHead(c)
	case side == 1 && c.state == stDialing:
		if ev.Events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == unix.EPOLLOUT {
			// Writable without an error: the connect succeeded (a
			// connecting socket is never writable; a failed one reports
			// EPOLLERR), so SO_ERROR need not be asked.
			l.established(c)
			return
		}
		l.connected(c)
	case c.state == stRelay:
		if ev.Events&unix.EPOLLIN != 0 || hup {
			l.pump(c, side)
		}
		// Writable again: what the other direction holds for it.
		if ev.Events&unix.EPOLLOUT != 0 && c.dir[1-side].pending() {
			l.pump(c, 1-side)
		}
	}
}

func (d *ldir) pending() bool { return len(d.pend) > 0 || d.inPipe > 0 }

func (l *loop) runPosted() {
	var b [8]byte
	unix.RawSyscall(unix.SYS_READ, uintptr(l.evfd), uintptr(unsafe.Pointer(&b[0])), 8)
	l.mu.Lock()
	fns := l.posted
	l.posted = nil
	l.mu.Unlock()
	for i, fn := range fns {
		if fn == nil {
			l.stopping = true
			return
		}
		l.cur = nil // a posted function names its connection itself
		if l.postedRest = fns[i+1:]; len(l.postedRest) == 0 {
			l.postedRest = nil
		}
		fn()
	}
	l.postedRest = nil
}

func (l *loop) shutdown() {
	for fd, c := range l.conns {
		if fd == c.cfd {
			l.close(c)
		}
	}
	// What was posted but not run yet runs now, on no connections: a
	// dial's result closes its descriptor, Redecide gets its answer.
	l.mu.Lock()
	l.closed = true
	fns := l.posted
	l.posted = nil
	l.mu.Unlock()
	for _, fn := range fns {
		if fn != nil {
			fn()
		}
	}
	l.release()
}

// accept takes the waiting connections, up to maxAcceptBatch (the
// listener is level-triggered and shared by the loops: whichever loop
// accepts, serves; more than that are reported again by the next
// epoll_wait). Taking one per event, to save the accept4 that finds the
// queue empty, left a standing queue under load: connections arrive while
// a round runs, so each waited in the accept queue for as many rounds as
// there were connections before it (docs/benchmarks.md).
func (l *loop) accept() {
	if l.paused != 0 {
		return
	}
	for range maxAcceptBatch {
		var rsa unix.RawSockaddrAny
		size := uint32(unsafe.Sizeof(rsa))
		r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(l.lnfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&size)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		switch e {
		case 0:
		case unix.EAGAIN:
			return
		case unix.EINTR, unix.ECONNABORTED:
			continue
		default:
			// EMFILE and the like: stop accepting for a while (the
			// listener is level-triggered: it would spin).
			l.p.logger.Warn("proxy: accept failed; retrying", "err", os.NewSyscallError("accept4", e), "delay", time.Duration(l.tick))
			if epollCtl(l.epfd, unix.EPOLL_CTL_DEL, l.lnfd, 0, 0) == nil {
				l.paused = l.now + l.tick
			}
			return
		}
		l.newConn(int(r), sockaddrAddrPort(&rsa))
	}
}

func (l *loop) newConn(fd int, rawSrc netip.AddrPort) {
	p := l.p
	src := netip.AddrPortFrom(rawSrc.Addr().Unmap().WithZone(""), rawSrc.Port())
	c := &lconn{cfd: fd, ufd: -1, state: stHello, deadline: l.now + int64(p.cfg.HelloTimeout)}
	c.h.Owner, c.loop = c, l
	l.cur = c
	p.mu.Lock()
	reason := p.admitLocked(&c.h, src)
	p.mu.Unlock()
	if reason != "" {
		setsockoptLinger0(fd)
		closeFD(fd)
		p.logRejected(src, reason)
		return
	}
	if !l.inheritNoDelay {
		setNoDelay(fd)
	}
	c.req = request{src: src, start: time.Now()}
	c.m = p.matcher.Load()
	l.conns[fd] = c
	c.cid = l.nextID()
	if err := epollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, c.cid, connEvents); err != nil {
		p.emit(c.m, &c.req, &verdict{reason: "proxy: epoll_ctl: " + err.Error()}, netip.AddrPort{})
		l.close(c)
		return
	}
	dst, err := l.originalDst(fd, rawSrc)
	if err == nil && !dst.IsValid() {
		err = errors.New("invalid address")
	}
	c.req.dst = netip.AddrPortFrom(dst.Addr().Unmap().WithZone(""), dst.Port())
	c.req.port = c.req.dst.Port()
	if err != nil {
		p.emit(c.m, &c.req, &verdict{reason: "no original destination: " + err.Error()}, netip.AddrPort{})
		l.close(c)
		return
	}
	c.bp = p.getBuf()
	l.readHead(c) // the ClientHello is usually there already
}

func (l *loop) originalDst(fd int, src netip.AddrPort) (netip.AddrPort, error) {
	local := func() netip.AddrPort {
		var rsa unix.RawSockaddrAny
		size := uint32(unsafe.Sizeof(rsa))
		if _, _, e := unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&size))); e != 0 {
			return netip.AddrPort{}
		}
		a := sockaddrAddrPort(&rsa)
		return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	}
	if hook := l.p.cfg.OriginalDst; hook != nil {
		return hook(netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), local())
	}
	return originalDst(fd, src.Addr().Is4() || src.Addr().Is4In6(), local, l.lnAddr)
}

// readHead reads what the client sent until the ClientHello or request
// head is complete, then decides.
func (l *loop) readHead(c *lconn) {
	p := l.p
	buf := *c.bp
	short := false // the last read drained the socket (see pump)
	for {
		limit := len(buf)
		if c.kind != kindTLS {
			limit = min(len(buf), p.cfg.MaxHTTPHead)
		}
		if c.n < limit {
			if short && !c.hup[0] {
				c.in[0] = false
				return
			}
			r, e := rawReadFD(c.cfd, buf[c.n:limit])
			switch {
			case e == unix.EAGAIN:
				c.in[0] = false
				return
			case e != 0:
				l.headFailed(c, os.NewSyscallError("read", e))
				return
			case r == 0:
				l.headFailed(c, io.EOF)
				return
			}
			if short = r < limit-c.n; short {
				c.in[0] = false // drained
			}
			c.n += r
		}
		if c.kind == kindUnknown {
			switch {
			case buf[0] == recordTypeHandshake:
				c.kind = kindTLS
				c.req.scheme, c.req.what, c.req.missing = policy.SchemeHTTPS, "SNI", ReasonNoSNI
				c.hp = helloParser{maxHello: p.cfg.MaxClientHello}
			case isTokenChar(buf[0]):
				c.kind = kindHTTP
				c.req.scheme, c.req.what, c.req.missing = policy.SchemeHTTP, "Host", ReasonNoHost
			default:
				c.req.scheme = policy.SchemeNone
				p.emit(c.m, &c.req, &verdict{reason: fmt.Sprintf("neither a TLS ClientHello nor an HTTP request (first byte 0x%02x)", buf[0])}, netip.AddrPort{})
				l.close(c)
				return
			}
		}
		switch c.kind {
		case kindTLS:
			done, need, err := c.hp.advance(buf[:c.n])
			if err == nil && !done && need > len(buf) {
				err = helloErr(HelloTooLarge, "ClientHello does not fit in %d bytes", len(buf))
			}
			if err != nil {
				l.headFailed(c, err)
				return
			}
			if done {
				hello, err := c.hp.hello()
				if err != nil {
					l.headFailed(c, err)
					return
				}
				c.req.name = hello.ServerName
				l.decide(c)
				return
			}
		case kindHTTP:
			head, done, err := scanRequestHead(buf[:limit], c.n, &c.scanned)
			if err != nil {
				l.headFailed(c, err)
				return
			}
			if done {
				c.head = head
				c.req.name = head.Host
				if reason, status := p.checkTransparentHead(head, c.req.dst); reason != "" {
					v := verdict{}
					v.deny(reason, 0, status)
					l.decided(c, v)
					return
				}
				l.decide(c)
				return
			}
		}
	}
}

// headFailed ends a connection whose first bytes could not be read or
// parsed, as handleTransparent does: a log line and, where it helps the
// client, an alert or an HTTP error.
func (l *loop) headFailed(c *lconn, err error) {
	p := l.p
	var resp []byte
	switch c.kind {
	case kindUnknown:
		c.req.scheme = policy.SchemeNone
		if errors.Is(err, io.EOF) {
			err = nil
		}
		p.emit(c.m, &c.req, &verdict{reason: readFailure("the first bytes", 0, err)}, netip.AddrPort{})
	case kindTLS:
		if errors.Is(err, io.EOF) {
			err = helloErr(HelloTruncated, "connection closed after %d bytes of the ClientHello", c.n)
		}
		p.emit(c.m, &c.req, &verdict{reason: readFailure("the TLS ClientHello", c.n, err)}, netip.AddrPort{})
		if k := helloKind(err); k == HelloMalformed || k == HelloTooLarge {
			resp = alertRecord(alertDecodeError)
		}
	case kindHTTP:
		if errors.Is(err, io.EOF) {
			err = &HeadError{Status: 400, Msg: fmt.Sprintf("connection closed after %d bytes of the request head", c.n), Truncated: true}
		}
		p.emit(c.m, &c.req, &verdict{reason: readFailure("the HTTP request head", c.n, err)}, netip.AddrPort{})
		var he *HeadError
		switch {
		case errors.As(err, &he) && !he.Truncated:
			resp = httpError(he.Status, he.Msg)
		case isTimeout(err):
			resp = httpError(408, "timed out reading the request head")
		}
	}
	if resp != nil {
		rawWriteFD(c.cfd, resp)
	}
	l.close(c)
}

// decide asks the matcher; a decision that needs a fresh lookup of the
// name runs on a goroutine and comes back with post.
func (l *loop) decide(c *lconn) {
	v := l.p.decideTransparent(c.m, &c.req, false)
	if !v.needLookup {
		l.decided(c, v)
		return
	}
	c.state = stDeciding
	m, req := c.m, c.req
	go func() {
		defer l.recoverOffLoop(c, stDeciding)
		v := l.p.decideTransparent(m, &req, true)
		l.post(func() {
			switch {
			case c.state != stDeciding:
			case c.m != m:
				l.decide(c) // the policy changed meanwhile (Redecide)
			default:
				l.cur = c
				l.decided(c, v)
			}
		})
	}()
}

func (l *loop) decided(c *lconn, v verdict) {
	p := l.p
	if !v.allow {
		p.emit(c.m, &c.req, &v, netip.AddrPort{})
		if c.kind == kindTLS {
			rawWriteFD(c.cfd, alertRecord(v.alert))
		} else {
			rawWriteFD(c.cfd, denyPage(v.status, &c.req, &v))
		}
		l.close(c)
		return
	}
	buf := *c.bp
	switch {
	case c.kind == kindHTTP && !p.cfg.HTTPKeepAlive:
		c.out = append(c.head.rewrite(false, true), buf[c.head.Len:c.n]...)
	default:
		c.out = buf[:c.n]
	}
	c.v = v
	p.emit(c.m, &c.req, &v, v.dial[0])
	l.dial(c)
}

// dial connects to c.v.dial[c.dialAt] without blocking.
func (l *loop) dial(c *lconn) {
	if l.p.cfg.Dial != nil {
		l.hookDial(c)
		return
	}
	for ; c.dialAt < len(c.v.dial); c.dialAt++ {
		a := c.v.dial[c.dialAt]
		fd, connected, err := connectNB(a, l.p.cfg.Mark)
		if err != nil {
			if c.dialAt == len(c.v.dial)-1 {
				l.dialFailed(c, err)
				return
			}
			continue
		}
		if l.addUpstream(c, fd) && connected {
			l.connected(c)
		}
		return
	}
	l.dialFailed(c, errors.New("no address to dial"))
}

// addUpstream puts the upstream socket fd in the loop's epoll set, in the
// dialling state; on failure it ends c and returns false.
func (l *loop) addUpstream(c *lconn, fd int) bool {
	c.ufd, c.uid = fd, l.nextID()
	l.conns[fd] = c
	if err := epollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, c.uid, connEvents); err != nil {
		l.dialFailed(c, err)
		return false
	}
	c.state = stDialing
	c.deadline = l.now + int64(l.p.cfg.DialTimeout)
	return true
}

// hookDial connects with Config.Dial on a goroutine (it may block), then
// takes a duplicate of the connection's descriptor into the loop.
func (l *loop) hookDial(c *lconn) {
	c.state = stHookDial
	addrs := c.v.dial[c.dialAt:]
	go func() {
		defer l.recoverOffLoop(c, stHookDial)
		fd := -1
		conn, _, err := l.p.dialAny(addrs)
		if err == nil {
			fd, err = dupConn(conn)
			conn.Close() // the duplicate keeps the socket
		}
		ok := l.post(func() {
			l.cur = c
			switch {
			case c.state != stHookDial:
				if fd >= 0 {
					closeFD(fd)
				}
			case err != nil:
				c.dialAt = len(c.v.dial) - 1
				l.dialFailed(c, err)
			default:
				if l.addUpstream(c, fd) {
					l.connected(c)
				}
			}
		})
		if !ok && fd >= 0 {
			closeFD(fd)
		}
	}()
}

// dupConn returns a non-blocking duplicate of a connection's descriptor.
func dupConn(conn net.Conn) (int, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no file descriptor", conn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) {
		fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	return fd, nil // O_NONBLOCK belongs to the shared file description
}

// connected runs when the upstream socket is writable: the connect ended.
func (l *loop) connected(c *lconn) {
	var soerr int32
	size := uint32(4)
	err := getsockopt(c.ufd, unix.SOL_SOCKET, unix.SO_ERROR, unsafe.Pointer(&soerr), &size)
	if err == nil && soerr != 0 {
		err = syscall.Errno(soerr)
	}
	if err == unix.EINPROGRESS || err == unix.EALREADY {
		return // not yet
	}
	if err != nil {
		l.upstreamFailed(c, os.NewSyscallError("connect", err))
		return
	}
	l.established(c)
}

// established starts relaying c once its upstream connection is up.
func (l *loop) established(c *lconn) {
	c.state = stRelay
	c.active = l.now
	// A side that has not become readable since it was last drained (the
	// client: since its head was read; the upstream: ever) has nothing to
	// read yet: edge-triggered epoll will tell.
	c.dir[0] = ldir{src: c.cfd, dst: c.ufd, pend: c.out, pbp: c.bp, phead: true, drained: !c.in[0]}
	c.dir[1] = ldir{src: c.ufd, dst: c.cfd, drained: !c.in[1]}
	c.bp, c.out = nil, nil
	l.pump(c, 0)
	if c.state == stRelay && l.p.cfg.Dial == nil {
		// The head went out with the handshake's ACK (connectNB). Quick
		// ACKs back on: the kernel took the first write, so soon after
		// the SYN-ACK, for an interactive exchange and would now delay
		// the ACK of the server's first reply (up to 40 ms, a stall for a
		// server that writes it in pieces with Nagle's algorithm on);
		// from here the socket acknowledges as one that sent a bare ACK.
		setsockoptInt(c.ufd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	}
	l.pump(c, 1)
}

// upstreamFailed closes a failed upstream socket and tries the next
// address, if any.
func (l *loop) upstreamFailed(c *lconn, err error) {
	delete(l.conns, c.ufd)
	closeFD(c.ufd)
	c.ufd = -1
	if c.dialAt++; c.dialAt < len(c.v.dial) {
		l.dial(c)
		return
	}
	l.dialFailed(c, err)
}

func (l *loop) dialFailed(c *lconn, err error) {
	p := l.p
	dst := c.v.dial[min(c.dialAt, len(c.v.dial)-1)]
	p.logger.Warn("proxy: upstream connect failed", "src", c.req.src, "name", c.req.name, "dst", c.v.dial[0], "err", err)
	if c.kind == kindTLS {
		rawWriteFD(c.cfd, alertRecord(alertInternalError))
	} else {
		rawWriteFD(c.cfd, httpError(502, fmt.Sprintf("cannot connect to %s: %v", dst, err)))
	}
	l.close(c)
}

// pump moves direction i as far as it goes without blocking: what is
// pending first, then new reads. The first reads go through user space
// (small handshake flights and heads, see copySmall); once a read fills a
// buffer, or after smallCopyMax bytes, the rest is spliced through a pipe.
// At the source's EOF the destination's write half is shut; when both
// directions are done, or on an error, the connection closes.
func (l *loop) pump(c *lconn, i int) {
	d := &c.dir[i]
	if c.state != stRelay || d.done {
		return
	}
	// A read that returns less than it asked for drained the socket: with
	// edge-triggered epoll, more data brings another event, so the pump
	// stops there instead of reading again for EAGAIN — unless the source
	// reported its end (the FIN came with the data: no event would follow).
	short := d.drained
	d.drained = false
	moved := false // something was written to the destination
	for range loopPumpRound {
		if len(d.pend) > 0 {
			var w int
			var e syscall.Errno
			if c.hup[i] {
				// The source has ended (or failed): these are its last
				// bytes and the shutdown or close follows in this pump,
				// so MSG_MORE holds them for the FIN to go out in the
				// same segment (as HAProxy does) instead of one more.
				w, e = rawSendMore(d.dst, d.pend)
			} else {
				w, e = rawWriteFD(d.dst, d.pend)
			}
			if e == unix.EAGAIN {
				l.full(c, i, moved)
				return
			}
			if e != 0 {
				l.close(c)
				return
			}
			moved = true
			if d.pend = d.pend[w:]; len(d.pend) > 0 {
				continue
			}
			l.releasePend(d)
		}
		if d.inPipe > 0 {
			w, e := spliceFD(d.pipe.r, d.dst, d.inPipe)
			if e == unix.EAGAIN {
				l.full(c, i, moved)
				return
			}
			if e != 0 {
				l.close(c)
				return
			}
			moved = true
			d.inPipe -= w
			continue
		}
		if d.eof {
			if c.dir[1-i].done {
				// Both ends have finished: close sends the FIN.
				d.done = true
				l.close(c)
				return
			}
			if _, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(d.dst), unix.SHUT_WR, 0); e != 0 {
				l.close(c)
				return
			}
			d.done = true
			return
		}
		if d.paused {
			l.resumeSrc(c, i)
			short = false // arrivals while paused were not reported
		}
		if short && !c.hup[i] { // direction i reads side i
			return
		}
		if d.splice && !d.hasPipe {
			if d.pipe, d.hasPipe = l.getPipe(); !d.hasPipe {
				d.splice = false // no pipe: copy
			}
		}
		if !d.splice {
			bp := copyBufs.Get().(*[]byte)
			r, e := rawReadFD(d.src, *bp)
			if e != 0 || r == 0 {
				copyBufs.Put(bp)
				switch {
				case e == unix.EAGAIN:
					return
				case e != 0:
					l.close(c)
					return
				}
				d.eof = true
				continue
			}
			c.active = l.now
			d.total += r
			short = r < len(*bp)
			if r == len(*bp) || d.total >= smallCopyMax {
				d.splice = true
			}
			d.pend, d.pbp, d.phead = (*bp)[:r], bp, false
			continue
		}
		r, e := spliceFD(d.src, d.pipe.w, maxSpliceSize)
		switch {
		case e == unix.EAGAIN:
			return
		case e != 0:
			l.close(c)
			return
		case r == 0:
			d.eof = true
		default:
			c.active = l.now
			d.total += r
			d.inPipe = r
			// No short-read shortcut here: splice may stop early when
			// the pipe runs out of slots, with more data queued.
		}
	}
	// Out of its round: the rest later, after the other connections.
	if !c.queued {
		c.queued = true
		l.again = append(l.again, c)
	}
}

// full handles a destination that takes no more: the source is paused
// (pauseSrc). moved: this pump wrote something before.
func (l *loop) full(c *lconn, i int, moved bool) {
	if !moved {
		l.p.stats.futile.Add(1)
	}
	l.pauseSrc(c, i)
}

// pauseSrc turns off EPOLLIN of direction i's source while its
// destination is full: every segment arriving meanwhile would otherwise
// wake the loop for a write that fails again (edge-triggered epoll
// reports each arrival). The destination's EPOLLOUT resumes it (event,
// pump, resumeSrc); the source's end of stream and errors are still
// reported (EPOLLRDHUP, EPOLLHUP, EPOLLERR). HAProxy does the same.
func (l *loop) pauseSrc(c *lconn, i int) {
	d := &c.dir[i]
	if d.paused || d.eof || c.hup[i] {
		return
	}
	if l.setInterest(c, i, connEvents&^unix.EPOLLIN) {
		d.paused = true
	}
}

// resumeSrc turns direction i's source's EPOLLIN back on; the pump then
// reads it until EAGAIN (events that came while it was off were not
// reported).
func (l *loop) resumeSrc(c *lconn, i int) {
	c.dir[i].paused = false
	l.setInterest(c, i, connEvents)
}

// setInterest sets what epoll reports for side i's socket.
func (l *loop) setInterest(c *lconn, i int, events uint32) bool {
	fd, id := c.cfd, c.cid
	if i == 1 {
		fd, id = c.ufd, c.uid
	}
	return epollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, id, events) == nil
}

func (l *loop) releasePend(d *ldir) {
	if d.pbp != nil {
		if d.phead {
			l.p.putBuf(d.pbp)
		} else {
			copyBufs.Put(d.pbp)
		}
	}
	d.pend, d.pbp = nil, nil
}

func (l *loop) getPipe() (lpipe, bool) {
	if n := len(l.pipes); n > 0 {
		pp := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return pp, true
	}
	var fds [2]int32
	if _, _, e := unix.RawSyscall(unix.SYS_PIPE2, uintptr(unsafe.Pointer(&fds[0])), unix.O_NONBLOCK|unix.O_CLOEXEC, 0); e != 0 {
		return lpipe{}, false
	}
	unix.RawSyscall(unix.SYS_FCNTL, uintptr(fds[0]), unix.F_SETPIPE_SZ, maxSpliceSize)
	return lpipe{r: int(fds[0]), w: int(fds[1])}, true
}

// close ends c: both descriptors, its buffers and pipes, its count.
func (l *loop) close(c *lconn) {
	if c.state == stClosed {
		return
	}
	c.state = stClosed
	delete(l.conns, c.cfd)
	closeFD(c.cfd)
	if c.ufd >= 0 {
		delete(l.conns, c.ufd)
		closeFD(c.ufd)
	}
	if c.bp != nil {
		l.p.putBuf(c.bp)
		c.bp = nil
	}
	for i := range c.dir {
		d := &c.dir[i]
		l.releasePend(d)
		if d.hasPipe {
			if d.inPipe == 0 && len(l.pipes) < loopPipePool {
				l.pipes = append(l.pipes, d.pipe)
			} else {
				closeFD(d.pipe.r)
				closeFD(d.pipe.w)
			}
			d.hasPipe = false
		}
	}
	p := l.p
	p.mu.Lock()
	p.releaseLocked(&c.h)
	p.mu.Unlock()
}

// shed ends a connection the limiter gave up to make room for a lighter
// source (limits.go): a reset, and a decision line saying why.
func (l *loop) shed(c *lconn) {
	l.p.logShed(c.req.src)
	setsockoptLinger0(c.cfd)
	l.close(c)
}

// sweepConns applies the hello, dial and idle timeouts, and resumes
// accepting after a pause.
func (l *loop) sweepConns() {
	l.sweep = l.now + l.tick
	if l.paused != 0 && l.now >= l.paused {
		if epollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.lnfd, 0, unix.EPOLLIN|unix.EPOLLEXCLUSIVE) == nil {
			l.paused = 0
		} else {
			l.paused = l.now + l.tick
		}
	}
	idle := int64(l.p.cfg.IdleTimeout)
	for fd, c := range l.conns {
		if fd != c.cfd {
			continue
		}
		l.cur = c
		switch c.state {
		case stHello:
			if l.now >= c.deadline {
				l.headFailed(c, os.ErrDeadlineExceeded)
			}
		case stDialing:
			if l.now >= c.deadline {
				l.upstreamFailed(c, fmt.Errorf("dial tcp %s: i/o timeout", c.v.dial[c.dialAt]))
			}
		case stRelay:
			if idle > 0 && l.now-c.active >= idle {
				l.p.stats.idleClosed.Add(1)
				l.close(c)
			}
		}
	}
}

func (l *loop) nextID() uint32 {
	l.seq++
	return l.seq
}

// Raw system calls on non-blocking descriptors (see the top of the file).

func epollCtl(epfd, op, fd int, id uint32, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(id)}
	if _, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0); e != 0 {
		return os.NewSyscallError("epoll_ctl", e)
	}
	return nil
}

func rawReadFD(fd int, b []byte) (int, syscall.Errno) {
	for {
		r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e != unix.EINTR {
			return int(r), e
		}
	}
}

func rawWriteFD(fd int, b []byte) (int, syscall.Errno) {
	for {
		r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e != unix.EINTR {
			return int(r), e
		}
	}
}

// rawSendMore is send(2) with MSG_MORE (see pump).
func rawSendMore(fd int, b []byte) (int, syscall.Errno) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_MORE|unix.MSG_NOSIGNAL, 0, 0)
		if e != unix.EINTR {
			return int(r), e
		}
	}
}

func spliceFD(in, out, n int) (int, syscall.Errno) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if e != unix.EINTR {
			return int(r), e
		}
	}
}

func closeFD(fd int) { unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0) }

func setNoDelay(fd int) error { return setsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) }

func setsockoptInt(fd, level, opt int, v int32) error {
	if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0); e != 0 {
		return os.NewSyscallError("setsockopt", e)
	}
	return nil
}

// setMark sets the socket's netfilter mark (SO_MARK; Config.Mark), raw
// like the loop's other system calls.
func setMark(fd int, mark uint32) error {
	v := int32(mark)
	if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MARK, uintptr(unsafe.Pointer(&v)), 4, 0); e != 0 {
		return os.NewSyscallError("setsockopt SO_MARK", e)
	}
	return nil
}

// setsockoptLinger0 makes close send a reset (a refused connection leaves
// no state behind).
func setsockoptLinger0(fd int) {
	lg := unix.Linger{Onoff: 1, Linger: 0}
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER, uintptr(unsafe.Pointer(&lg)), unsafe.Sizeof(lg), 0)
}

// connectNB starts a TCP connection to a; connected is true when it ended
// at once (loopback may).
func connectNB(a netip.AddrPort, mark uint32) (fd int, connected bool, err error) {
	family := unix.AF_INET6
	if a.Addr().Is4() {
		family = unix.AF_INET
	}
	r, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if e != 0 {
		return -1, false, os.NewSyscallError("socket", e)
	}
	fd = int(r)
	setNoDelay(fd)
	// The loop connects only once it holds the client's first bytes (the
	// ClientHello or request head), which it writes as soon as the
	// connect completes. With quick ACKs off until then, the kernel does
	// not answer the server's SYN-ACK with an ACK of its own: the first
	// data segment carries it (HAProxy's "option tcp-smart-connect"), one
	// segment less per connection, and the server's accept and its first
	// read find the data together. Should nothing be written, the ACK
	// goes out after the kernel's delayed-ACK timeout (200 ms).
	// established turns quick ACKs on again once the head is written.
	// Best effort.
	setsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUICKACK, 0)
	if mark != 0 {
		if err := setMark(fd, mark); err != nil {
			unix.Close(fd)
			return -1, false, err
		}
	}
	var sa4 unix.RawSockaddrInet4
	var sa6 unix.RawSockaddrInet6
	var ptr unsafe.Pointer
	var size uintptr
	port := a.Port()
	if family == unix.AF_INET {
		sa4.Family = unix.AF_INET
		sa4.Addr = a.Addr().As4()
		(*[2]byte)(unsafe.Pointer(&sa4.Port))[0], (*[2]byte)(unsafe.Pointer(&sa4.Port))[1] = byte(port>>8), byte(port)
		ptr, size = unsafe.Pointer(&sa4), unsafe.Sizeof(sa4)
	} else {
		sa6.Family = unix.AF_INET6
		sa6.Addr = a.Addr().As16()
		(*[2]byte)(unsafe.Pointer(&sa6.Port))[0], (*[2]byte)(unsafe.Pointer(&sa6.Port))[1] = byte(port>>8), byte(port)
		ptr, size = unsafe.Pointer(&sa6), unsafe.Sizeof(sa6)
	}
	for {
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(ptr), size)
		if e != unix.EINTR {
			break
		}
	}
	switch e {
	case 0:
		return fd, true, nil
	case unix.EINPROGRESS:
		return fd, false, nil
	}
	closeFD(fd)
	return -1, false, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(a), Err: os.NewSyscallError("connect", e)}
}

// sockaddrAddrPort converts an accepted peer's address.
func sockaddrAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// Loops on Ps of their own.
//
// A loop that parks on the runtime's poller costs the scheduler a park and
// a wake-up per round: the poller's own epoll_wait reports the loop's
// epoll descriptor, the goroutine is made runnable (often waking a
// spinning thread too), and it then asks its own epoll set — 19 % of the
// daemon's profile in the L7 benchmark, where HAProxy's threads just
// block in epoll_wait. So a loop blocks in epoll_wait itself, and the
// process gets one P more per loop (reserveProcs) for everything else
// (the decision log, the DNS proxy, the garbage collector's workers): a
// loop's P is busy only while it has work. This needs the runtime's
// asynchronous preemption (its signal ends the loop's epoll_wait for a
// stop-the-world): with GODEBUG=asyncpreemptoff=1 the loops park as
// before.

var loopProcs struct {
	sync.Mutex
	reserved int // Ps added for blocking loops
}

// loopCount is the number of event loops a listener gets: Config.Loops,
// or DefaultLoops.
func (p *Proxy) loopCount() int {
	if p.cfg.Loops > 0 {
		return p.cfg.Loops
	}
	return DefaultLoops()
}

// DefaultLoops is the number of event loops a transparent listener gets
// by default: half the Ps the process had before blocking loops added
// theirs, rounded up. The rest of the CPUs are left to the kernel's TCP
// work (most of the proxy's cost, run in the loops' system calls and in
// softirq on any CPU) and the daemon's other work. A busy loop takes no
// new connections while another waits (the listener wakes one waiting
// loop), and a loop that serves more connections handles more events per
// epoll_wait: on the 2-vCPU benchmark machine one loop used 0.925 × the
// CPU per connection of two (docs/benchmarks.md).
func DefaultLoops() int {
	loopProcs.Lock()
	defer loopProcs.Unlock()
	return (max(1, runtime.GOMAXPROCS(0)-loopProcs.reserved) + 1) / 2
}

// blockingLoops reports whether loops block in epoll_wait themselves.
func blockingLoops() bool {
	for _, kv := range strings.Split(os.Getenv("GODEBUG"), ",") {
		if strings.TrimSpace(kv) == "asyncpreemptoff=1" {
			return false
		}
	}
	return os.Getenv("CW_PROXY_PARKED_LOOPS") == ""
}

// reserveProcs adds n Ps (or, negative, removes them) for blocking loops.
func reserveProcs(n int) {
	loopProcs.Lock()
	defer loopProcs.Unlock()
	loopProcs.reserved += n
	runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)+n))
}

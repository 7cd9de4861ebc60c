package proxy

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/recovery"
)

// A panic while handling one connection ends that connection only
// (internal/recovery): it is reset, the panic is logged with its stack and
// counted (Stats.Panics, clusterwall_panics_recovered_total{where="proxy"}),
// and the loop or goroutine goes on with the others. A panic while the
// connection accounting shared by all connections is being changed
// (admitLocked, releaseLocked) may leave it corrupt: the process stops
// instead (fail closed).

// recoverRound is deferred by serve: it closes the connection whose
// handling panicked, and puts back the posted work that had not run yet.
func (l *loop) recoverRound() {
	v := recover()
	if v == nil {
		return
	}
	c := l.cur
	l.cur = nil
	var attrs []any
	if c != nil {
		attrs = append(attrs, "client", c.req.src.String(), "name", c.req.name)
	}
	recovery.Report(l.p.logger, recovery.Proxy, v, attrs...)
	l.p.stats.panics.Add(1)
	if rest := l.postedRest; rest != nil {
		l.postedRest = nil
		l.mu.Lock()
		l.posted = append(rest, l.posted...)
		l.mu.Unlock()
		one := uint64(1)
		unix.RawSyscall(unix.SYS_WRITE, uintptr(l.evfd), uintptr(unsafe.Pointer(&one)), 8)
	}
	if c != nil && c.state != stClosed {
		// Closing it must not panic again: if it does, the loop's own
		// state is in doubt.
		func() {
			defer recovery.Critical("proxy event loop")
			setsockoptLinger0(c.cfd)
			l.close(c)
		}()
	}
}

// recoverOffLoop is deferred by the goroutines a loop connection's work
// leaves the loop for (a fresh lookup, Config.Dial): the connection is
// closed on its loop if it is still waiting for that work.
func (l *loop) recoverOffLoop(c *lconn, waiting uint8) {
	v := recover()
	if v == nil {
		return
	}
	recovery.Report(l.p.logger, recovery.Proxy, v, "client", c.req.src.String(), "name", c.req.name)
	l.p.stats.panics.Add(1)
	l.post(func() {
		if c.state == waiting {
			l.cur = c
			setsockoptLinger0(c.cfd)
			l.close(c)
		}
	})
}

// recoverSession is deferred by an explicit-proxy session's goroutines:
// the session's sockets are closed (finish does the accounting).
func (p *Proxy) recoverSession(s *session) {
	v := recover()
	if v == nil {
		return
	}
	recovery.Report(p.logger, recovery.Proxy, v, "client", s.src.String())
	p.stats.panics.Add(1)
	s.closeAll()
}

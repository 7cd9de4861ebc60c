package proxy

import (
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// Redecide swaps the compiled policy, as SetMatcher does, and decides every
// connection the proxy holds again with m — the same flow (source,
// destination it dialled, port, SNI/Host name, scheme) the first decision
// was about, asked of the same matcher the kernel and the DNS proxy follow.
// A connection m denies is closed at once (both sides), with one decision
// line (Action Deny, ActionReason telemetry.ReasonPolicyChanged and m's reason) and
// counted in Stats.Cut; a connection m still allows is left alone, however
// long it has been open. Connections still reading their first bytes, or
// resolving a name, are decided with m when they get there.
//
// The kernel cannot do this for the proxy: it sees the client's flow
// without its name. Redecide returns the number of connections it closed,
// once every event loop and explicit session has been looked at.
func (p *Proxy) Redecide(m *match.Matcher) int {
	p.redecideMu.Lock()
	defer p.redecideMu.Unlock()
	p.matcher.Store(m)
	p.mu.Lock()
	loops := make([]*loop, 0, len(p.loops))
	for l := range p.loops {
		loops = append(loops, l)
	}
	sessions := make([]*session, 0, len(p.sessions))
	for s := range p.sessions {
		sessions = append(sessions, s)
	}
	p.mu.Unlock()

	cut := 0
	results := make(chan int, len(loops))
	posted := 0
	for _, l := range loops {
		if l.post(func() { results <- l.redecide(m) }) {
			posted++
		}
	}
	for _, s := range sessions {
		if s.redecide(p, m) {
			cut++
		}
	}
	for range posted {
		cut += <-results // a loop that stops runs what was posted (loop.shutdown)
	}
	return cut
}

// recheck decides an open connection of req, dialled to dst, again with m.
// verified says whether dst was checked to be an address of req.name when
// the connection was made (always, unless a network rule allowed it: those
// are about addresses). A connection that m now allows by an application
// rule but whose destination was never verified for its name stays only if
// the firewall's resolver knows dst for the name (or the name is dst as an
// IP literal): the proxy never keeps what it would refuse as spoofed.
func (p *Proxy) recheck(m *match.Matcher, req *request, dst netip.Addr, verified bool) (match.Decision, bool) {
	if m == nil {
		return match.Decision{Action: policy.ActionDeny, Reason: ReasonNoPolicy}, false
	}
	d := m.Decide(req.flow(dst))
	if d.Action != policy.ActionAllow {
		return d, false
	}
	if d.Kind == policy.KindNetwork || verified {
		return d, true
	}
	if lit, err := netip.ParseAddr(req.name); err == nil && lit.Unmap() == dst {
		return d, true
	}
	if p.cfg.Resolver != nil && containsAddr(p.cfg.Resolver.Addrs(req.name), dst) {
		return d, true
	}
	d.Action, d.Reason = policy.ActionDeny, "destination "+dst.String()+" was never verified as an address of "+req.name
	return d, false
}

// emitCut logs and counts an open connection closed because m denies it.
func (p *Proxy) emitCut(m *match.Matcher, req *request, d match.Decision, dialed netip.AddrPort) {
	p.stats.cut.Add(1)
	v := verdict{d: d}
	v.deny(telemetry.ReasonPolicyChanged+": "+d.Reason, 0, 0)
	// Not a new decision: not counted in Allowed/Denied, no latency.
	p.cfg.Log(p.record(m, req, &v, dialed))
}

// redecide decides the loop's connections again with m (on the loop). It
// returns how many it closed.
func (l *loop) redecide(m *match.Matcher) int {
	cut := 0
	for fd, c := range l.conns {
		if fd != c.cfd || c.m == m {
			continue
		}
		switch c.state {
		case stHello, stDeciding:
			// Not decided yet: decided with m (decide's goroutine
			// sees the change and decides again).
			c.m = m
		case stHookDial, stDialing, stRelay:
			dst := c.v.dial[min(c.dialAt, len(c.v.dial)-1)]
			d, ok := l.p.recheck(m, &c.req, dst.Addr(), c.v.d.Kind != policy.KindNetwork)
			c.m = m
			if !ok {
				l.p.emitCut(m, &c.req, d, dst)
				l.close(c)
				cut++
			}
		}
	}
	return cut
}

// decided records what an explicit session was allowed to: the request and
// the address dialled, under matcher m. If the policy changed while it was
// being decided, it is decided again at once; it returns false when that
// closed it.
func (s *session) decided(p *Proxy, m *match.Matcher, req *request, dialed netip.AddrPort) bool {
	s.mu.Lock()
	s.req, s.dialed, s.m = *req, dialed, m
	s.mu.Unlock()
	if cur := p.matcher.Load(); cur != m {
		return !s.redecide(p, cur)
	}
	return true
}

// redecide decides an explicit session again with m and closes it if m
// denies it; it reports whether it did.
func (s *session) redecide(p *Proxy, m *match.Matcher) bool {
	s.mu.Lock()
	if s.m == nil || s.m == m || s.closed {
		s.mu.Unlock()
		return false
	}
	s.m = m
	req, dialed := s.req, s.dialed
	s.mu.Unlock()
	// Explicit sessions dial only addresses resolved for their name.
	d, ok := p.recheck(m, &req, dialed.Addr(), true)
	if ok {
		return false
	}
	p.emitCut(m, &req, d, dialed)
	s.closeAll()
	return true
}

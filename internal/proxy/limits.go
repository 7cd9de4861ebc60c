package proxy

import (
	"net/netip"
)

// Connection limits that are fair across sources (issue 17: 40 addresses
// holding idle connections filled the global limit of 16,384 and every
// other client was reset).
//
// Three limits apply to a new connection, each with its own answer:
//
//   - per address (MaxConnsPerSource): the address's own quota; over it,
//     the new connection is refused;
//   - per network — the source's /24 (IPv4) or /64 (IPv6), since one host
//     holds a whole /64 and a node's pods often share a /24
//     (MaxConnsPerPrefix): over it, the heaviest address of that network
//     gives up its oldest connection if the newcomer's address holds
//     fewer; otherwise the newcomer is refused;
//   - in all (MaxConns): over it, the heaviest network gives up a
//     connection (its heaviest address's oldest) if the newcomer's network
//     holds fewer; if the newcomer's network is itself the heaviest, the
//     heaviest address within it does, if the newcomer's address holds
//     fewer. Otherwise the newcomer is refused.
//
// So an attacker can fill the proxy only with its own connections, and
// anyone lighter still gets in: the heaviest sources are shed first, not
// the newest connection. The heaviest network is found in O(1) (networks
// sit in buckets by connection count); the heaviest address of a network
// by a scan of that network's addresses, only when something must be
// shed (at most 256 for a /24; at most MaxConnsPerPrefix for a /64).
//
// Admitting and releasing a connection moves a few list pointers and does
// not allocate once a source's entries exist (entries are recycled).

// connHandle is a connection's place in the limiter: embedded in every
// event-loop connection (lconn) and explicit session.
type connHandle struct {
	src        *srcEntry
	prev, next *connHandle
	counted    bool // holds a slot (admitted, not yet released or shed)
	// Who to tell when the connection is shed: the event loop that owns
	// lc, or sess's goroutine (by closing its sockets).
	loop *loop
	lc   *lconn
	sess *session
}

// srcEntry is one source address with connections.
type srcEntry struct {
	addr       netip.Addr
	n          int
	pfx        *pfxEntry
	prev, next *srcEntry   // the network's addresses
	head, tail *connHandle // its connections, oldest first
}

// pfxEntry is one network (/24 or /64) with connections.
type pfxEntry struct {
	key        netip.Prefix
	n          int
	addrs      *srcEntry
	prev, next *pfxEntry // the bucket of networks with n connections
}

// limiter is the proxy's connection accounting (under Proxy.mu).
type limiter struct {
	maxTotal, maxAddr, maxPfx int
	total                     int
	addrs                     map[netip.Addr]*srcEntry
	pfxs                      map[netip.Prefix]*pfxEntry
	// buckets[n] lists the networks with n connections (n >= 1), so the
	// heaviest is buckets[top]; kept only when there is a global limit.
	buckets []*pfxEntry
	top     int
	freeSrc []*srcEntry
	freePfx []*pfxEntry

	refusedAddr, refusedPfx, refusedTotal, shed uint64
}

// Prefix lengths of a source's network.
const (
	prefixBits4 = 24
	prefixBits6 = 64
)

func newLimiter(maxTotal, maxAddr, maxPfx int) *limiter {
	l := &limiter{maxTotal: maxTotal, maxAddr: maxAddr, maxPfx: maxPfx,
		addrs: map[netip.Addr]*srcEntry{}, pfxs: map[netip.Prefix]*pfxEntry{}}
	if maxTotal > 0 {
		l.buckets = make([]*pfxEntry, maxTotal+2)
	}
	return l
}

func networkOf(a netip.Addr) netip.Prefix {
	if a.Is4() {
		p, _ := a.Prefix(prefixBits4)
		return p
	}
	p, _ := a.Prefix(prefixBits6)
	return p
}

// Refusal reasons (the decision log's ActionReason).
const (
	reasonLimitSource  = "per-source connection limit reached"
	reasonLimitNetwork = "per-network connection limit reached"
	reasonLimitGlobal  = "global connection limit reached"
	reasonShed         = "connection shed: a connection limit was reached and this source held the most connections"
)

// admit counts h as a connection from a; when a limit is reached it may
// pick a connection of a heavier source to shed (victim, already released
// from the counts: the caller closes it). It returns a refusal reason, or
// "".
func (l *limiter) admit(h *connHandle, a netip.Addr) (victim *connHandle, reason string) {
	s := l.addrs[a]
	if l.maxAddr > 0 && s != nil && s.n >= l.maxAddr {
		l.refusedAddr++
		return nil, reasonLimitSource
	}
	key := networkOf(a)
	p := l.pfxs[key]
	if l.maxPfx > 0 && p != nil && p.n >= l.maxPfx {
		// The network is full: its heaviest address pays, if heavier.
		if v := heaviest(p); v != nil && sn(s)+1 < v.n {
			victim = l.shedFrom(v)
		} else {
			l.refusedPfx++
			return nil, reasonLimitNetwork
		}
	}
	if victim == nil && l.maxTotal > 0 && l.total >= l.maxTotal {
		pn := 0
		if p != nil {
			pn = p.n
		}
		switch {
		case pn+1 < l.top:
			victim = l.shedFrom(heaviest(l.buckets[l.top]))
		case pn == l.top && p != nil:
			if v := heaviest(p); v != nil && sn(s)+1 < v.n {
				victim = l.shedFrom(v)
			}
		}
		if victim == nil {
			l.refusedTotal++
			return nil, reasonLimitGlobal
		}
	}
	// The shed may have removed the entries: look them up again.
	if victim != nil {
		s, p = l.addrs[a], l.pfxs[key]
	}
	if p == nil {
		p = l.newPfx(key)
	}
	if s == nil {
		s = l.newSrc(a, p)
	}
	h.src, h.counted = s, true
	h.prev, h.next = s.tail, nil
	if s.tail != nil {
		s.tail.next = h
	} else {
		s.head = h
	}
	s.tail = h
	s.n++
	l.bump(p, +1)
	l.total++
	return victim, ""
}

func sn(s *srcEntry) int {
	if s == nil {
		return 0
	}
	return s.n
}

// heaviest returns the address of p with the most connections.
func heaviest(p *pfxEntry) *srcEntry {
	var best *srcEntry
	for s := p.addrs; s != nil; s = s.next {
		if best == nil || s.n > best.n {
			best = s
		}
	}
	return best
}

// shedFrom releases the oldest connection of s and returns it.
func (l *limiter) shedFrom(s *srcEntry) *connHandle {
	h := s.head
	l.release(h)
	l.shed++
	return h
}

// release gives h's slot back (once: a shed connection's later close
// finds it already released).
func (l *limiter) release(h *connHandle) {
	if !h.counted {
		return
	}
	h.counted = false
	s := h.src
	if h.prev != nil {
		h.prev.next = h.next
	} else {
		s.head = h.next
	}
	if h.next != nil {
		h.next.prev = h.prev
	} else {
		s.tail = h.prev
	}
	h.prev, h.next, h.src = nil, nil, nil
	s.n--
	p := s.pfx
	l.bump(p, -1)
	l.total--
	if s.n == 0 {
		l.dropSrc(s)
	}
	if p.n == 0 {
		l.dropPfx(p)
	}
}

// bump moves p to the bucket of its new count.
func (l *limiter) bump(p *pfxEntry, d int) {
	if l.buckets == nil {
		p.n += d
		return
	}
	if p.n > 0 {
		l.unbucket(p)
	}
	p.n += d
	if p.n <= 0 {
		for l.top > 0 && l.buckets[l.top] == nil {
			l.top--
		}
		return
	}
	if p.n >= len(l.buckets) { // only when the global limit is off for a moment (cannot happen)
		l.buckets = append(l.buckets, make([]*pfxEntry, p.n-len(l.buckets)+1)...)
	}
	p.prev, p.next = nil, l.buckets[p.n]
	if p.next != nil {
		p.next.prev = p
	}
	l.buckets[p.n] = p
	if p.n > l.top {
		l.top = p.n
	}
	for l.top > 0 && l.buckets[l.top] == nil {
		l.top--
	}
}

func (l *limiter) unbucket(p *pfxEntry) {
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		l.buckets[p.n] = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	}
	p.prev, p.next = nil, nil
}

func (l *limiter) newPfx(key netip.Prefix) *pfxEntry {
	var p *pfxEntry
	if n := len(l.freePfx); n > 0 {
		p = l.freePfx[n-1]
		l.freePfx = l.freePfx[:n-1]
	} else {
		p = new(pfxEntry)
	}
	*p = pfxEntry{key: key}
	l.pfxs[key] = p
	return p
}

func (l *limiter) newSrc(a netip.Addr, p *pfxEntry) *srcEntry {
	var s *srcEntry
	if n := len(l.freeSrc); n > 0 {
		s = l.freeSrc[n-1]
		l.freeSrc = l.freeSrc[:n-1]
	} else {
		s = new(srcEntry)
	}
	*s = srcEntry{addr: a, pfx: p, next: p.addrs}
	if p.addrs != nil {
		p.addrs.prev = s
	}
	p.addrs = s
	l.addrs[a] = s
	return s
}

func (l *limiter) dropSrc(s *srcEntry) {
	p := s.pfx
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		p.addrs = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	}
	delete(l.addrs, s.addr)
	*s = srcEntry{}
	if len(l.freeSrc) < 1024 {
		l.freeSrc = append(l.freeSrc, s)
	}
}

func (l *limiter) dropPfx(p *pfxEntry) {
	delete(l.pfxs, p.key)
	*p = pfxEntry{}
	if len(l.freePfx) < 1024 {
		l.freePfx = append(l.freePfx, p)
	}
}

// heaviestCounts returns the connections of the heaviest address and of
// the heaviest network (for the budgets' fill).
func (l *limiter) heaviestCounts() (addr, network int) {
	for _, s := range l.addrs {
		addr = max(addr, s.n)
	}
	for _, p := range l.pfxs {
		network = max(network, p.n)
	}
	return addr, network
}

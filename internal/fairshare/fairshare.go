// Package fairshare bounds what sources can hold — the L7 proxy's
// connections, the DNS proxy's queries waiting for upstreams — fairly:
// when a limit is full, the heaviest source gives up its oldest holder to
// a lighter newcomer, instead of the newcomer being refused (issue 17: 40
// addresses holding idle connections filled the proxy's global limit and
// every other client was reset).
//
// Three limits apply to a new holder, each with its own answer:
//
//   - per address: the address's own quota; over it, the newcomer is
//     refused;
//   - per network — the source's /24 (IPv4) or /64 (IPv6), since one host
//     holds a whole /64 and a node's pods often share a /24: over it, the
//     heaviest address of that network gives up its oldest holder if the
//     newcomer's address holds fewer; otherwise the newcomer is refused;
//   - in all: over it, the heaviest network gives up a holder (its
//     heaviest address's oldest) if the newcomer's network holds fewer; if
//     the newcomer's network is itself the heaviest, the heaviest address
//     within it does, if the newcomer's address holds fewer. Otherwise the
//     newcomer is refused.
//
// So an attacker can fill a budget only with its own holders, and anyone
// lighter still gets in. The heaviest network is found in O(1) (networks
// sit in buckets by count); the heaviest address of a network by a scan of
// that network's addresses, only when something must be shed (at most 256
// for a /24). Admitting and releasing a holder moves a few list pointers
// and does not allocate once its source's entries exist (entries are
// recycled).
package fairshare

import (
	"net/netip"
)

// Handle is one holder's place in the limiter (a connection, a query):
// embed it in the holder.
type Handle struct {
	src        *srcEntry
	prev, next *Handle
	counted    bool // holds a slot (admitted, not yet released or shed)
	// Owner is the holder, for whoever must end it when it is shed.
	Owner any
}

// Counted reports whether h holds a slot.
func (h *Handle) Counted() bool { return h.counted }

// srcEntry is one source address with connections.
type srcEntry struct {
	addr       netip.Addr
	n          int
	pfx        *pfxEntry
	prev, next *srcEntry // the network's addresses
	head, tail *Handle   // its connections, oldest first
}

// pfxEntry is one network (/24 or /64) with connections.
type pfxEntry struct {
	key        netip.Prefix
	n          int
	addrs      *srcEntry
	prev, next *pfxEntry // the bucket of networks with n connections
}

// Limiter is the accounting. It is not safe for concurrent use: the
// caller holds its own lock around every call.
type Limiter struct {
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

// New returns a limiter of maxTotal holders in all, maxAddr per address
// and maxPfx per network (/24 or /64); a limit <= 0 is off.
func New(maxTotal, maxAddr, maxPfx int) *Limiter {
	l := &Limiter{maxTotal: maxTotal, maxAddr: maxAddr, maxPfx: maxPfx,
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

// Reason says which limit refused a holder.
type Reason uint8

// Reasons.
const (
	OK           Reason = iota
	LimitSource         // the address's own limit
	LimitNetwork        // the network's limit, and its heaviest address holds no more than this one
	LimitGlobal         // the limit in all, and this source's network (or address) is the heaviest
)

// Admit counts h as a holder from a; when a limit is reached it may pick
// a holder of a heavier source to shed (victim, already released from the
// counts: the caller ends it). It returns why it refused, or OK.
func (l *Limiter) Admit(h *Handle, a netip.Addr) (victim *Handle, reason Reason) {
	s := l.addrs[a]
	if l.maxAddr > 0 && s != nil && s.n >= l.maxAddr {
		l.refusedAddr++
		return nil, LimitSource
	}
	key := networkOf(a)
	p := l.pfxs[key]
	if l.maxPfx > 0 && p != nil && p.n >= l.maxPfx {
		// The network is full: its heaviest address pays, if heavier.
		if v := heaviest(p); v != nil && sn(s)+1 < v.n {
			victim = l.shedFrom(v)
		} else {
			l.refusedPfx++
			return nil, LimitNetwork
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
			return nil, LimitGlobal
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
	return victim, OK
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
func (l *Limiter) shedFrom(s *srcEntry) *Handle {
	h := s.head
	l.Release(h)
	l.shed++
	return h
}

// Release gives h's slot back (once: a shed holder's later release finds
// it already released).
func (l *Limiter) Release(h *Handle) {
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
func (l *Limiter) bump(p *pfxEntry, d int) {
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

func (l *Limiter) unbucket(p *pfxEntry) {
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

func (l *Limiter) newPfx(key netip.Prefix) *pfxEntry {
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

func (l *Limiter) newSrc(a netip.Addr, p *pfxEntry) *srcEntry {
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

func (l *Limiter) dropSrc(s *srcEntry) {
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

func (l *Limiter) dropPfx(p *pfxEntry) {
	delete(l.pfxs, p.key)
	*p = pfxEntry{}
	if len(l.freePfx) < 1024 {
		l.freePfx = append(l.freePfx, p)
	}
}

// Total is the holders counted now.
func (l *Limiter) Total() int { return l.total }

// Refused returns the holders refused by each limit and those shed.
func (l *Limiter) Refused() (source, network, global, shed uint64) {
	return l.refusedAddr, l.refusedPfx, l.refusedTotal, l.shed
}

// Heaviest returns the holders of the heaviest address and of the
// heaviest network (a scan: for metrics, not the data path).
func (l *Limiter) Heaviest() (addr, network int) {
	for _, s := range l.addrs {
		addr = max(addr, s.n)
	}
	for _, p := range l.pfxs {
		network = max(network, p.n)
	}
	return addr, network
}

// SetLimits changes the limits; holders already counted stay (a smaller
// limit refuses or sheds the next newcomers).
func (l *Limiter) SetLimits(maxTotal, maxAddr, maxPfx int) {
	l.maxTotal, l.maxAddr, l.maxPfx = maxTotal, maxAddr, maxPfx
	if maxTotal <= 0 {
		return
	}
	need := maxTotal + 2
	for _, p := range l.pfxs {
		need = max(need, p.n+2)
	}
	if l.buckets == nil {
		l.buckets = make([]*pfxEntry, need)
		for _, p := range l.pfxs { // bucket the networks counted so far
			p.prev, p.next = nil, l.buckets[p.n]
			if p.next != nil {
				p.next.prev = p
			}
			l.buckets[p.n] = p
			l.top = max(l.top, p.n)
		}
		return
	}
	if len(l.buckets) < need {
		l.buckets = append(l.buckets, make([]*pfxEntry, need-len(l.buckets))...)
	}
}

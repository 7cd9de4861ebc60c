package dnsproxy

import (
	"net/netip"
	"strings"
	"time"
)

// Learn records addresses a peer gateway's DNS proxy handed out for name
// until expires (high availability: a client that resolved a name through
// one gateway can connect to that address through the other, whatever
// the other's own resolution returns). It never shortens an expiry, does
// not call OnLearn (no echo back to the peer), and refuses a new name
// when the table is full unless force. It reports whether the name was
// learned.
func (t *Table) Learn(name string, addrs []netip.Addr, expires time.Time, force bool) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "" || len(name) > maxName || len(addrs) == 0 {
		return false
	}
	clean := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a.IsValid() {
			clean = append(clean, a.Unmap())
		}
	}
	return t.learn(name, clean, expires.UnixNano(), force)
}

// Each calls fn for every name with its addresses that have not expired
// and the latest of their expiries (the daemon sends the whole table to a
// peer gateway that comes back).
func (t *Table) Each(fn func(name string, addrs []netip.Addr, expires time.Time)) {
	now := t.now().UnixNano()
	type entry struct {
		name    string
		addrs   []netip.Addr
		expires int64
	}
	var out []entry
	t.mu.RLock()
	for name, s := range t.names {
		e := entry{name: name}
		for _, l := range s {
			if l.expires > now {
				e.addrs = append(e.addrs, l.addr)
				e.expires = max(e.expires, l.expires)
			}
		}
		if len(e.addrs) > 0 {
			out = append(out, e)
		}
	}
	t.mu.RUnlock()
	for _, e := range out {
		fn(e.name, e.addrs, time.Unix(0, e.expires))
	}
}

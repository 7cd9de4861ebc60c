package dnsproxy

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterwall/clusterwall/internal/ascii"
)

// Table is the learned-address table: for every A/AAAA answer the proxy
// hands to a client, name -> addresses, each kept until the answer's TTL
// plus a grace period has passed. The rest of the firewall asks it whether
// an address is one the firewall resolved for a name (network rules'
// destinationFqdns through match.FQDNResolver, the L7 proxy's spoofing
// check).
//
// An address is never expired while a connection still uses it: when its
// time is up, the table asks OnExpire (the daemon looks at conntrack); a
// true answer keeps it for another grace period.
type Table struct {
	mu     sync.RWMutex
	names  map[string][]learned // canonical name -> addresses
	byAddr map[netip.Addr][]string

	grace    atomic.Int64 // nanoseconds
	onExpire func(name string, addr netip.Addr) (keep bool)
	maxNames int
	now      func() time.Time

	dropped atomic.Uint64 // names not learned because the table was full
}

type learned struct {
	addr    netip.Addr
	expires int64 // unix nanoseconds
}

// TableOptions configure a Table.
type TableOptions struct {
	// Grace is added to every answer's TTL (default 5 minutes).
	Grace time.Duration
	// OnExpire, if set, is asked before an address is forgotten; returning
	// true keeps it for another grace period (the daemon answers from
	// conntrack: a connection still uses the address). The daemon also
	// refreshes or removes the kernel set element accordingly. It is called
	// without the table's lock held, from the goroutine running Run/Sweep.
	OnExpire func(name string, addr netip.Addr) (keep bool)
	// MaxNames bounds the number of names (default 100,000). When full, new
	// names are learned only if a rule needs them (see Config.Interesting).
	MaxNames int
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// DefaultGrace is the default grace period added to answers' TTLs.
const DefaultGrace = 5 * time.Minute

// NewTable returns an empty table.
func NewTable(o TableOptions) *Table {
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.MaxNames <= 0 {
		o.MaxNames = 100_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	t := &Table{
		names:    make(map[string][]learned),
		byAddr:   make(map[netip.Addr][]string),
		onExpire: o.OnExpire,
		maxNames: o.MaxNames,
		now:      o.Now,
	}
	t.grace.Store(int64(o.Grace))
	return t
}

// Grace returns the grace period.
func (t *Table) Grace() time.Duration { return time.Duration(t.grace.Load()) }

// SetGrace changes the grace period for answers learned from now on.
func (t *Table) SetGrace(d time.Duration) {
	if d > 0 {
		t.grace.Store(int64(d))
	}
}

// Resolved reports whether addr is, right now, one of the addresses the
// proxy handed out for name. name may carry upper-case letters and a
// trailing dot. It does not allocate (match.FQDNResolver).
func (t *Table) Resolved(name string, addr netip.Addr) bool {
	addr = addr.Unmap()
	now := t.now().UnixNano()
	found := false
	if isCanonical(name) {
		t.mu.RLock()
		found = hasLive(t.names[name], addr, now)
		t.mu.RUnlock()
		return found
	}
	var buf [maxName + 1]byte
	key, ok := foldName(&buf, name)
	if !ok {
		return false
	}
	t.mu.RLock()
	found = hasLive(t.names[string(key)], addr, now)
	t.mu.RUnlock()
	return found
}

func hasLive(s []learned, addr netip.Addr, now int64) bool {
	for i := range s {
		if s[i].addr == addr && s[i].expires > now {
			return true
		}
	}
	return false
}

// isCanonical: no upper-case letter and no trailing dot.
func isCanonical(name string) bool {
	return (name == "" || name[len(name)-1] != '.') && !ascii.HasUpper(name)
}

// foldName writes name lower-cased without its trailing dot into buf.
func foldName(buf *[maxName + 1]byte, name string) ([]byte, bool) {
	if name != "" && name[len(name)-1] == '.' {
		name = name[:len(name)-1]
	}
	if len(name) > len(buf) {
		return nil, false
	}
	for i := 0; i < len(name); i++ {
		buf[i] = ascii.Lower(name[i])
	}
	return buf[:len(name)], true
}

// Addrs returns the live addresses learned for name.
func (t *Table) Addrs(name string) []netip.Addr {
	name = canonical(name)
	now := t.now().UnixNano()
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []netip.Addr
	for _, l := range t.names[name] {
		if l.expires > now {
			out = append(out, l.addr)
		}
	}
	return out
}

// Lookup returns the names addr was handed out for (live entries only).
func (t *Table) Lookup(addr netip.Addr) []string {
	addr = addr.Unmap()
	now := t.now().UnixNano()
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []string
	for _, n := range t.byAddr[addr] {
		if hasLive(t.names[n], addr, now) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Len returns the number of names in the table.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.names)
}

// Dropped returns how many answers were not learned because the table was
// full.
func (t *Table) Dropped() uint64 { return t.dropped.Load() }

// covers reports whether every addr is already learned for name until at
// least expires, so nothing (table nor kernel) needs to change.
func (t *Table) covers(name string, addrs []netip.Addr, expires int64) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s := t.names[name]
	for _, a := range addrs {
		ok := false
		for i := range s {
			if s[i].addr == a && s[i].expires >= expires {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// learn records addrs for name until expires (never shortening an
// existing expiry). A new name is refused when the table is full unless
// force is set.
func (t *Table) learn(name string, addrs []netip.Addr, expires int64, force bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.names[name]
	if !ok && len(t.names) >= t.maxNames && !force {
		t.dropped.Add(1)
		return false
	}
	for _, a := range addrs {
		found := false
		for i := range s {
			if s[i].addr == a {
				found = true
				if s[i].expires < expires {
					s[i].expires = expires
				}
				break
			}
		}
		if !found {
			s = append(s, learned{addr: a, expires: expires})
			t.byAddr[a] = append(t.byAddr[a], name)
		}
	}
	t.names[name] = s
	return true
}

// Sweep handles every address whose time is up: OnExpire decides whether
// it is kept for another grace period, otherwise it is forgotten.
func (t *Table) Sweep() {
	now := t.now().UnixNano()
	type item struct {
		name string
		addr netip.Addr
	}
	var due []item
	t.mu.RLock()
	for n, s := range t.names {
		for _, l := range s {
			if l.expires <= now {
				due = append(due, item{n, l.addr})
			}
		}
	}
	t.mu.RUnlock()
	if len(due) == 0 {
		return
	}
	keep := make([]bool, len(due))
	if t.onExpire != nil {
		for i, d := range due {
			keep[i] = t.onExpire(d.name, d.addr)
		}
	}
	grace := t.grace.Load()
	now = t.now().UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, d := range due {
		s := t.names[d.name]
		j := slices.IndexFunc(s, func(l learned) bool { return l.addr == d.addr })
		if j < 0 || s[j].expires > now {
			continue // gone, or refreshed by a new answer meanwhile
		}
		if keep[i] {
			s[j].expires = now + grace
			continue
		}
		s = slices.Delete(s, j, j+1)
		if len(s) == 0 {
			delete(t.names, d.name)
		} else {
			t.names[d.name] = s
		}
		ns := slices.DeleteFunc(t.byAddr[d.addr], func(n string) bool { return n == d.name })
		if len(ns) == 0 {
			delete(t.byAddr, d.addr)
		} else {
			t.byAddr[d.addr] = ns
		}
	}
}

// Run sweeps every interval (default 1 s) until ctx is done.
func (t *Table) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Second
	}
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			t.Sweep()
		}
	}
}

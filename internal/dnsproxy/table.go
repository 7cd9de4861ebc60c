package dnsproxy

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterwall/clusterwall/internal/ascii"
	"github.com/clusterwall/clusterwall/internal/recovery"
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
	onLearn  func(name string, addrs []netip.Addr, expires time.Time) // table_ha.go
	maxNames int
	maxAddrs int // addresses of all names
	maxPer   int // addresses of one name
	entries  int // addresses of all names now (under mu)
	now      func() time.Time

	dropped  atomic.Uint64 // names or addresses not learned because the table was full
	replaced atomic.Uint64 // addresses that made room for a newer one of the same name
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
	// OnLearn, if set, is told of every answer the proxy learned
	// something new from (the daemon sends it to its HA peer; Learn, the
	// peer's side, does not call it). It must not block.
	OnLearn func(name string, addrs []netip.Addr, expires time.Time)
	// MaxNames bounds the number of names (default 100,000). When full, new
	// names are learned only if a rule needs them (see Config.Interesting).
	MaxNames int
	// MaxAddrs bounds the addresses of all names together (default
	// 1,000,000); when full, new addresses are learned only for names a
	// rule needs. MaxAddrsPerName bounds one name's addresses (default
	// 256): a name whose server hands out a new address for every query
	// (an attacker's domain) replaces its own soonest-expiring address
	// instead of growing. Together they bound the table's memory (about
	// 100 bytes per address).
	MaxAddrs        int
	MaxAddrsPerName int
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Defaults of TableOptions.
const (
	DefaultGrace           = 5 * time.Minute
	DefaultMaxNames        = 100_000
	DefaultMaxAddrs        = 1_000_000
	DefaultMaxAddrsPerName = 256
)

// NewTable returns an empty table.
func NewTable(o TableOptions) *Table {
	if o.Grace <= 0 {
		o.Grace = DefaultGrace
	}
	if o.MaxNames <= 0 {
		o.MaxNames = DefaultMaxNames
	}
	if o.MaxAddrs <= 0 {
		o.MaxAddrs = DefaultMaxAddrs
	}
	if o.MaxAddrsPerName <= 0 {
		o.MaxAddrsPerName = DefaultMaxAddrsPerName
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	t := &Table{
		names:    make(map[string][]learned),
		byAddr:   make(map[netip.Addr][]string),
		onExpire: o.OnExpire,
		onLearn:  o.OnLearn,
		maxNames: o.MaxNames,
		maxAddrs: o.MaxAddrs,
		maxPer:   o.MaxAddrsPerName,
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
	defer recovery.Critical("dns learned-address table") // FQDN rules decide with it
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
		switch {
		case found:
		case len(s) >= t.maxPer:
			// The name's own soonest-expiring address makes room.
			j := 0
			for i := range s {
				if s[i].expires < s[j].expires {
					j = i
				}
			}
			t.unindex(s[j].addr, name)
			s[j] = learned{addr: a, expires: expires}
			t.byAddr[a] = append(t.byAddr[a], name)
			t.replaced.Add(1)
		case t.entries >= t.maxAddrs && !force:
			t.dropped.Add(1)
		default:
			s = append(s, learned{addr: a, expires: expires})
			t.byAddr[a] = append(t.byAddr[a], name)
			t.entries++
		}
	}
	if len(s) == 0 {
		return false
	}
	t.names[name] = s
	return true
}

// unindex removes name from addr's reverse index entry (under mu).
func (t *Table) unindex(addr netip.Addr, name string) {
	ns := slices.DeleteFunc(t.byAddr[addr], func(n string) bool { return n == name })
	if len(ns) == 0 {
		delete(t.byAddr, addr)
	} else {
		t.byAddr[addr] = ns
	}
}

// TableStats is the table's fill.
type TableStats struct {
	Names, MaxNames, Addrs, MaxAddrs int
	Dropped, Replaced                uint64
}

// Stats returns the table's fill and what its bounds turned away.
func (t *Table) Stats() TableStats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return TableStats{Names: len(t.names), MaxNames: t.maxNames, Addrs: t.entries, MaxAddrs: t.maxAddrs,
		Dropped: t.dropped.Load(), Replaced: t.replaced.Load()}
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
	defer recovery.Critical("dns learned-address table")
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
		t.entries--
		if len(s) == 0 {
			delete(t.names, d.name)
		} else {
			t.names[d.name] = s
		}
		t.unindex(d.addr, d.name)
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

package nft

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/ascii"
)

// Runner programs a compiled ruleset into a data plane. The netlink
// implementation programs the kernel; Recorder records for unit tests.
type Runner interface {
	// Apply replaces the data plane's table with rs in one atomic step:
	// on error the previous ruleset stays in force.
	Apply(rs *Ruleset) error
	// AddFQDNAddrs adds addresses the DNS proxy resolved for fqdn (a
	// network rule's destinationFqdns entry) to the sets of every rule
	// that names it, for ttl (at least MinFQDNTTL). The runner remembers
	// them until they expire, so that a later Apply keeps them.
	AddFQDNAddrs(fqdn string, addrs []netip.Addr, ttl time.Duration) error
	// Flush removes clusterwall's table, and only it.
	Flush() error
	// Show reads clusterwall's table back, with counters.
	Show() (*State, error)
}

// MinFQDNTTL is the shortest time an FQDN address stays in a set, so that
// a client that connects right after its DNS answer expired is not cut off.
const MinFQDNTTL = 30 * time.Second

// NetlinkOptions configure a NetlinkRunner.
type NetlinkOptions struct {
	// NetNSFd is an open file descriptor of the network namespace to
	// program; 0 for the caller's own namespace.
	NetNSFd int
	// Table is the table name Flush and Show act on when nothing was
	// applied yet (default "clusterwall").
	Table  string
	Logger *slog.Logger
}

// NetlinkRunner programs nftables through netlink (github.com/google/nftables).
// It is safe for concurrent use.
type NetlinkRunner struct {
	opts NetlinkOptions
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	current *Ruleset
	known   *kernelTable // what the table holds (apply.go); nil: list it
	pool    rawPool      // the kept netlink socket (rawnl.go); not under mu
	last    ApplyStats
	// keptCounters are the named counters the last apply found in the
	// table (it created the others, at zero): CountersAfterApply.
	keptCounters []string
	// pathCache maps the tags of pathsOf (the running ruleset) to rule
	// paths (Counters).
	pathsOf   *Ruleset
	pathCache map[string]string
	learned   map[string]map[netip.Addr]time.Time // fqdn -> address -> expiry
	// splitMin is the number of new rules from which stage 1 is two
	// transactions (applysplit.go); 0: splitRulesMin.
	splitMin int
	// setOrderOff (tests: BenchmarkApplySetOrder) creates the new sets in
	// the ruleset's order instead of orderNewSets'.
	setOrderOff bool
	// retiring is the deletion of the last apply's old ruleset, under way
	// or not yet collected (retire.go); beforeRetire, when set (tests),
	// runs before it, and an error it returns stands for the deletion's.
	retiring     *retirement
	beforeRetire func() error
	// pre is what Prestage added for the next apply (prestage.go).
	pre *prestaged
}

// NewNetlinkRunner returns a runner for the namespace in opts.
func NewNetlinkRunner(opts NetlinkOptions) *NetlinkRunner {
	if opts.Table == "" {
		opts.Table = DefaultTable
	}
	l := opts.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &NetlinkRunner{opts: opts, log: l, now: time.Now, learned: map[string]map[netip.Addr]time.Time{}}
}

// OpenNetNS opens a named network namespace (as `ip netns` names it).
func OpenNetNS(name string) (*os.File, error) {
	if name == "" || filepath.Base(name) != name {
		return nil, fmt.Errorf("bad network namespace name %q", name)
	}
	f, err := os.Open(filepath.Join("/run/netns", name))
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", name, err)
	}
	return f, nil
}

// Socket buffers: the kernel takes a whole batch in one sendmsg (a
// 10,000-rule policy is some 7 MB), and a rejected batch may answer with
// an error for every failing message before we read any.
const (
	sndBuf = 64 << 20
	rcvBuf = 16 << 20
)

func bigBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndBuf); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		// Without CAP_NET_ADMIN, fall back to what the limits allow.
		_ = c.SetWriteBuffer(sndBuf)
		_ = c.SetReadBuffer(rcvBuf)
	}
	return nil
}

// conn opens a google/nftables connection for queries (one socket for
// all of them; CloseLasting closes it). Changes go through transact.
func (r *NetlinkRunner) conn() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(bigBuffers), nftables.AsLasting()}
	if r.opts.NetNSFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(r.opts.NetNSFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables netlink: %w", err)
	}
	return c, nil
}

func kernelErr(op string, err error) error {
	switch {
	case errors.Is(err, syscall.EPERM) || errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s: %w (clusterwall needs CAP_NET_ADMIN: run as root)", op, err)
	case errors.Is(err, syscall.EPROTONOSUPPORT) || errors.Is(err, syscall.ENOENT) && op == "open":
		return fmt.Errorf("%s: %w (is nf_tables available?)", op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Apply implements Runner: see apply.go.
func (r *NetlinkRunner) Apply(rs *Ruleset) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.apply(rs)
}

// tableAndChains finds the inet table name and its chains; table is nil
// when there is no such table.
func tableAndChains(c *nftables.Conn, name string) (*nftables.Table, []*nftables.Chain, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, nil, kernelErr("list tables", err)
	}
	var table *nftables.Table
	for _, t := range tables {
		if t.Name == name {
			table = t
		}
	}
	if table == nil {
		return nil, nil, nil
	}
	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, nil, kernelErr("list chains", err)
	}
	var chains []*nftables.Chain
	for _, ch := range all {
		if ch.Table != nil && ch.Table.Name == name {
			chains = append(chains, ch)
		}
	}
	return table, chains, nil
}

// learnedFor returns the remembered FQDN addresses for each FQDN set of rs.
func (r *NetlinkRunner) learnedFor(rs *Ruleset, now time.Time) func(string) []FQDNAddr {
	bySet := map[string][]FQDNAddr{}
	for fqdn, addrs := range r.learned {
		for a, exp := range addrs {
			if !exp.After(now) {
				delete(addrs, a)
			}
		}
		if len(addrs) == 0 {
			delete(r.learned, fqdn)
			continue
		}
		for _, set := range append(rs.FQDNSets(fqdn), rs.DNATMaps(fqdn)...) {
			for a, exp := range addrs {
				bySet[set] = append(bySet[set], FQDNAddr{Addr: a, Expires: exp})
			}
		}
	}
	for _, l := range bySet {
		// An address resolved for two names of one rule: keep the later expiry.
		sort.Slice(l, func(i, j int) bool {
			if l[i].Addr != l[j].Addr {
				return l[i].Addr.Less(l[j].Addr)
			}
			return l[i].Expires.After(l[j].Expires)
		})
	}
	return func(set string) []FQDNAddr {
		l := bySet[set]
		out := l[:0:0]
		for i, x := range l {
			if i == 0 || l[i-1].Addr != x.Addr {
				out = append(out, x)
			}
		}
		return out
	}
}

// AddFQDNAddrs implements Runner.
func (r *NetlinkRunner) AddFQDNAddrs(fqdn string, addrs []netip.Addr, ttl time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ttl = max(ttl, MinFQDNTTL).Truncate(time.Millisecond)
	exp := r.now().Add(ttl)
	fqdn = normName(fqdn)
	m := r.learned[fqdn]
	if m == nil {
		m = map[netip.Addr]time.Time{}
		r.learned[fqdn] = m
	}
	for _, a := range addrs {
		a = a.Unmap()
		if a.IsValid() && m[a].Before(exp) {
			m[a] = exp
		}
	}
	if r.current == nil {
		return nil
	}
	sets, maps := r.current.FQDNSets(fqdn), r.current.DNATMaps(fqdn)
	if len(sets) == 0 && len(maps) == 0 {
		return nil
	}
	table := &nftables.Table{Name: r.current.Table, Family: nftables.TableFamilyINet}
	cur := r.current
	now := r.now()
	var known []FQDNAddr
	for a, exp := range m {
		known = append(known, FQDNAddr{Addr: a, Expires: exp})
	}
	return r.transact(0, nftPart(func(c *nftables.Conn) error {
		// A DNAT map is rewritten whole: its target may have changed.
		for _, name := range maps {
			s := cur.Set(name)
			ns := &nftables.Set{Table: table, Name: name, HasTimeout: true, IsMap: true}
			c.FlushSet(ns)
			if elems := dnatMapElems(s, known, now); len(elems) > 0 {
				if err := c.SetAddElements(ns, elems); err != nil {
					return fmt.Errorf("dnat map %s: %w", name, err)
				}
			}
		}
		for _, name := range sets {
			s := cur.Set(name)
			var elems []nftables.SetElement
			var seen []netip.Addr
			for _, a := range addrs {
				a = a.Unmap()
				// An answer may hold an address twice (or as ::ffff:a.b.c.d
				// too): deleting it twice would fail the transaction.
				if !a.IsValid() || famOf(a) != s.Family || slices.Contains(seen, a) {
					continue
				}
				seen = append(seen, a)
				elems = append(elems, nftables.SetElement{Key: valBytes(s.Family, fieldDst, addrVal(a)), Timeout: ttl})
			}
			if len(elems) == 0 {
				continue
			}
			ns := &nftables.Set{Table: table, Name: name, HasTimeout: true}
			// Add (creates missing ones), delete, add: refreshes the timeout
			// of elements that exist, in one transaction.
			for _, add := range []bool{true, false, true} {
				var err error
				if add {
					err = c.SetAddElements(ns, elems)
				} else {
					err = c.SetDeleteElements(ns, elems)
				}
				if err != nil {
					return fmt.Errorf("fqdn set %s: %w", name, err)
				}
			}
		}
		return nil
	}))
}

func normName(s string) string {
	b := []byte(s)
	for len(b) > 0 && b[len(b)-1] == '.' {
		b = b[:len(b)-1]
	}
	return ascii.ToLower(string(b))
}

// Flush implements Runner.
func (r *NetlinkRunner) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.settle()
	r.pre = nil // the table goes, with what a prestage added
	t := &nftables.Table{Name: r.table(), Family: nftables.TableFamilyINet}
	err := r.transact(0, nftPart(func(c *nftables.Conn) error {
		c.AddTable(t)
		c.DelTable(t)
		return nil
	}))
	r.known = nil
	if err != nil {
		return kernelErr("flush", err)
	}
	r.current = nil
	return nil
}

func (r *NetlinkRunner) table() string {
	if r.current != nil {
		return r.current.Table
	}
	return r.opts.Table
}

// Show implements Runner.
func (r *NetlinkRunner) Show() (*State, error) {
	r.mu.Lock()
	r.settle()
	name := r.table()
	r.mu.Unlock()
	c, err := r.conn()
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	return readState(c, name)
}

package nft

import (
	"cmp"
	"encoding/binary"
	"slices"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Counters reads the decision counters of clusterwall's table from the
// kernel: the named counter of every policy decision (Counter.Name, the
// decision's log tag), as State.Counters sums them. Unlike Show it reads
// only the table's objects (one netlink dump), so it is cheap enough for
// every metrics scrape. A missing table yields no counters.
func (r *NetlinkRunner) Counters() ([]RuleCounter, error) {
	r.mu.Lock()
	r.settle() // no deleted counter read beside its successor (retire.go)
	name := r.table()
	paths := r.paths()
	r.mu.Unlock()
	exists, _, _, err := r.tableInfo(name)
	if err != nil || !exists {
		return nil, err
	}
	objs, err := r.listObjects(name, nftables.ObjTypeCounter)
	if err != nil {
		return nil, err
	}
	sums := newCounterSums(paths, len(objs))
	for n, cnt := range objs {
		sums.add(n, cnt.packets, cnt.bytes)
	}
	sortCounters(sums.out)
	return sums.out, nil
}

// CountersAfterApply reads the decision counters of the running ruleset
// as Counters does, right after an apply, knowing which ones the apply
// created: those are zero and not read; only the counters the table had
// already (kept from an earlier apply, or from an earlier process) are
// read — by name when they are few or the policy is large (CountersOf),
// else by one dump. A first apply to an empty table so reads nothing,
// where a dump of 100,000 counters costs the kernel about 1.5 s of CPU.
func (r *NetlinkRunner) CountersAfterApply() ([]RuleCounter, error) {
	return r.CountersAfterApplyLater()()
}

// CountersAfterApplyLater is CountersAfterApply in two parts: what it
// reads from the kernel is read now, and the counters (the created ones
// at zero, with those read, summed and sorted) are made by finish, which
// may run later (after the apply has returned: at 100,000 counters that
// is most of the work) and returns their values as of this call.
func (r *NetlinkRunner) CountersAfterApplyLater() (finish func() ([]RuleCounter, error)) {
	now := func(cs []RuleCounter, err error) func() ([]RuleCounter, error) {
		return func() ([]RuleCounter, error) { return cs, err }
	}
	r.mu.Lock()
	if r.current == nil {
		r.mu.Unlock()
		return now(r.Counters())
	}
	cur := r.current
	kept := slices.Clone(r.keptCounters)
	r.mu.Unlock()
	var read []RuleCounter
	if len(kept) > 0 {
		if all := cur.Counters(); len(all) < 32768 && len(kept) > len(all)/16 {
			return now(r.Counters())
		}
		var err error
		if read, err = r.countersNamed(kept); err != nil {
			return now(nil, err)
		}
	}
	return func() ([]RuleCounter, error) {
		r.mu.Lock()
		var paths map[string]string
		if r.current == cur {
			paths = r.paths() // made once per ruleset (100,000 rules: a map of as many)
		} else {
			paths = rulesetPaths(cur)
		}
		r.mu.Unlock()
		all := cur.Counters()
		sums := newCounterSums(paths, len(all))
		for _, n := range all {
			sums.add(n, 0, 0)
		}
		for _, c := range read {
			sums.add(c.Tag, c.Packets, c.Bytes)
		}
		sortCounters(sums.out)
		return sums.out, nil
	}
}

// KeptCounters returns the named counters the last apply found in the
// table already (it created the others, at zero).
func (r *NetlinkRunner) KeptCounters() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.keptCounters)
}

// CountersOf reads the named counters of tags (with their generation: the
// counters' names) by name, without listing the table: requests for a
// few hundred counters go in one datagram (the kernel answers each with
// the counter, or an error for a counter the table does not have, which
// is left out). Its cost grows with the number of tags; a dump of every
// counter (Counters) costs the kernel a walk of all the table's objects
// per 32 KiB round — about 1.5 s of CPU for 100,000 counters. The answer
// is Counters' for those tags: tags without their generation, summed, in
// the same order.
func (r *NetlinkRunner) CountersOf(tags []LogTag) ([]RuleCounter, error) {
	names := make([]string, len(tags))
	for i, t := range tags {
		names[i] = t.String()
	}
	out, err := r.countersNamed(names)
	if err != nil {
		return nil, err
	}
	sortCounters(out)
	return out, nil
}

// countersNamed reads the named counters of names (unsorted; see
// CountersOf).
func (r *NetlinkRunner) countersNamed(names []string) ([]RuleCounter, error) {
	r.mu.Lock()
	r.settle()
	table := r.table()
	paths := r.paths()
	r.mu.Unlock()
	return r.countersNamedIn(table, paths, names)
}

// countersNamedIn is countersNamed for table, whose rules' paths are
// paths, without r.mu (an apply holding it reads counters this way while
// the kernel works on its stage 1: ApplyOverlapping).
func (r *NetlinkRunner) countersNamedIn(table string, paths map[string]string, names []string) ([]RuleCounter, error) {
	c, err := r.getRaw()
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() { r.putRaw(c, ok) }()
	sums := newCounterSums(paths, len(names))
	typ := binary.BigEndian.AppendUint32(nil, uint32(nftables.ObjTypeCounter))
	buf := make([]byte, 64<<10)
	const chunk = 512
	for len(names) > 0 {
		n := min(chunk, len(names))
		var w wire
		for _, name := range names[:n] {
			off := w.msg(unix.NFT_MSG_GETOBJ, 0)
			w.strAttr(unix.NFTA_OBJ_TABLE, table)
			w.strAttr(unix.NFTA_OBJ_NAME, name)
			w.attr(unix.NFTA_OBJ_TYPE, typ)
			w.end(off)
		}
		names = names[n:]
		if err := c.send(w.b); err != nil {
			return nil, kernelErr("get counters", err)
		}
		// One answer per request: the counter, or an error.
		for n > 0 {
			b, err := c.recv(buf)
			if err != nil {
				return nil, kernelErr("get counters", err)
			}
			if _, err := eachMsg(b, func(m nlMsg) (bool, error) {
				n--
				if m.typ == unix.NLMSG_ERROR {
					if errno := m.errno(); errno != 0 && errno != syscall.ENOENT {
						return true, kernelErr("get counter", errno)
					}
					return false, nil
				}
				ad, err := m.attributes()
				if ad == nil || err != nil {
					return err != nil, err
				}
				_, name, o := decodeObject(ad)
				if err := ad.Err(); err != nil {
					return true, err
				}
				sums.add(name, o.packets, o.bytes)
				return false, nil
			}); err != nil {
				return nil, err
			}
		}
	}
	ok = true
	return sums.out, nil
}

// counterSums sums named counters by their tag without its generation,
// as the rules' comments have it (Counters, CountersOf).
type counterSums struct {
	paths map[string]string
	byTag map[string]int
	out   []RuleCounter
}

func newCounterSums(paths map[string]string, n int) *counterSums {
	return &counterSums{paths: paths, byTag: map[string]int{}, out: make([]RuleCounter, 0, n)}
}

// add counts a counter named name (a log tag; other names are skipped).
func (s *counterSums) add(name string, packets, bytes uint64) {
	t, err := ParseLogTag(name)
	if err != nil {
		return
	}
	t.Gen = 0
	tag := t.String()
	i, ok := s.byTag[tag]
	if !ok {
		i = len(s.out)
		s.byTag[tag] = i
		s.out = append(s.out, RuleCounter{Tag: tag, Path: s.paths[tag]})
	}
	s.out[i].Packets += packets
	s.out[i].Bytes += bytes
}

// paths maps the tags (without generation) of the running ruleset to the
// rule paths of their comments; r.mu is held.
func (r *NetlinkRunner) paths() map[string]string {
	if r.current == nil {
		return nil
	}
	if r.pathsOf == r.current {
		return r.pathCache
	}
	m := rulesetPaths(r.current)
	r.pathsOf, r.pathCache = r.current, m
	return m
}

// rulesetPaths maps the tags (without generation) of rs to the rule paths
// of their comments.
func rulesetPaths(rs *Ruleset) map[string]string {
	m := map[string]string{}
	for _, c := range rs.Chains {
		for _, ru := range c.Rules {
			if tag, path, ok := strings.Cut(ru.Comment, " "); ok && strings.HasPrefix(tag, "cw:") {
				if _, dup := m[tag]; !dup {
					m[tag] = path
				}
			}
		}
	}
	return m
}

// counterObjects reads the named counters of table t.
func counterObjects(c *nftables.Conn, t *nftables.Table) (map[string]*expr.Counter, error) {
	objs, err := c.GetNamedObjects(t)
	if err != nil {
		return nil, kernelErr("list objects", err)
	}
	out := make(map[string]*expr.Counter, len(objs))
	for _, o := range objs {
		if no, ok := o.(*nftables.NamedObj); ok && no.Type == nftables.ObjTypeCounter {
			if cnt, ok := no.Obj.(*expr.Counter); ok {
				out[no.Name] = cnt
			}
		}
	}
	return out, nil
}

// sortCounters orders counters as State.Counters does: input drops,
// default deny, DNAT rules, network rules by index. Each tag is parsed
// once (parsing in the comparison took 0.6 s of CPU per read of 100,000
// counters).
func sortCounters(out []RuleCounter) {
	type ranked struct {
		a, b int
		c    RuleCounter
	}
	rs := make([]ranked, len(out))
	for i, c := range out {
		rs[i] = ranked{a: 9, c: c}
		t, err := ParseLogTag(c.Tag)
		if err != nil {
			continue
		}
		switch t.Kind {
		case LogInputDrop:
			rs[i].a = 0
		case LogDefaultDeny:
			rs[i].a = 1
		case LogDNAT:
			rs[i].a, rs[i].b = 2, t.Index
		case LogThreatDeny, LogThreatAlert:
			rs[i].a = 3
		default:
			rs[i].a, rs[i].b = 4, t.Index
		}
	}
	slices.SortStableFunc(rs, func(x, y ranked) int {
		if x.a != y.a {
			return cmp.Compare(x.a, y.a)
		}
		if x.b != y.b {
			return cmp.Compare(x.b, y.b)
		}
		return strings.Compare(x.c.Tag, y.c.Tag)
	})
	for i := range rs {
		out[i] = rs[i].c
	}
}

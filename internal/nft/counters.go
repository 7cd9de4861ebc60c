package nft

import (
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Counters reads the decision counters of clusterwall's table from the
// kernel: the named counter of every policy decision (Counter.Name, the
// decision's log tag), as State.Counters sums them. Unlike Show it reads
// only the table's objects (one netlink dump), so it is cheap enough for
// every metrics scrape. A missing table yields no counters.
func (r *NetlinkRunner) Counters() ([]RuleCounter, error) {
	r.mu.Lock()
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
	// One per tag without its generation, as the rules' comments have it.
	byTag := map[string]int{}
	out := make([]RuleCounter, 0, len(objs))
	for n, cnt := range objs {
		t, err := ParseLogTag(n)
		if err != nil {
			continue
		}
		t.Gen = 0
		tag := t.String()
		i, ok := byTag[tag]
		if !ok {
			i = len(out)
			byTag[tag] = i
			out = append(out, RuleCounter{Tag: tag, Path: paths[tag]})
		}
		out[i].Packets += cnt.packets
		out[i].Bytes += cnt.bytes
	}
	sortCounters(out)
	return out, nil
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
	m := map[string]string{}
	for _, c := range r.current.Chains {
		for _, ru := range c.Rules {
			if tag, path, ok := strings.Cut(ru.Comment, " "); ok && strings.HasPrefix(tag, "cw:") {
				if _, dup := m[tag]; !dup {
					m[tag] = path
				}
			}
		}
	}
	r.pathsOf, r.pathCache = r.current, m
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
// default deny, DNAT rules, network rules by index.
func sortCounters(out []RuleCounter) {
	rank := func(tag string) (int, int) {
		t, err := ParseLogTag(tag)
		if err != nil {
			return 9, 0
		}
		switch t.Kind {
		case LogInputDrop:
			return 0, 0
		case LogDefaultDeny:
			return 1, 0
		case LogDNAT:
			return 2, t.Index
		case LogThreatDeny, LogThreatAlert:
			return 3, 0
		}
		return 4, t.Index
	}
	sort.SliceStable(out, func(i, j int) bool {
		a1, a2 := rank(out[i].Tag)
		b1, b2 := rank(out[j].Tag)
		if a1 != b1 || a2 != b2 {
			return a1 < b1 || (a1 == b1 && a2 < b2)
		}
		return out[i].Tag < out[j].Tag
	})
}

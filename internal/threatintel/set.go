package threatintel

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sort"
	"strings"

	"github.com/clusterwall/clusterwall/internal/ascii"
	"github.com/clusterwall/clusterwall/internal/iprange"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// Match says which feed entry a lookup hit.
type Match struct {
	Feed      string // the feed's name
	Indicator string // the entry in canonical form ("198.51.100.0/24", "evil.example")
	Comment   string // the entry's comment, if any ("SBL256894")
	Line      int    // the entry's line in the feed
	// Description is the ThreatDescription of log lines:
	// "FEED: INDICATOR" or "FEED: INDICATOR (COMMENT)".
	Description string
}

// Allowlist names what threat intelligence never reports, whatever the
// feeds say.
type Allowlist struct {
	Addrs policy.AddrSet
	FQDNs []policy.FQDNPattern
}

// Set is a compiled, immutable set of feed entries and an allowlist. Its
// lookups do not allocate and are safe for concurrent use; a nil *Set holds
// nothing.
type Set struct {
	v4 []span4 // sorted, disjoint
	// v4idx[b] is the first span of v4 whose hi >= b<<16: the span for an
	// address in /16 block b is in v4[v4idx[b]:v4idx[b+1]+1].
	v4idx []uint32
	// v4bits has bit b set when some span of v4 covers an address of
	// the /24 block b (1<<24 bits, 2 MiB; nil without IPv4 entries): one
	// load answers "not listed" for almost every address, so the check
	// that runs before every decision costs next to nothing.
	v4bits  []uint64
	v6      []span6 // sorted, disjoint
	names   nameTable
	matches []Match

	// The allowlist: addresses; exact and "*." FQDN patterns live in names
	// (allow bits), "*contoso.com" patterns here, "*" as allowAny.
	allowAddrs  policy.AddrSet
	allowSuffix []string
	allowAny    bool

	addrEntries, nameEntries int
}

type span4 struct {
	lo, hi uint32
	m      int32 // index in matches
}

type span6 struct {
	lo, hi iprange.U128
	m      int32
}

// Compile builds a Set from parsed feeds (in policy order) and an
// allowlist. Where entries overlap, an address lookup reports the
// narrowest range (the earliest listed among equal ones); a name listed
// twice keeps its first entry, and a lookup reports the most specific
// listed entry (see LookupName).
func Compile(feeds []*FeedData, allow Allowlist) *Set {
	s := &Set{allowAddrs: allow.Addrs}
	nAddrs, nNames := 0, 0
	for _, d := range feeds {
		if d != nil {
			nAddrs += len(d.Addrs)
			nNames += len(d.Names)
		}
	}
	s.matches = make([]Match, 0, nAddrs+nNames)
	r4 := make([]rng, 0, nAddrs)
	var r6 []rng
	for _, d := range feeds {
		if d == nil {
			continue
		}
		for i := range d.Addrs {
			e := &d.Addrs[i]
			idx := int32(len(s.matches))
			s.matches = append(s.matches, newMatch(d.Name, e.Indicator, e.Comment, e.Line))
			r := rng{lo: iprange.From(e.From), hi: iprange.From(e.To), m: idx}
			if e.From.Is4() {
				r4 = append(r4, r)
			} else {
				r6 = append(r6, r)
			}
		}
	}
	d4, d6 := disjoint(r4), disjoint(r6)
	s.v4, s.v6 = make([]span4, 0, len(d4)), make([]span6, 0, len(d6))
	for _, r := range d4 {
		s.v4 = append(s.v4, span4{lo: uint32(r.lo.Lo), hi: uint32(r.hi.Lo), m: r.m})
	}
	s.v4idx = indexV4(s.v4)
	s.v4bits = blocksV4(s.v4)
	for _, r := range d6 {
		s.v6 = append(s.v6, span6{lo: r.lo, hi: r.hi, m: r.m})
	}
	s.addrEntries = len(s.matches)

	// The table grows with the suffixes; most names add one or two.
	s.names.init(2*nNames + len(allow.FQDNs))
	for _, d := range feeds {
		if d == nil {
			continue
		}
		for i := range d.Names {
			e := &d.Names[i]
			idx := int32(len(s.matches))
			if s.names.insert(e.Name, idx, !e.SubdomainsOnly, true) {
				s.matches = append(s.matches, newMatch(d.Name, e.Indicator, e.Comment, e.Line))
			}
		}
	}
	s.nameEntries = len(s.matches) - s.addrEntries

	for _, p := range allow.FQDNs {
		switch p.Kind {
		case policy.FQDNAny:
			s.allowAny = true
		case policy.FQDNExact:
			s.names.allow(p.Name, allowSelf)
		case policy.FQDNSubdomains:
			s.names.allow(p.Name, allowSub)
		case policy.FQDNSuffix:
			s.allowSuffix = append(s.allowSuffix, p.Name)
		}
	}
	return s
}

func newMatch(feed, ind, comment string, line int) Match {
	d := feed + ": " + ind
	if comment != "" {
		d += " (" + comment + ")"
	}
	return Match{Feed: feed, Indicator: ind, Comment: comment, Line: line, Description: d}
}

// Len returns the number of address entries and of distinct domain
// entries (a domain listed twice counts once).
func (s *Set) Len() (addrs, names int) {
	if s == nil {
		return 0, 0
	}
	return s.addrEntries, s.nameEntries
}

// LookupAddr reports whether a is listed and not allowlisted. IPv4-mapped
// IPv6 addresses are looked up as IPv4; zones are ignored. It does not
// allocate.
func (s *Set) LookupAddr(a netip.Addr) (Match, bool) {
	if m := s.addrIndex(a); m >= 0 {
		return s.matches[m], true
	}
	return Match{}, false
}

// addrIndex is LookupAddr returning the index of the match in s.matches,
// or -1.
func (s *Set) addrIndex(a netip.Addr) int32 {
	if s == nil || !a.IsValid() {
		return -1
	}
	a = a.Unmap()
	m := int32(-1)
	if a.Is4() {
		b := a.As4()
		x := binary.BigEndian.Uint32(b[:])
		if s.v4bits == nil || s.v4bits[x>>14]&(1<<(x>>8&63)) == 0 {
			return -1
		}
		v := s.v4
		blk := x >> 16
		lo, hi := int(s.v4idx[blk]), int(s.v4idx[blk+1])+1
		if hi > len(v) {
			hi = len(v)
		}
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if v[mid].hi < x {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		if lo < len(v) && v[lo].lo <= x {
			m = v[lo].m
		}
	} else if len(s.v6) > 0 {
		x := iprange.From(a)
		v := s.v6
		lo, hi := 0, len(v)
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if v[mid].hi.Less(x) {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		if lo < len(v) && !x.Less(v[lo].lo) {
			m = v[lo].m
		}
	}
	if m < 0 || s.allowAddrs.Contains(a.WithZone("")) {
		return -1
	}
	return m
}

// maybeListed4 reports whether the IPv4 address x may be listed: false
// is sure (the /24 bitmap), true needs addrIndex. It inlines.
func (s *Set) maybeListed4(x uint32) bool {
	return s.v4bits != nil && s.v4bits[x>>14]&(1<<(x>>8&63)) != 0
}

// blocksV4 builds v4bits for the spans v (nil when there are none).
func blocksV4(v []span4) []uint64 {
	if len(v) == 0 {
		return nil
	}
	bits := make([]uint64, 1<<24/64)
	last := int64(-1) // the last block marked: spans are sorted
	for _, sp := range v {
		for b := max(int64(sp.lo>>8), last+1); b <= int64(sp.hi>>8); b++ {
			bits[b>>6] |= 1 << (b & 63)
			last = b
		}
	}
	return bits
}

// indexV4 builds the /16 block index of v4 (len 1<<16 + 1).
func indexV4(v []span4) []uint32 {
	idx := make([]uint32, 1<<16+1)
	j := 0
	for b := 0; b <= 1<<16; b++ {
		start := uint64(b) << 16
		for j < len(v) && uint64(v[j].hi) < start {
			j++
		}
		idx[b] = uint32(j)
	}
	return idx
}

// LookupName reports whether name, or a domain it is a subdomain of, is
// listed and name is not allowlisted. Case is ignored (ASCII), and so is
// one trailing dot. The name and then each of its parent domains is looked
// up (one hash probe each), so the most specific listed entry is reported.
// It does not allocate.
func (s *Set) LookupName(name string) (Match, bool) {
	if m := s.nameIndex(name); m >= 0 {
		return s.matches[m], true
	}
	return Match{}, false
}

// nameIndex is LookupName returning the index of the match in s.matches,
// or -1.
func (s *Set) nameIndex(name string) int32 {
	if s == nil {
		return -1
	}
	m, ok := s.names.lookup(name)
	if !ok || s.allowAny || len(s.allowSuffix) > 0 && s.allowedSuffix(name) {
		return -1
	}
	return m
}

// allowedSuffix reports whether a "*contoso.com" allowlist pattern
// matches name.
func (s *Set) allowedSuffix(name string) bool {
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	for _, suf := range s.allowSuffix {
		if len(name) >= len(suf) && ascii.EqualFoldLower(name[len(name)-len(suf):], suf) {
			return true
		}
	}
	return false
}

// nameTable is an open-addressing hash table of lower-case names: the
// listed domains, the allowlist's exact and "*." names, and the suffixes
// of all of them at label boundaries (interior nodes of a trie of reversed
// labels, flagged kids). A lookup walks the name from its last label
// towards its first, probing the table once per label (hash/maphash: AES
// where available), and stops at the first suffix no entry extends: an
// unlisted name under a listed top-level domain costs one probe.
type nameTable struct {
	seed  maphash.Seed
	slots []nameSlot
	names []string // names[i] is the name in slots[i]
	mask  uint64
	used  int
	// tlds is set when some entry is a single label ("zip"); otherwise
	// the walk does not probe the last label.
	tlds bool
	// pre is a bitmap (preBits bits, 128 KiB) of a cheap hash of the last
	// two labels of every listed name: when tlds is not set, a name whose
	// last two labels hit a clear bit is not listed, answered without the
	// walk's hashing and without touching the (much larger) table.
	pre []uint64
}

const preBits = 20

// nameSlot holds the entries for one name: self matches the name itself,
// sub its subdomains; both are an index plus one (0: none). allow says
// which of the two the allowlist covers; kids that some entry ends in
// "." + the name.
type nameSlot struct {
	hash      uint32 // slotHash of the name; 0 for an empty slot
	self, sub int32
	allow     uint8
	kids      bool
}

const (
	allowSelf = 1 << iota
	allowSub
)

// slotHash is what a slot keeps of a name's hash: the high half with its
// top bit set, so that 0 means empty and an empty slot is told apart
// without reading names.
func slotHash(h uint64) uint32 { return uint32(h>>32) | 1<<31 }

// maxNameLen is the longest DNS name (RFC 1035, without the root dot);
// only the last maxNameLen bytes of a longer name can match an entry.
const maxNameLen = 253

func (t *nameTable) init(n int) {
	size := 8
	for size < 2*n {
		size <<= 1
	}
	t.seed = maphash.MakeSeed()
	t.slots = make([]nameSlot, size)
	t.names = make([]string, size)
	t.mask = uint64(size - 1)
	t.used = 0
}

// find returns the index of name's slot, claiming an empty one (and
// growing the table) if it has none.
func (t *nameTable) find(name string) uint64 {
	if 2*(t.used+1) > len(t.slots) {
		t.grow()
	}
	h := maphash.String(t.seed, name)
	sh := slotHash(h)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		if t.slots[i].hash == 0 {
			t.slots[i].hash = sh
			t.names[i] = name
			t.used++
			return i
		}
		if t.slots[i].hash == sh && t.names[i] == name {
			return i
		}
	}
}

func (t *nameTable) grow() {
	old, oldNames := t.slots, t.names
	t.slots = make([]nameSlot, 2*len(old))
	t.names = make([]string, 2*len(old))
	t.mask = uint64(len(t.slots) - 1)
	for j, name := range oldNames {
		if name == "" {
			continue
		}
		i := maphash.String(t.seed, name) & t.mask
		for t.slots[i].hash != 0 {
			i = (i + 1) & t.mask
		}
		t.slots[i], t.names[i] = old[j], name
	}
}

// add claims the slot of name (lower case, non-empty labels) and flags
// every suffix of it as having kids.
func (t *nameTable) add(name string) *nameSlot {
	if !strings.Contains(name, ".") {
		t.tlds = true
	}
	for rest := name; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			break
		}
		rest = rest[i+1:]
		t.slots[t.find(rest)].kids = true
	}
	return &t.slots[t.find(name)]
}

// insert adds name with index idx for itself and/or its subdomains; an
// index already present wins. It reports whether idx was used.
func (t *nameTable) insert(name string, idx int32, self, sub bool) bool {
	if last2, ok := lastTwoLabels(name); ok {
		if t.pre == nil {
			t.pre = make([]uint64, 1<<preBits/64)
		}
		h := preHash(last2)
		t.pre[h>>6] |= 1 << (h & 63)
	}
	sl := t.add(name)
	used := false
	if self && sl.self == 0 {
		sl.self, used = idx+1, true
	}
	if sub && sl.sub == 0 {
		sl.sub, used = idx+1, true
	}
	return used
}

// allow marks name as allowlisted: itself (allowSelf) or its subdomains
// (allowSub).
func (t *nameTable) allow(name string, bits uint8) {
	t.add(name).allow |= bits
}

// lookup returns the index of the most specific entry matching name — its
// own entry (self) or an ancestor's sub entry — unless the allowlist
// covers name. Case is ignored, and so is one trailing dot.
func (t *nameTable) lookup(name string) (int32, bool) {
	n := len(name)
	if n > 0 && name[n-1] == '.' {
		n--
	}
	if n == 0 || t.used == 0 {
		return 0, false
	}
	s := name[:n]
	self := true
	if !t.tlds && n <= maxNameLen {
		// Without single-label entries, a listed name (or a listed
		// parent) shares its last two labels with an entry.
		last2, ok := lastTwoLabels(s)
		if !ok || t.pre == nil {
			return 0, false
		}
		if h := preHash(last2); t.pre[h>>6]&(1<<(h&63)) == 0 {
			return 0, false
		}
	}
	if n > maxNameLen {
		// Only a suffix that starts after a '.' and fits can match.
		j := n - maxNameLen - 1
		i := strings.IndexByte(s[j:], '.')
		if i < 0 {
			return 0, false
		}
		s, self = s[j+i+1:], false
	}
	m, upper := walk(t, s, self, true)
	if upper {
		return t.lookupLower(s, self)
	}
	return m, m >= 0
}

// lastTwoLabels returns the last two labels of name ("example.com" of
// "www.example.com"); ok is false for a single label.
func lastTwoLabels(name string) (string, bool) {
	// A plain loop: the labels are short, and two calls of
	// strings.LastIndexByte cost more than the bytes they scan.
	dots := 0
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '.' {
			if dots++; dots == 2 {
				return name[i+1:], true
			}
		}
	}
	return name, dots == 1
}

// preHash hashes s for nameTable.pre, ignoring ASCII case (every byte is
// ORed with 0x20, which maps 'A' and 'a' alike), into preBits bits.
func preHash(s string) uint32 {
	const fold = 0x2020202020202020
	h := uint64(len(s)) * 0x9E3779B97F4A7C15
	h ^= (load8(s) | fold) * 0xC2B2AE3D27D4EB4F
	if len(s) > 8 {
		h ^= (load8(s[len(s)-8:]) | fold) * 0x165667B19E3779F9
		h = (h ^ h>>29) * 0x94D049BB133111EB
	}
	if len(s) > 16 {
		h ^= (load8(s[8:]) | fold) * 0x27D4EB2F165667C5
		h = (h ^ h>>32) * 0x9E3779B97F4A7C15
	}
	return uint32(h >> (64 - preBits))
}

// load8 is the first (up to) 8 bytes of s as a little-endian number.
func load8(s string) uint64 {
	if len(s) >= 8 { // one load: the compiler merges these
		_ = s[7]
		return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
	}
	var x uint64
	for i := 0; i < len(s); i++ {
		x |= uint64(s[i]) << (8 * i)
	}
	return x
}

// lookupLower is lookup for a name with upper case: it walks a lower-case
// copy.
//
//go:noinline
func (t *nameTable) lookupLower(s string, self bool) (int32, bool) {
	var buf [maxNameLen]byte
	b := buf[:len(s)]
	for i := 0; i < len(s); i++ {
		b[i] = ascii.Lower(s[i])
	}
	m, _ := walk(t, b, self, false)
	return m, m >= 0
}

// walk looks s up label by label from its end; self says whether s is the
// whole name (else its own entry counts as an ancestor's). It returns the
// index of the most specific matching entry or -1. With checkUpper, it
// gives up (upper set) at the first upper-case byte it needs.
func walk[T string | []byte](t *nameTable, s T, self, checkUpper bool) (m int32, upper bool) {
	best := int32(-1)
	start := len(s) // s[start:] is the suffix looked at
	for start > 0 {
		end := start // the new label is s[i+1:end] or s[0:end]
		if end < len(s) {
			end-- // skip the '.'
		}
		i := end - 1
		class := uint8(0)
		for ; i >= 0 && s[i] != '.'; i-- {
			class |= byteClass[s[i]]
		}
		if i+1 == end { // an empty label: no entry has one
			break
		}
		if checkUpper && class != 0 {
			return -1, true
		}
		level1 := start == len(s)
		start = i + 1
		if level1 && !t.tlds && start > 0 {
			continue
		}
		suf := s[start:]
		h := hashOf(t, suf)
		sl := probe(t, h, suf, false)
		if sl == nil {
			break
		}
		v, a := sl.sub, sl.allow&allowSub
		if start == 0 && self {
			v, a = sl.self, sl.allow&allowSelf
		}
		if v != 0 || a != 0 || !sl.kids {
			// The slot decides something: make sure it is suf's (the
			// tag matched; the name has not been compared yet).
			if sl = probe(t, h, suf, true); sl == nil {
				break
			}
			v, a = sl.sub, sl.allow&allowSub
			if start == 0 && self {
				v, a = sl.self, sl.allow&allowSelf
			}
		}
		if a != 0 {
			return -1, false
		}
		if v != 0 {
			best = v - 1
		}
		if !sl.kids {
			break
		}
	}
	return best, false
}

// byteClass is non-zero for upper-case ASCII letters.
var byteClass = func() (t [256]uint8) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = 1
	}
	return t
}()

func hashOf[T string | []byte](t *nameTable, s T) uint64 {
	switch s := any(s).(type) {
	case string:
		return maphash.String(t.seed, s)
	case []byte:
		return maphash.Bytes(t.seed, s)
	}
	panic("unreachable")
}

// probe returns the slot of s (lower case, hash h), or nil. Unless
// verify is set, it returns the first slot of s's chain with s's tag
// without comparing names: almost always s's slot, but not surely, so
// only to decide to walk on (which is always safe).
func probe[T string | []byte](t *nameTable, h uint64, s T, verify bool) *nameSlot {
	sh := slotHash(h)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		sl := &t.slots[i]
		if sl.hash == 0 {
			return nil
		}
		if sl.hash == sh && (!verify || t.names[i] == string(s)) {
			return sl
		}
	}
}

// rng is an inclusive range of one family with the index of its match;
// among overlapping ranges, the narrowest (then the lowest m) wins.
type rng struct {
	lo, hi iprange.U128
	m      int32
}

// rngHeap is a binary min-heap of ranges by width, then m.
type rngHeap []rng

func (h rngHeap) less(i, j int) bool {
	wi, wj := h[i].hi.Sub(h[i].lo), h[j].hi.Sub(h[j].lo)
	if wi != wj {
		return wi.Less(wj)
	}
	return h[i].m < h[j].m
}

func (h *rngHeap) push(r rng) {
	*h = append(*h, r)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if !a.less(i, p) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (h *rngHeap) pop() {
	a := *h
	n := len(a) - 1
	a[0] = a[n]
	a = a[:n]
	for i := 0; ; {
		l, small := 2*i+1, i
		if l < n && a.less(l, small) {
			small = l
		}
		if l+1 < n && a.less(l+1, small) {
			small = l + 1
		}
		if small == i {
			break
		}
		a[i], a[small] = a[small], a[i]
		i = small
	}
	*h = a
}

// disjoint turns possibly overlapping ranges into sorted, disjoint ones,
// each segment carrying the winner among the ranges that cover it.
// Adjacent segments with the same winner are merged.
func disjoint(rs []rng) []rng {
	if len(rs) == 0 {
		return nil
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].lo.Less(rs[j].lo) })
	out := make([]rng, 0, len(rs))
	emit := func(lo, hi iprange.U128, m int32) {
		if n := len(out); n > 0 && out[n-1].m == m && out[n-1].hi.Next() == lo {
			out[n-1].hi = hi
			return
		}
		out = append(out, rng{lo, hi, m})
	}
	var h rngHeap
	var cur iprange.U128
	i := 0
	for i < len(rs) || len(h) > 0 {
		if len(h) == 0 {
			cur = rs[i].lo
		}
		for i < len(rs) && !cur.Less(rs[i].lo) {
			h.push(rs[i])
			i++
		}
		for len(h) > 0 && h[0].hi.Less(cur) {
			h.pop()
		}
		if len(h) == 0 {
			continue
		}
		top := h[0]
		end := top.hi
		if i < len(rs) && !end.Less(rs[i].lo) {
			end = rs[i].lo.Prev() // rs[i].lo > cur
		}
		emit(cur, end, top.m)
		if end == iprange.Max {
			break
		}
		cur = end.Next()
	}
	return out
}

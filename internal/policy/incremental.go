package policy

import (
	"bytes"
	"hash/maphash"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// Incremental loads (issue 15: one rule of a 10,000-rule policy changed in
// a few milliseconds of decoding and validation, not a hundred).
//
// A Loader keeps, from its last load that succeeded on the fast YAML path
// (fastyaml.go) without a base policy, the document, its tree, the decoded
// wire policy and the validated groups. The next text is cut into the same
// parts: the bytes before the ruleCollectionGroups list, one part per
// entry of the list (a rule collection group), and the bytes after the
// list. When the bytes before and after the list are the same, each group
// whose bytes and first line are the same as before keeps its tree, its
// wire form and — when the service tags are the same too and it had no
// warning — its validated Group; only the other groups are parsed, checked
// against the wire types, decoded and validated. The checks across groups
// (names, priorities) run over every group, as always.
//
// Anything else takes the full path (Load): another file name or limits, a
// document outside the fast path's subset, a header (any other top-level
// field) changed, a base policy, lines moved, and every error — so that
// errors and their file:line:column are those of a full load. The result
// of a Loader equals Load's (TestLoaderEqualsLoad and
// TestLoaderMutations compare them over random edits).
type Loader struct {
	mu   sync.Mutex
	prev *loadState
	// next is the state of the last full load, built in the background
	// after Load returned (collect takes it into prev).
	next *pendingState
	// Reused counts the groups the last Load took from the one before
	// (tests and benchmarks); -1 when it took the full path.
	// ReusedCollections counts the collections it took in the groups it
	// validated again.
	Reused, ReusedCollections int
}

// loadState is what a Loader keeps of its last load.
type loadState struct {
	name string
	lim  Limits
	data []byte // a copy: the caller may reuse its buffer
	file *File
	root *yaml.Node // the document's top mapping
	// seqKey indexes root.Content: the ruleCollectionGroups list.
	seqKey  int
	indent  int         // the list's entries' indentation
	entries []entrySpan // one per group
	end     int         // the offset where the list ends
	endLine int         // its line
	counts  []int       // each group's nodes (budget.go's checkTree)
	header  int         // the nodes outside the groups
	groups  []*Group    // each group validated; nil: validate it again
	tags    ServiceTags
	byText  *textIndex   // group text -> index (find), made when first needed
	colls   []*collState // each group's collections; nil: none kept
}

// collState is what a Loader keeps of a group's collections, so that a
// group whose text changed reuses the collections whose text did not:
// offsets are in the group's text, lines from the group's first line.
type collState struct {
	start    int         // where the first collection starts
	indent   int         // the collections' entries' indentation
	entries  []entrySpan // each collection
	end      int         // where the list ends
	counts   []int       // each collection's nodes
	header   int         // the group's other nodes
	nodeLine int         // the group's mapping (its position)
	nodeCol  int
	wire     []WireCollection // names, kinds, priorities and actions
	valid    []*Collection    // each collection validated; nil: validate it again
	baseLine int              // the group's first line when valid was validated
	byText   *textIndex
}

// newCollState reads the collections of group node n, whose text t starts
// on line line; nil when it cannot.
func newCollState(t []byte, line int, n *yaml.Node, wg *WireGroup) *collState {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	var seq *yaml.Node
	for k := 0; k+1 < len(n.Content); k += 2 {
		if n.Content[k].Value == "ruleCollections" {
			if seq != nil {
				return nil
			}
			seq = n.Content[k+1]
		}
	}
	if seq == nil || seq.Kind != yaml.SequenceNode || len(seq.Content) == 0 || len(seq.Content) != len(wg.RuleCollections) {
		return nil
	}
	off := lineOffset(t, seq.Line-line+1)
	if off < 0 {
		return nil
	}
	entries, end, _, ok := scanEntries(t, off, seq.Line-line, seq.Column-1)
	if !ok || len(entries) != len(seq.Content) || entries[0].start != off {
		return nil
	}
	cs := &collState{start: off, indent: seq.Column - 1, entries: entries, end: end, nodeLine: n.Line - line, nodeCol: n.Column,
		counts: make([]int, len(entries)), baseLine: line}
	cs.header = treeSize(n, seq)
	for k, c := range seq.Content {
		cs.counts[k] = treeSize(c, nil)
	}
	cs.setWire(wg.RuleCollections)
	return cs
}

func (cs *collState) setWire(wcs []WireCollection) {
	cs.wire = make([]WireCollection, len(wcs))
	for k, wc := range wcs {
		cs.wire[k] = WireCollection{Name: wc.Name, Kind: wc.Kind, Priority: wc.Priority, Action: wc.Action}
	}
}

// span returns collection k's text in the group's text t.
func (cs *collState) span(t []byte, k int) []byte {
	end := cs.end
	if k+1 < len(cs.entries) {
		end = cs.entries[k+1].start
	}
	return t[cs.entries[k].start:end]
}

// find is loadState.find for the collections of the group text t.
func (cs *collState) find(t, text []byte, k int) int {
	if k < len(cs.entries) && cs.valid[k] != nil && bytes.Equal(text, cs.span(t, k)) {
		return k
	}
	if cs.byText == nil {
		cs.byText = &textIndex{}
	}
	return cs.byText.find(len(cs.entries), func(j int) []byte { return cs.span(t, j) }, func(j int) bool { return cs.valid[j] != nil }, text)
}

// textIndex finds, among n texts (span(j) for the j where ok(j)), the
// last one equal to a text, by a hash of each: a map keyed by the texts
// themselves copied all of them — the whole policy — at the first changed
// group (a sixth of a one-rule load's CPU).
type textIndex struct {
	seed maphash.Seed
	last map[uint64]int // hash -> the last j with it
}

// textHash hashes texts for textIndex (tests force collisions).
var textHash = maphash.Bytes

func (x *textIndex) find(n int, span func(int) []byte, ok func(int) bool, text []byte) int {
	if x.last == nil {
		x.seed = maphash.MakeSeed()
		x.last = make(map[uint64]int, n)
		for j := range n {
			if ok(j) {
				x.last[textHash(x.seed, span(j))] = j
			}
		}
	}
	j, found := x.last[textHash(x.seed, text)]
	if !found {
		return -1
	}
	if bytes.Equal(text, span(j)) {
		return j
	}
	for j := n - 1; j >= 0; j-- { // another text of the same hash
		if ok(j) && bytes.Equal(text, span(j)) {
			return j
		}
	}
	return -1
}

// collReuse is a validated collection to reuse, its lines moved by delta.
type collReuse struct {
	c     *Collection
	delta int
}

// entrySpan is where a group's text starts: its offset and line.
type entrySpan struct{ start, line int }

// groupReuse passes a Loader's validated groups to validateIn and brings
// back the groups it built.
type groupReuse struct {
	tags  ServiceTags // the service tags the old groups were validated with
	old   []*Group    // by index in ruleCollectionGroups; nil: validate
	built []*Group    // out: this load's groups by index
	off   bool
	// colls are, for a group validated again, its collections to reuse
	// (by index; a nil c: validate); builtColls, out, each group's
	// collections by index.
	colls      map[int][]collReuse
	builtColls map[int][]*Collection
}

// collection returns the old validated collection ci of group gi, copied
// into g, or nil.
func (r *groupReuse) collection(gi, ci int, g *Group) *Collection {
	if r == nil || r.off {
		return nil
	}
	if r.reusesColl(gi, ci) {
		l := r.colls[gi]
		return copyCollection(l[ci].c, g, l[ci].delta)
	}
	return nil
}

// reusesColl reports whether collection ci of group gi is reused
// (collection returns it).
func (r *groupReuse) reusesColl(gi, ci int) bool {
	if r == nil || r.off {
		return false
	}
	l := r.colls[gi]
	return ci < len(l) && l[ci].c != nil
}

func (r *groupReuse) noteColl(gi, ci, n int, c *Collection) {
	if r == nil {
		return
	}
	if r.builtColls == nil {
		r.builtColls = map[int][]*Collection{}
	}
	l := r.builtColls[gi]
	if l == nil {
		l = make([]*Collection, n)
		r.builtColls[gi] = l
	}
	l[ci] = c
}

// usable turns reuse off unless the groups would be validated in the same
// context: no base policy, the same service tags and no error so far (the
// header of the text is the same, so the IP groups, FQDN tags, location
// and policy name are).
func (r *groupReuse) usable(v *validator) *groupReuse {
	if r == nil {
		return nil
	}
	if v.base != nil || len(v.errs) > 0 || !tagsEqual(r.tags, v.tags) {
		r.off = true
	}
	return r
}

// group returns the old validated group gi, or nil; it notes the group
// this load will have at gi.
func (r *groupReuse) group(gi int) *Group {
	if r == nil || r.off || gi >= len(r.old) {
		return nil
	}
	return r.old[gi]
}

func (r *groupReuse) note(gi int, g *Group) {
	if r == nil {
		return
	}
	for len(r.built) <= gi {
		r.built = append(r.built, nil)
	}
	r.built[gi] = g
}

func tagsEqual(a, b ServiceTags) bool {
	if len(a) != len(b) {
		return false
	}
	for k, s := range a {
		t, ok := b[k]
		if !ok || s.Any != t.Any || !slices.Equal(s.Ranges, t.Ranges) {
			return false
		}
	}
	return true
}

// pendingState is a loadState under construction: st is set when done
// is closed.
type pendingState struct {
	done chan struct{}
	st   *loadState
}

// collect waits for the state of the last full load, if one is being
// built, and makes it the last load's; l.mu is held.
func (l *Loader) collect() {
	if l.next != nil {
		<-l.next.done
		l.prev, l.next = l.next.st, nil
	}
}

// Reset forgets the last load: the next one takes the full path.
func (l *Loader) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.collect()
	l.prev = nil
}

// Load is Load (validate.go), reusing what is unchanged since the last
// call.
func (l *Loader) Load(name string, data []byte, opts Options) (*Policy, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.collect()
	if p, ok := l.incremental(name, data, opts); ok {
		return p, nil
	}
	l.Reused, l.ReusedCollections = -1, 0
	r := &groupReuse{}
	p, f, pos, fast, err := loadFull(name, data, opts, r)
	if err == nil && fast && f.BasePolicy == nil {
		// A text that failed leaves the last state: the next text is
		// compared with the last good one. The state is built beside the
		// caller's work on p (it only reads p, f and the tree; the next
		// Load or Reset waits for it): a 100,000-rule load returns about
		// 50 ms sooner. data is copied first: the caller may reuse its
		// buffer once Load returns.
		data := bytes.Clone(data)
		ps := &pendingState{done: make(chan struct{})}
		l.next = ps
		lim := opts.Limits.withDefaults()
		go func() {
			defer close(ps.done)
			ps.st = newLoadState(name, data, lim, f, pos.root, p, r)
		}()
		l.prev = nil
	}
	return p, err
}

// newLoadState cuts data into its groups' parts; nil when it cannot. It
// keeps data (the caller's copy).
func newLoadState(name string, data []byte, lim Limits, f *File, root *yaml.Node, p *Policy, r *groupReuse) *loadState {
	if root == nil || root.Kind != yaml.MappingNode || root.Column != 1 {
		return nil
	}
	st := &loadState{name: name, lim: lim, data: data, file: f, root: root, seqKey: -1, tags: p.tags}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "ruleCollectionGroups" {
			if st.seqKey >= 0 {
				return nil
			}
			st.seqKey = i + 1
		}
	}
	if st.seqKey < 0 {
		return nil
	}
	seq := root.Content[st.seqKey]
	if seq.Kind != yaml.SequenceNode || len(seq.Content) != len(f.RuleCollectionGroups) || len(seq.Content) == 0 {
		return nil
	}
	st.indent = seq.Column - 1
	start := lineOffset(data, seq.Line)
	if start < 0 {
		return nil
	}
	var ok bool
	st.entries, st.end, st.endLine, ok = scanEntries(data, start, seq.Line, st.indent)
	if !ok || len(st.entries) != len(seq.Content) {
		return nil
	}
	st.counts = make([]int, len(seq.Content))
	st.header = 1 + treeSize(root, seq) // the document node, and the rest outside the groups
	st.colls = make([]*collState, len(seq.Content))
	for i, n := range seq.Content {
		cs := newCollState(st.span(i), st.entries[i].line, n, &f.RuleCollectionGroups[i])
		st.colls[i] = cs
		if cs == nil {
			st.counts[i] = treeSize(n, nil)
			continue
		}
		st.counts[i] = cs.header
		for _, c := range cs.counts {
			st.counts[i] += c
		}
	}
	st.setGroups(p, r.built, r)
	st.trim()
	return st
}

// trim drops what a later load does not read: the groups' trees and wire
// forms but their names and priorities (the checks across groups read
// them; a group that is validated again is parsed again).
func (st *loadState) trim() {
	root := *st.root
	root.Content = slices.Clone(root.Content)
	for i, n := range root.Content {
		// Copies: the parser allocates nodes (and Content slices) in
		// slabs, and one kept node of a slab would keep its neighbours —
		// the list's node with every group under it — from the collector.
		if i != st.seqKey {
			root.Content[i] = shiftLines(n, 0)
		}
	}
	seq := *root.Content[st.seqKey]
	seq.Content = nil
	root.Content[st.seqKey] = &seq
	st.root = &root
	f := *st.file
	gs := make([]WireGroup, len(f.RuleCollectionGroups))
	for i, g := range f.RuleCollectionGroups {
		gs[i] = WireGroup{Name: g.Name, Priority: g.Priority}
	}
	f.RuleCollectionGroups = gs
	st.file = &f
}

// span returns group i's text.
func (st *loadState) span(i int) []byte {
	end := st.end
	if i+1 < len(st.entries) {
		end = st.entries[i+1].start
	}
	return st.data[st.entries[i].start:end]
}

// find returns the reusable group whose text is text: the one at i, else
// any other (groups moved by an edit before them, or reordered); -1 when
// there is none.
func (st *loadState) find(text []byte, i int) int {
	if i < len(st.entries) && st.groups[i] != nil && bytes.Equal(text, st.span(i)) {
		return i
	}
	if st.byText == nil {
		st.byText = &textIndex{}
	}
	return st.byText.find(len(st.entries), st.span, func(j int) bool { return st.groups[j] != nil }, text)
}

// shiftGroup returns a copy of g, its collections and rules with their
// lines moved by delta (a validated group's only line-dependent parts;
// everything else is shared).
func shiftGroup(g *Group, delta int) *Group {
	ng := *g
	ng.Pos = shiftPos(g.Pos, delta)
	ng.Collections = make([]*Collection, len(g.Collections))
	for i, c := range g.Collections {
		ng.Collections[i] = copyCollection(c, &ng, delta)
	}
	return &ng
}

// copyCollection returns a copy of c and its rules in group g, their lines
// moved by delta.
func copyCollection(c *Collection, g *Group, delta int) *Collection {
	nc := *c
	nc.Group = g
	nc.Pos = shiftPos(c.Pos, delta)
	nc.Rules = make([]*Rule, len(c.Rules))
	rules := make([]Rule, len(c.Rules))
	for k, r := range c.Rules {
		rules[k] = *r
		rules[k].Collection = &nc
		rules[k].Pos = shiftPos(r.Pos, delta)
		nc.Rules[k] = &rules[k]
	}
	return &nc
}

func shiftPos(p Pos, delta int) Pos {
	if p.Line > 0 {
		p.Line += delta
	}
	return p
}

// reusedNode stands for a reused group in the tree of an incremental load:
// positions are looked up only in the groups validated again.
var reusedNode = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}

// setGroups keeps the validated groups and collections that had no
// warning; fresh names the groups whose collections were validated in
// this load (the others keep theirs).
func (st *loadState) setGroups(p *Policy, built []*Group, r *groupReuse) {
	st.groups = make([]*Group, len(st.entries))
	copy(st.groups, built)
	for gi, cs := range st.colls {
		if cs != nil && cs.valid == nil {
			cs.valid = make([]*Collection, len(cs.entries))
			if r != nil {
				copy(cs.valid, r.builtColls[gi])
			}
		}
	}
	if len(p.Warnings) >= st.lim.MaxErrors {
		clear(st.groups) // some warnings may have been dropped
		st.colls = nil
		return
	}
	for _, w := range p.Warnings {
		gi, ci, ok := groupOfPath(w.Path)
		if !ok || gi >= len(st.groups) {
			continue
		}
		st.groups[gi] = nil
		if cs := st.colls[gi]; cs != nil {
			if ci < 0 || ci >= len(cs.valid) {
				st.colls[gi] = nil
			} else if cs.valid[ci] != nil {
				valid := slices.Clone(cs.valid) // cs may be the last state's too
				valid[ci] = nil
				c := *cs
				c.valid, c.byText = valid, nil
				st.colls[gi] = &c
			}
		}
	}
}

// groupOfPath returns i (and j, else -1) of a path
// "ruleCollectionGroups[i]..." ("ruleCollectionGroups[i].ruleCollections[j]...").
func groupOfPath(path string) (int, int, bool) {
	rest, ok := strings.CutPrefix(path, "ruleCollectionGroups[")
	if !ok {
		return 0, 0, false
	}
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		return 0, 0, false
	}
	i, err := strconv.Atoi(rest[:end])
	if err != nil {
		return 0, 0, false
	}
	j := -1
	if rest, ok := strings.CutPrefix(rest[end+1:], ".ruleCollections["); ok {
		if end := strings.IndexByte(rest, ']'); end >= 0 {
			if k, err := strconv.Atoi(rest[:end]); err == nil {
				j = k
			}
		}
	}
	return i, j, true
}

// lineOffset returns the offset where line (from 1) starts, or -1.
func lineOffset(data []byte, line int) int {
	off := 0
	for l := 1; l < line; l++ {
		k := bytes.IndexByte(data[off:], '\n')
		if k < 0 {
			return -1
		}
		off += k + 1
	}
	return off
}

// scanEntries finds the entries of the block sequence whose first entry
// starts at offset off (line line) with indentation indent: where each
// starts, and where the sequence ends (the first line with content that
// is less indented, or as indented and not an entry). Blank and comment
// lines belong to the entry before them. False when the first line with
// content is not an entry.
func scanEntries(data []byte, off, line, indent int) (entries []entrySpan, end, endLine int, ok bool) {
	for off < len(data) {
		next, ind := lineAt(data, off)
		if ind < next && data[ind] != '\n' && data[ind] != '#' {
			t := data[ind:next]
			switch {
			case ind-off == indent && t[0] == '-' && (len(t) == 1 || t[1] == ' ' || t[1] == '\n'):
				entries = append(entries, entrySpan{start: off, line: line})
			case ind-off <= indent:
				return entries, off, line, len(entries) > 0
			case len(entries) == 0:
				return nil, 0, 0, false
			}
		}
		off = next
		line++
	}
	return entries, len(data), line, len(entries) > 0
}

// lineAt returns where the line that starts at offset off ends (the
// next line's offset, or len(data)) and the offset of its first byte
// that is not a space (next when there is none).
func lineAt(data []byte, off int) (next, ind int) {
	next = len(data)
	if k := bytes.IndexByte(data[off:], '\n'); k >= 0 {
		next = off + k + 1
	}
	ind = off
	for ind < next && data[ind] == ' ' {
		ind++
	}
	return next, ind
}

// countNodes counts n's nodes into *visits as checkTree does (walkTree, n
// at depth depth); false when a node is deeper than max or an alias (not
// from the fast path).
func countNodes(n *yaml.Node, depth, max int, visits *int) bool {
	return walkTree(n, depth, func(n *yaml.Node, depth int) bool {
		*visits++
		return depth <= max && n.Kind != yaml.AliasNode
	})
}

// treeSize is the number of nodes walkTree visits from n (countNodes
// without its limits, in one pass), not counting the nodes under skip:
// newLoadState counted each group's nodes three times over.
func treeSize(n, skip *yaml.Node) int {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return 1 + treeSize(n.Alias, skip)
	}
	c := 1
	if n == skip {
		return c
	}
	for _, k := range n.Content {
		c += treeSize(k, skip)
	}
	return c
}

// shiftLines returns a copy of the tree n with its lines moved by delta.
func shiftLines(n *yaml.Node, delta int) *yaml.Node {
	c := *n
	c.Line += delta
	if len(n.Content) > 0 {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, k := range n.Content {
			c.Content[i] = shiftLines(k, delta)
		}
	}
	return &c
}

var wireGroupType = reflect.TypeOf(WireGroup{})

// incremental loads data reusing the previous load's unchanged groups;
// false for the full path (anything it does not handle, and every error).
func (l *Loader) incremental(name string, data []byte, opts Options) (*Policy, bool) {
	old := l.prev
	lim := opts.Limits.withDefaults()
	if old == nil || old.name != name || old.lim != lim || fastPathOff {
		return nil, false
	}
	start := time.Now()
	seqStart := old.entries[0].start
	if len(data) < seqStart || !bytes.Equal(data[:seqStart], old.data[:seqStart]) {
		return nil, false
	}
	if CheckBudget(name, data, lim) != nil {
		return nil, false
	}
	entries, end, endLine, ok := scanEntries(data, seqStart, old.entries[0].line, old.indent)
	if !ok || entries[0].start != seqStart || !bytes.Equal(data[end:], old.data[old.end:]) {
		return nil, false
	}
	n := len(entries)
	nodes := make([]*yaml.Node, n)
	counts := make([]int, n)
	wgs := make([]WireGroup, n)
	reused := make([]*Group, n)
	colls := make([]*collState, n)
	r := &groupReuse{tags: old.tags, old: reused, colls: map[int][]collReuse{}}
	total := old.header
	kept, keptColls := 0, 0
	// The groups whose text is unchanged are reused; the others are
	// parsed, checked and decoded (entryDecoder), on several cores when
	// they are many (a policy replaced by another: see parallel.go).
	ends := make([]int, n)
	var todo []int
	changed := 0 // bytes of the groups to decode
	for i, e := range entries {
		eEnd := end
		if i+1 < n {
			eEnd = entries[i+1].start
		}
		ends[i] = eEnd
		if j := old.find(data[e.start:eEnd], i); j >= 0 {
			g := old.groups[j]
			if delta := e.line - old.entries[j].line; delta != 0 {
				g = shiftGroup(g, delta) // the same text on other lines
			}
			nodes[i], counts[i], wgs[i], reused[i], colls[i] = reusedNode, old.counts[j], old.file.RuleCollectionGroups[j], g, old.colls[j]
			total += counts[i]
			kept++
			continue
		}
		todo = append(todo, i)
		changed += eEnd - e.start
	}
	if len(todo) > 0 {
		dec := &entryDecoder{old: old, data: data, src: string(data), entries: entries, ends: ends, name: name, lim: lim,
			nodes: nodes, counts: counts, wgs: wgs, colls: colls, crs: make([][]collReuse, n), kept: make([]int, n), partial: make([]bool, n)}
		if !dec.decode(todo, changed) {
			return nil, false
		}
		for _, i := range todo {
			total += counts[i]
			if dec.partial[i] {
				r.colls[i] = dec.crs[i]
				keptColls += dec.kept[i]
			}
		}
	}
	if total > lim.MaxNodes {
		return nil, false
	}
	root := *old.root
	root.Content = slices.Clone(old.root.Content)
	seq := *old.root.Content[old.seqKey]
	seq.Content = nodes
	root.Content[old.seqKey] = &seq
	if delta := endLine - old.endLine; delta != 0 {
		// The fields after the list moved by delta lines.
		for i := old.seqKey + 1; i < len(root.Content); i++ {
			root.Content[i] = shiftLines(root.Content[i], delta)
		}
	}
	f := *old.file
	f.RuleCollectionGroups = wgs
	pos := &Positions{file: name, root: &root}
	decoded := time.Now()
	o := opts
	o.reuse = r
	p, verr := validate(&f, pos, name, o)
	if verr != nil || r.off {
		return nil, false // errors, or the groups' context changed
	}
	if opts.Timings != nil {
		opts.Timings.Decode = decoded.Sub(start)
		opts.Timings.Validate = time.Since(decoded)
	}
	for i, cs := range colls {
		if cs != nil && cs.wire == nil {
			cs.setWire(wgs[i].RuleCollections)
		}
	}
	st := &loadState{name: name, lim: lim, data: bytes.Clone(data), file: &f, root: &root, seqKey: old.seqKey, indent: old.indent,
		entries: entries, end: end, endLine: endLine, counts: counts, header: old.header, tags: p.tags, colls: colls}
	st.setGroups(p, r.built, r)
	st.trim()
	l.prev = st
	l.Reused, l.ReusedCollections = kept, keptColls
	return p, true
}

// entryDecoder parses, checks and decodes the changed groups of an
// incremental load into its slices, each group i into index i of them.
type entryDecoder struct {
	old     *loadState
	data    []byte
	src     string
	entries []entrySpan
	ends    []int
	name    string
	lim     Limits
	// out, by group
	nodes   []*yaml.Node
	counts  []int
	wgs     []WireGroup
	colls   []*collState
	crs     [][]collReuse // the reused collections of a group decoded in part
	kept    []int         // how many
	partial []bool        // decoded in part (partialGroup)
}

// decode decodes the groups todo (changed bytes of text in all); false
// when one of them cannot be loaded incrementally. When they are at least
// parallelMinBytes of text, whichever core is free takes the next group,
// each core with its own scratch; each group is decoded alone (its own
// text, its own old group's state), so the results are a sequential
// loop's, and a failure anywhere fails the whole load as it would there
// (the caller then takes the full path).
func (d *entryDecoder) decode(todo []int, changed int) bool {
	parts := 1
	if !parallelOff && len(todo) >= 2 && changed >= parallelMinBytes {
		parts = min(loadParts(), len(todo))
	}
	if parts < 2 {
		sc := d.scratch()
		for _, i := range todo {
			if !d.entry(i, sc) {
				return false
			}
		}
		return true
	}
	ok := onCores(parts, len(todo), func() func(k int) bool {
		sc := d.scratch()
		return func(k int) bool { return d.entry(todo[k], sc) }
	})
	if ok {
		parallelIncrementals.Add(1)
	}
	return ok
}

func (d *entryDecoder) scratch() *scratch {
	return &scratch{fp: fastParser{data: d.data, src: d.src}}
}

// entry decodes group i: only its changed collections when the rest of
// its text is unchanged (partialGroup), else all of it.
func (d *entryDecoder) entry(i int, sc *scratch) bool {
	old, data, e, eEnd, lim := d.old, d.data, d.entries[i], d.ends[i], d.lim
	if node, count, cs, cr, k, ok := old.partialGroup(data, sc, e, eEnd, i, d.name, lim); ok {
		d.nodes[i], d.counts[i], d.colls[i] = node, count, cs
		d.wgs[i] = WireGroup{Name: old.file.RuleCollectionGroups[i].Name, Priority: old.file.RuleCollectionGroups[i].Priority, RuleCollections: cs.wire}
		cs.wire = nil // set from wgs[i] after validation
		d.crs[i], d.kept[i], d.partial[i] = cr, k, true
		return true
	}
	p := sc.parser()
	if !p.split(data[e.start:eEnd], e.line) || len(p.lines) == 0 {
		return false
	}
	seq := p.sequence(old.indent)
	if !p.ok || seq == nil || p.i != len(p.lines) || len(seq.Content) != 1 {
		return false
	}
	d.nodes[i] = seq.Content[0]
	if !countNodes(d.nodes[i], 2, lim.MaxDepth, &d.counts[i]) {
		return false
	}
	var errs ErrorList
	w := walker{file: d.name, errs: &errs, cap: errorCap{max: lim.MaxErrors},
		segs: []seg{{name: "ruleCollectionGroups"}, {idx: i}}}
	w.walk(d.nodes[i], wireGroupType)
	if w.shapeErrors || len(errs) > 0 {
		return false
	}
	if !sc.wd.groupOr(d.nodes[i], &d.wgs[i]) {
		return false
	}
	d.colls[i] = newCollState(data[e.start:eEnd], e.line, d.nodes[i], &d.wgs[i])
	return true
}

var wireCollectionType = reflect.TypeOf(WireCollection{})

// scratch is what the parsers and decoders of the changed groups and
// collections of one incremental load share: their slabs (a parser and a
// decoder for each of them allocated slabs for hundreds of nodes and
// lists: another 10,000-rule policy of the same shape, 400 collections,
// took 40 MB of them).
type scratch struct {
	fp fastParser
	wd wireDecoder
}

// parser returns the fast parser, ready for another part of the text.
func (sc *scratch) parser() *fastParser {
	p := &sc.fp
	p.ok, p.i, p.lines, p.stack = true, 0, p.lines[:0], p.stack[:0]
	return p
}

// partialGroup parses group i of data (entry e, ending at eEnd), whose
// text differs from every reusable group's, reusing the collections of
// the last text's group i whose text is unchanged: when the group's text
// before and after its list of collections is the same, only the other
// collections are parsed, checked and decoded. It returns the group's tree
// (the collections reused stand in as reusedNode), its node count, its
// collections' state (wire: the wire collections, reused ones with their
// names, kinds, priorities and actions only), the collections to reuse and
// how many; false when it cannot.
func (old *loadState) partialGroup(data []byte, sc *scratch, e entrySpan, eEnd, i int, name string, lim Limits) (*yaml.Node, int, *collState, []collReuse, int, bool) {
	if i >= len(old.colls) || old.colls[i] == nil {
		return nil, 0, nil, nil, 0, false
	}
	ocs := old.colls[i]
	ot, t := old.span(i), data[e.start:eEnd]
	if len(t) < ocs.start || !bytes.Equal(t[:ocs.start], ot[:ocs.start]) {
		return nil, 0, nil, nil, 0, false
	}
	entries, end, _, ok := scanEntries(t, ocs.start, ocs.entries[0].line, ocs.indent)
	if !ok || entries[0].start != ocs.start || !bytes.Equal(t[end:], ot[ocs.end:]) {
		return nil, 0, nil, nil, 0, false
	}
	n := len(entries)
	cs := &collState{start: ocs.start, indent: ocs.indent, entries: entries, end: end, counts: make([]int, n), header: ocs.header,
		nodeLine: ocs.nodeLine, nodeCol: ocs.nodeCol, wire: make([]WireCollection, n), baseLine: e.line}
	nodes := make([]*yaml.Node, n)
	cr := make([]collReuse, n)
	count, kept := ocs.header, 0
	for k, ce := range entries {
		cEnd := end
		if k+1 < n {
			cEnd = entries[k+1].start
		}
		if j := ocs.find(ot, t[ce.start:cEnd], k); j >= 0 {
			// Its lines: e.line+ce.line now, ocs.baseLine+ocs.entries[j].line when validated.
			cr[k] = collReuse{c: ocs.valid[j], delta: e.line + ce.line - ocs.baseLine - ocs.entries[j].line}
			nodes[k], cs.counts[k], cs.wire[k] = reusedNode, ocs.counts[j], ocs.wire[j]
			count += cs.counts[k]
			kept++
			continue
		}
		p := sc.parser()
		if !p.split(data[e.start+ce.start:e.start+cEnd], e.line+ce.line) || len(p.lines) == 0 {
			return nil, 0, nil, nil, 0, false
		}
		seq := p.sequence(ocs.indent)
		if !p.ok || seq == nil || p.i != len(p.lines) || len(seq.Content) != 1 {
			return nil, 0, nil, nil, 0, false
		}
		nodes[k] = seq.Content[0]
		if !countNodes(nodes[k], 4, lim.MaxDepth, &cs.counts[k]) {
			return nil, 0, nil, nil, 0, false
		}
		count += cs.counts[k]
		var errs ErrorList
		w := walker{file: name, errs: &errs, cap: errorCap{max: lim.MaxErrors},
			segs: []seg{{name: "ruleCollectionGroups"}, {idx: i}, {name: "ruleCollections"}, {idx: k}}}
		w.walk(nodes[k], wireCollectionType)
		if w.shapeErrors || len(errs) > 0 {
			return nil, 0, nil, nil, 0, false
		}
		if !sc.wd.collectionOr(nodes[k], &cs.wire[k]) {
			return nil, 0, nil, nil, 0, false
		}
	}
	// The group's mapping as far as validation looks: its position and
	// its collections (positions are looked up only in those validated).
	node := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: e.line + ocs.nodeLine, Column: ocs.nodeCol, Content: []*yaml.Node{
		{Kind: yaml.ScalarNode, Tag: "!!str", Value: "ruleCollections"},
		{Kind: yaml.SequenceNode, Tag: "!!seq", Content: nodes},
	}}
	return node, count, cs, cr, kept, true
}

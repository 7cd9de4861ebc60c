package policy

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"gopkg.in/yaml.v3"
)

// Loading a big policy on several cores (issue 15 goal 2: the load and
// validate stages of a 10,000-rule apply took ~49 ms on one core, the
// second one idle, before anything else could start).
//
// Decoding (decodeParallel): the node budget is estimated on every core
// (checkBudgetParallel), then the text is cut at the entries of the
// top-level ruleCollectionGroups list into runs of about the same size;
// the runs after the first entry are parsed by the fast YAML path
// (fastyaml.go), counted (checkTree's budget) and decoded by the wire
// decoder (wiredecode.go: what it takes needs no walk, see fields) by
// whichever core is free, while this goroutine does the same for the rest
// of the text — what is before the list, its first entry and what follows
// the list — and then takes runs too. The entries are put back in
// document order. The fast parser parses a list's entry from its own
// lines, and an entry ends at the first line as little indented as the
// list's entries — the next entry's, the line after the list or the end
// of the text alike (TestParallelLoadSame compares the trees), so the
// tree is the one parseFastYAML builds of the whole text. Anything else —
// a text outside the fast path's subset in any run, a list elsewhere or
// otherwise shaped than found, any limit passed, any walker error in the
// rest, any value the wire decoder leaves to yaml.v3 — drops the runs'
// work, and the text takes the sequential path from the start: its
// results and errors (first errors, positions, the cap on their number)
// are exactly those of a sequential load.
//
// Validating (preValidate): the rule collections of all groups are
// validated in runs by whichever core is free, each core with a copy of
// the validator that shares its read-only context (service tags, IP
// groups, FQDN tags, positions) and keeps its own errors; validateIn then
// takes them in document order, and runs the checks across collections
// and groups as before. A run that found an error or a warning drops them
// all, and validateIn validates every collection itself, so that the
// errors and warnings, their order and the cap are a sequential load's.
//
// Only texts of at least parallelMinBytes take this path, and only
// validations of at least parallelMinRules rules. An incremental load
// (incremental.go) decodes its changed groups on several cores when they
// are at least parallelMinBytes of text (entryDecoder: a group per job),
// and validates on several cores the collections it does not reuse when
// they hold at least parallelMinRules rules: a policy replaced by another
// of the same header (issue 15 goal 2's 10k replace) is decoded and
// validated as a first load is, while one changed rule stays on one core.

// Thresholds (docs/benchmarks.md, branch parload): below them, the
// goroutines' start and the cut cost more than the second core gives.
var (
	parallelMinBytes = 128 << 10
	parallelMinRules = 700
	parallelOff      bool // tests: the sequential path alone
	parallelParts    int  // tests: this many parts, whatever the cores
	// The work is cut into runs of about chunksPerPart per core, of at
	// least chunkMinBytes of text or chunkMinRules rules, which the cores
	// take as they are free.
	chunksPerPart = 8
	chunkMinBytes = 16 << 10
	chunkMinRules = 64
	// How many loads decoded, and validated, on several cores, and
	// incremental loads that decoded their changed groups so (tests).
	parallelDecodes, parallelValidations, parallelIncrementals atomic.Int64
)

// loadParts is how many parts a big load is cut into: one per core, at
// most 4.
func loadParts() int {
	if parallelParts > 0 {
		return parallelParts
	}
	return min(runtime.GOMAXPROCS(0), 4)
}

// checkBudgetParallel is CheckBudget on parts cores: the text cut after
// a line's end into parts, each estimated by estimateNodes (which reads
// no byte before a line's start nor after its end, so that the estimates
// add up to the whole text's); when their sum passes the limit, CheckBudget
// finds the error and its position in the whole text.
func checkBudgetParallel(file string, data []byte, lim Limits, parts int) error {
	lim = lim.withDefaults()
	max := 2 * lim.MaxNodes
	cuts := []int{0}
	for j := 1; j < parts; j++ {
		at := len(data) * j / parts
		k := bytes.IndexByte(data[at:], '\n')
		if k < 0 || at+k+1 <= cuts[len(cuts)-1] {
			break
		}
		cuts = append(cuts, at+k+1)
	}
	cuts = append(cuts, len(data))
	counts := make([]int, len(cuts)-1)
	var wg sync.WaitGroup
	for j := 1; j < len(counts); j++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts[j], _, _ = estimateNodes(data[cuts[j]:cuts[j+1]], max)
		}()
	}
	counts[0], _, _ = estimateNodes(data[:cuts[1]], max)
	wg.Wait()
	n := 3 // the first line's document, counted once
	for _, c := range counts {
		n += c - 3
	}
	if n > max {
		return CheckBudget(file, data, lim)
	}
	return nil
}

// groupList finds the top-level ruleCollectionGroups block list of data:
// the line "ruleCollectionGroups:" at column 1 (spaces or a comment may
// follow), and the entries of the list that starts on the next line with
// content (scanEntries). False when there is none.
func groupList(data []byte) (indent int, entries []entrySpan, end, endLine int, ok bool) {
	key := []byte("ruleCollectionGroups:")
	off, line := 0, 1
	for off < len(data) {
		next := len(data)
		if k := bytes.IndexByte(data[off:], '\n'); k >= 0 {
			next = off + k + 1
		}
		if t := data[off:next]; bytes.HasPrefix(t, key) && onlyComment(bytes.TrimSuffix(t[len(key):], []byte{'\n'})) {
			for off, line = next, line+1; off < len(data); line++ {
				next, ind := lineAt(data, off)
				if ind < next && data[ind] != '\n' && data[ind] != '#' {
					indent = ind - off
					entries, end, endLine, ok = scanEntries(data, off, line, indent)
					return indent, entries, end, endLine, ok && len(entries) > 0 && entries[0].start == off
				}
				off = next
			}
			return 0, nil, 0, 0, false
		}
		off, line = next, line+1
	}
	return 0, nil, 0, 0, false
}

// chunkEntries cuts entries (the list ending at end) into runs: the
// first entry alone (decodeHead's), then runs of about size bytes. It
// returns the index where each run starts, and len(entries) last.
func chunkEntries(entries []entrySpan, end, size int) []int {
	bounds := []int{0, 1}
	for i := 2; i < len(entries); i++ {
		if entries[i].start-entries[bounds[len(bounds)-1]].start >= size {
			bounds = append(bounds, i)
		}
	}
	return append(bounds, len(entries))
}

// decodePart is one run of the list's entries, from..to-1, decoded by
// whichever core took it.
type decodePart struct {
	from, to int
	nodes    []*yaml.Node
	groups   []WireGroup
	visits   int // checkTree's count of their nodes
	ok       bool
}

// decode parses, counts and decodes the run's entries (of the list at
// indent); ok when all of it went through.
func (r *decodePart) decode(file string, data []byte, src string, entries []entrySpan, end, indent int, lim Limits) {
	s, e := entries[r.from].start, end
	if r.to < len(entries) {
		e = entries[r.to].start
	}
	p := &fastParser{ok: true, data: data, src: src}
	if !p.split(data[s:e], entries[r.from].line) || len(p.lines) == 0 {
		return
	}
	seq := p.sequence(indent)
	if !p.ok || seq == nil || p.i != len(p.lines) || len(seq.Content) != r.to-r.from {
		return
	}
	r.nodes = seq.Content
	for _, n := range r.nodes {
		// The entries are at depth 2, as under the document's root.
		if !countNodes(n, 2, lim.MaxDepth, &r.visits) || r.visits > lim.MaxNodes {
			return
		}
	}
	// What the wire decoder takes needs no walk (wiredecode.go's fields).
	r.groups = make([]WireGroup, len(r.nodes))
	var d wireDecoder
	for i, n := range r.nodes {
		if !d.group(n, &r.groups[i]) {
			return
		}
	}
	r.ok = true
}

// decodeParallel is decodeYAMLTree's fast path on several cores for a
// text within the byte budget (see above); false when the text must take
// the sequential path.
func decodeParallel(file string, data []byte, lim Limits, parts int) (*File, *Positions, bool) {
	indent, entries, end, endLine, ok := groupList(data)
	if !ok {
		return nil, nil, false
	}
	if len(entries) < 2 {
		return nil, nil, false
	}
	bounds := chunkEntries(entries, end, max(chunkMinBytes, (end-entries[1].start)/(parts*chunksPerPart)))
	src := string(data) // the values are substrings of it, in every part
	res := make([]decodePart, len(bounds)-1)
	for j := range res {
		res[j].from, res[j].to = bounds[j], bounds[j+1]
	}
	// The runs after the first go to whichever core is free: the other
	// cores as soon as they start, this one when decodeHead is done (a
	// core the machine's other jobs hold does not hold the load up).
	var next, failed atomic.Int32
	next.Store(1)
	work := func() {
		for failed.Load() == 0 {
			j := int(next.Add(1)) - 1
			if j >= len(res) {
				return
			}
			if res[j].decode(file, data, src, entries, end, indent, lim); !res[j].ok {
				failed.Store(1)
			}
		}
	}
	wait := onOtherCores(parts-1, work)
	f, root, seq, visits, ok := decodeHead(file, data, src, entries[1].start, end, endLine, lim)
	ok = ok && seq.Column-1 == indent && seq.Line == entries[0].line && len(seq.Content) == 1
	if !ok {
		failed.Store(1)
	}
	work()
	wait()
	if !ok || failed.Load() != 0 {
		return nil, nil, false
	}
	nodes := make([]*yaml.Node, 0, len(entries))
	groups := make([]WireGroup, 0, len(entries))
	nodes, groups = append(nodes, seq.Content...), append(groups, f.RuleCollectionGroups...)
	for _, r := range res[1:] {
		visits += r.visits
		if !r.ok || visits > lim.MaxNodes {
			return nil, nil, false
		}
		nodes, groups = append(nodes, r.nodes...), append(groups, r.groups...)
	}
	seq.Content = nodes
	f.RuleCollectionGroups = groups
	parallelDecodes.Add(1)
	return f, &Positions{file: file, root: root}, true
}

// decodeHead is decodeParallel's own part: the text before offset cut
// (before the list and its first entries) and after the list (from end,
// line endLine), parsed, counted, checked and decoded. It returns the
// wire policy (the groups of the first entries), the root, the list's
// node and the nodes counted.
func decodeHead(file string, data []byte, src string, cut, end, endLine int, lim Limits) (f *File, root, seq *yaml.Node, visits int, ok bool) {
	p := &fastParser{ok: true, data: data, src: src}
	p.lines = make([]fastLine, 0, bytes.Count(data[:cut], []byte{'\n'})+bytes.Count(data[end:], []byte{'\n'})+2)
	if !p.addLines(data[:cut], 1) || !p.addLines(data[end:], endLine) || len(p.lines) == 0 {
		return nil, nil, nil, 0, false
	}
	root = p.block(p.lines[0].indent)
	if !p.ok || root == nil || p.i != len(p.lines) || root.Kind != yaml.MappingNode || root.Column != 1 {
		return nil, nil, nil, 0, false
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "ruleCollectionGroups" && root.Content[i+1].Kind == yaml.SequenceNode && seq == nil {
			seq = root.Content[i+1]
		}
	}
	if seq == nil {
		return nil, nil, nil, 0, false
	}
	doc := &yaml.Node{Kind: yaml.DocumentNode, Line: root.Line, Column: root.Column, Content: []*yaml.Node{root}}
	if !countNodes(doc, 0, lim.MaxDepth, &visits) || visits > lim.MaxNodes {
		return nil, nil, nil, 0, false
	}
	f = &File{}
	if !decodeFile(root, f) || !headerClean(file, root, lim) {
		return nil, nil, nil, 0, false
	}
	return f, root, seq, visits, true
}

// preValidated is the groups and their collections validated on several
// cores, in document order.
type preValidated struct {
	groups []*Group
	colls  [][]*Collection
}

// fork is a copy of v for another core: the same read-only context, its
// own errors and warnings.
func (v *validator) fork() *validator {
	w := *v
	w.errs, w.warns = nil, nil
	w.cap = errorCap{max: v.cap.max}
	return &w
}

// preValidate validates the collections of f's groups on several cores
// (see above); nil when it does not apply, or when a part found an error
// or a warning.
func (v *validator) preValidate(f *File, reuse *groupReuse) *preValidated {
	parts := loadParts()
	if parallelOff || parts < 2 {
		return nil
	}
	type job struct{ gi, ci int }
	var jobs []job
	var weights []int // cumulative: the rules and collections up to each job
	total := 0
	for gi := range f.RuleCollectionGroups {
		if reuse.group(gi) != nil {
			continue // an incremental load's unchanged group
		}
		for ci := range f.RuleCollectionGroups[gi].RuleCollections {
			if reuse.reusesColl(gi, ci) {
				continue // an unchanged collection of a changed group
			}
			total += 1 + len(f.RuleCollectionGroups[gi].RuleCollections[ci].Rules)
			jobs = append(jobs, job{gi, ci})
			weights = append(weights, total)
		}
	}
	if total < parallelMinRules || len(jobs) < 2 {
		return nil
	}
	pre := &preValidated{groups: make([]*Group, len(f.RuleCollectionGroups)), colls: make([][]*Collection, len(f.RuleCollectionGroups))}
	gps := make([]string, len(f.RuleCollectionGroups))
	for gi := range f.RuleCollectionGroups {
		wg := &f.RuleCollectionGroups[gi]
		gps[gi] = "ruleCollectionGroups[" + strconv.Itoa(gi) + "]"
		pre.groups[gi] = &Group{Name: wg.Name, Priority: wg.Priority, Pos: v.pos.Lookup(gps[gi]), Policy: f.Name}
		pre.colls[gi] = make([]*Collection, len(wg.RuleCollections))
	}
	// Runs of jobs of about size rules, which the cores take as they
	// are free (see decodeParallel).
	size := max(chunkMinRules, total/(parts*chunksPerPart))
	bounds := []int{0}
	for k := range jobs {
		if weights[k]-weights[bounds[len(bounds)-1]] >= size && k+1 < len(jobs) {
			bounds = append(bounds, k+1)
		}
	}
	bounds = append(bounds, len(jobs))
	ok := onCores(parts, len(bounds)-1, func() func(j int) bool {
		w := v.fork()
		return func(j int) bool {
			for _, jb := range jobs[bounds[j]:bounds[j+1]] {
				wc := &f.RuleCollectionGroups[jb.gi].RuleCollections[jb.ci]
				cp := gps[jb.gi] + ".ruleCollections[" + strconv.Itoa(jb.ci) + "]"
				pre.colls[jb.gi][jb.ci] = w.collection(wc, cp, pre.groups[jb.gi])
			}
			return len(w.errs) == 0 && len(w.warns) == 0
		}
	})
	if !ok {
		return nil
	}
	parallelValidations.Add(1)
	return pre
}

// onCores runs jobs 0 to n-1 on parts cores, this goroutine one of them:
// each core takes the next job when it is free, with its own worker
// (newWorker runs once per core, on it). Once a job fails, no core takes
// another; it reports whether every job succeeded.
func onCores(parts, n int, newWorker func() func(j int) bool) bool {
	var next, failed atomic.Int32
	work := func() {
		job := newWorker()
		for failed.Load() == 0 {
			j := int(next.Add(1)) - 1
			if j >= n {
				return
			}
			if !job(j) {
				failed.Store(1)
			}
		}
	}
	wait := onOtherCores(parts-1, work)
	work()
	wait()
	return failed.Load() == 0
}

// onOtherCores runs work on n goroutines and returns the function that
// waits for them (the caller works too, then waits).
func onOtherCores(n int, work func()) (wait func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	return wg.Wait
}

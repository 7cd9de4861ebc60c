package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Positions is the one YAML position index: it finds where a field path,
// as errors name it ("ruleCollectionGroups[0].ruleCollections[1].rules[2]",
// "listeners[0].tls.certificates[1]"), has its value — and for a mapping's
// field, its key — in the source. DecodeYAML returns it for policy files,
// DecodeStrictPositions for every other config file (the daemon's, the
// WAF's), so that each error names FILE:LINE:COL the same way. It walks the parsed YAML tree along the path when
// asked (only errors and the rules' positions ask), rather than indexing
// every value of the document up front — for a 100,000-rule policy, 1.5
// million entries that cost more than parsing the YAML.
type Positions struct {
	file string
	root *yaml.Node // the document's top value; nil before it is parsed
	// prefix is prepended to every path looked up (an inline base policy).
	prefix string
}

// Lookup returns the position of path's value, or of its nearest ancestor
// that has one (the file alone when none has).
func (p *Positions) Lookup(path string) Pos {
	if p == nil {
		return Pos{}
	}
	val, _, depth := p.resolve(p.prefix + path)
	if depth == 0 {
		return Pos{File: p.file}
	}
	return Pos{File: p.file, Line: val.Line, Column: val.Column}
}

// Key returns the position of the key of a mapping field, falling back to
// its value's.
func (p *Positions) Key(path string) Pos {
	if p != nil {
		if _, key, _ := p.resolve(p.prefix + path); key != nil {
			return Pos{File: p.file, Line: key.Line, Column: key.Column}
		}
	}
	return p.Lookup(path)
}

// Block reports whether the value at path is a block scalar (| or >): its
// position is the indicator's, its text starts on the next line.
func (p *Positions) Block(path string) bool {
	if p == nil {
		return false
	}
	val, _, depth := p.resolve(p.prefix + path)
	return depth > 0 && val.Kind == yaml.ScalarNode && val.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0
}

// resolve follows path — field names and map keys joined by ".", list
// items as "[i]", as the walker names them — from the root: it returns the
// deepest value it reached, how many steps that took, and, when the whole
// path was a mapping entry, its key.
func (p *Positions) resolve(path string) (val, key *yaml.Node, depth int) {
	if p.root == nil {
		return nil, nil, 0
	}
	val, key, depth, _, _ = resolveFrom(unalias(p.root), path, 0)
	return val, key, depth
}

// resolveFrom is resolve from node n, reached in depth steps. It also
// tells whether it went the whole path, and whether no key of the
// mappings it looked in holds a '.' or '[' — then a longer path that
// starts with this one goes the same way up to here (a cursor).
func resolveFrom(n *yaml.Node, path string, depth int) (val, key *yaml.Node, _ int, whole, plain bool) {
	plain = true
	rest := path
	for rest != "" {
		var next, k *yaml.Node
		switch {
		case rest[0] == '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 || n.Kind != yaml.SequenceNode {
				return n, nil, depth, false, plain
			}
			i, err := strconv.Atoi(rest[1:end])
			if err != nil || i < 0 || i >= len(n.Content) {
				return n, nil, depth, false, plain
			}
			next, rest = n.Content[i], rest[end+1:]
		case n.Kind == yaml.MappingNode:
			// The longest key the path goes on with: map keys (service
			// tags, IP groups) may hold dots; the first of duplicates.
			best := -1
			for i := 0; i+1 < len(n.Content); i += 2 {
				kv := n.Content[i].Value
				if plain && strings.ContainsAny(kv, ".[") {
					plain = false
				}
				if len(kv) <= len(rest) && rest[:len(kv)] == kv && (len(kv) == len(rest) || rest[len(kv)] == '.' || rest[len(kv)] == '[') &&
					(best < 0 || len(kv) > len(n.Content[best].Value)) {
					best = i
				}
			}
			if best < 0 {
				return n, nil, depth, false, plain
			}
			k, next, rest = n.Content[best], n.Content[best+1], rest[len(n.Content[best].Value):]
		default:
			return n, nil, depth, false, plain
		}
		n = unalias(next)
		depth++
		if rest != "" && rest[0] == '.' {
			rest = rest[1:]
		}
		if rest == "" {
			return n, k, depth, true, plain
		}
	}
	return n, nil, depth, true, plain
}

// cursor is the node a path leads to, to look up paths that go on from
// it without walking from the root again: validation looks up every
// rule's position, and walking from the root each time was 7% of the
// load and validation of a 10,000-rule policy.
type cursor struct {
	p     *Positions
	path  string
	n     *yaml.Node
	depth int
	ok    bool // the path went through plain keys to n
}

// cursor returns the cursor of path.
func (p *Positions) cursor(path string) cursor {
	c := cursor{p: p, path: path}
	if p == nil || p.root == nil {
		return c
	}
	var whole, plain bool
	c.n, _, c.depth, whole, plain = resolveFrom(unalias(p.root), p.prefix+path, 0)
	c.ok = whole && plain
	return c
}

// Lookup is Positions.Lookup of path, which goes on from the cursor's.
func (c cursor) Lookup(path string) Pos {
	if !c.ok || len(path) <= len(c.path) || path[:len(c.path)] != c.path || (path[len(c.path)] != '.' && path[len(c.path)] != '[') {
		return c.p.Lookup(path)
	}
	rest := path[len(c.path):]
	if rest[0] == '.' {
		rest = rest[1:]
	}
	val, _, depth, _, _ := resolveFrom(c.n, rest, c.depth)
	if depth == 0 {
		return Pos{File: c.p.file}
	}
	return Pos{File: c.p.file, Line: val.Line, Column: val.Column}
}

// Item is Lookup of path, the path of the cursor's i-th item
// (item(c.path, i)): the item itself when the cursor is a sequence's,
// without walking or parsing the path (validation looks up every rule).
func (c cursor) Item(i int, path string) Pos {
	if !c.ok || c.n == nil || c.n.Kind != yaml.SequenceNode || i < 0 || i >= len(c.n.Content) {
		return c.Lookup(path)
	}
	val := unalias(c.n.Content[i])
	return Pos{File: c.p.file, Line: val.Line, Column: val.Column}
}

func unalias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// DecodeYAML parses a policy file's bytes into its wire form. Unknown fields,
// values of the wrong shape and duplicate keys are errors with positions.
// The returned positions are used by Validate to place its errors.
func DecodeYAML(file string, data []byte) (*File, *Positions, error) {
	return decodeYAML(file, data, Limits{})
}

// decodeYAML is DecodeYAML within lim: the bytes are checked before they
// are parsed, the tree before it is walked (budget.go).
func decodeYAML(file string, data []byte, lim Limits) (*File, *Positions, error) {
	f, pos, _, err := decodeYAMLTree(file, data, lim)
	return f, pos, err
}

// decodeYAMLTree is decodeYAML also telling whether the fast path
// (fastyaml.go) parsed the document (the incremental Loader keeps its
// tree only then).
func decodeYAMLTree(file string, data []byte, lim Limits) (_ *File, _ *Positions, fast bool, _ error) {
	lim = lim.withDefaults()
	pos := &Positions{file: file}
	parts := 1
	if !fastPathOff && !wireDecodeOff && !parallelOff && len(data) >= parallelMinBytes {
		parts = loadParts() // parallel.go
	}
	if parts > 1 {
		if err := checkBudgetParallel(file, data, lim, parts); err != nil {
			return nil, pos, false, err
		}
		if f, pos, ok := decodeParallel(file, data, lim, parts); ok {
			return f, pos, true, nil
		}
	} else if err := CheckBudget(file, data, lim); err != nil {
		return nil, pos, false, err
	}
	var doc yaml.Node
	if tree, ok := parseFastYAML(data); ok && !fastPathOff { // fastyaml.go
		doc, fast = *tree, true
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, pos, false, ErrorList{{Pos: Pos{File: file, Line: 1, Column: 1}, Msg: "empty policy file"}}
			}
			return nil, pos, false, ErrorList{yamlSyntaxError(file, err)}
		}
		var extra yaml.Node
		if err := dec.Decode(&extra); err == nil {
			return nil, pos, false, ErrorList{{Pos: Pos{File: file, Line: extra.Line, Column: extra.Column}, Msg: "more than one YAML document in a policy file"}}
		}
	}
	if len(doc.Content) == 0 {
		return nil, pos, false, ErrorList{{Pos: Pos{File: file, Line: 1, Column: 1}, Msg: "empty policy file"}}
	}
	if err := checkTree(file, &doc, lim); err != nil {
		return nil, pos, false, err
	}
	root := doc.Content[0]
	pos.root = root
	if !wireDecodeOff {
		// The groups decoded by wiredecode.go need no walk (fields).
		var f File
		if decodeFile(root, &f) && headerClean(file, root, lim) {
			return &f, pos, fast, nil
		}
	}
	var errs ErrorList
	w := walker{file: file, errs: &errs, cap: errorCap{max: lim.MaxErrors}}
	w.walk(root, reflect.TypeOf(File{}))
	if w.shapeErrors {
		return nil, pos, false, w.cap.finish(errs, file)
	}
	// Only unknown or duplicate fields so far: decode the rest so that
	// validation can report every other problem too.
	var f File
	if len(errs) == 0 && !wireDecodeOff && decodeFile(root, &f) { // wiredecode.go
		return &f, pos, fast, nil
	}
	if err := root.Decode(&f); err != nil {
		return nil, pos, false, append(w.cap.finish(errs, file), yamlSyntaxError(file, err))
	}
	return &f, pos, fast, w.cap.finish(errs, file).Err()
}

var yamlLineRe = strings.NewReplacer("yaml: ", "")

func yamlSyntaxError(file string, err error) *Error {
	msg := yamlLineRe.Replace(err.Error())
	line := 0
	// yaml.v3 reports "line N: ..."; keep the number as a position.
	if strings.HasPrefix(msg, "line ") {
		rest := msg[len("line "):]
		if i := strings.Index(rest, ":"); i > 0 {
			if n, e := strconv.Atoi(rest[:i]); e == nil {
				line = n
				msg = strings.TrimSpace(rest[i+1:])
			}
		}
	}
	if line == 0 {
		return &Error{Pos: Pos{File: file}, Msg: "YAML syntax: " + msg}
	}
	return &Error{Pos: Pos{File: file, Line: line, Column: 1}, Msg: "YAML syntax: " + msg}
}

// walker checks the document's shape against the wire types before it is
// decoded: unknown fields, values of the wrong shape and duplicate keys
// are errors with positions. It names the path of a value (for errors)
// only when it reports one.
type walker struct {
	file        string
	errs        *ErrorList
	cap         errorCap
	shapeErrors bool // a value of the wrong shape: the file cannot be decoded
	segs        []seg
}

// seg is one step of the path being walked: a field or map key, or a list
// index (name "").
type seg struct {
	name string
	idx  int
}

func (w *walker) path() string {
	var b strings.Builder
	for i, s := range w.segs {
		if s.name == "" {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.idx))
			b.WriteByte(']')
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.name)
	}
	return b.String()
}

// field names the value being walked in messages: the path's last field
// (with its list indexes), "policy" at the top.
func (w *walker) field() string {
	field := w.path()
	if i := strings.LastIndex(field, "."); i >= 0 {
		field = field[i+1:]
	}
	if field == "" {
		field = "policy"
	}
	return field
}

func (w *walker) errorf(n *yaml.Node, format string, args ...any) {
	w.shapeErrors = true
	if w.cap.full(*w.errs) {
		return
	}
	*w.errs = append(*w.errs, &Error{Pos: Pos{File: w.file, Line: n.Line, Column: n.Column}, Path: w.path(), Msg: fmt.Sprintf(format, args...)})
}

// fieldErrorf reports an unknown or duplicate field, which does not stop decoding.
func (w *walker) fieldErrorf(n *yaml.Node, format string, args ...any) {
	if w.cap.full(*w.errs) {
		return
	}
	*w.errs = append(*w.errs, &Error{Pos: Pos{File: w.file, Line: n.Line, Column: n.Column}, Path: w.path(), Msg: fmt.Sprintf(format, args...)})
}

// structInfo is a wire struct's fields by their YAML names.
type structInfo struct {
	fields map[string]reflect.Type
	names  []string
}

var structInfos sync.Map // reflect.Type -> *structInfo

func structInfoOf(t reflect.Type) *structInfo {
	if si, ok := structInfos.Load(t); ok {
		return si.(*structInfo)
	}
	si := &structInfo{fields: map[string]reflect.Type{}}
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		si.fields[tag] = t.Field(i).Type
		si.names = append(si.names, tag)
	}
	structInfos.Store(t, si)
	return si
}

// seenKey reports whether the key at content[i] appeared before it in a
// mapping's content; seen (built on demand for large mappings) speeds the
// check up.
func seenKey(content []*yaml.Node, i int, seen *map[string]bool) bool {
	k := content[i].Value
	if len(content) <= 32 {
		for j := 0; j < i; j += 2 {
			if content[j].Value == k {
				return true
			}
		}
		return false
	}
	if *seen == nil {
		*seen = map[string]bool{}
	}
	if (*seen)[k] {
		return true
	}
	(*seen)[k] = true
	return false
}

var (
	wireBaseType = reflect.TypeOf(WireBase{})
	fileType     = reflect.TypeOf(File{})
)

func (w *walker) walk(n *yaml.Node, t reflect.Type) {
	n = unalias(n)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value: the zero value
	}
	if t == wireBaseType {
		// basePolicy: a path, or the base policy inline.
		switch n.Kind {
		case yaml.ScalarNode:
		case yaml.MappingNode:
			w.walk(n, fileType)
		default:
			w.errorf(n, "basePolicy: expected the base policy's file (a path) or the base policy itself (a mapping), found %s", describe(n))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.errorf(n, "%s: expected a mapping, found %s", w.field(), describe(n))
			return
		}
		si := structInfoOf(t)
		var seen map[string]bool
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			w.segs = append(w.segs, seg{name: k.Value})
			switch ft, ok := si.fields[k.Value]; {
			case seenKey(n.Content, i, &seen):
				w.fieldErrorf(k, "duplicate field %q", k.Value)
			case !ok:
				hint := ""
				if s := closest(k.Value, append([]string(nil), si.names...)); s != "" {
					hint = fmt.Sprintf(" (did you mean %q?)", s)
				}
				w.fieldErrorf(k, "unknown field %q in %s%s", k.Value, describeType(t), hint)
			default:
				w.walk(v, ft)
			}
			w.segs = w.segs[:len(w.segs)-1]
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.errorf(n, "%s: expected a mapping, found %s", w.field(), describe(n))
			return
		}
		var seen map[string]bool
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			w.segs = append(w.segs, seg{name: k.Value})
			if seenKey(n.Content, i, &seen) {
				w.errorf(k, "duplicate key %q", k.Value)
			} else {
				w.walk(v, t.Elem())
			}
			w.segs = w.segs[:len(w.segs)-1]
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.errorf(n, "%s: expected a list, found %s", w.field(), describe(n))
			return
		}
		for i, c := range n.Content {
			w.segs = append(w.segs, seg{idx: i})
			w.walk(c, t.Elem())
			w.segs = w.segs[:len(w.segs)-1]
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			w.errorf(n, "%s: expected a single value, found %s", w.field(), describe(n))
		}
	case reflect.Int:
		if n.Kind != yaml.ScalarNode {
			w.errorf(n, "%s: expected a number, found %s", w.field(), describe(n))
			return
		}
		if _, err := strconv.Atoi(n.Value); err != nil {
			w.errorf(n, "%s: expected a whole number, found %q", w.field(), n.Value)
		}
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			w.errorf(n, "%s: expected true or false, found %s", w.field(), describe(n))
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// sub returns the positions of a nested policy (an inline basePolicy):
// its paths are prefixed in p.
func (p *Positions) sub(prefix string) *Positions {
	if p == nil {
		return nil
	}
	return &Positions{file: p.file, root: p.root, prefix: p.prefix + prefix}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

func describeType(t reflect.Type) string {
	switch t {
	case reflect.TypeOf(File{}):
		return "the policy"
	case reflect.TypeOf(WireGroup{}):
		return "a rule collection group"
	case reflect.TypeOf(WireCollection{}):
		return "a rule collection"
	case reflect.TypeOf(WireRule{}):
		return "a rule"
	case reflect.TypeOf(WireThreatIntel{}):
		return "threatIntel"
	case reflect.TypeOf(WireAllowlist{}):
		return "threatIntel.allowlist"
	case reflect.TypeOf(WireFeed{}):
		return "a threat-intel feed"
	case reflect.TypeOf(WireDNS{}):
		return "dns"
	case reflect.TypeOf(WireBase{}):
		return "basePolicy"
	}
	return t.Name()
}

// closest returns the candidate nearest to s by edit distance, if close.
func closest(s string, cands []string) string {
	best, bestD := "", 4
	ls := strings.ToLower(s)
	sort.Strings(cands)
	for _, c := range cands {
		if d := EditDistance(ls, strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// EditDistance is the Levenshtein distance between a and b (for "did you
// mean" hints in error messages).
func EditDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// DecodeStrict decodes a YAML document into out (a pointer to a struct with
// yaml tags) the way policy files are decoded: unknown fields, values of the
// wrong shape and duplicate keys are errors naming FILE:LINE:COL. Other
// configuration files (the daemon's) use it too.
func DecodeStrict(file string, data []byte, out any) error {
	_, err := DecodeStrictPositions(file, data, out)
	return err
}

// DecodeStrictPositions is DecodeStrict that also returns the file's
// position index, to place the errors of the validation that follows.
func DecodeStrictPositions(file string, data []byte, out any) (*Positions, error) {
	lim := Limits{}.withDefaults()
	pos := &Positions{file: file}
	if err := CheckBudget(file, data, lim); err != nil {
		return pos, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return pos, ErrorList{yamlSyntaxError(file, err)}
	}
	if len(doc.Content) == 0 {
		return pos, ErrorList{{Pos: Pos{File: file, Line: 1, Column: 1}, Msg: "empty file"}}
	}
	if err := checkTree(file, &doc, lim); err != nil {
		return pos, err
	}
	pos.root = doc.Content[0]
	var errs ErrorList
	w := walker{file: file, errs: &errs, cap: errorCap{max: lim.MaxErrors}}
	w.walk(doc.Content[0], reflect.TypeOf(out).Elem())
	if len(errs) > 0 {
		return pos, w.cap.finish(errs, file)
	}
	if err := doc.Content[0].Decode(out); err != nil {
		return pos, ErrorList{yamlSyntaxError(file, err)}
	}
	return pos, nil
}

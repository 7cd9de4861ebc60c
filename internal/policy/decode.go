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

	"gopkg.in/yaml.v3"
)

// Positions is the one YAML position index: it maps a field path, as
// errors name it ("ruleCollectionGroups[0].ruleCollections[1].rules[2]",
// "listeners[0].tls.certificates[1]"), to where its value — and for a
// mapping's field, its key — starts in the source. DecodeYAML builds it for
// policy files, DecodeStrictPositions for every other config file (the
// daemon's, the WAF's), so that each error names FILE:LINE:COL the same
// way.
type Positions struct {
	file  string
	vals  map[string]Pos
	keys  map[string]Pos
	block map[string]bool // block scalars (| or >)
	// prefix is prepended to every path looked up (an inline base policy).
	prefix string
}

func newPositions(file string) *Positions {
	return &Positions{file: file, vals: map[string]Pos{}, keys: map[string]Pos{}, block: map[string]bool{}}
}

// Lookup returns the position of path's value, or of its nearest ancestor
// that has one (the file alone when none has).
func (p *Positions) Lookup(path string) Pos {
	if p == nil {
		return Pos{}
	}
	path = p.prefix + path
	for path != "" {
		if pos, ok := p.vals[path]; ok {
			return pos
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return Pos{File: p.file}
}

// Key returns the position of the key of a mapping field, falling back to
// its value's.
func (p *Positions) Key(path string) Pos {
	if p != nil {
		if pos, ok := p.keys[p.prefix+path]; ok {
			return pos
		}
	}
	return p.Lookup(path)
}

// Block reports whether the value at path is a block scalar (| or >): its
// position is the indicator's, its text starts on the next line.
func (p *Positions) Block(path string) bool { return p != nil && p.block[p.prefix+path] }

// DecodeYAML parses a policy file's bytes into its wire form. Unknown fields,
// values of the wrong shape and duplicate keys are errors with positions.
// The returned positions are used by Validate to place its errors.
func DecodeYAML(file string, data []byte) (*File, *Positions, error) {
	return decodeYAML(file, data, Limits{})
}

// decodeYAML is DecodeYAML within lim: the bytes are checked before they
// are parsed, the tree before it is walked (budget.go).
func decodeYAML(file string, data []byte, lim Limits) (*File, *Positions, error) {
	lim = lim.withDefaults()
	pos := newPositions(file)
	if err := CheckBudget(file, data, lim); err != nil {
		return nil, pos, err
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, pos, ErrorList{{Pos: Pos{File: file, Line: 1, Column: 1}, Msg: "empty policy file"}}
		}
		return nil, pos, ErrorList{yamlSyntaxError(file, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, pos, ErrorList{{Pos: Pos{File: file, Line: extra.Line, Column: extra.Column}, Msg: "more than one YAML document in a policy file"}}
	}
	if len(doc.Content) == 0 {
		return nil, pos, ErrorList{{Pos: Pos{File: file, Line: 1, Column: 1}, Msg: "empty policy file"}}
	}
	if err := checkTree(file, &doc, lim); err != nil {
		return nil, pos, err
	}
	root := doc.Content[0]
	var errs ErrorList
	w := walker{pos: pos, errs: &errs, cap: errorCap{max: lim.MaxErrors}}
	w.walk(root, reflect.TypeOf(File{}), "")
	if w.shapeErrors {
		return nil, pos, w.cap.finish(errs, file)
	}
	// Only unknown or duplicate fields so far: decode the rest so that
	// validation can report every other problem too.
	var f File
	if err := root.Decode(&f); err != nil {
		return nil, pos, append(w.cap.finish(errs, file), yamlSyntaxError(file, err))
	}
	return &f, pos, w.cap.finish(errs, file).Err()
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

type walker struct {
	pos         *Positions
	errs        *ErrorList
	cap         errorCap
	shapeErrors bool // a value of the wrong shape: the file cannot be decoded
}

func (w *walker) errorf(n *yaml.Node, path, format string, args ...any) {
	w.shapeErrors = true
	if w.cap.full(*w.errs) {
		return
	}
	*w.errs = append(*w.errs, &Error{Pos: Pos{File: w.pos.file, Line: n.Line, Column: n.Column}, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// fieldErrorf reports an unknown or duplicate field, which does not stop decoding.
func (w *walker) fieldErrorf(n *yaml.Node, path, format string, args ...any) {
	if w.cap.full(*w.errs) {
		return
	}
	*w.errs = append(*w.errs, &Error{Pos: Pos{File: w.pos.file, Line: n.Line, Column: n.Column}, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	w.pos.vals[path] = Pos{File: w.pos.file, Line: n.Line, Column: n.Column}
	if n.Kind == yaml.ScalarNode && n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		w.pos.block[path] = true
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value: the zero value
	}
	if t == reflect.TypeOf(WireBase{}) {
		// basePolicy: a path, or the base policy inline.
		switch n.Kind {
		case yaml.ScalarNode:
		case yaml.MappingNode:
			w.walk(n, reflect.TypeOf(File{}), path)
		default:
			w.errorf(n, path, "basePolicy: expected the base policy's file (a path) or the base policy itself (a mapping), found %s", describe(n))
		}
		return
	}
	field := path
	if i := strings.LastIndex(field, "."); i >= 0 {
		field = field[i+1:]
	}
	if field == "" {
		field = "policy"
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.errorf(n, path, "%s: expected a mapping, found %s", field, describe(n))
			return
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = t.Field(i).Type
			names = append(names, tag)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := join(path, k.Value)
			if seen[k.Value] {
				w.fieldErrorf(k, sub, "duplicate field %q", k.Value)
				continue
			}
			seen[k.Value] = true
			ft, ok := fields[k.Value]
			if !ok {
				hint := ""
				if s := closest(k.Value, names); s != "" {
					hint = fmt.Sprintf(" (did you mean %q?)", s)
				}
				w.fieldErrorf(k, sub, "unknown field %q in %s%s", k.Value, describeType(t), hint)
				continue
			}
			w.pos.keys[sub] = Pos{File: w.pos.file, Line: k.Line, Column: k.Column}
			w.walk(v, ft, sub)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.errorf(n, path, "%s: expected a mapping, found %s", field, describe(n))
			return
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := path + "." + k.Value
			if seen[k.Value] {
				w.errorf(k, sub, "duplicate key %q", k.Value)
				continue
			}
			seen[k.Value] = true
			w.pos.keys[sub] = Pos{File: w.pos.file, Line: k.Line, Column: k.Column}
			w.walk(v, t.Elem(), sub)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.errorf(n, path, "%s: expected a list, found %s", field, describe(n))
			return
		}
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			w.errorf(n, path, "%s: expected a single value, found %s", field, describe(n))
		}
	case reflect.Int:
		if n.Kind != yaml.ScalarNode {
			w.errorf(n, path, "%s: expected a number, found %s", field, describe(n))
			return
		}
		if _, err := strconv.Atoi(n.Value); err != nil {
			w.errorf(n, path, "%s: expected a whole number, found %q", field, n.Value)
		}
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			w.errorf(n, path, "%s: expected true or false, found %s", field, describe(n))
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
	return &Positions{file: p.file, vals: p.vals, keys: p.keys, block: p.block, prefix: p.prefix + prefix}
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
	pos := newPositions(file)
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
	var errs ErrorList
	w := walker{pos: pos, errs: &errs, cap: errorCap{max: lim.MaxErrors}}
	w.walk(doc.Content[0], reflect.TypeOf(out).Elem(), "")
	if len(errs) > 0 {
		return pos, w.cap.finish(errs, file)
	}
	if err := doc.Content[0].Decode(out); err != nil {
		return pos, ErrorList{yamlSyntaxError(file, err)}
	}
	return pos, nil
}

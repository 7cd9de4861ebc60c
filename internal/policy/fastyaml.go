package policy

import (
	"bytes"

	"gopkg.in/yaml.v3"
)

// A fast path for the shape large policies have.
//
// yaml.v3's scanner, parser and composer took about a third of a 10,000-rule
// apply's CPU (BenchmarkDaemonApply). Large policies are generated or
// written in a plain subset of YAML: block mappings and sequences, plain,
// single-quoted or double-quoted (without escapes) scalars on one line,
// and one-line flow sequences of such scalars. parseFastYAML builds, for a document in that subset, the tree
// yaml.v3 builds for it — the same kinds, tags, styles, values, lines and
// columns (comments are skipped: nothing the policy loader reads) — and
// answers false for anything else (anchors, tags, block scalars, multi-line
// scalars, escapes, flow mappings, tabs, non-ASCII bytes, "---",
// empty values, every syntax error, ...), which yaml.v3 then parses as
// before, so its errors and positions stay the ones users see.
// TestFastYAMLSameTree and FuzzFastYAML compare the two trees.
//
// Hand-written because it measured faster than the library alone:
// decoding and validating a 10,000-rule policy took 232-248 ms of CPU with
// yaml.v3 and 98-103 ms with this path (1.16 M -> 0.68 M allocations;
// BenchmarkLoad10k, docs/benchmarks.md "Applies (issue 15 goal 2)").

// fastPathOff makes decodeYAML parse everything with yaml.v3 (tests).
var fastPathOff bool

// fastLine is one line of the document with content: its number (from 1),
// its indentation, and its text without the indentation and a trailing
// comment.
type fastLine struct {
	num, indent int
	text        []byte
}

type fastParser struct {
	lines []fastLine
	i     int // the next line
	ok    bool
	data  []byte
	src   string      // data as a string: values are substrings of it
	slab  []yaml.Node // nodes are allocated from it, a few hundred at a time
	// stack holds the children of the collections being parsed; each
	// gets its Content, of the exact size, from ptrs when it ends (not by
	// appending to it, which grew a rule's mapping four times).
	stack, ptrs []*yaml.Node
}

// children moves the nodes on the stack from from on into a Content
// slice; nil when there are none.
func (p *fastParser) children(from int) []*yaml.Node {
	k := len(p.stack) - from
	if k == 0 {
		return nil
	}
	if len(p.ptrs) < k {
		p.ptrs = make([]*yaml.Node, max(2048, k))
	}
	c := p.ptrs[:k:k]
	p.ptrs = p.ptrs[k:]
	copy(c, p.stack[from:])
	clear(p.stack[from:])
	p.stack = p.stack[:from]
	return c
}

// node returns a node allocated from the slab. It sets the fields one by
// one: copying a whole yaml.Node into the slab took a write barrier over
// all of its pointers while the collector ran (a sixth of the parse).
func (p *fastParser) node(kind yaml.Kind, style yaml.Style, tag, value string, line, col int) *yaml.Node {
	if len(p.slab) == 0 {
		p.slab = make([]yaml.Node, 512)
	}
	x := &p.slab[0]
	p.slab = p.slab[1:]
	x.Kind, x.Style, x.Line, x.Column = kind, style, line, col
	x.Tag, x.Value = tag, value
	return x
}

// str is t, a part of the document, as a string (no copy).
func (p *fastParser) str(t []byte) string {
	off := cap(p.data) - cap(t)
	return p.src[off : off+len(t)]
}

// parseFastYAML returns data's document node, or false when data is not
// in the subset (see above).
func parseFastYAML(data []byte) (*yaml.Node, bool) {
	p := &fastParser{ok: true, data: data, src: string(data)}
	if !p.split(data, 1) || len(p.lines) == 0 {
		return nil, false
	}
	first := p.lines[0]
	root := p.block(first.indent)
	if !p.ok || root == nil || p.i != len(p.lines) {
		return nil, false
	}
	return &yaml.Node{Kind: yaml.DocumentNode, Line: root.Line, Column: root.Column, Content: []*yaml.Node{root}}, true
}

// split cuts data, whose first line is line num of the document, into
// lines with content, dropping blank and comment lines; false for what the
// subset leaves out at the byte level.
func (p *fastParser) split(data []byte, num int) bool {
	if n := bytes.Count(data, []byte{'\n'}) + 1; cap(p.lines) < n {
		p.lines = make([]fastLine, 0, n)
	} else {
		p.lines = p.lines[:0] // a scratch parser's, again
	}
	return p.addLines(data, num)
}

// addLines is split appending to the lines already there: data goes on
// from them (a part of the document whose first line is line num).
func (p *fastParser) addLines(data []byte, num int) bool {
	for ; len(data) > 0; num++ {
		line := data
		if k := bytes.IndexByte(data, '\n'); k >= 0 {
			line, data = data[:k], data[k+1:]
		} else {
			data = nil
		}
		indent := 0
		for indent < len(line) && line[indent] == ' ' {
			indent++
		}
		for _, c := range line {
			if c >= 0x80 || c < 0x20 || c == 0x7f {
				return false // tabs, CR, control bytes, non-ASCII (columns count runes)
			}
		}
		text := line[indent:]
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		if text[0] == '%' || bytes.HasPrefix(text, []byte("---")) || bytes.HasPrefix(text, []byte("...")) {
			return false
		}
		p.lines = append(p.lines, fastLine{num: num, indent: indent, text: text})
	}
	return true
}

func (p *fastParser) fail() *yaml.Node {
	p.ok = false
	return nil
}

// block parses the block node that starts at the current line, which has
// indentation indent.
func (p *fastParser) block(indent int) *yaml.Node {
	if p.i >= len(p.lines) || p.lines[p.i].indent != indent {
		return p.fail()
	}
	if isSeqEntry(p.lines[p.i].text) {
		return p.sequence(indent)
	}
	l := p.lines[p.i]
	return p.mapping(indent, l.num, indent, l.text)
}

func isSeqEntry(t []byte) bool { return t[0] == '-' && (len(t) == 1 || t[1] == ' ') }

// sequence parses a block sequence whose entries are at column indent+1.
func (p *fastParser) sequence(indent int) *yaml.Node {
	first := p.lines[p.i]
	n := p.node(yaml.SequenceNode, 0, "!!seq", "", first.num, indent+1)
	from := len(p.stack)
	for p.ok && p.i < len(p.lines) && p.lines[p.i].indent == indent && isSeqEntry(p.lines[p.i].text) {
		l := p.lines[p.i]
		rest := l.text[1:]
		col := indent + 1 // 0-based, of rest[0]
		for len(rest) > 0 && rest[0] == ' ' {
			rest, col = rest[1:], col+1
		}
		if len(rest) == 0 {
			// "-" alone: the entry is the block below, more indented.
			p.i++
			if p.i >= len(p.lines) || p.lines[p.i].indent <= indent {
				return p.fail() // an empty entry (null)
			}
			c := p.block(p.lines[p.i].indent)
			p.stack = append(p.stack, c)
			continue
		}
		if isSeqEntry(rest) {
			return p.fail() // "- - x"
		}
		if _, _, isKey := splitKey(rest); isKey {
			// "- key: value": a mapping whose keys are at col.
			c := p.mapping(col, l.num, col, rest)
			p.stack = append(p.stack, c)
			continue
		}
		v := p.inline(l.num, col+1, rest)
		p.i++
		if p.i < len(p.lines) && p.lines[p.i].indent > indent {
			return p.fail() // a multi-line scalar or an error
		}
		p.stack = append(p.stack, v)
	}
	if !p.ok {
		return nil
	}
	n.Content = p.children(from)
	return n
}

// mapping parses a block mapping whose keys are at column indent+1; its
// first key is on line num at column col+1 with text (the current line, or
// the rest of a sequence entry's line).
func (p *fastParser) mapping(indent, num, col int, text []byte) *yaml.Node {
	n := p.node(yaml.MappingNode, 0, "!!map", "", num, col+1)
	from := len(p.stack)
	for {
		key, rest, isKey := splitKey(text)
		if !isKey || len(key) > 1024 {
			// yaml.v3 (libyaml) drops a possible simple key whose ':'
			// is more than 1024 characters after its start: an error.
			return p.fail()
		}
		k := p.plainScalar(key, num, col+1)
		if k == nil || k.Value == "<<" {
			return p.fail()
		}
		vcol := col + len(key) + 2 // 0-based, after ": "
		for len(rest) > 0 && rest[0] == ' ' {
			rest, vcol = rest[1:], vcol+1
		}
		var v *yaml.Node
		p.i++
		if len(rest) == 0 {
			// The value is the block below: more indented, or a sequence
			// at the key's own indentation.
			if p.i >= len(p.lines) {
				return p.fail()
			}
			next := p.lines[p.i]
			switch {
			case next.indent > indent:
				v = p.block(next.indent)
			case next.indent == indent && isSeqEntry(next.text):
				v = p.sequence(indent)
			default:
				return p.fail() // an empty value (null)
			}
		} else {
			v = p.inline(num, vcol+1, rest)
			if p.i < len(p.lines) && p.lines[p.i].indent > indent {
				return p.fail() // a multi-line scalar or an error
			}
		}
		if !p.ok {
			return nil
		}
		p.stack = append(p.stack, k, v)
		if p.i >= len(p.lines) || p.lines[p.i].indent < indent {
			n.Content = p.children(from)
			return n
		}
		l := p.lines[p.i]
		if l.indent > indent || isSeqEntry(l.text) {
			return p.fail()
		}
		num, col, text = l.num, indent, l.text
	}
}

// splitKey splits "key: rest" (or "key:") at the first ": ".
func splitKey(t []byte) (key, rest []byte, ok bool) {
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case ':':
			if i+1 == len(t) {
				return t[:i], nil, i > 0
			}
			if t[i+1] == ' ' {
				return t[:i], t[i+2:], i > 0
			}
		case '#':
			if i > 0 && t[i-1] == ' ' {
				return nil, nil, false
			}
		}
	}
	return nil, nil, false
}

// inline parses a value that stands on one line (a scalar or a flow
// sequence) at column col; the rest of the line may only be a comment.
func (p *fastParser) inline(num, col int, t []byte) *yaml.Node {
	if t[0] == '[' {
		return p.flowSequence(num, col, t)
	}
	if t[0] == '\'' || t[0] == '"' {
		n, rest := p.quoted(t, num, col)
		if n == nil || !onlyComment(rest) {
			return p.fail()
		}
		return n
	}
	end := commentStart(t)
	n := p.plainScalar(t[:end], num, col)
	if n == nil {
		return p.fail()
	}
	return n
}

// commentStart is where a trailing comment starts in t (len(t) if none).
func commentStart(t []byte) int {
	for i := 1; i < len(t); i++ {
		if t[i] == '#' && t[i-1] == ' ' {
			return i
		}
	}
	return len(t)
}

// onlyComment: t (what follows a value on its line) is empty, spaces, or
// spaces and a comment ("#" right after a value starts no comment).
func onlyComment(t []byte) bool {
	s := bytes.TrimLeft(t, " ")
	return len(s) == 0 || s[0] == '#' && len(s) < len(t)
}

// plainScalar is the plain scalar t (trailing spaces dropped) in block
// context, or nil when t is not one the subset takes.
func (p *fastParser) plainScalar(t []byte, num, col int) *yaml.Node {
	t = bytes.TrimRight(t, " ")
	if len(t) == 0 {
		return nil
	}
	switch t[0] {
	case '-', '?', ':':
		if len(t) == 1 || t[1] == ' ' {
			return nil
		}
	case ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`':
		return nil
	}
	if bytes.Contains(t, []byte(": ")) || bytes.Contains(t, []byte(" #")) || t[len(t)-1] == ':' {
		return nil
	}
	n := p.node(yaml.ScalarNode, 0, "", p.str(t), num, col)
	n.Tag = plainTag(t, n)
	return n
}

// plainTag is the tag yaml.v3 resolves plain scalar t (of node n) to,
// without its resolver for the values a policy is full of (its resolver
// tries a timestamp, integer and float parse and a regular expression on
// every value that starts like a number: addresses, prefixes, ports, and
// a map look-up for every other value): a value that starts with a
// letter is a string unless it is one of the table's nulls and booleans,
// what contains '/' is a string (no null, bool, number or timestamp
// does), so are digits with two or more dots (an IPv4 address), and up to
// 18 digits without a leading zero are an integer. Anything else is
// yaml.v3's (Node.ShortTag resolves as its parser does).
func plainTag(t []byte, n *yaml.Node) string {
	if c := t[0] | 0x20; c >= 'a' && c <= 'z' {
		// Names, kinds, actions, protocols: yaml.v3's resolver gives a
		// value that starts with a letter the string tag unless it is
		// one of the nulls and booleans of its table (resolve.go).
		switch string(t) {
		case "true", "True", "TRUE", "false", "False", "FALSE":
			return "!!bool"
		case "null", "Null", "NULL":
			return "!!null"
		}
		return "!!str"
	}
	digits, dots := 0, 0
	for _, c := range t {
		switch {
		case c == '/':
			return "!!str"
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		}
	}
	switch {
	case digits+dots == len(t) && dots >= 2:
		return "!!str"
	case digits == len(t) && len(t) <= 18 && (len(t) == 1 || t[0] != '0'):
		return "!!int"
	}
	return n.ShortTag()
}

// quoted parses the quoted scalar at the start of t: single-quoted, or
// double-quoted without escapes; it returns it with the rest of t.
func (p *fastParser) quoted(t []byte, num, col int) (*yaml.Node, []byte) {
	if t[0] == '"' {
		k := bytes.IndexByte(t[1:], '"')
		if k < 0 || bytes.IndexByte(t[1:1+k], '\\') >= 0 {
			return nil, nil // on the next line, or escapes
		}
		return p.node(yaml.ScalarNode, yaml.DoubleQuotedStyle, "!!str", p.str(t[1:1+k]), num, col), t[2+k:]
	}
	var b []byte
	i, escaped := 1, false
	for {
		k := bytes.IndexByte(t[i:], '\'')
		if k < 0 {
			return nil, nil // it goes on the next line
		}
		b = append(b, t[i:i+k]...)
		i += k + 1
		if i < len(t) && t[i] == '\'' {
			b = append(b, '\'')
			i++
			escaped = true
			continue
		}
		break
	}
	v := p.str(t[1 : i-1])
	if escaped {
		v = string(b)
	}
	return p.node(yaml.ScalarNode, yaml.SingleQuotedStyle, "!!str", v, num, col), t[i:]
}

// flowSequence parses "[a, 'b', ...]" on one line: plain scalars without
// ':' or single-quoted ones.
func (p *fastParser) flowSequence(num, col int, t []byte) *yaml.Node {
	n := p.node(yaml.SequenceNode, yaml.FlowStyle, "!!seq", "", num, col)
	from := len(p.stack)
	i := 1
	skip := func() {
		for i < len(t) && t[i] == ' ' {
			i++
		}
	}
	skip()
	if i < len(t) && t[i] == ']' {
		i++
	} else {
		for {
			skip()
			if i >= len(t) {
				return p.fail()
			}
			var v *yaml.Node
			if t[i] == '\'' || t[i] == '"' {
				var rest []byte
				v, rest = p.quoted(t[i:], num, col+i)
				if v == nil {
					return p.fail()
				}
				i = len(t) - len(rest)
			} else {
				j := i
				for j < len(t) && t[j] != ',' && t[j] != ']' {
					switch t[j] {
					case ':', '?', '#', '[', '{', '}', '"', '\'':
						return p.fail() // yaml.v3 ends a flow plain scalar at '?' too
					}
					j++
				}
				v = p.plainScalar(t[i:j], num, col+i)
				if v == nil {
					return p.fail()
				}
				i = j
			}
			p.stack = append(p.stack, v)
			skip()
			if i >= len(t) {
				return p.fail()
			}
			if t[i] == ']' {
				i++
				break
			}
			if t[i] != ',' {
				return p.fail()
			}
			i++
			skip()
			if i < len(t) && t[i] == ']' {
				return p.fail() // a trailing comma
			}
		}
	}
	if !onlyComment(t[i:]) {
		return p.fail()
	}
	n.Content = p.children(from)
	return n
}

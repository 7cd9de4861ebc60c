package azure

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// jkind is the kind of a JSON value.
type jkind uint8

const (
	jNull jkind = iota
	jBool
	jNumber
	jString
	jArray
	jObject
	// jUnknown is a value only known at deployment (a parameter without a
	// value, a public IP address, resourceGroup().location, ...) or one
	// that could not be evaluated; unk says which and why.
	jUnknown
)

func (k jkind) String() string {
	switch k {
	case jBool:
		return "true or false"
	case jNumber:
		return "a number"
	case jString:
		return "a string"
	case jArray:
		return "a list"
	case jObject:
		return "an object"
	case jUnknown:
		return "a value only known at deployment"
	}
	return "null"
}

// node is a JSON value that remembers where it starts in its source, so that
// every error can name a line and column. encoding/json's decoder gives no
// positions for values, so the tree is built from its token stream.
type node struct {
	kind  jkind
	src   *source // the file the value is in (or the expression that made it)
	off   int     // byte offset of the value's first byte
	str   string
	b     bool
	keys  []string // object keys, in order
	vals  []*node  // object values, parallel to keys
	items []*node  // array items
	// unk explains a jUnknown value.
	unk *unknown
	// weight is the number of values in n, counted once (0: not yet):
	// evaluation shares values, and weight keeps a shared value from
	// growing exponentially.
	weight int
	// runtime marks an object that stands for a deployed resource's state
	// (what reference() returns): a property it does not have is unknown
	// rather than an error. It names the resource.
	runtime string
}

// unknown explains a value the importer cannot know.
type unknown struct {
	// what names the value: "parameter \"adminIp\"", "the public IP address of pip-fw".
	what string
	// hint says how to give it: "--parameters adminIp=VALUE".
	hint string
	// failed is set when the value is not deploy-time but could not be
	// evaluated (an unsupported function, a type error).
	failed bool
}

func (u *unknown) String() string {
	if u.hint == "" {
		return u.what
	}
	return u.what + " (" + u.hint + ")"
}

// pos is where n is, when known.
func (n *node) pos() policy.Pos {
	if n == nil || n.src == nil {
		return policy.Pos{}
	}
	return n.src.pos(n.off)
}

// lookup returns an object's value for key (case-insensitive, as ARM is;
// the last one wins, as in encoding/json).
func (n *node) lookup(key string) *node {
	if n == nil || n.kind != jObject {
		return nil
	}
	for i := len(n.keys) - 1; i >= 0; i-- {
		if strings.EqualFold(n.keys[i], key) {
			return n.vals[i]
		}
	}
	return nil
}

// maxDepth bounds the nesting of input JSON.
const maxDepth = 256

// source is one input file.
type source struct {
	name  string
	data  []byte
	lines []int // offsets where lines start, built on first use
}

// pos converts a byte offset into a position (columns count characters).
func (s *source) pos(off int) policy.Pos {
	if off < 0 {
		return policy.Pos{File: s.name}
	}
	data := s.data
	if off > len(data) {
		off = len(data)
	}
	if s.lines == nil {
		s.lines = []int{0}
		for i, c := range data {
			if c == '\n' {
				s.lines = append(s.lines, i+1)
			}
		}
	}
	line := sort.Search(len(s.lines), func(i int) bool { return s.lines[i] > off }) // 1-based
	i := s.lines[line-1]
	if i == 0 && bytes.HasPrefix(data, utf8BOM) && off >= len(utf8BOM) {
		i = len(utf8BOM)
	}
	return policy.Pos{File: s.name, Line: line, Column: 1 + utf8.RuneCount(data[i:off])}
}

// parseJSON parses every JSON value in data (one, or several one after
// another, as `cat policy.json rcgs.json` gives).
func parseJSON(src *source) ([]*node, error) {
	data := src.data
	switch {
	case bytes.HasPrefix(data, []byte{0xff, 0xfe}), bytes.HasPrefix(data, []byte{0xfe, 0xff}):
		return nil, policy.ErrorList{{Pos: policy.Pos{File: src.name, Line: 1, Column: 1},
			Msg: "the file is UTF-16 (as Windows PowerShell's > writes it): convert it to UTF-8, e.g. with Out-File -Encoding utf8"}}
	case bytes.HasPrefix(data, utf8BOM):
		// Parse a copy with the byte order mark blanked: offsets stay the same.
		data = append([]byte("   "), data[len(utf8BOM):]...)
	}
	// ARM templates may hold // and /* */ comments (az deployment accepts
	// them); blank them out, keeping every offset and line.
	data, err := blankComments(src, data)
	if err != nil {
		return nil, err
	}
	p := &jparser{src: src, data: data, dec: json.NewDecoder(bytes.NewReader(data))}
	p.dec.UseNumber()
	var out []*node
	for {
		start := p.start()
		n, err := p.value(0)
		if err == io.EOF {
			break
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, p.syntaxError(start, se)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, p.errAt(0, "empty file: expected Azure Firewall JSON")
	}
	return out, nil
}

var utf8BOM = []byte{0xef, 0xbb, 0xbf}

type jparser struct {
	src  *source
	data []byte // src.data, with a byte order mark blanked
	dec  *json.Decoder
}

func (p *jparser) errAt(off int, format string, args ...any) error {
	return policy.ErrorList{{Pos: p.src.pos(off), Msg: fmt.Sprintf(format, args...)}}
}

// syntaxError places a syntax error. The token reader's offsets are not
// reliable for that, so the value that holds the error is decoded again
// whole, which reports the offset just past the bad byte.
func (p *jparser) syntaxError(start int, se *json.SyntaxError) error {
	var raw json.RawMessage
	err := json.NewDecoder(bytes.NewReader(p.data[start:])).Decode(&raw)
	var se2 *json.SyntaxError
	if errors.As(err, &se2) {
		return p.errAt(start+int(se2.Offset)-1, "not valid JSON: %v", se2)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return p.errAt(len(p.data), "not valid JSON: unexpected end of input")
	}
	return p.errAt(start, "not valid JSON: %v", se)
}

// start returns the offset of the next token's first byte.
func (p *jparser) start() int {
	off := int(p.dec.InputOffset())
	for off < len(p.data) {
		switch p.data[off] {
		case ' ', '\t', '\r', '\n', ',', ':':
			off++
			continue
		}
		break
	}
	return off
}

func (p *jparser) token() (json.Token, int, error) {
	off := p.start()
	tok, err := p.dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, off, io.EOF
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, off, se
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, off, p.errAt(len(p.data), "not valid JSON: unexpected end of input")
		}
		return nil, off, p.errAt(off, "not valid JSON: %v", err)
	}
	return tok, off, nil
}

func (p *jparser) value(depth int) (*node, error) {
	tok, off, err := p.token()
	if err != nil {
		return nil, err
	}
	return p.finish(tok, off, depth)
}

func (p *jparser) finish(tok json.Token, off, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, p.errAt(off, "JSON nested more than %d levels deep", maxDepth)
	}
	n := &node{off: off, src: p.src}
	switch t := tok.(type) {
	case nil:
		n.kind = jNull
	case bool:
		n.kind, n.b = jBool, t
	case json.Number:
		n.kind, n.str = jNumber, string(t)
	case string:
		n.kind, n.str = jString, t
	case json.Delim:
		switch t {
		case '{':
			n.kind = jObject
			for p.dec.More() {
				ktok, koff, err := p.token()
				if err != nil {
					return nil, unexpectedEOF(err, p)
				}
				key, ok := ktok.(string)
				if !ok {
					return nil, p.errAt(koff, "not valid JSON: expected an object key")
				}
				_ = koff
				v, err := p.value(depth + 1)
				if err != nil {
					return nil, unexpectedEOF(err, p)
				}
				n.keys = append(n.keys, key)
				n.vals = append(n.vals, v)
			}
		case '[':
			n.kind = jArray
			for p.dec.More() {
				v, err := p.value(depth + 1)
				if err != nil {
					return nil, unexpectedEOF(err, p)
				}
				n.items = append(n.items, v)
			}
		default:
			return nil, p.errAt(off, "not valid JSON: unexpected %q", string(t))
		}
		// The closing delimiter.
		if _, _, err := p.token(); err != nil {
			return nil, unexpectedEOF(err, p)
		}
	default:
		return nil, p.errAt(off, "not valid JSON: unexpected token %v", tok)
	}
	return n, nil
}

// unexpectedEOF turns an io.EOF met inside a value into a positioned error.
func unexpectedEOF(err error, p *jparser) error {
	if err == io.EOF {
		return p.errAt(len(p.data), "not valid JSON: unexpected end of input")
	}
	return err
}

// blankComments replaces // line comments and /* */ block comments outside
// strings with spaces (newlines kept), so that positions stay those of the
// file. The input is copied only when it has a comment.
func blankComments(src *source, data []byte) ([]byte, error) {
	if !bytes.Contains(data, []byte("/")) {
		return data, nil
	}
	var out []byte
	inStr := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		if c == '"' {
			inStr = true
			continue
		}
		if c != '/' || i+1 >= len(data) || (data[i+1] != '/' && data[i+1] != '*') {
			continue
		}
		if out == nil {
			out = append([]byte(nil), data...)
		}
		start := i
		if data[i+1] == '/' {
			for i < len(data) && data[i] != '\n' {
				out[i] = ' '
				i++
			}
			continue
		}
		end := bytes.Index(data[i+2:], []byte("*/"))
		if end < 0 {
			return nil, policy.ErrorList{{Pos: src.pos(start), Msg: "not valid JSON: a /* comment is not closed"}}
		}
		end += i + 4
		for ; i < end; i++ {
			if out[i] != '\n' && out[i] != '\r' {
				out[i] = ' '
			}
		}
		i--
	}
	if out == nil {
		return data, nil
	}
	return out, nil
}

package policy

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Limits bound what decoding one YAML document (a policy, a config file, a
// body posted to the admin API) may cost. gopkg.in/yaml.v3 builds a node
// tree of about 190 bytes per node before anything else looks at it, so a
// body of tiny nodes ("[a,a,a,...]": one node per two bytes) amplified its
// size a hundredfold (a 60 MB request took the daemon to 6 GB), and
// aliases can expand a small document exponentially. The limits are
// checked twice: on the bytes, before the tree is built (one pass, no
// allocation: an upper bound of the node count and the flow nesting), and
// on the tree (the exact count with aliases expanded, and the depth).
// The zero value of each field means its default.
type Limits struct {
	// MaxNodes bounds the YAML nodes of the document, aliases expanded
	// (default DefaultMaxNodes: a policy of 100,000 network rules has
	// about 1.5 million).
	MaxNodes int
	// MaxDepth bounds the nesting of mappings and lists (default
	// DefaultMaxDepth; a policy needs 8).
	MaxDepth int
	// MaxErrors bounds the errors reported for one document (default
	// DefaultMaxErrors); the rest are counted in a last entry.
	MaxErrors int
}

// Defaults of Limits.
const (
	DefaultMaxNodes  = 2_000_000
	DefaultMaxDepth  = 64
	DefaultMaxErrors = 1000
)

func (l Limits) withDefaults() Limits {
	if l.MaxNodes <= 0 {
		l.MaxNodes = DefaultMaxNodes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxErrors <= 0 {
		l.MaxErrors = DefaultMaxErrors
	}
	return l
}

// NodeBytes is about what gopkg.in/yaml.v3 allocates per node of the tree
// it builds (measured: 175-190 bytes); MaxNodes × NodeBytes is the most a
// document within the limits costs to parse.
const NodeBytes = 190

// CheckBudget checks data against the limits before it is parsed: it
// counts an upper bound of the YAML nodes the bytes can make and the
// nesting of flow collections, in one pass without allocating. Its error
// names the position where the document went over a limit.
func CheckBudget(file string, data []byte, lim Limits) error {
	lim = lim.withDefaults()
	if n, line, col := estimateNodes(data, 2*lim.MaxNodes); n > 2*lim.MaxNodes {
		return ErrorList{{Pos: Pos{File: file, Line: line, Column: col},
			Msg: fmt.Sprintf("too large: more YAML values than the limit of %d allows", lim.MaxNodes)}}
	}
	return nil
}

// estimateNodes returns an upper bound of the nodes gopkg.in/yaml.v3
// builds for every document of data (document, mapping, sequence, scalar
// and alias nodes; aliases not expanded), stopping early — with the line
// and column reached — once the bound passes max.
//
// It reads no context (quotes, comments, flow or block), so that nothing
// in the bytes can fool it into counting less; every place where a node
// can start is counted at its most: a line start 2 (a key or scalar, and a
// collection it opens), "- " and "? " 2 (a collection and an entry, or a
// key and its implicit value), ": " 2 (a value, and the single-pair
// mapping it makes inside a flow list), "," 2 (a flow mapping's next key
// and its implicit value), "[" 2, "{" 3 (the collection and its first
// entry), and the first line 3 (with the document). Policies written as
// YAML or JSON count about twice their real nodes; a body of tiny values
// ("{a,a,a,...}") about as many as it has. FuzzEstimateNodes checks the
// bound against yaml.v3's own trees.
func estimateNodes(data []byte, max int) (n, line, col int) {
	n, line = 3, 1
	lineStart := 0
	ws := func(i int) bool { // data[i] is whitespace, a flow indicator or the end
		if i >= len(data) {
			return true
		}
		switch data[i] {
		case ' ', '\t', '\n', '\r', ',', '[', ']', '{', '}':
			return true
		}
		return false
	}
	for i, c := range data {
		if !budgetByte[c] {
			continue // most bytes: one table look-up, not the switch
		}
		switch c {
		case '\n':
			n += 2
			if n > max {
				return n, line, i - lineStart + 1
			}
			line++
			lineStart = i + 1
			continue
		case ',', '[':
			n += 2
		case '{':
			n += 3
		case '-', '?':
			if ws(i + 1) {
				n += 2
			}
		case ':':
			if ws(i+1) || (i > 0 && (data[i-1] == '"' || data[i-1] == '\'' || data[i-1] == ']' || data[i-1] == '}')) {
				n += 2
			}
		default:
			continue
		}
		if n > max {
			return n, line, i - lineStart + 1
		}
	}
	return n, line, 0
}

// budgetByte marks the bytes estimateNodes counts at (its switch's
// cases). Skipping the others with it halved estimateNodes' time, which
// every load pays over the whole text (a one-rule change too).
var budgetByte = [256]bool{'\n': true, ',': true, '[': true, '{': true, '-': true, '?': true, ':': true}

// checkTree checks the parsed document: at most MaxNodes nodes with
// aliases expanded (the walker and the decoder visit an alias's target
// again every time), nesting at most MaxDepth. The walk stops as soon as a
// limit is passed, so its cost is bounded too.
func checkTree(file string, doc *yaml.Node, lim Limits) error {
	visits := 0
	var err *Error
	walkTree(doc, 0, func(n *yaml.Node, depth int) bool {
		visits++
		if visits > lim.MaxNodes {
			err = &Error{Pos: Pos{File: file, Line: n.Line, Column: n.Column},
				Msg: fmt.Sprintf("too large: more than %d YAML values with aliases expanded (limit)", lim.MaxNodes)}
		} else if depth > lim.MaxDepth {
			err = &Error{Pos: Pos{File: file, Line: n.Line, Column: n.Column},
				Msg: fmt.Sprintf("nested deeper than %d levels (limit)", lim.MaxDepth)}
		}
		return err == nil
	})
	if err != nil {
		return ErrorList{err}
	}
	return nil
}

// walkTree visits n and the nodes under it as the decoder does: an
// alias's target again at every use, a mapping's or sequence's children one
// level deeper. It stops as soon as visit returns false, and reports
// whether it went through. The one walk of the node budget: checkTree and
// the incremental loader's countNodes.
func walkTree(n *yaml.Node, depth int, visit func(n *yaml.Node, depth int) bool) bool {
	if !visit(n, depth) {
		return false
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return walkTree(n.Alias, depth, visit)
	}
	d := depth
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		d++
	}
	for _, c := range n.Content {
		if !walkTree(c, d, visit) {
			return false
		}
	}
	return true
}

// errorCap keeps an error list within MaxErrors: the errors past the
// limit are counted, and finish appends one entry saying how many.
type errorCap struct {
	max     int
	dropped int
}

func (c *errorCap) full(l ErrorList) bool {
	if c.max > 0 && len(l) >= c.max {
		c.dropped++
		return true
	}
	return false
}

func (c *errorCap) finish(l ErrorList, file string) ErrorList {
	if c.dropped == 0 {
		return l
	}
	return append(l, &Error{Pos: Pos{File: file}, Msg: fmt.Sprintf("%s%d more errors (only the first %d are reported)", capSummary, c.dropped, c.max)})
}

const capSummary = "... and "

func isCapSummary(e *Error) bool { return e.Pos.Line == 0 && strings.HasPrefix(e.Msg, capSummary) }

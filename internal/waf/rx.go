package waf

import (
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	re2 "github.com/wasilibs/go-re2"
	"rsc.io/binaryregexp"
)

// The @rx operator on RE2 (github.com/wasilibs/go-re2: the C++ library
// compiled to Go from WebAssembly, so no cgo; the build tag re2_cgo would
// use Debian's libre2 instead, which measured no faster here once the
// prefilter answers most calls). Coraza's own @rx uses Go's regexp, whose
// NFA and backtracker cost time proportional to the pattern's size for every
// input; the CRS's large alternations then dominated the WAF's CPU. RE2's
// lazy DFA answers "no match" in one pass over the input, and computes
// submatches only when there is a match.
//
// Before RE2, a prefilter (rxprefilter.go) derived from the pattern answers
// "no match" for ASCII inputs that lack the length or the literals every
// match needs: about 92 % of the CRS's evaluations of benign requests.
//
// The semantics are Coraza's: the pattern is wrapped in (?sm); patterns
// that match bytes which are not UTF-8 (\xNN escapes) use binaryregexp, as
// Coraza does. Go's regexp reads an invalid UTF-8 byte of the input as
// U+FFFD, RE2 stops matching at it: inputs that are not valid UTF-8 are
// matched by Go's regexp, so an attacker cannot hide a payload behind one
// invalid byte. A pattern RE2 refuses (none of the CRS's) falls back to
// Go's regexp entirely. TestRXAgreesWithGoRegexp compares the operator
// with Coraza's on every CRS pattern.

var registerOperatorsOnce sync.Once

// registerOperators replaces Coraza's @rx with rxOperator. Coraza's
// operator registry is process-wide and not safe for concurrent writes:
// every path that compiles rules calls this first.
func registerOperators() {
	registerOperatorsOnce.Do(func() {
		plugins.RegisterOperator("rx", newRXOperator)
	})
}

// rxCompiled is what one pattern compiles to, shared by the rules that
// use it (through Coraza's memoizer, across policies and reloads).
type rxCompiled struct {
	pattern string
	re      *re2.Regexp // nil: RE2 refused the pattern
	pf      *prefilter  // nil: none

	stdOnce sync.Once
	std     *regexp.Regexp
	stdErr  error
}

// goRegexp is the pattern compiled by Go's regexp (for inputs that are not
// valid UTF-8; it also decides which patterns are valid, as before).
func (c *rxCompiled) goRegexp() *regexp.Regexp {
	c.stdOnce.Do(func() { c.std, c.stdErr = regexp.Compile(c.pattern) })
	return c.std
}

type rxOperator struct {
	c *rxCompiled
}

func newRXOperator(options plugintypes.OperatorOptions) (plugintypes.Operator, error) {
	data := "(?sm)" + options.Arguments
	if matchesArbitraryBytes(data) {
		return newBinaryRX(options)
	}
	v, err := memoize(options.Memoizer, "cw-rx:"+data, func() (any, error) {
		c := &rxCompiled{pattern: data}
		// Go's regexp decides what a valid pattern is (as before); RE2
		// accepts the same syntax.
		if c.goRegexp(); c.stdErr != nil {
			return nil, c.stdErr
		}
		if re, err := re2.Compile(data); err == nil {
			c.re = re
		}
		c.pf = newPrefilter(data)
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return &rxOperator{c: v.(*rxCompiled)}, nil
}

// submatchIndexer is what both regexp engines offer.
type submatchIndexer interface {
	MatchString(string) bool
	FindStringSubmatchIndex(string) []int
}

// maxPrefilterLen: longer inputs go straight to RE2, whose one pass costs
// about what the prefilter's would.
const maxPrefilterLen = 1024

func (o *rxOperator) Evaluate(tx plugintypes.TransactionState, value string) bool {
	if o.c.pf != nil && len(value) <= maxPrefilterLen && !o.c.pf.mayMatch(value) {
		return false
	}
	var re submatchIndexer
	if o.c.re != nil && utf8.ValidString(value) {
		re = o.c.re
	} else {
		re = o.c.goRegexp()
	}
	if !re.MatchString(value) {
		return false
	}
	if !tx.Capturing() {
		return true
	}
	// RE2 finds submatches in a second, slower pass: only for a match
	// (rare in benign traffic).
	m := re.FindStringSubmatchIndex(value)
	if m == nil {
		return false
	}
	// Coraza keeps at most TX.0 to TX.8.
	for i := 0; i < len(m)/2 && i < 9; i++ {
		if m[2*i] >= 0 {
			tx.CaptureField(i, value[m[2*i]:m[2*i+1]])
		} else {
			tx.CaptureField(i, "")
		}
	}
	return true
}

// binaryRX is Coraza's @rx for patterns that match arbitrary bytes.
type binaryRX struct {
	re *binaryregexp.Regexp
}

func newBinaryRX(options plugintypes.OperatorOptions) (plugintypes.Operator, error) {
	data := options.Arguments
	re, err := memoize(options.Memoizer, "cw-rxb:"+data, func() (any, error) { return binaryregexp.Compile(data) })
	if err != nil {
		return nil, err
	}
	return &binaryRX{re: re.(*binaryregexp.Regexp)}, nil
}

func (o *binaryRX) Evaluate(tx plugintypes.TransactionState, value string) bool {
	if !tx.Capturing() {
		return o.re.MatchString(value)
	}
	match := o.re.FindStringSubmatch(value)
	if len(match) == 0 {
		return false
	}
	for i, c := range match {
		if i == 9 {
			return true
		}
		tx.CaptureField(i, c)
	}
	return true
}

func memoize(m plugintypes.Memoizer, key string, fn func() (any, error)) (any, error) {
	if m != nil {
		return m.Do(key, fn)
	}
	return fn()
}

// matchesArbitraryBytes reports whether a pattern's \xNN escapes spell
// bytes that are not UTF-8 (Coraza's test, copied: its @rx is replaced).
func matchesArbitraryBytes(expr string) bool {
	decoded := make([]byte, 0, len(expr))
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		if c != '\\' {
			decoded = append(decoded, c)
			continue
		}
		if i+3 >= len(expr) {
			decoded = append(decoded, expr[i:]...)
			break
		}
		if expr[i+1] != 'x' {
			decoded = append(decoded, expr[i])
			continue
		}
		sub := expr[i:]
		advance := 3
		if len(sub) >= 6 && sub[2] == '{' {
			if end := strings.IndexByte(sub, '}'); end != -1 {
				sub = `\x` + sub[3:end]
				advance = end
			}
		}
		v, mb, _, err := strconv.UnquoteChar(sub, 0)
		if err != nil || mb {
			decoded = append(decoded, expr[i])
			continue
		}
		decoded = append(decoded, byte(v))
		i += advance
	}
	return !utf8.Valid(decoded)
}

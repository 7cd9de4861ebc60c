package azure

import (
	"fmt"
	"strconv"
	"strings"
)

// ARM template expressions: the parser. An expression is a string value
// "[...]" (a leading "[[" escapes the bracket); its grammar is function
// calls, 'string' literals ('' for a quote), integers, property access
// (.name, and ?.name, which Bicep emits) and index access ([expr]).
// The functions are in funcs.go; what a template can refer to (parameters,
// variables, copy indexes, other resources) in arm.go.

// isExpr reports whether s is a whole-string ARM expression.
func isExpr(s string) bool {
	return len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' && !strings.HasPrefix(s, "[[")
}

// nameSuffix returns the part after the last '/' of a resource name
// expression such as [concat(parameters('policy'), '/rcg')], which is known
// even when the parameter has no value.
func nameSuffix(s string) (string, bool) {
	if !isExpr(s) {
		return "", false
	}
	e, err := parseExpr(s[1 : len(s)-1])
	if err != nil || e.kind != eCall || len(e.args) == 0 {
		return "", false
	}
	var lit string
	switch strings.ToLower(e.fn) {
	case "concat":
		last := e.args[len(e.args)-1]
		if last.kind != eString {
			return "", false
		}
		lit = last.s
	case "format":
		if e.args[0].kind != eString {
			return "", false
		}
		lit = e.args[0].s
	default:
		return "", false
	}
	i := strings.LastIndex(lit, "/")
	if i < 0 {
		return "", false
	}
	name := strings.TrimSpace(lit[i+1:])
	// format('{0}/{1}', parameters('policy'), 'rcg'): a placeholder for a literal.
	if strings.EqualFold(e.fn, "format") && len(name) > 2 && name[0] == '{' && name[len(name)-1] == '}' {
		k, err := strconv.Atoi(name[1 : len(name)-1])
		if err != nil || k < 0 || k+1 >= len(e.args) || e.args[k+1].kind != eString {
			return "", false
		}
		name = strings.TrimSpace(e.args[k+1].s)
		if strings.Contains(name, "/") {
			return "", false
		}
	}
	if strings.ContainsAny(name, "{}") || name == "" {
		return "", false
	}
	return name, true
}

type ekind uint8

const (
	eString ekind = iota + 1
	eNumber
	eCall
	eProp
	eIndex
	eBool
	eNull
)

type expr struct {
	kind ekind
	s    string // string literal, property name
	num  int64
	b    bool
	fn   string
	args []*expr
	base *expr // eProp, eIndex
	idx  *expr // eIndex
	safe bool  // ?. or ?[ : null instead of an error when missing
}

type exprParser struct {
	s   string
	i   int
	dep int
}

// maxExprLen bounds the text of one expression.
const maxExprLen = 1 << 16

func parseExpr(s string) (*expr, error) {
	if len(s) > maxExprLen {
		return nil, fmt.Errorf("expression longer than %d characters", maxExprLen)
	}
	p := &exprParser{s: s}
	e, err := p.expr()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.s) {
		return nil, fmt.Errorf("unexpected %q at character %d", p.s[p.i:], p.i+1)
	}
	return e, nil
}

func (p *exprParser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

func (p *exprParser) peek() byte {
	p.space()
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func isIdent(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func (p *exprParser) expr() (*expr, error) {
	p.dep++
	defer func() { p.dep-- }()
	if p.dep > 64 {
		return nil, fmt.Errorf("expression nested too deeply")
	}
	e, err := p.primary()
	if err != nil {
		return nil, err
	}
	for {
		safe := false
		c := p.peek()
		if c == '?' && p.i+1 < len(p.s) && (p.s[p.i+1] == '.' || p.s[p.i+1] == '[') {
			safe = true
			p.i++
			c = p.s[p.i]
		}
		switch c {
		case '.':
			p.i++
			if p.i < len(p.s) && p.s[p.i] == '?' { // Bicep's .? (safe dereference)
				safe = true
				p.i++
			}
			p.space()
			st := p.i
			for p.i < len(p.s) && isIdent(p.s[p.i]) {
				p.i++
			}
			if st == p.i {
				return nil, fmt.Errorf("expected a property name at character %d", p.i+1)
			}
			e = &expr{kind: eProp, base: e, s: p.s[st:p.i], safe: safe}
		case '[':
			p.i++
			idx, err := p.expr()
			if err != nil {
				return nil, err
			}
			if p.peek() != ']' {
				return nil, fmt.Errorf("expected ']' at character %d", p.i+1)
			}
			p.i++
			e = &expr{kind: eIndex, base: e, idx: idx, safe: safe}
		default:
			if safe {
				return nil, fmt.Errorf("unexpected '?' at character %d", p.i)
			}
			return e, nil
		}
	}
}

func (p *exprParser) primary() (*expr, error) {
	c := p.peek()
	switch {
	case c == '\'':
		p.i++
		var b strings.Builder
		for {
			if p.i >= len(p.s) {
				return nil, fmt.Errorf("unterminated string")
			}
			if p.s[p.i] == '\'' {
				if p.i+1 < len(p.s) && p.s[p.i+1] == '\'' {
					b.WriteByte('\'')
					p.i += 2
					continue
				}
				p.i++
				return &expr{kind: eString, s: b.String()}, nil
			}
			b.WriteByte(p.s[p.i])
			p.i++
		}
	case c == '-' || c >= '0' && c <= '9':
		st := p.i
		p.i++
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
		}
		n, err := strconv.ParseInt(p.s[st:p.i], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad number %q", p.s[st:p.i])
		}
		return &expr{kind: eNumber, num: n}, nil
	case isIdent(c):
		st := p.i
		for p.i < len(p.s) && (isIdent(p.s[p.i]) || p.s[p.i] == '.' && p.i+1 < len(p.s) && isIdent(p.s[p.i+1]) && p.namespaced(st)) {
			p.i++
		}
		name := p.s[st:p.i]
		if p.peek() != '(' {
			switch strings.ToLower(name) {
			case "true", "false":
				return &expr{kind: eBool, b: strings.EqualFold(name, "true")}, nil
			case "null":
				return &expr{kind: eNull}, nil
			}
			return nil, fmt.Errorf("expected '(' after %s", name)
		}
		p.i++
		e := &expr{kind: eCall, fn: name}
		if p.peek() == ')' {
			p.i++
			return e, nil
		}
		for {
			a, err := p.expr()
			if err != nil {
				return nil, err
			}
			e.args = append(e.args, a)
			switch p.peek() {
			case ',':
				p.i++
				continue
			case ')':
				p.i++
				return e, nil
			}
			return nil, fmt.Errorf("expected ',' or ')' at character %d", p.i+1)
		}
	case c == 0:
		return nil, fmt.Errorf("unexpected end of expression")
	}
	return nil, fmt.Errorf("unexpected %q at character %d", string(c), p.i+1)
}

// namespaced reports whether the identifier starting at st is a
// user-defined function's namespace ("contoso.uniqueName(...)"): a dot
// inside a name is part of it only when a call follows the full name.
func (p *exprParser) namespaced(st int) bool {
	j := p.i + 1
	for j < len(p.s) && isIdent(p.s[j]) {
		j++
	}
	for j < len(p.s) && (p.s[j] == ' ' || p.s[j] == '\t') {
		j++
	}
	return j < len(p.s) && p.s[j] == '(' && !strings.Contains(p.s[st:p.i], ")")
}

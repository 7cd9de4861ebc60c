package azure

import (
	"fmt"
	"strconv"
	"strings"
)

// ARM template expressions. Only what exported firewall templates use is
// evaluated: parameters() (from defaultValue), variables(), concat(),
// format(), resourceId(), toLower(), toUpper(), string(), int(), bool(),
// if(), equals(), not(), createArray(), true(), false(), and property and
// index access. Anything known only at deployment time (resourceGroup(),
// subscription(), a parameter without a default) cannot be resolved.

// template holds what expressions of one template can refer to.
type template struct {
	params map[string]*node // lower-case name -> the parameter's definition
	vars   map[string]*node // lower-case name -> value
	steps  int              // evaluation steps spent, against maxEvalSteps
	bytes  int              // bytes of strings built, against maxEvalBytes
}

// Limits that keep a hostile template from taking exponential time or
// memory (variables that concat() each other twice, level after level).
const (
	maxEvalSteps = 1000000
	maxEvalBytes = 16 << 20
	maxValueLen  = 1 << 16
)

// built accounts for a string an expression built.
func (t *template) built(s string, off int) (*node, error) {
	t.bytes += len(s)
	if t.bytes > maxEvalBytes {
		return nil, fmt.Errorf("the template's expressions build too much text")
	}
	return strNode(s, off), nil
}

// maxEvalDepth bounds the chain parameters -> variables -> ... (cycles).
const maxEvalDepth = 32

// isExpr reports whether s is a whole-string ARM expression.
func isExpr(s string) bool {
	return len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' && !strings.HasPrefix(s, "[[")
}

// resolve returns n with a whole-string expression evaluated; other values
// are returned as they are ("[[" escapes become "[").
func (t *template) resolve(n *node, depth int) (*node, error) {
	if n == nil || n.kind != jString {
		return n, nil
	}
	if strings.HasPrefix(n.str, "[[") {
		c := *n
		c.str = n.str[1:]
		return &c, nil
	}
	if !isExpr(n.str) {
		return n, nil
	}
	if depth > maxEvalDepth {
		return nil, fmt.Errorf("expression %s: references nested too deeply (a cycle?)", n.str)
	}
	e, err := parseExpr(n.str[1 : len(n.str)-1])
	if err != nil {
		return nil, fmt.Errorf("expression %s: %v", n.str, err)
	}
	v, err := t.eval(e, n.off, depth)
	if err != nil {
		return nil, fmt.Errorf("expression %s: %v", n.str, err)
	}
	return v, nil
}

// nameSuffix returns the part after the last '/' of a resource name
// expression such as [concat(parameters('policy'), '/rcg')] even when the
// parameter has no default.
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
)

type expr struct {
	kind ekind
	s    string // string literal, function or property name
	num  int64
	fn   string
	args []*expr
	base *expr // eProp, eIndex
	idx  *expr // eIndex
}

type exprParser struct {
	s   string
	i   int
	dep int
}

func parseExpr(s string) (*expr, error) {
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
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
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
		switch p.peek() {
		case '.':
			p.i++
			p.space()
			st := p.i
			for p.i < len(p.s) && isIdent(p.s[p.i]) {
				p.i++
			}
			if st == p.i {
				return nil, fmt.Errorf("expected a property name at character %d", p.i+1)
			}
			e = &expr{kind: eProp, base: e, s: p.s[st:p.i]}
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
			e = &expr{kind: eIndex, base: e, idx: idx}
		default:
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
		for p.i < len(p.s) && isIdent(p.s[p.i]) {
			p.i++
		}
		name := p.s[st:p.i]
		if p.peek() != '(' {
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

func strNode(s string, off int) *node { return &node{kind: jString, str: s, off: off} }
func boolNode(b bool, off int) *node  { return &node{kind: jBool, b: b, off: off} }
func numNode(n int64, off int) *node {
	return &node{kind: jNumber, str: strconv.FormatInt(n, 10), off: off}
}
func arrNode(items []*node, off int) *node { return &node{kind: jArray, items: items, off: off} }

// deployOnly names the functions whose value exists only at deployment.
var deployOnly = map[string]bool{
	"resourcegroup": true, "subscription": true, "deployment": true, "tenant": true,
	"managementgroup": true, "environment": true, "reference": true, "list": true,
	"listkeys": true, "uniquestring": true, "newguid": true, "utcnow": true,
	"copyindex": true, "guid": true,
}

func (t *template) eval(e *expr, off, depth int) (*node, error) {
	t.steps++
	if t.steps > maxEvalSteps {
		return nil, fmt.Errorf("the template's expressions take too long to evaluate")
	}
	switch e.kind {
	case eString:
		return strNode(e.s, off), nil
	case eNumber:
		return numNode(e.num, off), nil
	case eProp:
		b, err := t.eval(e.base, off, depth)
		if err != nil {
			return nil, err
		}
		if b.kind != jObject {
			return nil, fmt.Errorf(".%s of %s", e.s, b.kind)
		}
		v := b.lookup(e.s)
		if v == nil {
			return nil, fmt.Errorf("no property %q", e.s)
		}
		return t.resolve(v, depth+1)
	case eIndex:
		b, err := t.eval(e.base, off, depth)
		if err != nil {
			return nil, err
		}
		ix, err := t.eval(e.idx, off, depth)
		if err != nil {
			return nil, err
		}
		switch {
		case b.kind == jArray && ix.kind == jNumber:
			i, err := strconv.Atoi(ix.str)
			if err != nil || i < 0 || i >= len(b.items) {
				return nil, fmt.Errorf("index %s out of range", ix.str)
			}
			return t.resolve(b.items[i], depth+1)
		case b.kind == jObject && ix.kind == jString:
			v := b.lookup(ix.str)
			if v == nil {
				return nil, fmt.Errorf("no property %q", ix.str)
			}
			return t.resolve(v, depth+1)
		}
		return nil, fmt.Errorf("cannot index %s with %s", b.kind, ix.kind)
	}
	// A call.
	fn := strings.ToLower(e.fn)
	if deployOnly[fn] {
		return nil, fmt.Errorf("%s() is only known at deployment time", e.fn)
	}
	if fn == "if" { // evaluate only the branch taken
		if len(e.args) != 3 {
			return nil, fmt.Errorf("if() takes 3 arguments")
		}
		c, err := t.eval(e.args[0], off, depth)
		if err != nil {
			return nil, err
		}
		if c.kind != jBool {
			return nil, fmt.Errorf("if(): condition is %s", c.kind)
		}
		if c.b {
			return t.eval(e.args[1], off, depth)
		}
		return t.eval(e.args[2], off, depth)
	}
	args := make([]*node, len(e.args))
	for i, a := range e.args {
		v, err := t.eval(a, off, depth)
		if err != nil {
			return nil, err
		}
		args[i] = v
	}
	str := func(i int) (string, error) {
		if i >= len(args) {
			return "", fmt.Errorf("%s(): missing argument %d", e.fn, i+1)
		}
		if args[i].kind != jString {
			return "", fmt.Errorf("%s(): argument %d is %s, not a string", e.fn, i+1, args[i].kind)
		}
		return args[i].str, nil
	}
	switch fn {
	case "parameters":
		name, err := str(0)
		if err != nil {
			return nil, err
		}
		def, ok := t.params[strings.ToLower(name)]
		if !ok {
			return nil, fmt.Errorf("no parameter %q in the template", name)
		}
		dv := def.lookup("defaultValue")
		if dv == nil || dv.kind == jNull {
			return nil, fmt.Errorf("parameter %q has no defaultValue (its value is given at deployment)", name)
		}
		return t.resolve(dv, depth+1)
	case "variables":
		name, err := str(0)
		if err != nil {
			return nil, err
		}
		v, ok := t.vars[strings.ToLower(name)]
		if !ok {
			return nil, fmt.Errorf("no variable %q in the template", name)
		}
		return t.resolve(v, depth+1)
	case "concat":
		if len(args) > 0 && args[0].kind == jArray {
			var items []*node
			for i, a := range args {
				if a.kind != jArray {
					return nil, fmt.Errorf("concat(): argument %d is %s, not a list", i+1, a.kind)
				}
				items = append(items, a.items...)
				if len(items) > maxValueLen {
					return nil, fmt.Errorf("concat(): the result is too long")
				}
			}
			return arrNode(items, off), nil
		}
		var b strings.Builder
		for i, a := range args {
			switch a.kind {
			case jString, jNumber:
				b.WriteString(a.str)
			case jBool:
				b.WriteString(strconv.FormatBool(a.b))
			default:
				return nil, fmt.Errorf("concat(): argument %d is %s", i+1, a.kind)
			}
			if b.Len() > maxValueLen {
				return nil, fmt.Errorf("concat(): the result is too long")
			}
		}
		return t.built(b.String(), off)
	case "format":
		f, err := str(0)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		for i := 0; i < len(f); i++ {
			if f[i] == '{' {
				j := strings.IndexByte(f[i:], '}')
				if j > 0 {
					spec := f[i+1 : i+j]
					if c := strings.IndexByte(spec, ':'); c >= 0 {
						spec = spec[:c]
					}
					k, err := strconv.Atoi(spec)
					if err == nil && k >= 0 && k+1 < len(args) {
						a := args[k+1]
						switch a.kind {
						case jString, jNumber:
							b.WriteString(a.str)
						case jBool:
							b.WriteString(strconv.FormatBool(a.b))
						default:
							return nil, fmt.Errorf("format(): argument %d is %s", k+2, a.kind)
						}
						i += j
						continue
					}
					return nil, fmt.Errorf("format(): bad placeholder {%s}", f[i+1:i+j])
				}
			}
			b.WriteByte(f[i])
			if b.Len() > maxValueLen {
				return nil, fmt.Errorf("format(): the result is too long")
			}
		}
		if b.Len() > maxValueLen {
			return nil, fmt.Errorf("format(): the result is too long")
		}
		return t.built(b.String(), off)
	case "resourceid":
		// resourceId([subscriptionId], [resourceGroupName], type, name1, ...):
		// the type is the first argument with a '/'. The result names the
		// resource by its provider path, which is all the importer needs.
		parts := make([]string, len(args))
		for i := range args {
			s, err := str(i)
			if err != nil {
				return nil, err
			}
			parts[i] = s
		}
		ti := -1
		for i, s := range parts {
			if strings.Contains(s, "/") {
				ti = i
				break
			}
		}
		if ti < 0 {
			return nil, fmt.Errorf("resourceId(): no resource type argument")
		}
		segs := strings.Split(parts[ti], "/")
		names := parts[ti+1:]
		if len(names) != len(segs)-1 {
			return nil, fmt.Errorf("resourceId(): %d names for type %s", len(names), parts[ti])
		}
		id := "/providers/" + segs[0]
		for i, n := range names {
			id += "/" + segs[i+1] + "/" + n
		}
		return strNode(id, off), nil
	case "tolower", "toupper":
		s, err := str(0)
		if err != nil {
			return nil, err
		}
		if fn == "tolower" {
			return strNode(strings.ToLower(s), off), nil
		}
		return strNode(strings.ToUpper(s), off), nil
	case "string":
		if len(args) != 1 {
			return nil, fmt.Errorf("string() takes 1 argument")
		}
		switch args[0].kind {
		case jString, jNumber:
			return strNode(args[0].str, off), nil
		case jBool:
			return strNode(strconv.FormatBool(args[0].b), off), nil
		}
		return nil, fmt.Errorf("string() of %s is not supported", args[0].kind)
	case "int":
		if len(args) != 1 || (args[0].kind != jString && args[0].kind != jNumber) {
			return nil, fmt.Errorf("int() takes a string or a number")
		}
		n, err := strconv.ParseInt(strings.TrimSpace(args[0].str), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("int(%q): not a whole number", args[0].str)
		}
		return numNode(n, off), nil
	case "bool":
		if len(args) != 1 {
			return nil, fmt.Errorf("bool() takes 1 argument")
		}
		switch {
		case args[0].kind == jBool:
			return args[0], nil
		case args[0].kind == jString && strings.EqualFold(args[0].str, "true"):
			return boolNode(true, off), nil
		case args[0].kind == jString && strings.EqualFold(args[0].str, "false"):
			return boolNode(false, off), nil
		case args[0].kind == jNumber:
			return boolNode(args[0].str != "0", off), nil
		}
		return nil, fmt.Errorf("bool() of %s", args[0].kind)
	case "true", "false":
		return boolNode(fn == "true", off), nil
	case "not":
		if len(args) != 1 || args[0].kind != jBool {
			return nil, fmt.Errorf("not() takes one boolean")
		}
		return boolNode(!args[0].b, off), nil
	case "equals":
		if len(args) != 2 {
			return nil, fmt.Errorf("equals() takes 2 arguments")
		}
		a, b := args[0], args[1]
		if a.kind != b.kind || (a.kind != jString && a.kind != jNumber && a.kind != jBool) {
			return boolNode(false, off), nil
		}
		return boolNode(a.str == b.str && a.b == b.b, off), nil
	case "createarray":
		return arrNode(args, off), nil
	}
	return nil, fmt.Errorf("function %s() is not supported by the importer", e.fn)
}

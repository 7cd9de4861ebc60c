package azure

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// The template functions, as Azure Resource Manager defines them
// (learn.microsoft.com/azure/azure-resource-manager/templates/template-functions).
// Unknown arguments make an unknown result, except where the function does
// not need them (if() with a known condition, and()/or() decided early,
// length() of a list whose items are unknown).

func (s *scope) eval(e *expr, at *node) (*node, error) {
	s.ctx.steps++
	if s.ctx.steps > maxEvalSteps {
		return nil, fmt.Errorf("the template takes too long to evaluate")
	}
	switch e.kind {
	case eString:
		return s.str(at, e.s)
	case eNumber:
		return numAt(at, e.num), nil
	case eBool:
		return boolAt(at, e.b), nil
	case eNull:
		return nullAt(at), nil
	case eProp:
		b, err := s.eval(e.base, at)
		if err != nil {
			return nil, err
		}
		return s.property(b, e.s, e.safe, at)
	case eIndex:
		b, err := s.eval(e.base, at)
		if err != nil {
			return nil, err
		}
		ix, err := s.eval(e.idx, at)
		if err != nil {
			return nil, err
		}
		switch {
		case b.kind == jUnknown:
			return b, nil
		case ix.kind == jUnknown:
			return ix, nil
		case b.kind == jNull && e.safe:
			return nullAt(at), nil
		case b.kind == jArray && ix.kind == jNumber:
			i, err := strconv.Atoi(ix.str)
			if err != nil || i < 0 || i >= len(b.items) {
				if e.safe {
					return nullAt(at), nil
				}
				return nil, fmt.Errorf("index %s is out of range (the list has %d items)", ix.str, len(b.items))
			}
			return b.items[i], nil
		case b.kind == jObject && ix.kind == jString:
			return s.property(b, ix.str, e.safe, at)
		}
		return nil, fmt.Errorf("cannot index %s with %s", b.kind, ix.kind)
	}
	return s.call(e, at)
}

// spend accounts for work proportional to n (comparisons, items built).
func (s *scope) spend(n int) error {
	s.ctx.steps += n
	if s.ctx.steps > maxEvalSteps {
		return fmt.Errorf("the template takes too long to evaluate")
	}
	return nil
}

// property reads a property of an object (case-insensitive, as ARM does).
func (s *scope) property(b *node, name string, safe bool, at *node) (*node, error) {
	switch b.kind {
	case jUnknown:
		return b, nil
	case jNull:
		if safe {
			return nullAt(at), nil
		}
		return nil, fmt.Errorf(".%s of null", name)
	case jObject:
		if v := b.lookup(name); v != nil {
			return v, nil
		}
		if b.runtime != "" {
			return unknownNode(at, fmt.Sprintf("%s of %s", name, b.runtime), "only known once deployed"), nil
		}
		if safe {
			return nullAt(at), nil
		}
		return nil, fmt.Errorf("no property %q", name)
	}
	return nil, fmt.Errorf(".%s of %s", name, b.kind)
}

// firstUnknown returns the first unknown argument.
func firstUnknown(args []*node) *node {
	for _, a := range args {
		if a.kind == jUnknown {
			return a
		}
	}
	return nil
}

type fnArgs struct {
	fn   string
	args []*node
}

func (f fnArgs) need(min, max int) error {
	if len(f.args) < min || (max >= 0 && len(f.args) > max) {
		switch {
		case min == max:
			return fmt.Errorf("%s() takes %d arguments, not %d", f.fn, min, len(f.args))
		case max < 0:
			return fmt.Errorf("%s() takes at least %d arguments", f.fn, min)
		}
		return fmt.Errorf("%s() takes %d to %d arguments, not %d", f.fn, min, max, len(f.args))
	}
	return nil
}

func (f fnArgs) str(i int) (string, error) {
	if i >= len(f.args) {
		return "", fmt.Errorf("%s(): missing argument %d", f.fn, i+1)
	}
	if f.args[i].kind != jString {
		return "", fmt.Errorf("%s(): argument %d is %s, not a string", f.fn, i+1, describe(f.args[i]))
	}
	return f.args[i].str, nil
}

func (f fnArgs) integer(i int) (int64, error) {
	if i >= len(f.args) {
		return 0, fmt.Errorf("%s(): missing argument %d", f.fn, i+1)
	}
	a := f.args[i]
	if a.kind == jNumber {
		if n, err := strconv.ParseInt(a.str, 10, 64); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s(): argument %d is %s, not a whole number", f.fn, i+1, describe(a))
}

func (f fnArgs) boolean(i int) (bool, error) {
	if i >= len(f.args) {
		return false, fmt.Errorf("%s(): missing argument %d", f.fn, i+1)
	}
	if f.args[i].kind != jBool {
		return false, fmt.Errorf("%s(): argument %d is %s, not true or false", f.fn, i+1, describe(f.args[i]))
	}
	return f.args[i].b, nil
}

// text renders a scalar as string() does.
func text(n *node) (string, bool) {
	switch n.kind {
	case jString, jNumber:
		return n.str, true
	case jBool:
		if n.b {
			return "True", true
		}
		return "False", true
	case jNull:
		return "", true
	}
	return "", false
}

// deploy-time functions whose results are unknown.
var deployOnly = map[string]string{
	"newguid":  "newGuid() is a new value at every deployment",
	"utcnow":   "utcNow() is the time of the deployment",
	"listkeys": "", "listaccountsas": "", "listservicesas": "", "listsecrets": "",
	"tenant": "", "managementgroup": "", "providers": "", "pickzones": "",
	"managementgroupresourceid": "", "list": "",
}

func (s *scope) call(e *expr, at *node) (*node, error) {
	fn := strings.ToLower(e.fn)
	if strings.HasPrefix(fn, "list") && fn != "lastindexof" && fn != "last" {
		return unknownNode(at, e.fn+"() of a deployed resource", "only known at deployment"), nil
	}
	if why, ok := deployOnly[fn]; ok {
		if why == "" {
			why = e.fn + "()"
		}
		return unknownNode(at, why, "only known at deployment"), nil
	}
	// Forms that do not evaluate every argument.
	switch fn {
	case "if":
		if len(e.args) != 3 {
			return nil, fmt.Errorf("if() takes 3 arguments")
		}
		c, err := s.eval(e.args[0], at)
		if err != nil {
			return nil, err
		}
		if c.kind == jUnknown {
			return c, nil
		}
		if c.kind != jBool {
			return nil, fmt.Errorf("if(): the condition is %s, not true or false", describe(c))
		}
		if c.b {
			return s.eval(e.args[1], at)
		}
		return s.eval(e.args[2], at)
	case "and", "or":
		if len(e.args) < 2 {
			return nil, fmt.Errorf("%s() takes at least 2 arguments", e.fn)
		}
		var unk *node
		for i, a := range e.args {
			v, err := s.eval(a, at)
			if err != nil {
				return nil, err
			}
			switch {
			case v.kind == jUnknown:
				if unk == nil {
					unk = v
				}
			case v.kind != jBool:
				return nil, fmt.Errorf("%s(): argument %d is %s, not true or false", e.fn, i+1, describe(v))
			case fn == "and" && !v.b:
				return boolAt(at, false), nil
			case fn == "or" && v.b:
				return boolAt(at, true), nil
			}
		}
		if unk != nil {
			return unk, nil
		}
		return boolAt(at, fn == "and"), nil
	case "coalesce":
		for _, a := range e.args {
			v, err := s.eval(a, at)
			if err != nil {
				return nil, err
			}
			if v.kind != jNull {
				return v, nil
			}
		}
		return nullAt(at), nil
	case "lambdavariables":
		if len(e.args) != 1 || e.args[0].kind != eString {
			return nil, fmt.Errorf("lambdaVariables() takes a variable name")
		}
		if v, ok := s.lambdas[strings.ToLower(e.args[0].s)]; ok {
			return v, nil
		}
		return nil, fmt.Errorf("no lambda variable %q", e.args[0].s)
	case "map", "filter", "reduce", "sort", "toobject", "groupby", "mapvalues":
		return s.lambdaCall(fn, e, at)
	case "lambda":
		return nil, fmt.Errorf("lambda() is only allowed as an argument of map(), filter(), reduce(), sort() or toObject()")
	}
	args := make([]*node, len(e.args))
	for i, a := range e.args {
		v, err := s.eval(a, at)
		if err != nil {
			return nil, err
		}
		args[i] = v
	}
	f := fnArgs{fn: e.fn, args: args}
	// Functions that look inside lists whose items may be unknown.
	switch fn {
	case "createarray":
		return bounded(arrAt(at, args), at), nil
	case "createobject":
		if len(args)%2 != 0 {
			return nil, fmt.Errorf("createObject() takes pairs of a key and a value")
		}
		o := objAt(at)
		for i := 0; i < len(args); i += 2 {
			if args[i].kind == jUnknown {
				return args[i], nil
			}
			k, err := f.str(i)
			if err != nil {
				return nil, err
			}
			o.set(k, args[i+1])
		}
		return bounded(o, at), nil
	case "length", "empty":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		a := args[0]
		n := -1
		switch a.kind {
		case jArray:
			n = len(a.items)
		case jObject:
			if a.runtime != "" {
				return unknownNode(at, "the properties of "+a.runtime, "only known once deployed"), nil
			}
			n = len(a.keys)
		case jString:
			n = len([]rune(a.str))
		case jNull:
			n = 0
		case jUnknown:
			return a, nil
		}
		if n < 0 {
			return nil, fmt.Errorf("%s() of %s", e.fn, describe(a))
		}
		if fn == "empty" {
			return boolAt(at, n == 0), nil
		}
		return numAt(at, int64(n)), nil
	case "parameters":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		if u := firstUnknown(args); u != nil {
			return u, nil
		}
		name, err := f.str(0)
		if err != nil {
			return nil, err
		}
		return s.param(name, at)
	}
	if u := firstUnknown(args); u != nil {
		return u, nil
	}
	v, err := s.builtin(fn, f, at)
	if err != nil {
		return nil, err
	}
	if b := bounded(v, at); b != v {
		return nil, fmt.Errorf("%s(): %s", e.fn, b.unk.what)
	}
	return v, nil
}

func (s *scope) builtin(fn string, f fnArgs, at *node) (*node, error) {
	args := f.args
	switch fn {
	case "variables":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		name, err := f.str(0)
		if err != nil {
			return nil, err
		}
		return s.variable(name, at)
	case "copyindex":
		if err := f.need(0, 2); err != nil {
			return nil, err
		}
		loop, offset := "", int64(0)
		for i, a := range args {
			switch a.kind {
			case jString:
				loop = a.str
			case jNumber:
				o, err := f.integer(i)
				if err != nil {
					return nil, err
				}
				offset = o
			default:
				return nil, fmt.Errorf("copyIndex(): argument %d is %s", i+1, describe(a))
			}
		}
		i, ok := s.copies[strings.ToLower(loop)]
		if !ok {
			if loop == "" {
				return nil, fmt.Errorf("copyIndex() outside a copy loop")
			}
			return nil, fmt.Errorf("copyIndex(%q): no copy loop of that name here", loop)
		}
		return numAt(at, int64(i)+offset), nil
	case "concat":
		if len(args) > 0 && (args[0].kind == jArray || args[0].kind == jNull) && allLists(args) {
			var items []*node
			for _, a := range args {
				items = append(items, a.items...)
				if len(items) > maxValueLen {
					return nil, fmt.Errorf("concat(): the result is too long")
				}
			}
			return arrAt(at, items), nil
		}
		var b strings.Builder
		for i, a := range args {
			t, ok := text(a)
			if !ok {
				return nil, fmt.Errorf("concat(): argument %d is %s", i+1, describe(a))
			}
			b.WriteString(t)
		}
		return s.str(at, b.String())
	case "format":
		if err := f.need(1, -1); err != nil {
			return nil, err
		}
		format, err := f.str(0)
		if err != nil {
			return nil, err
		}
		out, err := armFormat(format, args[1:])
		if err != nil {
			return nil, err
		}
		return s.str(at, out)
	case "tolower", "toupper", "trim":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		v, err := f.str(0)
		if err != nil {
			return nil, err
		}
		switch fn {
		case "tolower":
			v = strings.ToLower(v)
		case "toupper":
			v = strings.ToUpper(v)
		default:
			v = strings.TrimSpace(v)
		}
		return s.str(at, v)
	case "replace":
		if err := f.need(3, 3); err != nil {
			return nil, err
		}
		a, err := f.str(0)
		if err != nil {
			return nil, err
		}
		old, err := f.str(1)
		if err != nil {
			return nil, err
		}
		nw, err := f.str(2)
		if err != nil {
			return nil, err
		}
		if old == "" {
			return nil, fmt.Errorf("replace(): the old string is empty")
		}
		if strings.Count(a, old)*len(nw) > maxValueLen*16 {
			return nil, fmt.Errorf("replace(): the result is too long")
		}
		return s.str(at, strings.ReplaceAll(a, old, nw))
	case "split":
		if err := f.need(2, 2); err != nil {
			return nil, err
		}
		a, err := f.str(0)
		if err != nil {
			return nil, err
		}
		var seps []string
		switch args[1].kind {
		case jString:
			seps = []string{args[1].str}
		case jArray:
			for _, x := range args[1].items {
				if x.kind != jString {
					return nil, fmt.Errorf("split(): a delimiter is %s", describe(x))
				}
				seps = append(seps, x.str)
			}
		default:
			return nil, fmt.Errorf("split(): the delimiter is %s", describe(args[1]))
		}
		parts := []string{a}
		for _, sep := range seps {
			if sep == "" {
				continue
			}
			var next []string
			for _, p := range parts {
				next = append(next, strings.Split(p, sep)...)
			}
			parts = next
			if len(parts) > maxValueLen {
				return nil, fmt.Errorf("split(): too many parts")
			}
		}
		items := make([]*node, len(parts))
		for i, p := range parts {
			items[i] = &node{kind: jString, str: p, src: at.src, off: at.off}
		}
		return arrAt(at, items), nil
	case "join":
		if err := f.need(2, 2); err != nil {
			return nil, err
		}
		if args[0].kind != jArray {
			return nil, fmt.Errorf("join(): argument 1 is %s, not a list", describe(args[0]))
		}
		sep, err := f.str(1)
		if err != nil {
			return nil, err
		}
		var parts []string
		for _, it := range args[0].items {
			if it.kind == jUnknown {
				return it, nil
			}
			t, ok := text(it)
			if !ok {
				return nil, fmt.Errorf("join(): an item is %s", describe(it))
			}
			parts = append(parts, t)
		}
		return s.str(at, strings.Join(parts, sep))
	case "substring":
		if err := f.need(1, 3); err != nil {
			return nil, err
		}
		a, err := f.str(0)
		if err != nil {
			return nil, err
		}
		start, length := int64(0), int64(-1)
		if len(args) > 1 {
			if start, err = f.integer(1); err != nil {
				return nil, err
			}
		}
		if len(args) > 2 {
			if length, err = f.integer(2); err != nil {
				return nil, err
			}
		}
		r := []rune(a)
		if length < 0 {
			length = int64(len(r)) - start
		}
		if start < 0 || length < 0 || start+length > int64(len(r)) {
			return nil, fmt.Errorf("substring(): start %d and length %d are outside the string (%d characters)", start, length, len(r))
		}
		return s.str(at, string(r[start:start+length]))
	case "startswith", "endswith", "indexof", "lastindexof":
		if err := f.need(2, 2); err != nil {
			return nil, err
		}
		if fn == "indexof" || fn == "lastindexof" {
			if args[0].kind == jArray {
				idx := -1
				for i, it := range args[0].items {
					if deepEqual(it, args[1]) {
						idx = i
						if fn == "indexof" {
							break
						}
					}
				}
				return numAt(at, int64(idx)), nil
			}
		}
		a, err := f.str(0)
		if err != nil {
			return nil, err
		}
		b, err := f.str(1)
		if err != nil {
			return nil, err
		}
		la, lb := strings.ToLower(a), strings.ToLower(b) // case-insensitive, as ARM's string search is
		switch fn {
		case "startswith":
			return boolAt(at, strings.HasPrefix(la, lb)), nil
		case "endswith":
			return boolAt(at, strings.HasSuffix(la, lb)), nil
		case "indexof":
			return numAt(at, int64(strings.Index(la, lb))), nil
		}
		return numAt(at, int64(strings.LastIndex(la, lb))), nil
	case "padleft":
		if err := f.need(2, 3); err != nil {
			return nil, err
		}
		a, ok := text(args[0])
		if !ok {
			return nil, fmt.Errorf("padLeft(): argument 1 is %s", describe(args[0]))
		}
		width, err := f.integer(1)
		if err != nil {
			return nil, err
		}
		pad := " "
		if len(args) > 2 {
			if pad, err = f.str(2); err != nil {
				return nil, err
			}
		}
		if width > maxValueLen || len([]rune(pad)) != 1 {
			return nil, fmt.Errorf("padLeft(): bad width or padding character")
		}
		if n := int(width) - len([]rune(a)); n > 0 {
			a = strings.Repeat(pad, n) + a
		}
		return s.str(at, a)
	case "string":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		if t, ok := text(args[0]); ok && args[0].kind != jNull {
			return s.str(at, t)
		}
		b, err := toJSON(args[0])
		if err != nil {
			return nil, err
		}
		return s.str(at, b)
	case "int":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		t, ok := text(args[0])
		if !ok || args[0].kind == jBool {
			return nil, fmt.Errorf("int() of %s", describe(args[0]))
		}
		n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("int(%q): not a whole number", t)
		}
		return numAt(at, n), nil
	case "bool":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		a := args[0]
		switch {
		case a.kind == jBool:
			return a, nil
		case a.kind == jString && strings.EqualFold(strings.TrimSpace(a.str), "true"):
			return boolAt(at, true), nil
		case a.kind == jString && strings.EqualFold(strings.TrimSpace(a.str), "false"):
			return boolAt(at, false), nil
		case a.kind == jNumber:
			return boolAt(at, a.str != "0"), nil
		}
		return nil, fmt.Errorf("bool() of %s", describe(a))
	case "json":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		t, err := f.str(0)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(t) == "null" {
			return nullAt(at), nil
		}
		src := &source{name: "json()", data: []byte(t)}
		roots, err := parseJSON(src)
		if err != nil || len(roots) != 1 {
			return nil, fmt.Errorf("json(): the argument is not one JSON value")
		}
		return relocate(roots[0], at), nil
	case "true", "false":
		return boolAt(at, fn == "true"), nil
	case "null":
		return nullAt(at), nil
	case "not":
		b, err := f.boolean(0)
		if err != nil || len(args) != 1 {
			return nil, fmt.Errorf("not() takes one boolean")
		}
		return boolAt(at, !b), nil
	case "equals":
		if err := f.need(2, 2); err != nil {
			return nil, err
		}
		if err := s.spend(size(args[0]) + size(args[1])); err != nil {
			return nil, err
		}
		if containsUnknown(args[0]) || containsUnknown(args[1]) {
			return unknownIn(args[0], args[1]), nil
		}
		return boolAt(at, deepEqual(args[0], args[1])), nil
	case "less", "lessorequals", "greater", "greaterorequals":
		if err := f.need(2, 2); err != nil {
			return nil, err
		}
		c, err := compare(args[0], args[1])
		if err != nil {
			return nil, fmt.Errorf("%s(): %v", f.fn, err)
		}
		switch fn {
		case "less":
			return boolAt(at, c < 0), nil
		case "lessorequals":
			return boolAt(at, c <= 0), nil
		case "greater":
			return boolAt(at, c > 0), nil
		}
		return boolAt(at, c >= 0), nil
	case "add", "sub", "mul", "div", "mod":
		if err := f.need(2, 2); err != nil {
			return nil, err
		}
		a, err := f.integer(0)
		if err != nil {
			return nil, err
		}
		b, err := f.integer(1)
		if err != nil {
			return nil, err
		}
		var r int64
		switch fn {
		case "add":
			r = a + b
		case "sub":
			r = a - b
		case "mul":
			r = a * b
		case "div", "mod":
			if b == 0 {
				return nil, fmt.Errorf("%s(): division by zero", f.fn)
			}
			if fn == "div" {
				r = a / b
			} else {
				r = a % b
			}
		}
		return numAt(at, r), nil
	case "min", "max":
		var nums []int64
		for i, a := range args {
			if a.kind == jArray {
				for _, it := range a.items {
					if it.kind == jUnknown {
						return it, nil
					}
					n, err := (fnArgs{fn: f.fn, args: []*node{it}}).integer(0)
					if err != nil {
						return nil, err
					}
					nums = append(nums, n)
				}
				continue
			}
			n, err := f.integer(i)
			if err != nil {
				return nil, err
			}
			nums = append(nums, n)
		}
		if len(nums) == 0 {
			return nil, fmt.Errorf("%s() of nothing", f.fn)
		}
		r := nums[0]
		for _, n := range nums[1:] {
			if (fn == "min") == (n < r) {
				r = n
			}
		}
		return numAt(at, r), nil
	case "range":
		if err := f.need(2, 2); err != nil {
			return nil, err
		}
		start, err := f.integer(0)
		if err != nil {
			return nil, err
		}
		count, err := f.integer(1)
		if err != nil {
			return nil, err
		}
		if count < 0 || count > 10000 || start > math.MaxInt64-count {
			return nil, fmt.Errorf("range(): count %d is outside 0-10000", count)
		}
		items := make([]*node, count)
		for i := range items {
			items[i] = numAt(at, start+int64(i))
		}
		return arrAt(at, items), nil
	case "array":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		if args[0].kind == jArray {
			return args[0], nil
		}
		return arrAt(at, []*node{args[0]}), nil
	case "first", "last":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		switch a := args[0]; a.kind {
		case jArray:
			if len(a.items) == 0 {
				return nullAt(at), nil
			}
			if fn == "first" {
				return a.items[0], nil
			}
			return a.items[len(a.items)-1], nil
		case jString:
			r := []rune(a.str)
			if len(r) == 0 {
				return s.str(at, "")
			}
			if fn == "first" {
				return s.str(at, string(r[0]))
			}
			return s.str(at, string(r[len(r)-1]))
		}
		return nil, fmt.Errorf("%s() of %s", f.fn, describe(args[0]))
	case "take", "skip":
		if err := f.need(2, 2); err != nil {
			return nil, err
		}
		k, err := f.integer(1)
		if err != nil {
			return nil, err
		}
		switch a := args[0]; a.kind {
		case jArray:
			k = clamp(k, len(a.items))
			if fn == "take" {
				return arrAt(at, a.items[:k]), nil
			}
			return arrAt(at, a.items[k:]), nil
		case jString:
			r := []rune(a.str)
			k = clamp(k, len(r))
			if fn == "take" {
				return s.str(at, string(r[:k]))
			}
			return s.str(at, string(r[k:]))
		}
		return nil, fmt.Errorf("%s() of %s", f.fn, describe(args[0]))
	case "contains":
		if err := f.need(2, 2); err != nil {
			return nil, err
		}
		c, item := args[0], args[1]
		switch c.kind {
		case jString:
			t, ok := text(item)
			if !ok {
				return nil, fmt.Errorf("contains(): looking for %s in a string", describe(item))
			}
			return boolAt(at, strings.Contains(c.str, t)), nil
		case jArray:
			if err := s.spend(len(c.items)); err != nil {
				return nil, err
			}
			var unk *node
			for _, it := range c.items {
				if containsUnknown(it) {
					if unk == nil {
						unk = unknownIn(it)
					}
					continue
				}
				if deepEqual(it, item) {
					return boolAt(at, true), nil
				}
			}
			if unk != nil {
				return unk, nil
			}
			return boolAt(at, false), nil
		case jObject:
			k, err := f.str(1)
			if err != nil {
				return nil, err
			}
			if c.lookup(k) != nil {
				return boolAt(at, true), nil
			}
			if c.runtime != "" {
				return unknownNode(at, fmt.Sprintf("whether %s has %s", c.runtime, k), "only known once deployed"), nil
			}
			return boolAt(at, false), nil
		case jNull:
			return boolAt(at, false), nil
		}
		return nil, fmt.Errorf("contains() in %s", describe(c))
	case "union", "intersection":
		if err := f.need(1, -1); err != nil {
			return nil, err
		}
		if args[0].kind == jObject {
			o := objAt(at)
			for i, a := range args {
				if a.kind != jObject {
					return nil, fmt.Errorf("%s(): argument %d is %s, not an object", f.fn, i+1, describe(a))
				}
			}
			if fn == "union" {
				for _, a := range args {
					for j, k := range a.keys {
						o.set(k, a.vals[j])
					}
				}
				return o, nil
			}
			for j, k := range args[0].keys {
				in := true
				for _, a := range args[1:] {
					if v := a.lookup(k); v == nil || !deepEqual(v, args[0].vals[j]) {
						in = false
					}
				}
				if in {
					o.set(k, args[0].vals[j])
				}
			}
			return o, nil
		}
		var items []*node
		for i, a := range args {
			if a.kind != jArray {
				return nil, fmt.Errorf("%s(): argument %d is %s, not a list", f.fn, i+1, describe(a))
			}
		}
		if fn == "union" {
			for _, a := range args {
				for _, it := range a.items {
					in, err := s.hasItem(items, it)
					if err != nil {
						return nil, err
					}
					if !in {
						items = append(items, it)
					}
				}
				if len(items) > maxValueLen {
					return nil, fmt.Errorf("union(): the result is too long")
				}
			}
			return arrAt(at, items), nil
		}
		for _, it := range args[0].items {
			dup, err := s.hasItem(items, it)
			if err != nil {
				return nil, err
			}
			in := !dup
			for _, a := range args[1:] {
				if found, err := s.hasItem(a.items, it); err != nil {
					return nil, err
				} else if !found {
					in = false
				}
			}
			if in {
				items = append(items, it)
			}
		}
		return arrAt(at, items), nil
	case "flatten":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		if args[0].kind != jArray {
			return nil, fmt.Errorf("flatten() of %s", describe(args[0]))
		}
		var items []*node
		for _, it := range args[0].items {
			if it.kind != jArray {
				return nil, fmt.Errorf("flatten(): an item is %s, not a list", describe(it))
			}
			items = append(items, it.items...)
		}
		return arrAt(at, items), nil
	case "items":
		if err := f.need(1, 1); err != nil {
			return nil, err
		}
		o := args[0]
		if o.kind != jObject {
			return nil, fmt.Errorf("items() of %s", describe(o))
		}
		idx := make([]int, len(o.keys))
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return strings.ToLower(o.keys[idx[a]]) < strings.ToLower(o.keys[idx[b]]) })
		items := make([]*node, 0, len(idx))
		for _, i := range idx {
			kv := objAt(at)
			kv.set("key", &node{kind: jString, str: o.keys[i], src: at.src, off: at.off})
			kv.set("value", o.vals[i])
			items = append(items, kv)
		}
		return arrAt(at, items), nil
	case "objectkeys":
		if err := f.need(1, 1); err != nil || args[0].kind != jObject {
			return nil, fmt.Errorf("objectKeys() takes an object")
		}
		items := make([]*node, len(args[0].keys))
		for i, k := range args[0].keys {
			items[i] = &node{kind: jString, str: k, src: at.src, off: at.off}
		}
		return arrAt(at, items), nil
	case "tryget":
		if err := f.need(2, -1); err != nil {
			return nil, err
		}
		v := args[0]
		for _, k := range args[1:] {
			switch {
			case v.kind == jObject && k.kind == jString:
				x := v.lookup(k.str)
				if x == nil {
					return nullAt(at), nil
				}
				v = x
			case v.kind == jArray && k.kind == jNumber:
				i, err := strconv.Atoi(k.str)
				if err != nil || i < 0 || i >= len(v.items) {
					return nullAt(at), nil
				}
				v = v.items[i]
			default:
				return nullAt(at), nil
			}
		}
		return v, nil
	case "base64", "base64tostring":
		v, err := f.str(0)
		if err != nil || len(args) != 1 {
			return nil, fmt.Errorf("%s() takes one string", f.fn)
		}
		if fn == "base64" {
			return s.str(at, base64.StdEncoding.EncodeToString([]byte(v)))
		}
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("base64ToString(): %v", err)
		}
		return s.str(at, string(b))
	case "uri":
		if err := f.need(2, 2); err != nil {
			return nil, err
		}
		base, err := f.str(0)
		if err != nil {
			return nil, err
		}
		rel, err := f.str(1)
		if err != nil {
			return nil, err
		}
		if i := strings.LastIndexByte(base, '/'); i >= 0 && !strings.HasPrefix(rel, "/") {
			base = base[:i+1]
		}
		return s.str(at, base+strings.TrimPrefix(rel, "/"))
	case "uniquestring":
		if err := f.need(1, -1); err != nil {
			return nil, err
		}
		parts := make([]string, len(args))
		for i := range args {
			v, err := f.str(i)
			if err != nil {
				return nil, err
			}
			parts[i] = v
		}
		return s.str(at, uniqueString(parts...))
	case "guid":
		if err := f.need(1, -1); err != nil {
			return nil, err
		}
		parts := make([]string, len(args))
		for i := range args {
			v, err := f.str(i)
			if err != nil {
				return nil, err
			}
			parts[i] = v
		}
		return s.str(at, armGUID(parts...))
	case "resourceid", "subscriptionresourceid", "tenantresourceid", "extensionresourceid":
		return s.resourceIDFunc(fn, f, at)
	case "resourcegroup":
		rg := objAt(at)
		rg.set("id", &node{kind: jString, str: fmt.Sprintf("/subscriptions/%s/resourceGroups/%s", s.ctx.dep.Subscription, s.ctx.dep.ResourceGroup), src: at.src, off: at.off})
		rg.set("name", &node{kind: jString, str: s.ctx.dep.ResourceGroup, src: at.src, off: at.off})
		rg.set("type", &node{kind: jString, str: "Microsoft.Resources/resourceGroups", src: at.src, off: at.off})
		if s.ctx.dep.Location != "" {
			rg.set("location", &node{kind: jString, str: s.ctx.dep.Location, src: at.src, off: at.off})
		} else {
			rg.set("location", unknownNode(at, "resourceGroup().location (the region of the resource group)", "give it with --location REGION"))
		}
		rg.runtime = "the resource group"
		return rg, nil
	case "subscription":
		sub := objAt(at)
		sub.set("id", &node{kind: jString, str: "/subscriptions/" + s.ctx.dep.Subscription, src: at.src, off: at.off})
		sub.set("subscriptionId", &node{kind: jString, str: s.ctx.dep.Subscription, src: at.src, off: at.off})
		sub.runtime = "the subscription"
		return sub, nil
	case "deployment":
		d := objAt(at)
		d.set("name", &node{kind: jString, str: "clusterwall-import", src: at.src, off: at.off})
		d.runtime = "the deployment"
		return d, nil
	case "environment":
		return environment(at), nil
	case "reference":
		if err := f.need(1, 3); err != nil {
			return nil, err
		}
		ref, err := f.str(0)
		if err != nil {
			return nil, err
		}
		full := false
		if len(args) == 3 {
			if m, err := f.str(2); err == nil && strings.EqualFold(m, "full") {
				full = true
			}
		}
		return s.reference(ref, full, at), nil
	case "resourceinfo":
		ref, err := f.str(0)
		if err != nil {
			return nil, err
		}
		d := s.ctx.findDeclared(ref)
		if d == nil {
			return nil, fmt.Errorf("resourceInfo(%q): no such resource in the template", ref)
		}
		o := objAt(at)
		o.set("id", &node{kind: jString, str: s.resourceID(d.typ, d.name), src: at.src, off: at.off})
		o.set("name", &node{kind: jString, str: d.name, src: at.src, off: at.off})
		o.set("type", &node{kind: jString, str: d.typ, src: at.src, off: at.off})
		return o, nil
	}
	if uf, ok := s.funcs[fn]; ok {
		return s.userCall(uf, args, at)
	}
	return nil, fmt.Errorf("function %s() is not supported by the importer", f.fn)
}

func clamp(k int64, n int) int64 {
	if k < 0 {
		return 0
	}
	if k > int64(n) {
		return int64(n)
	}
	return k
}

func allLists(args []*node) bool {
	for _, a := range args {
		if a.kind != jArray && a.kind != jNull {
			return false
		}
	}
	return true
}

func (s *scope) hasItem(items []*node, it *node) (bool, error) {
	if err := s.spend(len(items)); err != nil {
		return false, err
	}
	return hasItem(items, it), nil
}

func hasItem(items []*node, it *node) bool {
	for _, x := range items {
		if deepEqual(x, it) {
			return true
		}
	}
	return false
}

// deepEqual compares two values as equals() does (strings case-sensitive,
// object keys case-insensitive).
func deepEqual(a, b *node) bool {
	if a.kind != b.kind {
		return false
	}
	switch a.kind {
	case jNull:
		return true
	case jBool:
		return a.b == b.b
	case jString, jNumber:
		return a.str == b.str
	case jArray:
		if len(a.items) != len(b.items) {
			return false
		}
		for i := range a.items {
			if !deepEqual(a.items[i], b.items[i]) {
				return false
			}
		}
		return true
	case jObject:
		if len(a.keys) != len(b.keys) {
			return false
		}
		for i, k := range a.keys {
			v := b.lookup(k)
			if v == nil || !deepEqual(a.vals[i], v) {
				return false
			}
		}
		return true
	}
	return false
}

// size is a value's number of nodes, bounded (for the step budget).
func size(n *node) int {
	c := 1
	for _, it := range n.items {
		c += size(it)
		if c > maxEvalSteps {
			return c
		}
	}
	for _, it := range n.vals {
		c += size(it)
		if c > maxEvalSteps {
			return c
		}
	}
	return c
}

func containsUnknown(n *node) bool {
	switch n.kind {
	case jUnknown:
		return true
	case jArray:
		for _, it := range n.items {
			if containsUnknown(it) {
				return true
			}
		}
	case jObject:
		for _, it := range n.vals {
			if containsUnknown(it) {
				return true
			}
		}
	}
	return false
}

// unknownIn returns the first unknown value inside ns.
func unknownIn(ns ...*node) *node {
	for _, n := range ns {
		switch n.kind {
		case jUnknown:
			return n
		case jArray:
			if u := unknownIn(n.items...); u != nil {
				return u
			}
		case jObject:
			if u := unknownIn(n.vals...); u != nil {
				return u
			}
		}
	}
	return nil
}

func compare(a, b *node) (int, error) {
	switch {
	case a.kind == jNumber && b.kind == jNumber:
		x, err1 := strconv.ParseFloat(a.str, 64)
		y, err2 := strconv.ParseFloat(b.str, 64)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("bad numbers")
		}
		switch {
		case x < y:
			return -1, nil
		case x > y:
			return 1, nil
		}
		return 0, nil
	case a.kind == jString && b.kind == jString:
		return strings.Compare(a.str, b.str), nil
	}
	return 0, fmt.Errorf("cannot compare %s and %s", describe(a), describe(b))
}

// armFormat implements format(): {0}, {1:D3}, {{ and }}.
func armFormat(f string, args []*node) (string, error) {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		c := f[i]
		switch {
		case c == '{' && i+1 < len(f) && f[i+1] == '{':
			b.WriteByte('{')
			i++
		case c == '}' && i+1 < len(f) && f[i+1] == '}':
			b.WriteByte('}')
			i++
		case c == '{':
			j := strings.IndexByte(f[i:], '}')
			if j < 0 {
				return "", fmt.Errorf("format(): unclosed '{'")
			}
			spec := f[i+1 : i+j]
			idx, fmtSpec, _ := strings.Cut(spec, ":")
			idx, _, _ = strings.Cut(idx, ",")
			k, err := strconv.Atoi(strings.TrimSpace(idx))
			if err != nil || k < 0 || k >= len(args) {
				return "", fmt.Errorf("format(): bad placeholder {%s}", spec)
			}
			t, ok := text(args[k])
			if !ok {
				return "", fmt.Errorf("format(): argument %d is %s", k+2, describe(args[k]))
			}
			if fmtSpec != "" && args[k].kind == jNumber && (fmtSpec[0] == 'D' || fmtSpec[0] == 'd') {
				if w, err := strconv.Atoi(fmtSpec[1:]); err == nil && w < 100 {
					for len(t) < w {
						t = "0" + t
					}
				}
			}
			b.WriteString(t)
			i += j
		default:
			b.WriteByte(c)
		}
		if b.Len() > maxValueLen*16 {
			return "", fmt.Errorf("format(): the result is too long")
		}
	}
	return b.String(), nil
}

// toJSON renders a value as string() does for objects and lists.
func toJSON(n *node) (string, error) {
	v, err := toGo(n, 0)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

func toGo(n *node, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("value nested too deeply")
	}
	switch n.kind {
	case jNull:
		return nil, nil
	case jBool:
		return n.b, nil
	case jNumber:
		return json.Number(n.str), nil
	case jString:
		return n.str, nil
	case jArray:
		out := make([]any, len(n.items))
		for i, it := range n.items {
			v, err := toGo(it, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	case jObject:
		out := make(map[string]any, len(n.keys))
		for i, k := range n.keys {
			v, err := toGo(n.vals[i], depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("a value only known at deployment")
}

// relocate gives a parsed value the position of the expression that made it.
func relocate(n *node, at *node) *node {
	n.src, n.off = at.src, at.off
	for _, it := range n.items {
		relocate(it, at)
	}
	for _, it := range n.vals {
		relocate(it, at)
	}
	return n
}

// resourceIDFunc implements resourceId() and its relatives:
// resourceId([subscriptionId], [resourceGroupName], type, name1, name2, ...).
func (s *scope) resourceIDFunc(fn string, f fnArgs, at *node) (*node, error) {
	parts := make([]string, len(f.args))
	for i := range f.args {
		v, err := f.str(i)
		if err != nil {
			return nil, err
		}
		parts[i] = v
	}
	ti := -1
	for i, p := range parts {
		if strings.Contains(p, "/") && strings.Contains(strings.SplitN(p, "/", 2)[0], ".") {
			ti = i
			break
		}
	}
	if fn == "extensionresourceid" {
		if len(parts) < 3 {
			return nil, fmt.Errorf("extensionResourceId() takes a scope, a type and names")
		}
		rest := parts[1:]
		segs := strings.Split(rest[0], "/")
		if len(rest)-1 != len(segs)-1 {
			return nil, fmt.Errorf("extensionResourceId(): %d names for type %s", len(rest)-1, rest[0])
		}
		return s.str(at, strings.TrimRight(parts[0], "/")+"/providers/"+joinTypeName(rest[0], strings.Join(rest[1:], "/")))
	}
	if ti < 0 {
		return nil, fmt.Errorf("%s(): no resource type argument", f.fn)
	}
	typ := parts[ti]
	names := parts[ti+1:]
	if len(names) != strings.Count(typ, "/") {
		return nil, fmt.Errorf("%s(): %d names for type %s", f.fn, len(names), typ)
	}
	sub, rg := s.ctx.dep.Subscription, s.ctx.dep.ResourceGroup
	switch ti {
	case 1:
		if fn == "resourceid" {
			rg = parts[0]
		} else {
			sub = parts[0]
		}
	case 2:
		sub, rg = parts[0], parts[1]
	}
	path := joinTypeName(typ, strings.Join(names, "/"))
	switch fn {
	case "subscriptionresourceid":
		return s.str(at, fmt.Sprintf("/subscriptions/%s/providers/%s", sub, path))
	case "tenantresourceid":
		return s.str(at, "/providers/"+path)
	}
	return s.str(at, fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/%s", sub, rg, path))
}

// lambdaCall implements map(), filter(), reduce(), sort(), toObject(),
// groupBy() and mapValues(): the last argument is lambda('x', ..., body).
func (s *scope) lambdaCall(fn string, e *expr, at *node) (*node, error) {
	minArgs := 2
	if fn == "reduce" {
		minArgs = 3
	}
	if len(e.args) < minArgs {
		return nil, fmt.Errorf("%s() takes %d arguments", e.fn, minArgs)
	}
	list, err := s.eval(e.args[0], at)
	if err != nil {
		return nil, err
	}
	if list.kind == jUnknown {
		return list, nil
	}
	if fn == "mapvalues" && list.kind == jObject {
		lam, err := lambdaOf(e.args[1], 1)
		if err != nil {
			return nil, err
		}
		out := objAt(at)
		for i, k := range list.keys {
			v, err := s.apply(lam, at, list.vals[i])
			if err != nil {
				return nil, err
			}
			out.set(k, v)
		}
		return out, nil
	}
	if list.kind != jArray {
		return nil, fmt.Errorf("%s(): argument 1 is %s, not a list", e.fn, describe(list))
	}
	switch fn {
	case "map", "filter":
		lam, err := lambdaOf(e.args[1], 2)
		if err != nil {
			return nil, err
		}
		out := arrAt(at, nil)
		for i, it := range list.items {
			v, err := s.apply(lam, at, it, numAt(at, int64(i)))
			if err != nil {
				return nil, err
			}
			if fn == "map" {
				out.items = append(out.items, v)
				continue
			}
			switch {
			case v.kind == jUnknown:
				return v, nil
			case v.kind != jBool:
				return nil, fmt.Errorf("filter(): the lambda gives %s, not true or false", describe(v))
			case v.b:
				out.items = append(out.items, it)
			}
		}
		return out, nil
	case "reduce":
		acc, err := s.eval(e.args[1], at)
		if err != nil {
			return nil, err
		}
		lam, err := lambdaOf(e.args[2], 3)
		if err != nil {
			return nil, err
		}
		for i, it := range list.items {
			if acc, err = s.apply(lam, at, acc, it, numAt(at, int64(i))); err != nil {
				return nil, err
			}
		}
		return acc, nil
	case "sort":
		lam, err := lambdaOf(e.args[1], 2)
		if err != nil {
			return nil, err
		}
		items := append([]*node(nil), list.items...)
		var serr error
		sort.SliceStable(items, func(i, j int) bool {
			v, err := s.apply(lam, at, items[i], items[j])
			if err != nil || v.kind != jBool {
				if serr == nil {
					serr = fmt.Errorf("sort(): the lambda does not give true or false")
				}
				return false
			}
			return v.b
		})
		if serr != nil {
			return nil, serr
		}
		return arrAt(at, items), nil
	case "toobject", "groupby":
		klam, err := lambdaOf(e.args[1], 1)
		if err != nil {
			return nil, err
		}
		var vlam *lambda
		if len(e.args) > 2 {
			if vlam, err = lambdaOf(e.args[2], 1); err != nil {
				return nil, err
			}
		}
		out := objAt(at)
		for _, it := range list.items {
			k, err := s.apply(klam, at, it)
			if err != nil {
				return nil, err
			}
			if k.kind == jUnknown {
				return k, nil
			}
			if k.kind != jString {
				return nil, fmt.Errorf("%s(): a key is %s", e.fn, describe(k))
			}
			v := it
			if vlam != nil {
				if v, err = s.apply(vlam, at, it); err != nil {
					return nil, err
				}
			}
			if fn == "groupby" {
				g := out.lookup(k.str)
				if g == nil {
					g = arrAt(at, nil)
					out.set(k.str, g)
				}
				g.items = append(g.items, v)
				continue
			}
			out.set(k.str, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s() is not supported", e.fn)
}

type lambda struct {
	params []string
	body   *expr
}

func lambdaOf(e *expr, maxParams int) (*lambda, error) {
	if e.kind != eCall || !strings.EqualFold(e.fn, "lambda") || len(e.args) < 2 {
		return nil, fmt.Errorf("expected lambda('x', ...)")
	}
	l := &lambda{body: e.args[len(e.args)-1]}
	for _, p := range e.args[:len(e.args)-1] {
		if p.kind != eString {
			return nil, fmt.Errorf("lambda(): a parameter name is not a string")
		}
		l.params = append(l.params, p.s)
	}
	if len(l.params) > maxParams {
		return nil, fmt.Errorf("lambda(): too many parameters")
	}
	return l, nil
}

func (s *scope) apply(l *lambda, at *node, args ...*node) (*node, error) {
	c := *s
	c.lambdas = make(map[string]*node, len(s.lambdas)+len(l.params))
	for k, v := range s.lambdas {
		c.lambdas[k] = v
	}
	for i, p := range l.params {
		if i < len(args) {
			c.lambdas[strings.ToLower(p)] = args[i]
		}
	}
	return c.eval(l.body, at)
}

// userCall calls a user-defined function: its parameters are visible
// through parameters(), and nothing else of the template is.
func (s *scope) userCall(uf *userFunc, args []*node, at *node) (*node, error) {
	if len(args) != len(uf.params) {
		return nil, fmt.Errorf("%s() takes %d arguments", uf.name, len(uf.params))
	}
	if uf.output == nil || s.depth > maxNesting {
		return nil, fmt.Errorf("%s(): no output value", uf.name)
	}
	c := &scope{ctx: s.ctx, src: s.src, params: map[string]*paramSlot{}, vars: map[string]*varSlot{}, funcs: s.funcs, depth: s.depth + 1, where: s.where}
	for i, p := range uf.params {
		c.params[strings.ToLower(p)] = &paramSlot{name: p, def: objAt(at), val: args[i], state: 2}
	}
	return c.value(uf.output), nil
}

// environment() for the Azure public cloud.
func environment(at *node) *node {
	s := func(v string) *node { return &node{kind: jString, str: v, src: at.src, off: at.off} }
	env := objAt(at)
	env.set("name", s("AzureCloud"))
	env.set("gallery", s("https://gallery.azure.com/"))
	env.set("graph", s("https://graph.windows.net/"))
	env.set("portal", s("https://portal.azure.com"))
	env.set("resourceManager", s("https://management.azure.com/"))
	env.set("activeDirectoryDataLake", s("https://datalake.azure.net/"))
	env.set("sqlManagement", s("https://management.core.windows.net:8443/"))
	env.set("vmImageAliasDoc", s("https://raw.githubusercontent.com/Azure/azure-rest-api-specs/master/arm-compute/quickstart-templates/aliases.json"))
	auth := objAt(at)
	auth.set("loginEndpoint", s("https://login.microsoftonline.com/"))
	auth.set("audiences", arrAt(at, []*node{s("https://management.core.windows.net/"), s("https://management.azure.com/")}))
	auth.set("tenant", s("common"))
	auth.set("identityProvider", s("AAD"))
	env.set("authentication", auth)
	suf := objAt(at)
	suf.set("acrLoginServer", s(".azurecr.io"))
	suf.set("azureDatalakeAnalyticsCatalogAndJob", s("azuredatalakeanalytics.net"))
	suf.set("azureDatalakeStoreFileSystem", s("azuredatalakestore.net"))
	suf.set("azureFrontDoorEndpointSuffix", s("azurefd.net"))
	suf.set("keyvaultDns", s(".vault.azure.net"))
	suf.set("sqlServerHostname", s(".database.windows.net"))
	suf.set("storage", s("core.windows.net"))
	env.set("suffixes", suf)
	return env
}

// uniqueString is ARM's uniqueString(): the arguments joined by '-', hashed
// with the 64-bit MurmurHash variant Azure Resource Manager uses, the top 65
// bits written as 13 base-32 characters (a-z, 2-7).
func uniqueString(parts ...string) string {
	h := murmur64([]byte(strings.Join(parts, "-")))
	const alpha = "abcdefghijklmnopqrstuvwxyz234567"
	var b [13]byte
	for i := range b {
		b[i] = alpha[h>>59]
		h <<= 5
	}
	return string(b[:])
}

// murmur64 is the MurmurHash64 variant of Azure Resource Manager: two
// 32-bit lanes over 8-byte blocks, seed 0.
func murmur64(data []byte) uint64 {
	const (
		c1 = 0x239b961b
		c2 = 0xab0e9789
		c3 = 0x85ebca6b
		c4 = 0xc2b2ae35
	)
	rotl := func(x uint32, r uint) uint32 { return x<<r | x>>(32-r) }
	le := func(b []byte) uint32 { return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24 }
	var h1, h2 uint32
	n := len(data)
	i := 0
	for ; i+8 <= n; i += 8 {
		k1 := le(data[i:])
		k2 := le(data[i+4:])
		k1 = rotl(k1*c1, 15) * c2
		h1 = rotl(h1^k1, 19) + h2
		h1 = h1*5 + 0x561ccd1b
		k2 = rotl(k2*c2, 17) * c1
		h2 = rotl(h2^k2, 13) + h1
		h2 = h2*5 + 0x0bcaa747
	}
	if rem := n - i; rem > 0 {
		var k1 uint32
		for j := 0; j < rem && j < 4; j++ {
			k1 |= uint32(data[i+j]) << (8 * j)
		}
		h1 ^= rotl(k1*c1, 15) * c2
		if rem > 4 {
			var k2 uint32
			for j := 4; j < rem; j++ {
				k2 |= uint32(data[i+j]) << (8 * (j - 4))
			}
			h2 ^= rotl(k2*c2, 17) * c1
		}
	}
	h2 ^= uint32(n)
	h1 = (h1 ^ uint32(n)) + h2
	h2 += h1
	fmix := func(h uint32) uint32 {
		h = (h ^ h>>16) * c3
		h = (h ^ h>>13) * c4
		return h ^ h>>16
	}
	h1, h2 = fmix(h1), fmix(h2)
	h1 += h2
	h2 += h1
	return uint64(h2)<<32 | uint64(h1)
}

// armGUID is ARM's guid(): a name-based (version 5, SHA-1) UUID of the
// arguments joined by '-' in the namespace 11fb06fb-712d-4ddd-98c7-e71bbd588830.
func armGUID(parts ...string) string {
	ns := []byte{0x11, 0xfb, 0x06, 0xfb, 0x71, 0x2d, 0x4d, 0xdd, 0x98, 0xc7, 0xe7, 0x1b, 0xbd, 0x58, 0x88, 0x30}
	h := sha1.New()
	h.Write(ns)
	h.Write([]byte(strings.Join(parts, "-")))
	sum := h.Sum(nil)
	u := sum[:16]
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

package azure

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// ARM template evaluation, as Azure Resource Manager does it for a
// deployment: parameters (given values, then defaultValue), variables
// (evaluated once, on first use), copy loops at resource, property and
// variable level, condition, child resources, and nested deployments
// (Microsoft.Resources/deployments with an inline template, what Bicep
// modules compile to) with inner or outer expression scope and their
// parameters and outputs. The result is the list of resources Azure would
// deploy, every expression evaluated. A value only known once deployed (a
// parameter without a value, a public IP address, resourceGroup().location
// when --location is not given) is a jUnknown node that names itself; the
// importer reports it where a rule needs it.

// Limits that keep a hostile template from taking exponential time or memory.
const (
	maxEvalSteps  = 2000000
	maxEvalBytes  = 64 << 20
	maxValueLen   = 1 << 16 // items of one array, characters of one string
	maxCopyCount  = 800     // ARM's own limit on copy loops
	maxNesting    = 32      // nested deployments, variable chains
	maxWeight     = 1 << 20 // values in one evaluated value, shared ones counted each time
	maxRefNesting = 256     // variables and parameters evaluated inside each other
)

// weigh returns the number of values in n, counting a shared value every
// time it appears; it stops counting past maxWeight.
func weigh(n *node) int {
	if n.weight > 0 {
		return n.weight
	}
	w := 1
	for _, c := range n.items {
		if w += weigh(c); w > maxWeight {
			break
		}
	}
	for _, c := range n.vals {
		if w > maxWeight {
			break
		}
		w += weigh(c)
	}
	n.weight = w
	return w
}

// bounded fails a value that holds too many values.
func bounded(n *node, at *node) *node {
	if n != nil && (n.kind == jArray || n.kind == jObject) && weigh(n) > maxWeight {
		return failedNode(at, "a value too large (more than %d items in all)", maxWeight)
	}
	return n
}

// Deploy is what a deployment knows that a template does not: the values
// `az deployment group create` would be given.
type Deploy struct {
	// Parameters are given values by name (--parameters). A value from a
	// NAME=VALUE argument is a string node with fromText set: it is
	// converted to the parameter's declared type.
	Parameters map[string]ParamValue
	// PublicIPs maps a public IP address resource's name to the address
	// Azure gave it (--public-ip NAME=ADDRESS).
	PublicIPs map[string]string
	// References give the deployed state of resources the template does
	// not deploy but reads with reference() (--reference NAME=JSON), by
	// resource ID or name.
	References map[string]*node
	// ResourceGroup, Subscription and Location describe the target
	// resource group. Names default to placeholders (they only appear in
	// resource IDs and generated names); Location is unknown when empty.
	ResourceGroup, Subscription, Location string
}

// ParamValue is one given parameter value.
type ParamValue struct {
	n *node
	// text is set for NAME=VALUE arguments: the value is converted to the
	// parameter's type as az does.
	text bool
	// from says where the value came from, for messages.
	from string
}

// evalCtx is shared by every scope of one import.
type evalCtx struct {
	dep        Deploy
	paramsUsed map[string]bool
	ipsUsed    map[string]bool
	refsUsed   map[string]bool
	steps      int
	bytes      int
	declared   []*declared
	byID       map[string]*declared // "type name" (lower case)
	bySym      map[string]*declared // symbolic name
	byName     map[string]*declared // name (lower case)
	tooMany    bool
	// nesting counts variables and parameters being evaluated inside each
	// other (a long chain would exhaust the stack).
	nesting int
	// linkable are the input templates a templateLink may name.
	linkable []*linkable
	warn     func(path, msg string, pos policy.Pos, eff Effect, unknown string)
	errs     policy.ErrorList
}

func newEvalCtx(dep Deploy) *evalCtx {
	if dep.ResourceGroup == "" {
		dep.ResourceGroup = "resourceGroup"
	}
	if dep.Subscription == "" {
		dep.Subscription = "00000000-0000-0000-0000-000000000000"
	}
	return &evalCtx{dep: dep, paramsUsed: map[string]bool{}, ipsUsed: map[string]bool{}, refsUsed: map[string]bool{}}
}

// scope is what the expressions of one template see.
type scope struct {
	ctx     *evalCtx
	src     *source
	literal bool // az CLI output: nothing is an expression
	params  map[string]*paramSlot
	vars    map[string]*varSlot
	funcs   map[string]*userFunc
	copies  map[string]int   // copy loop name (lower case) -> index; "" is the resource's loop
	lambdas map[string]*node // lambda variables
	depth   int              // nesting of deployments
	where   string           // "" for the top template, else the nested deployment's path
}

type paramSlot struct {
	name  string
	def   *node // the parameter's declaration
	given *ParamValue
	val   *node
	state uint8 // 0 new, 1 evaluating, 2 done
}

type varSlot struct {
	name  string
	raw   *node
	val   *node
	state uint8
}

type userFunc struct {
	name   string
	params []string
	output *node
}

// withCopy returns s with a copy loop index set.
func (s *scope) withCopy(name string, i int) *scope {
	c := *s
	c.copies = make(map[string]int, len(s.copies)+1)
	for k, v := range s.copies {
		c.copies[k] = v
	}
	c.copies[strings.ToLower(name)] = i
	return &c
}

func unknownNode(at *node, what, hint string) *node {
	n := &node{kind: jUnknown, unk: &unknown{what: what, hint: hint}}
	if at != nil {
		n.src, n.off = at.src, at.off
	}
	return n
}

func failedNode(at *node, format string, args ...any) *node {
	n := unknownNode(at, fmt.Sprintf(format, args...), "")
	n.unk.failed = true
	return n
}

func (s *scope) str(at *node, v string) (*node, error) {
	s.ctx.bytes += len(v)
	if s.ctx.bytes > maxEvalBytes {
		return nil, fmt.Errorf("the template's expressions build too much text")
	}
	if len(v) > maxValueLen*16 {
		return nil, fmt.Errorf("a string too long (more than %d characters)", maxValueLen*16)
	}
	return &node{kind: jString, str: v, src: at.src, off: at.off}, nil
}

func numAt(at *node, v int64) *node {
	return &node{kind: jNumber, str: strconv.FormatInt(v, 10), src: at.src, off: at.off}
}

func boolAt(at *node, b bool) *node { return &node{kind: jBool, b: b, src: at.src, off: at.off} }

func arrAt(at *node, items []*node) *node {
	return &node{kind: jArray, items: items, src: at.src, off: at.off}
}

func objAt(at *node) *node { return &node{kind: jObject, src: at.src, off: at.off} }

func nullAt(at *node) *node { return &node{kind: jNull, src: at.src, off: at.off} }

func (n *node) set(key string, v *node) {
	for i, k := range n.keys {
		if strings.EqualFold(k, key) {
			n.vals[i] = v
			return
		}
	}
	n.keys = append(n.keys, key)
	n.vals = append(n.vals, v)
}

// newTemplateScope builds the scope of a template: its parameters (given
// values from given, which may be nil), variables and user functions.
func newTemplateScope(ctx *evalCtx, src *source, t *node, given map[string]*ParamValue, depth int, where string) *scope {
	s := &scope{ctx: ctx, src: src, params: map[string]*paramSlot{}, vars: map[string]*varSlot{},
		funcs: map[string]*userFunc{}, depth: depth, where: where}
	if p := t.lookup("parameters"); p != nil && p.kind == jObject {
		for i, k := range p.keys {
			slot := &paramSlot{name: k, def: p.vals[i]}
			if g, ok := given[strings.ToLower(k)]; ok {
				slot.given = g
				if depth == 0 {
					ctx.paramsUsed[strings.ToLower(k)] = true
				}
			}
			s.params[strings.ToLower(k)] = slot
		}
	}
	if v := t.lookup("variables"); v != nil && v.kind == jObject {
		for i, k := range v.keys {
			if strings.EqualFold(k, "copy") && v.vals[i].kind == jArray {
				// Variable iteration: each item defines a variable that is a list.
				for _, it := range v.vals[i].items {
					if nm := it.lookup("name"); nm != nil && nm.kind == jString {
						s.vars[strings.ToLower(nm.str)] = &varSlot{name: nm.str, raw: &node{kind: jObject, src: it.src, off: it.off,
							keys: []string{"copy"}, vals: []*node{{kind: jArray, items: []*node{it}, src: it.src, off: it.off}}}}
					}
				}
				continue
			}
			s.vars[strings.ToLower(k)] = &varSlot{name: k, raw: v.vals[i]}
		}
	}
	if depth == 0 {
		// Azure checks every given value against its parameter before it deploys.
		if p := t.lookup("parameters"); p != nil && p.kind == jObject {
			for _, k := range p.keys {
				if slot := s.params[strings.ToLower(k)]; slot != nil && slot.given != nil {
					s.param(slot.name, slot.def)
				}
			}
		}
	}
	if fs := t.lookup("functions"); fs != nil && fs.kind == jArray {
		for _, ns := range fs.items {
			nsName := ""
			if x := ns.lookup("namespace"); x != nil && x.kind == jString {
				nsName = x.str
			}
			members := ns.lookup("members")
			if members == nil || members.kind != jObject {
				continue
			}
			for i, fname := range members.keys {
				m := members.vals[i]
				uf := &userFunc{name: nsName + "." + fname}
				if ps := m.lookup("parameters"); ps != nil && ps.kind == jArray {
					for _, p := range ps.items {
						if x := p.lookup("name"); x != nil && x.kind == jString {
							uf.params = append(uf.params, x.str)
						}
					}
				}
				if o := m.lookup("output"); o != nil {
					uf.output = o.lookup("value")
				}
				s.funcs[strings.ToLower(uf.name)] = uf
			}
		}
	}
	return s
}

// param returns a parameter's value: the given one, else its default, else
// an unknown value that names it.
func (s *scope) param(name string, at *node) (*node, error) {
	slot, ok := s.params[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("no parameter %q in the template", name)
	}
	switch slot.state {
	case 2:
		return slot.val, nil
	case 1:
		return nil, fmt.Errorf("parameter %q refers to itself", name)
	}
	if s.ctx.nesting >= maxRefNesting {
		return nil, fmt.Errorf("parameters and variables refer to each other more than %d deep", maxRefNesting)
	}
	s.ctx.nesting++
	defer func() { s.ctx.nesting-- }()
	slot.state = 1
	defer func() { slot.state = 2 }()
	typ := ""
	if t := slot.def.lookup("type"); t != nil && t.kind == jString {
		typ = strings.ToLower(t.str)
	}
	if g := slot.given; g != nil {
		v, err := convertParam(g, typ)
		if err != nil {
			s.ctx.errs = append(s.ctx.errs, &policy.Error{Pos: g.n.pos(), Msg: fmt.Sprintf("parameter %q (%s): %v", slot.name, g.from, err)})
			slot.val = failedNode(at, "parameter %q: %v", slot.name, err)
			return slot.val, nil
		}
		if err := allowed(slot.def, v); err != nil {
			s.ctx.errs = append(s.ctx.errs, &policy.Error{Pos: g.n.pos(), Msg: fmt.Sprintf("parameter %q (%s): %v", slot.name, g.from, err)})
		}
		slot.val = v
		return v, nil
	}
	if dv := slot.def.lookup("defaultValue"); dv != nil {
		slot.val = s.value(dv)
		return slot.val, nil
	}
	what := fmt.Sprintf("parameter %q", slot.name)
	if s.where != "" {
		what += " of the nested deployment " + s.where
	}
	hint := "give it with --parameters " + slot.name + "=VALUE"
	if s.depth > 0 {
		hint = "the nested deployment does not pass it"
	}
	slot.val = unknownNode(at, what+" has no value", hint)
	return slot.val, nil
}

// convertParam turns a given value into the parameter's type, as az does
// with NAME=VALUE arguments.
func convertParam(g *ParamValue, typ string) (*node, error) {
	n := g.n
	if !g.text {
		return n, nil
	}
	switch typ {
	case "int":
		i, err := strconv.ParseInt(strings.TrimSpace(n.str), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", n.str)
		}
		return numAt(n, i), nil
	case "bool":
		switch strings.ToLower(strings.TrimSpace(n.str)) {
		case "true":
			return boolAt(n, true), nil
		case "false":
			return boolAt(n, false), nil
		}
		return nil, fmt.Errorf("%q is not true or false", n.str)
	case "array", "object", "secureobject":
		src := &source{name: g.from, data: []byte(n.str)}
		roots, err := parseJSON(src)
		if err != nil || len(roots) != 1 {
			return nil, fmt.Errorf("%q is not a JSON %s", n.str, typ)
		}
		want := jArray
		if typ != "array" {
			want = jObject
		}
		if roots[0].kind != want {
			return nil, fmt.Errorf("%q is not a JSON %s", n.str, typ)
		}
		return roots[0], nil
	}
	return n, nil
}

// allowed checks a given value against the parameter's allowedValues.
func allowed(def, v *node) error {
	av := def.lookup("allowedValues")
	if av == nil || av.kind != jArray || v.kind == jUnknown {
		return nil
	}
	if v.kind == jArray { // every item must be allowed
		for _, it := range v.items {
			if err := allowed(def, it); err != nil {
				return err
			}
		}
		return nil
	}
	for _, a := range av.items {
		if deepEqual(a, v) {
			return nil
		}
	}
	return fmt.Errorf("%s is not one of the allowedValues", describe(v))
}

// variable returns a variable's value, evaluating it on first use.
func (s *scope) variable(name string, at *node) (*node, error) {
	slot, ok := s.vars[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("no variable %q in the template", name)
	}
	switch slot.state {
	case 2:
		return slot.val, nil
	case 1:
		return nil, fmt.Errorf("variable %q refers to itself", name)
	}
	if s.ctx.nesting >= maxRefNesting {
		return nil, fmt.Errorf("parameters and variables refer to each other more than %d deep", maxRefNesting)
	}
	s.ctx.nesting++
	defer func() { s.ctx.nesting-- }()
	slot.state = 1
	c := *s
	c.copies, c.lambdas = nil, nil // variables are evaluated once, outside any loop
	slot.val = c.value(slot.raw)
	if slot.raw.kind == jObject && len(slot.raw.keys) == 1 && strings.EqualFold(slot.raw.keys[0], "copy") && slot.val.kind == jObject {
		// A variable from variables.copy is the list itself.
		if l := slot.val.lookup(slot.name); l != nil {
			slot.val = l
		}
	}
	slot.state = 2
	return slot.val, nil
}

// value evaluates n deeply: every expression in it, property copy loops.
// It never fails: what cannot be evaluated becomes an unknown value.
func (s *scope) value(n *node) *node {
	if n == nil {
		return nil
	}
	if s.literal {
		return n
	}
	s.ctx.steps++
	if s.ctx.steps > maxEvalSteps {
		return failedNode(n, "the template takes too long to evaluate")
	}
	switch n.kind {
	case jString:
		if strings.HasPrefix(n.str, "[[") {
			c := *n
			c.str = n.str[1:]
			return &c
		}
		if !isExpr(n.str) {
			return n
		}
		v, err := s.evalString(n)
		if err != nil {
			return failedNode(n, "expression %s: %v", clip(n.str), err)
		}
		return v
	case jArray:
		out := arrAt(n, make([]*node, len(n.items)))
		for i, it := range n.items {
			out.items[i] = s.value(it)
		}
		return bounded(out, n)
	case jObject:
		out := objAt(n)
		for i, k := range n.keys {
			v := n.vals[i]
			if strings.EqualFold(k, "copy") && v.kind == jArray && isPropertyCopy(v) {
				for _, loop := range v.items {
					name, list := s.propertyCopy(loop)
					if name != "" {
						out.set(name, list)
					}
				}
				continue
			}
			out.keys = append(out.keys, k)
			out.vals = append(out.vals, s.value(v))
		}
		return bounded(out, n)
	}
	return n
}

func clip(s string) string {
	if len(s) > 120 {
		return s[:117] + "..."
	}
	return s
}

// isPropertyCopy tells a property iteration (copy: [{name, count, input}])
// from a property that happens to be named copy.
func isPropertyCopy(v *node) bool {
	if len(v.items) == 0 {
		return false
	}
	for _, it := range v.items {
		if it.kind != jObject || it.lookup("name") == nil || it.lookup("count") == nil {
			return false
		}
	}
	return true
}

// propertyCopy evaluates one property iteration into its list.
func (s *scope) propertyCopy(loop *node) (string, *node) {
	nm := s.value(loop.lookup("name"))
	if nm == nil || nm.kind != jString || nm.str == "" {
		return "", nil
	}
	count, err := s.count(loop.lookup("count"))
	if err != nil {
		return nm.str, failedNode(loop, "copy loop %q: %v", nm.str, err)
	}
	if count.kind == jUnknown {
		return nm.str, count
	}
	k, _ := strconv.Atoi(count.str)
	input := loop.lookup("input")
	out := arrAt(loop, make([]*node, 0, k))
	for i := 0; i < k; i++ {
		if input == nil {
			out.items = append(out.items, numAt(loop, int64(i)))
			continue
		}
		out.items = append(out.items, s.withCopy(nm.str, i).value(input))
	}
	return nm.str, out
}

// count evaluates a copy loop's count: a whole number 0-800, or unknown.
func (s *scope) count(n *node) (*node, error) {
	if n == nil {
		return nil, fmt.Errorf("no count")
	}
	v := s.value(n)
	switch v.kind {
	case jUnknown:
		return v, nil
	case jNumber, jString:
		k, err := strconv.Atoi(strings.TrimSpace(v.str))
		if err != nil || k < 0 {
			return nil, fmt.Errorf("count %s is not a whole number", describe(v))
		}
		if k > maxCopyCount {
			return nil, fmt.Errorf("count %d is more than %d", k, maxCopyCount)
		}
		return numAt(v, int64(k)), nil
	}
	return nil, fmt.Errorf("count is %s", describe(v))
}

// evalString evaluates an expression string.
func (s *scope) evalString(n *node) (*node, error) {
	if s.depth > maxNesting {
		return nil, fmt.Errorf("nested too deeply")
	}
	e, err := parseExpr(n.str[1 : len(n.str)-1])
	if err != nil {
		return nil, err
	}
	v, err := s.eval(e, n)
	if err != nil {
		return nil, err
	}
	return bounded(v, n), nil
}

// declared is one resource a template declares, deployed or not.
type declared struct {
	typ, name string // full type (Microsoft.Network/firewallPolicies/ruleCollectionGroups) and name (pol/rcg)
	sym       string // symbolic name (languageVersion 2.0)
	raw       *node
	sc        *scope
	deployed  bool
	existing  bool
	// condUnknown is set when the resource's condition is only known at deployment.
	condUnknown *node
	// body is the evaluated resource (relevant types only).
	body *node
	// nested is the scope of a nested deployment's template and its outputs.
	nested *nestedDeployment
	// path names the resource for messages: [deployment/]type name.
	path string
}

type nestedDeployment struct {
	sc      *scope
	outputs *node
	val     *node
	linked  bool
}

// relevantType reports whether the importer reads resources of type t.
func relevantType(t string) bool {
	t = strings.ToLower(t)
	return strings.HasPrefix(t, "microsoft.network/firewallpolicies") || t == "microsoft.network/azurefirewalls" ||
		t == "microsoft.network/ipgroups"
}

// expand declares the resources of a template (a list, or an object of
// symbolic names) and those of its child resources and nested deployments.
func (s *scope) expand(rs *node, parentType, parentName string) {
	if rs == nil {
		return
	}
	var items []*node
	var syms []string
	switch rs.kind {
	case jArray:
		items = rs.items
		syms = make([]string, len(items))
	case jObject:
		items = rs.vals
		syms = rs.keys
	default:
		return
	}
	for i, r := range items {
		if r.kind != jObject {
			continue
		}
		s.declare(r, syms[i], parentType, parentName)
	}
}

func (s *scope) declare(r *node, sym, parentType, parentName string) {
	iters := []*scope{s}
	if c := r.lookup("copy"); c != nil && c.kind == jObject && !s.literal {
		nm := s.value(c.lookup("name"))
		loop := ""
		if nm != nil && nm.kind == jString {
			loop = nm.str
		}
		count, err := s.count(c.lookup("count"))
		switch {
		case err != nil:
			s.ctx.warn(s.resourcePath(r, parentType, parentName), fmt.Sprintf("copy loop %q: %v: not imported: STRICTER or LOOSER, depending on what it deploys", loop, err), c.pos(), EffectUnknown, fmt.Sprintf("copy loop %q: %v", loop, err))
			return
		case count.kind == jUnknown:
			s.ctx.warn(s.resourcePath(r, parentType, parentName), fmt.Sprintf("copy loop %q: the number of copies is unknown: %s: not imported: STRICTER or LOOSER, depending on what it deploys", loop, count.unk), c.pos(), EffectUnknown, count.unk.String())
			return
		}
		k, _ := strconv.Atoi(count.str)
		iters = iters[:0]
		for i := 0; i < k; i++ {
			is := s.withCopy("", i)
			if loop != "" {
				is.copies[strings.ToLower(loop)] = i
			}
			iters = append(iters, is)
		}
	}
	for _, is := range iters {
		is.declareOne(r, sym, parentType, parentName)
	}
}

// resourcePath names a resource for a message before it is evaluated.
func (s *scope) resourcePath(r *node, parentType, parentName string) string {
	name := ""
	if nm := r.lookup("name"); nm != nil && nm.kind == jString {
		name = nm.str
		if v := s.value(nm); v.kind == jString {
			name = v.str
			if parentName != "" && !strings.Contains(name, "/") {
				name = parentName + "/" + name
			}
		}
	}
	if s.where != "" {
		return s.where + "/" + name
	}
	return name
}

func (s *scope) declareOne(r *node, sym, parentType, parentName string) {
	d := &declared{raw: r, sc: s, sym: sym}
	typ := ""
	if t := s.value(r.lookup("type")); t != nil && t.kind == jString {
		typ = strings.TrimSpace(t.str)
	}
	if i := strings.IndexByte(typ, '@'); i >= 0 { // Bicep-style type@version
		typ = typ[:i]
	}
	name := ""
	if nm := r.lookup("name"); nm != nil {
		v := s.value(nm)
		switch {
		case v.kind == jString:
			name = strings.TrimSpace(v.str)
		case nm.kind == jString:
			if suf, ok := nameSuffix(nm.str); ok {
				name = "?/" + suf
			}
		}
	}
	if parentType != "" {
		if !strings.Contains(typ, "/") {
			typ = parentType + "/" + typ
		}
		if strings.Count(name, "/") < strings.Count(typ, "/")-1 {
			name = parentName + "/" + name
		}
	}
	d.typ, d.name = typ, name
	d.path = name
	if s.where != "" {
		d.path = s.where + "/" + name
	}
	if b := r.lookup("existing"); b != nil && b.kind == jBool && b.b {
		d.existing = true
		s.ctx.addDeclared(d)
		return
	}
	d.deployed = true
	if c := r.lookup("condition"); c != nil && !s.literal {
		v := s.value(c)
		switch {
		case v.kind == jBool && !v.b:
			d.deployed = false
		case v.kind == jBool:
		case v.kind == jUnknown:
			d.condUnknown = v
		default:
			d.condUnknown = failedNode(c, "condition is %s, not true or false", describe(v))
		}
	}
	if !s.ctx.addDeclared(d) {
		return
	}
	if !d.deployed {
		if relevantType(typ) || strings.EqualFold(typ, "Microsoft.Resources/deployments") && mentionsFirewall(r, 0) {
			s.ctx.warn(d.path, "condition is false, so Azure does not deploy this resource: not imported (as in Azure)", r.lookup("condition").pos(), EffectNone, "")
		}
		return
	}
	if strings.EqualFold(typ, "Microsoft.Resources/deployments") {
		s.nestedDeployment(d)
	}
	if ch := r.lookup("resources"); ch != nil {
		s.expand(ch, typ, name)
	}
}

// nestedDeployment declares a nested deployment's resources.
func (s *scope) nestedDeployment(d *declared) {
	props := d.raw.lookup("properties")
	nd := &nestedDeployment{}
	d.nested = nd
	short := d.name
	if i := strings.LastIndexByte(short, '/'); i >= 0 {
		short = short[i+1:]
	}
	where := short
	if s.where != "" {
		where = s.where + "/" + short
	}
	if props == nil || props.kind != jObject {
		return
	}
	t := props.lookup("template")
	linkedSrc := s.src
	if t == nil || t.kind != jObject {
		if tl := props.lookup("templateLink"); tl != nil {
			if l := s.ctx.findLinked(s, tl); l != nil {
				t, linkedSrc = l.t, l.src
				l.used = true
				s.ctx.warn(where, fmt.Sprintf("nested deployment of the linked template %s: evaluated from the input file %s with the parameters this deployment passes", l.uri, l.src.name), tl.pos(), EffectNone, "")
			}
		}
	}
	if t == nil || t.kind != jObject {
		if tl := props.lookup("templateLink"); tl != nil {
			nd.linked = true
			uri := ""
			if u := s.value(tl.lookup("uri")); u != nil && u.kind == jString {
				uri = " " + u.str
			} else if id := s.value(tl.lookup("id")); id != nil && id.kind == jString {
				uri = " " + id.str
			}
			s.ctx.warn(where, fmt.Sprintf("nested deployment of the linked template%s: linked templates are not fetched, so any firewall rules it deploys are not imported: STRICTER or LOOSER, depending on them (give the linked template's file too: it is matched by its file name and evaluated with the parameters this deployment passes)", uri), tl.pos(), EffectUnknown, "the linked template"+uri)
		}
		return
	}
	inner := linkedSrc != s.src // a linked template has its own scope
	if eo := props.lookup("expressionEvaluationOptions"); eo != nil {
		if sc := s.value(eo.lookup("scope")); sc != nil && sc.kind == jString && strings.EqualFold(sc.str, "inner") {
			inner = true
		}
	}
	var ns *scope
	if inner {
		given := map[string]*ParamValue{}
		if ps := props.lookup("parameters"); ps != nil && ps.kind == jObject {
			for i, k := range ps.keys {
				pv := ps.vals[i]
				var v *node
				switch {
				case pv.lookup("value") != nil:
					v = s.value(pv.lookup("value"))
				case pv.lookup("reference") != nil:
					v = unknownNode(pv, fmt.Sprintf("parameter %q of the nested deployment %s comes from a Key Vault secret", k, where), "only known at deployment")
				default:
					v = failedNode(pv, "parameter %q of the nested deployment %s has neither value nor reference", k, where)
				}
				given[strings.ToLower(k)] = &ParamValue{n: v, from: "passed by the nested deployment " + where}
			}
		}
		ns = newTemplateScope(s.ctx, linkedSrc, t, given, s.depth+1, where)
		for k, g := range given {
			if _, ok := ns.params[k]; !ok {
				s.ctx.errs = append(s.ctx.errs, &policy.Error{Pos: g.n.pos(), Msg: fmt.Sprintf("nested deployment %s passes the parameter %q, which its template does not declare", where, k)})
			}
		}
	} else {
		// Outer scope: the nested template's expressions see the parent's
		// parameters and variables.
		c := *s
		c.where = where
		c.depth = s.depth + 1
		ns = &c
	}
	nd.sc = ns
	nd.outputs = t.lookup("outputs")
	if ns.depth > maxNesting {
		s.ctx.warn(where, "nested deployments nested too deeply: not imported: STRICTER or LOOSER, depending on what they deploy", t.pos(), EffectUnknown, "nested deployments nested too deeply")
		return
	}
	ns.expand(t.lookup("resources"), "", "")
}

// outputs evaluates a nested deployment's outputs: {name: {type, value}}.
func (nd *nestedDeployment) outputsValue(at *node) *node {
	if nd.val != nil {
		return nd.val
	}
	out := objAt(at)
	out.runtime = "the nested deployment's outputs"
	if nd.outputs != nil && nd.outputs.kind == jObject && nd.sc != nil {
		for i, k := range nd.outputs.keys {
			o := nd.outputs.vals[i]
			ov := objAt(o)
			if t := o.lookup("type"); t != nil {
				ov.set("type", t)
			}
			if v := o.lookup("value"); v != nil {
				ov.set("value", nd.sc.value(v))
			} else if c := o.lookup("copy"); c != nil {
				_, l := nd.sc.propertyCopy(c)
				ov.set("value", l)
			}
			out.set(k, ov)
		}
	}
	nd.val = out
	return out
}

// body evaluates a declared resource.
func (d *declared) evaluate() *node {
	if d.body != nil {
		return d.body
	}
	out := objAt(d.raw)
	for i, k := range d.raw.keys {
		switch strings.ToLower(k) {
		case "copy", "condition", "resources", "dependson", "existing":
			continue
		case "type":
			out.set(k, &node{kind: jString, str: d.typ, src: d.raw.vals[i].src, off: d.raw.vals[i].off})
			continue
		case "name":
			out.set(k, &node{kind: jString, str: d.name, src: d.raw.vals[i].src, off: d.raw.vals[i].off})
			continue
		}
		out.keys = append(out.keys, k)
		out.vals = append(out.vals, d.sc.value(d.raw.vals[i]))
	}
	d.body = out
	return out
}

// findDeclared finds the resource a reference() or resourceId names:
// a resource ID, a symbolic name or a bare name.
func (ctx *evalCtx) findDeclared(ref string) *declared {
	ref = strings.TrimSpace(ref)
	if typ, name := parseResourceID(ref); typ != "" {
		return ctx.byID[strings.ToLower(typ+" "+name)]
	}
	if d := ctx.bySym[ref]; d != nil {
		return d
	}
	return ctx.byName[strings.ToLower(ref)]
}

// maxDeclared bounds the resources of one deployment (ARM's own limit is
// 800 per template, copies included; nested deployments add theirs).
const maxDeclared = 20000

// addDeclared records a resource and indexes it for reference(); it
// reports false past maxDeclared (the deployment is then cut short, with
// an error).
func (ctx *evalCtx) addDeclared(d *declared) bool {
	if len(ctx.declared) >= maxDeclared {
		if !ctx.tooMany {
			ctx.tooMany = true
			ctx.errs = append(ctx.errs, &policy.Error{Pos: d.raw.pos(), Msg: fmt.Sprintf("the deployment declares more than %d resources", maxDeclared)})
		}
		return false
	}
	ctx.declared = append(ctx.declared, d)
	if ctx.byID == nil {
		ctx.byID, ctx.bySym, ctx.byName = map[string]*declared{}, map[string]*declared{}, map[string]*declared{}
	}
	if k := strings.ToLower(d.typ + " " + d.name); ctx.byID[k] == nil {
		ctx.byID[k] = d
	}
	if d.sym != "" && ctx.bySym[d.sym] == nil {
		ctx.bySym[d.sym] = d
	}
	if k := strings.ToLower(d.name); ctx.byName[k] == nil {
		ctx.byName[k] = d
	}
	return true
}

// parseResourceID splits ".../providers/Microsoft.Network/firewallPolicies/p/ruleCollectionGroups/g"
// into its type and name ("Microsoft.Network/firewallPolicies/ruleCollectionGroups", "p/g").
func parseResourceID(id string) (typ, name string) {
	i := strings.LastIndex(strings.ToLower(id), "/providers/")
	if i < 0 {
		return "", ""
	}
	segs := strings.Split(strings.Trim(id[i+len("/providers/"):], "/"), "/")
	if len(segs) < 3 {
		return "", ""
	}
	types := []string{segs[0]}
	var names []string
	for j := 1; j+1 < len(segs); j += 2 {
		types = append(types, segs[j])
		names = append(names, segs[j+1])
	}
	return strings.Join(types, "/"), strings.Join(names, "/")
}

// reference returns what reference() gives for a resource of the template:
// its declared properties, where a property only known once deployed is
// unknown. Public IP addresses come from --public-ip; nested deployments
// give their outputs.
func (s *scope) reference(ref string, full bool, at *node) *node {
	// The deployed state given with --reference wins over what the template declares.
	if v := s.ctx.givenReference(ref); v != nil {
		if full {
			out := objAt(at)
			out.runtime = ref
			out.set("properties", v)
			return out
		}
		return v
	}
	d := s.ctx.findDeclared(ref)
	if d == nil {
		return unknownNode(at, fmt.Sprintf("the state of the resource %s, which the template does not deploy", ref), "give it with --reference "+ref+"=JSON")
	}
	label := d.typ + " " + d.name
	var props *node
	switch {
	case d.nested != nil:
		props = objAt(at)
		props.runtime = "the nested deployment " + d.name
		props.set("outputs", d.nested.outputsValue(at))
	default:
		body := d.evaluate()
		props = objAt(at)
		if p := body.lookup("properties"); p != nil && p.kind == jObject {
			props.keys = append(props.keys, p.keys...)
			props.vals = append(props.vals, p.vals...)
		}
		props.runtime = label
		switch strings.ToLower(d.typ) {
		case "microsoft.network/publicipaddresses":
			short := d.name
			addr, ok := "", false
			for k, v := range s.ctx.dep.PublicIPs {
				if strings.EqualFold(k, short) {
					addr, ok = v, true
					s.ctx.ipsUsed[strings.ToLower(k)] = true
				}
			}
			if ok {
				props.set("ipAddress", &node{kind: jString, str: addr, src: at.src, off: at.off})
			} else {
				props.set("ipAddress", unknownNode(at, fmt.Sprintf("the address of the public IP %s", short), "give it with --public-ip "+short+"=ADDRESS"))
			}
		case "microsoft.network/networkinterfaces":
			// privateIPAddress is what the template says only for static allocation.
			if ics := props.lookup("ipConfigurations"); ics != nil && ics.kind == jArray {
				cp := arrAt(ics, nil)
				for _, ic := range ics.items {
					icp := ic.lookup("properties")
					if icp == nil || icp.kind != jObject {
						cp.items = append(cp.items, ic)
						continue
					}
					m := icp.lookup("privateIPAllocationMethod")
					if m != nil && m.kind == jString && strings.EqualFold(m.str, "Static") {
						cp.items = append(cp.items, ic)
						continue
					}
					c2 := *icp
					c2.keys = append([]string(nil), icp.keys...)
					c2.vals = append([]*node(nil), icp.vals...)
					c2.set("privateIPAddress", unknownNode(at, "the dynamic private IP address of "+label, "give it with --reference "+d.name+`={"ipConfigurations": [{"properties": {"privateIPAddress": "ADDRESS"}}]}`))
					ic2 := *ic
					ic2.keys = append([]string(nil), ic.keys...)
					ic2.vals = append([]*node(nil), ic.vals...)
					ic2.set("properties", &c2)
					cp.items = append(cp.items, &ic2)
				}
				props.set("ipConfigurations", cp)
			}
		}
	}
	if !full {
		return props
	}
	out := objAt(at)
	out.runtime = label
	out.set("properties", props)
	if d.nested == nil {
		body := d.evaluate()
		for _, k := range []string{"location", "tags", "sku", "zones", "kind", "identity"} {
			if v := body.lookup(k); v != nil {
				out.set(k, v)
			}
		}
	}
	out.set("id", &node{kind: jString, str: s.resourceID(d.typ, d.name), src: at.src, off: at.off})
	return out
}

// givenReference finds a --reference value by resource ID, or by name.
func (ctx *evalCtx) givenReference(ref string) *node {
	for k, v := range ctx.dep.References {
		if strings.EqualFold(k, ref) {
			ctx.refsUsed[strings.ToLower(k)] = true
			return v
		}
	}
	_, name := parseResourceID(ref)
	if name == "" {
		return nil
	}
	for k, v := range ctx.dep.References {
		if strings.EqualFold(k, name) || strings.EqualFold(k, name[strings.LastIndexByte(name, '/')+1:]) {
			ctx.refsUsed[strings.ToLower(k)] = true
			return v
		}
	}
	return nil
}

// resourceID builds a resource group scoped resource ID.
func (s *scope) resourceID(typ, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/%s", s.ctx.dep.Subscription, s.ctx.dep.ResourceGroup, joinTypeName(typ, name))
}

// joinTypeName interleaves a type's segments with a name's:
// Microsoft.Network/firewallPolicies/ruleCollectionGroups + p/g ->
// Microsoft.Network/firewallPolicies/p/ruleCollectionGroups/g.
func joinTypeName(typ, name string) string {
	ts := strings.Split(typ, "/")
	ns := strings.Split(name, "/")
	var b strings.Builder
	b.WriteString(ts[0])
	for i := 1; i < len(ts); i++ {
		b.WriteString("/" + ts[i])
		if i-1 < len(ns) {
			b.WriteString("/" + ns[i-1])
		}
	}
	return b.String()
}

// deployedOfTypes returns the deployed resources the importer reads, in
// declaration order, evaluated.
func (ctx *evalCtx) deployedRelevant() []*declared {
	var out []*declared
	for _, d := range ctx.declared {
		if d.deployed && !d.existing && relevantType(d.typ) {
			d.evaluate()
			out = append(out, d)
		}
	}
	return out
}

// unusedInputs reports --parameters and --public-ip values nothing used.
func (ctx *evalCtx) unusedInputs(templates int) policy.ErrorList {
	var errs policy.ErrorList
	if templates == 0 && (len(ctx.dep.Parameters) > 0 || len(ctx.dep.PublicIPs) > 0 || len(ctx.dep.References) > 0) {
		return policy.ErrorList{{Msg: "--parameters, --public-ip and --reference apply to ARM templates, and the input holds none"}}
	}
	var names []string
	for k := range ctx.dep.Parameters {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !ctx.paramsUsed[k] {
			p := ctx.dep.Parameters[k]
			errs = append(errs, &policy.Error{Pos: p.n.pos(), Msg: fmt.Sprintf("parameter %q (%s): the template has no such parameter", k, p.from)})
		}
	}
	names = names[:0]
	for k := range ctx.dep.PublicIPs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if ctx.ipsUsed[strings.ToLower(k)] {
			continue
		}
		found := false
		for _, d := range ctx.declared {
			if strings.EqualFold(d.typ, "Microsoft.Network/publicIPAddresses") && strings.EqualFold(d.name, k) {
				found = true
			}
		}
		if !found {
			errs = append(errs, &policy.Error{Msg: fmt.Sprintf("--public-ip %s: the template declares no public IP address named %q", k, k)})
		}
	}
	names = names[:0]
	for k := range ctx.dep.References {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !ctx.refsUsed[strings.ToLower(k)] {
			errs = append(errs, &policy.Error{Msg: fmt.Sprintf("--reference %s: the template never reads that resource with reference()", k)})
		}
	}
	return errs
}

// mentionsFirewall reports whether a (nested deployment) resource holds a
// resource type the importer reads, at any depth.
func mentionsFirewall(n *node, depth int) bool {
	if depth > maxDepth {
		return false
	}
	if n.kind == jString {
		l := strings.ToLower(n.str)
		return strings.Contains(l, "microsoft.network/firewallpolicies") || strings.Contains(l, "microsoft.network/azurefirewalls") ||
			strings.Contains(l, "microsoft.network/ipgroups")
	}
	for _, c := range n.items {
		if mentionsFirewall(c, depth+1) {
			return true
		}
	}
	for i, c := range n.vals {
		if strings.EqualFold(n.keys[i], "type") || c.kind != jString {
			if mentionsFirewall(c, depth+1) {
				return true
			}
		}
	}
	return false
}

// linkable is an input template a templateLink may name.
type linkable struct {
	src  *source
	t    *node
	used bool
	uri  string
}

func (ctx *evalCtx) linkedUsed(src *source) bool {
	for _, l := range ctx.linkable {
		if l.src == src {
			return l.used
		}
	}
	return false
}

// baseName is the last element of a file name or URL path.
func baseName(name string) string {
	name = strings.ReplaceAll(name, "\\", "/")
	if i := strings.IndexAny(name, "?#"); i >= 0 {
		name = name[:i]
	}
	return strings.ToLower(name[strings.LastIndexByte(name, '/')+1:])
}

// findLinked finds the input file a templateLink names: the file whose
// name ends in the link's file name (its URI evaluated, or else a string
// in its expression).
func (ctx *evalCtx) findLinked(s *scope, tl *node) *linkable {
	var cands []string
	for _, key := range []string{"uri", "relativePath", "id"} {
		raw := tl.lookup(key)
		if raw == nil || raw.kind != jString {
			continue
		}
		if v := s.value(raw); v.kind == jString {
			cands = append(cands, v.str)
		}
		cands = append(cands, raw.str)
	}
	var best *linkable
	bestLen := 0
	for _, c := range cands {
		b := baseName(c)
		if !strings.HasSuffix(b, ".json") {
			// An expression: look for a quoted file name in it.
			i := strings.LastIndex(strings.ToLower(c), ".json")
			if i < 0 {
				continue
			}
			j := strings.LastIndexAny(c[:i], "'/")
			b = strings.ToLower(c[j+1 : i+5])
		}
		for _, l := range ctx.linkable {
			name := strings.ToLower(strings.ReplaceAll(l.src.name, "\\", "/"))
			if baseName(name) == b && len(b) > bestLen {
				best, bestLen = l, len(b)
				l.uri = c
			}
		}
		if best != nil {
			return best
		}
	}
	return best
}

// mentionsLink reports whether a template deploys linked templates and
// names a file called base in one of its strings (the link's URI is often
// built from a variable).
func mentionsLink(roots []*node, base string) bool {
	links, named := false, false
	var walk func(n *node, depth int)
	walk = func(n *node, depth int) {
		if depth > maxDepth || links && named {
			return
		}
		if n.kind == jString && strings.Contains(strings.ToLower(n.str), base) {
			named = true
		}
		for i, k := range n.keys {
			if strings.EqualFold(k, "templateLink") {
				links = true
			}
			walk(n.vals[i], depth+1)
		}
		for _, it := range n.items {
			walk(it, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return links && named
}

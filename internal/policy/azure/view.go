package azure

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// view reads the fields of one Azure object. ARM templates put most fields
// under "properties"; the az CLI prints them at the top level. A view looks
// in both, reports values of the wrong type as errors, and values that are
// unknown (only known at deployment, or not evaluable) through drop.
type view struct {
	im   *importer
	n    *node // the object
	prop *node // its "properties" object, if any
	path string
	// target is the output wire path warnings about this object go to.
	target string
	// warnf reports a warning about this object.
	warnf func(msg string, at *node, eff Effect)
	// drop is told about every value left out because it is unknown;
	// field is e.g. sourceAddresses[2]; unk says what the value is.
	drop func(field, why string, at *node, unk *unknown)
}

func (im *importer) view(n *node, path string) *view {
	v := &view{im: im, n: n, path: path}
	if p := n.lookup("properties"); p != nil {
		if p.kind == jObject {
			v.prop = p
		} else if p.kind != jNull {
			v.typeErr(p, "properties", "an object")
		}
	}
	v.warnf = func(msg string, at *node, eff Effect) {
		im.warn(v.path, msg, at.pos(), eff, v.target)
	}
	v.drop = func(field, why string, at *node, unk *unknown) {
		w := Warning{Path: v.path, Msg: fmt.Sprintf("%s: %s: left out: STRICTER or LOOSER, depending on its value", field, why),
			Pos: at.pos(), Effect: EffectUnknown, Severe: true, target: v.target}
		if unk != nil {
			w.Unknown = unk.String()
		}
		im.warns = append(im.warns, w)
	}
	return v
}

// sub views a nested object; its warnings and drops go where v's go.
func (v *view) sub(n *node) *view {
	s := v.im.view(n, v.path)
	s.target = v.target
	s.warnf = v.warnf
	s.drop = v.drop
	return s
}

func (v *view) typeErr(n *node, field, want string) {
	v.im.errorf(n, "%s: %s: expected %s, found %s", v.path, field, want, describe(n))
}

func describe(n *node) string {
	switch n.kind {
	case jString:
		s := n.str
		if len(s) > 40 {
			s = s[:40] + "..."
		}
		return "the string " + strconv.Quote(s)
	case jNumber:
		return "the number " + n.str
	case jUnknown:
		return n.unk.what
	}
	return n.kind.String()
}

// raw returns a field's node as written, from properties first.
func (v *view) raw(key string) *node {
	if x := v.prop.lookup(key); x != nil {
		return x
	}
	return v.n.lookup(key)
}

// has reports whether a field is present and not null.
func (v *view) has(key string) bool {
	x := v.raw(key)
	return x != nil && x.kind != jNull
}

// set reports whether a field holds something: not null, not false, not an
// empty string, list or object. Unknown values count as set.
func (v *view) set(key string) bool {
	x := v.raw(key)
	return x != nil && nonEmpty(x)
}

func nonEmpty(n *node) bool {
	switch n.kind {
	case jNull:
		return false
	case jBool:
		return n.b
	case jString:
		return n.str != "" && !strings.EqualFold(n.str, "false") && !strings.EqualFold(n.str, "disabled") && !strings.EqualFold(n.str, "off")
	case jArray:
		for _, it := range n.items {
			if nonEmpty(it) {
				return true
			}
		}
		return false
	case jObject:
		for _, it := range n.vals {
			if nonEmpty(it) {
				return true
			}
		}
		return false
	}
	return true
}

// unknownWhy renders an unknown value for a drop message.
func unknownWhy(n *node) string {
	if n.unk.failed {
		return n.unk.what
	}
	return n.unk.what + " (" + n.unk.hint + ")"
}

// get returns a field; nil when absent, null or unknown (reported through
// drop). had tells whether the field was written at all.
func (v *view) get(key string) (n *node, had bool) {
	x := v.raw(key)
	if x == nil || x.kind == jNull {
		return nil, false
	}
	if x.kind == jUnknown {
		v.drop(key, unknownWhy(x), x, x.unk)
		return nil, true
	}
	return x, true
}

// str reads a string field (numbers are taken as their text). Values are
// trimmed of white space, which Azure does not keep either.
func (v *view) str(key string) (s string, had bool) {
	n, had := v.get(key)
	if n == nil {
		return "", had
	}
	switch n.kind {
	case jString, jNumber:
		return strings.TrimSpace(n.str), true
	case jBool:
		return strconv.FormatBool(n.b), true
	}
	v.typeErr(n, key, "a string")
	return "", true
}

// integer reads a whole number (a numeric string is accepted).
func (v *view) integer(key string) (int, bool) {
	n, _ := v.get(key)
	if n == nil {
		return 0, false
	}
	if n.kind == jNumber || n.kind == jString {
		i, err := strconv.Atoi(strings.TrimSpace(n.str))
		if err == nil {
			return i, true
		}
	}
	v.typeErr(n, key, "a whole number")
	return 0, false
}

// boolean reads true/false ("true"/"false" strings are accepted).
func (v *view) boolean(key string) (b, ok bool) {
	n, _ := v.get(key)
	if n == nil {
		return false, false
	}
	switch {
	case n.kind == jBool:
		return n.b, true
	case n.kind == jString && strings.EqualFold(n.str, "true"):
		return true, true
	case n.kind == jString && strings.EqualFold(n.str, "false"):
		return false, true
	}
	v.typeErr(n, key, "true or false")
	return false, false
}

// strs reads a list of strings. Unknown items are left out (through drop);
// had tells whether the list had any item before that.
func (v *view) strs(key string) (out []string, had bool) {
	n, had := v.get(key)
	if n == nil {
		return nil, had
	}
	if n.kind != jArray {
		v.typeErr(n, key, "a list of strings")
		return nil, true
	}
	for i, it := range n.items {
		switch it.kind {
		case jNull:
			continue
		case jString, jNumber:
			out = append(out, strings.TrimSpace(it.str))
		case jUnknown:
			v.drop(fmt.Sprintf("%s[%d]", key, i), unknownWhy(it), it, it.unk)
		case jArray: // a nested list (from an expression) counts as its items
			for j, x := range it.items {
				switch x.kind {
				case jString, jNumber:
					out = append(out, strings.TrimSpace(x.str))
				case jUnknown:
					v.drop(fmt.Sprintf("%s[%d][%d]", key, i, j), unknownWhy(x), x, x.unk)
				default:
					v.typeErr(x, fmt.Sprintf("%s[%d]", key, i), "a string")
				}
			}
		default:
			v.typeErr(it, fmt.Sprintf("%s[%d]", key, i), "a string")
		}
		had = true
	}
	return out, had
}

// objs reads a list of objects.
func (v *view) objs(key string) []*node {
	n, _ := v.get(key)
	if n == nil {
		return nil
	}
	if n.kind != jArray {
		v.typeErr(n, key, "a list of objects")
		return nil
	}
	var out []*node
	for i, it := range n.items {
		switch it.kind {
		case jObject:
			out = append(out, it)
		case jNull:
		case jUnknown:
			v.drop(fmt.Sprintf("%s[%d]", key, i), unknownWhy(it), it, it.unk)
		default:
			v.typeErr(it, fmt.Sprintf("%s[%d]", key, i), "an object")
		}
	}
	return out
}

// object reads an object field.
func (v *view) object(key string) *node {
	n, _ := v.get(key)
	if n == nil {
		return nil
	}
	if n.kind != jObject {
		v.typeErr(n, key, "an object")
		return nil
	}
	return n
}

// name reads a resource or item name, keeping the part after the last '/'
// ("policy/DefaultNetworkRuleCollectionGroup").
func (v *view) name() (string, bool) {
	x := v.raw("name")
	if x == nil || x.kind == jNull {
		return "", false
	}
	if x.kind == jUnknown {
		v.warnf("name: "+unknownWhy(x)+": the name is left empty", x, EffectNone)
		return "", false
	}
	if x.kind != jString {
		v.typeErr(x, "name", "a string")
		return "", false
	}
	s := x.str
	if i := strings.LastIndex(s, "/"); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSpace(s)
	return s, s != "" && s != "?"
}

// unknown warns about fields not in known (case-insensitive), at both levels.
func (v *view) unknown(known ...string) {
	k := map[string]bool{"properties": true}
	for _, s := range known {
		k[strings.ToLower(s)] = true
	}
	check := func(n *node, prefix string) {
		if n == nil {
			return
		}
		var bad []int
		for i, key := range n.keys {
			if !k[strings.ToLower(key)] {
				bad = append(bad, i)
			}
		}
		sort.SliceStable(bad, func(a, b int) bool { return n.keys[bad[a]] < n.keys[bad[b]] })
		for _, i := range bad {
			if !nonEmpty(n.vals[i]) {
				continue // an empty unknown field carries nothing
			}
			v.warnf(fmt.Sprintf("unknown field %q ignored: STRICTER or LOOSER, depending on what it means in Azure: check it", prefix+n.keys[i]), n.vals[i], EffectUnknown)
		}
	}
	check(v.n, "")
	check(v.prop, "properties.")
}

// warnings for a skipped or narrowed rule say which way the policy moved.

func narrowEffect(action string) (string, Effect) {
	switch action {
	case "Allow":
		return "the rule matches less than in Azure: STRICTER (what it no longer matches is denied unless another rule allows it)", EffectStricter
	case "Deny":
		return "the rule matches less than in Azure: LOOSER (traffic it denied may now be allowed)", EffectLooser
	case "DNAT":
		return "the rule matches less than in Azure: STRICTER (some inbound connections it translated are not translated)", EffectStricter
	}
	return "the rule matches less than in Azure: STRICTER or LOOSER (its action is unknown)", EffectUnknown
}

func skipEffect(action string) (string, Effect) {
	switch action {
	case "Allow":
		return "rule skipped: STRICTER than in Azure (what it allowed is denied unless another rule allows it)", EffectStricter
	case "Deny":
		return "RULE SKIPPED: LOOSER than in Azure (traffic it denied may now be allowed by a later rule)", EffectLooser
	case "DNAT":
		return "rule skipped: STRICTER than in Azure (the inbound connections it translated are no longer translated)", EffectStricter
	}
	return "rule skipped: STRICTER or LOOSER (its action is unknown)", EffectUnknown
}

func collSkipEffect(action string) (string, Effect) {
	switch action {
	case "Allow":
		return "STRICTER than in Azure (what these rules allowed is denied unless another rule allows it)", EffectStricter
	case "Deny":
		return "LOOSER than in Azure (traffic these rules denied may now be allowed)", EffectLooser
	case "DNAT":
		return "STRICTER than in Azure (the inbound connections these rules translated are no longer translated)", EffectStricter
	}
	return "STRICTER or LOOSER than in Azure (the collection's action is unknown)", EffectUnknown
}

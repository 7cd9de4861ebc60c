package policy

import (
	"gopkg.in/yaml.v3"
)

// A fast path for decoding the rule collection groups' tree into their
// wire form.
//
// After the walker has checked a document's shape and found nothing wrong,
// yaml.v3's Node.Decode fills the wire structs by reflection: for a
// 10,000-rule policy it was a quarter of the load's CPU (a reflect.Value,
// a tag resolution and an allocation per value). decodeGroups fills
// []WireGroup from the tree directly, for the plain trees large policies
// are: block or flow mappings and sequences, scalars of the tags !!str,
// !!int, !!float or !!bool (a string field takes the scalar's text, as
// yaml.v3 does), priorities of plain decimal digits. For anything else —
// a null, an explicit tag, an alias, a merge key, !!binary or
// !!timestamp values, an integer yaml.v3 reads otherwise than decimal
// (0x1F, 0755, 1_000), a field the wire types do not have — it answers
// false and yaml.v3 decodes the whole document as before, so its results
// and errors stay the ones users see. TestDecodeGroupsSameWire and
// FuzzDecodeGroups compare the two decoders.
//
// Hand-written because it measured faster than the library: decoding and
// validating a 10,000-rule policy through a Loader (BenchmarkLoaderFull10k)
// took 127 ms of CPU and 682,000 allocations with Node.Decode, 93 ms and
// 437,000 with this decoder (docs/benchmarks.md, "Load and validate
// stages (branch loadval)").

// wireDecodeOff makes decodeYAML decode with yaml.v3 alone (tests).
var wireDecodeOff bool

// decodeGroups decodes the ruleCollectionGroups list seq; false when it
// is outside the subset above.
func decodeGroups(seq *yaml.Node) ([]WireGroup, bool) {
	if seq.Kind != yaml.SequenceNode || !plainNode(seq) {
		return nil, false
	}
	out := make([]WireGroup, len(seq.Content))
	var d wireDecoder
	for i, n := range seq.Content {
		if !d.group(n, &out[i]) {
			return nil, false
		}
	}
	return out, true
}

// plainNode: n has no explicit tag, anchor or alias.
func plainNode(n *yaml.Node) bool {
	return n.Style&yaml.TaggedStyle == 0 && n.Anchor == "" && n.Kind != yaml.AliasNode
}

// fields calls field for each key of mapping n with its value; false when
// n is not a plain mapping, a key is not a plain string or is there twice,
// or field says false.
//
// What the decoder takes, the walker finds nothing wrong with: it answers
// false for everything the walker reports in the groups (a duplicate
// field, an unknown one, a value of another shape, a priority that is
// not a whole number), so that decodeYAMLTree walks only the rest of a
// document whose groups it decoded (TestDecodedGroupsWalkClean).
func fields(n *yaml.Node, field func(key string, v *yaml.Node) bool) bool {
	if n.Kind != yaml.MappingNode || !plainNode(n) {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Kind != yaml.ScalarNode || !plainNode(k) || k.Tag != "!!str" || !field(k.Value, n.Content[i+1]) {
			return false
		}
		for j := 0; j < i; j += 2 {
			if n.Content[j].Value == k.Value {
				return false // the walker's "duplicate field"
			}
		}
	}
	return len(n.Content)%2 == 0
}

// headerClean walks root, a document whose groups decodeFile decoded
// (the walker finds nothing wrong in them, see fields), without the
// groups' entries: true when the walker finds nothing wrong in the rest
// either, as it would in the whole.
func headerClean(file string, root *yaml.Node, lim Limits) bool {
	shadow := *root
	shadow.Content = make([]*yaml.Node, len(root.Content))
	copy(shadow.Content, root.Content)
	for i := 1; i < len(shadow.Content); i += 2 {
		if shadow.Content[i-1].Value == "ruleCollectionGroups" {
			seq := *shadow.Content[i]
			seq.Content = nil
			shadow.Content[i] = &seq
		}
	}
	var errs ErrorList
	w := walker{file: file, errs: &errs, cap: errorCap{max: lim.MaxErrors}}
	w.walk(&shadow, fileType)
	return !w.shapeErrors && len(errs) == 0
}

// wireDecoder allocates the rules' lists of strings from slabs (one
// allocation per list was a third of the decoder's allocations).
type wireDecoder struct {
	strs []string
}

func (d *wireDecoder) group(n *yaml.Node, g *WireGroup) bool {
	return fields(n, func(key string, v *yaml.Node) bool {
		switch key {
		case "name":
			return decodeString(v, &g.Name)
		case "priority":
			return decodeInt(v, &g.Priority)
		case "ruleCollections":
			if v.Kind != yaml.SequenceNode || !plainNode(v) {
				return false
			}
			g.RuleCollections = make([]WireCollection, len(v.Content))
			for i, c := range v.Content {
				if !d.collection(c, &g.RuleCollections[i]) {
					return false
				}
			}
			return true
		}
		return false
	})
}

func (d *wireDecoder) collection(n *yaml.Node, c *WireCollection) bool {
	return fields(n, func(key string, v *yaml.Node) bool {
		switch key {
		case "name":
			return decodeString(v, &c.Name)
		case "kind":
			return decodeString(v, &c.Kind)
		case "priority":
			return decodeInt(v, &c.Priority)
		case "action":
			return decodeString(v, &c.Action)
		case "rules":
			if v.Kind != yaml.SequenceNode || !plainNode(v) {
				return false
			}
			c.Rules = make([]WireRule, len(v.Content))
			for i, r := range v.Content {
				if !d.rule(r, &c.Rules[i]) {
					return false
				}
			}
			return true
		}
		return false
	})
}

func (d *wireDecoder) rule(n *yaml.Node, r *WireRule) bool {
	return fields(n, func(key string, v *yaml.Node) bool {
		switch key {
		case "name":
			return decodeString(v, &r.Name)
		case "description":
			return decodeString(v, &r.Description)
		case "protocols":
			return d.strings(v, &r.Protocols)
		case "sourceAddresses":
			return d.strings(v, &r.SourceAddresses)
		case "sourceIpGroups":
			return d.strings(v, &r.SourceIPGroups)
		case "destinationAddresses":
			return d.strings(v, &r.DestinationAddresses)
		case "destinationIpGroups":
			return d.strings(v, &r.DestinationIPGroups)
		case "destinationFqdns":
			return d.strings(v, &r.DestinationFQDNs)
		case "destinationPorts":
			return d.strings(v, &r.DestinationPorts)
		case "targetFqdns":
			return d.strings(v, &r.TargetFQDNs)
		case "fqdnTags":
			return d.strings(v, &r.FQDNTags)
		case "translatedAddress":
			return decodeString(v, &r.TranslatedAddress)
		case "translatedFqdn":
			return decodeString(v, &r.TranslatedFQDN)
		case "translatedPort":
			return decodeString(v, &r.TranslatedPort)
		}
		return false
	})
}

// decodeString sets *s to scalar n's text, as yaml.v3 decodes a scalar of
// these tags into a string.
func decodeString(n *yaml.Node, s *string) bool {
	if n.Kind != yaml.ScalarNode || !plainNode(n) {
		return false
	}
	switch n.Tag {
	case "!!str", "!!int", "!!float", "!!bool":
		*s = n.Value
		return true
	}
	return false
}

// decodeStrings decodes a sequence of scalars; like yaml.v3, an empty
// sequence gives an empty slice, not nil.
func (d *wireDecoder) strings(n *yaml.Node, out *[]string) bool {
	if n.Kind != yaml.SequenceNode || !plainNode(n) {
		return false
	}
	k := len(n.Content)
	if k == 0 {
		*out = []string{} // not nil, as yaml.v3's
		return true
	}
	if len(d.strs) < k {
		d.strs = make([]string, max(1024, k))
	}
	l := d.strs[:k:k] // appending to a list reallocates it
	d.strs = d.strs[k:]
	for i, c := range n.Content {
		if !decodeString(c, &l[i]) {
			return false
		}
	}
	*out = l
	return true
}

// decodeInt decodes a plain !!int of decimal digits without a leading
// zero (yaml.v3 reads 0755 as octal), at most 18 of them (no overflow).
func decodeInt(n *yaml.Node, i *int) bool {
	if n.Kind != yaml.ScalarNode || !plainNode(n) || n.Tag != "!!int" || n.Style != 0 {
		return false
	}
	v := n.Value
	if len(v) == 0 || len(v) > 18 || (v[0] == '0' && len(v) > 1) {
		return false
	}
	x := 0
	for j := 0; j < len(v); j++ {
		c := v[j]
		if c < '0' || c > '9' {
			return false
		}
		x = x*10 + int(c-'0')
	}
	*i = x
	return true
}

// decodeFile decodes the document root into f: the rule collection
// groups with decodeGroups, the rest with yaml.v3; false when the groups
// are outside decodeGroups' subset (f is then untouched).
func decodeFile(root *yaml.Node, f *File) bool {
	if root.Kind != yaml.MappingNode || !plainNode(root) {
		return false
	}
	at := -1
	for i := 0; i+1 < len(root.Content); i += 2 {
		k := root.Content[i]
		if k.Kind == yaml.ScalarNode && k.Value == "ruleCollectionGroups" {
			if at >= 0 || !plainNode(k) || k.Tag != "!!str" {
				return false
			}
			at = i
		} else if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" || !plainNode(k) {
			return false // a merge key could set the groups too
		}
	}
	if at < 0 {
		return false
	}
	groups, ok := decodeGroups(root.Content[at+1])
	if !ok {
		return false
	}
	rest := *root
	rest.Content = make([]*yaml.Node, 0, len(root.Content)-2)
	rest.Content = append(append(rest.Content, root.Content[:at]...), root.Content[at+2:]...)
	var x File
	if err := rest.Decode(&x); err != nil {
		return false // yaml.v3 reports it on the whole document
	}
	x.RuleCollectionGroups = groups
	*f = x
	return true
}

// groupOr decodes a group with the fast decoder, else with yaml.v3;
// false when yaml.v3 fails.
func (d *wireDecoder) groupOr(n *yaml.Node, g *WireGroup) bool {
	if d.group(n, g) {
		return true
	}
	*g = WireGroup{}
	return n.Decode(g) == nil
}

// collectionOr is groupOr for a collection.
func (d *wireDecoder) collectionOr(n *yaml.Node, c *WireCollection) bool {
	if d.collection(n, c) {
		return true
	}
	*c = WireCollection{}
	return n.Decode(c) == nil
}

package azure

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// ruleCtx converts one rule. Warnings are held back until the rule is
// either kept (then they land on the rule in the output) or skipped (then on
// its collection), because what a left-out value means depends on that.
type ruleCtx struct {
	im      *importer
	v       *view
	action  string
	name    string
	notes   []note
	refs    []string
	skipWhy string
}

type note struct {
	msg    string
	at     *node
	severe bool
	narrow bool // a match value left out: the rule matches less
}

// matchFields are the rule fields whose values select traffic; leaving one
// of their values out narrows the rule.
var notMatchFields = map[string]bool{"name": true, "description": true, "ruletype": true}

func (im *importer) newRule(cv *view, n *node, action, collPath string, idx int) *ruleCtx {
	rc := &ruleCtx{im: im, action: action}
	v := cv.sub(n)
	v.path = fmt.Sprintf("%s/rules[%d]", collPath, idx)
	v.warnf = func(msg string, at *node, severe bool) {
		rc.notes = append(rc.notes, note{msg: msg, at: at, severe: severe})
	}
	v.drop = func(field, why string, at *node) {
		base := strings.ToLower(field)
		if i := strings.IndexByte(base, '['); i >= 0 {
			base = base[:i]
		}
		rc.notes = append(rc.notes, note{msg: fmt.Sprintf("%s: %s: left out", field, why), at: at, narrow: !notMatchFields[base]})
	}
	rc.v = v
	if name, ok := v.name(); ok {
		rc.name = name
		v.path = collPath + "/" + name
	}
	return rc
}

func (rc *ruleCtx) note(msg string, at *node, severe bool) {
	rc.notes = append(rc.notes, note{msg: msg, at: at, severe: severe})
}

// narrowed records a match value that cannot be carried over.
func (rc *ruleCtx) narrowed(msg string, at *node) {
	rc.notes = append(rc.notes, note{msg: msg, at: at, narrow: true})
}

// skip marks the rule as skipped (the first reason wins).
func (rc *ruleCtx) skip(why string) {
	if rc.skipWhy == "" {
		rc.skipWhy = why
	}
}

// finish appends the rule to c (unless skipped) and files its warnings.
func (rc *ruleCtx) finish(c *policy.WireCollection, ct string, w *policy.WireRule) {
	im, path := rc.im, rc.v.path
	pos := func(n *node) policy.Pos {
		if n == nil {
			return policy.Pos{}
		}
		return rc.v.src.pos(n.off)
	}
	if rc.skipWhy != "" {
		for _, n := range rc.notes {
			im.warn(path, n.msg, pos(n.at), n.severe, ct)
		}
		eff, severe := skipEffect(rc.action)
		im.warn(path, rc.skipWhy+": "+eff, pos(rc.v.n), severe, ct)
		return
	}
	rt := fmt.Sprintf("%s.rules[%d]", ct, len(c.Rules))
	c.Rules = append(c.Rules, *w)
	for _, n := range rc.notes {
		msg, severe := n.msg, n.severe
		if n.narrow {
			eff, s := narrowEffect(rc.action)
			msg += "; " + eff
			severe = severe || s
		}
		im.warn(path, msg, pos(n.at), severe, rt)
	}
	for _, g := range rc.refs {
		im.useGroup(g, path, rt)
	}
}

func (rc *ruleCtx) base() *policy.WireRule {
	w := &policy.WireRule{Name: rc.name}
	w.Description, _ = rc.v.str("description")
	return w
}

// list reads a list field into dst and returns whether values were given
// but none is left.
func (rc *ruleCtx) list(key string, dst *[]string) (had bool) {
	vals, had := rc.v.strs(key)
	*dst = vals
	return had
}

func (rc *ruleCtx) groups(key string, dst *[]string) (had bool) {
	vals, had := rc.v.strs(key)
	for _, s := range vals {
		name := ipGroupName(s)
		*dst = append(*dst, name)
		rc.refs = append(rc.refs, name)
	}
	return had
}

// need skips the rule when a required part had values but lost them all.
func (rc *ruleCtx) need(had bool, left int, what string) {
	if had && left == 0 {
		rc.skip("no " + what + " left")
	}
}

func (rc *ruleCtx) sources(w *policy.WireRule) {
	h1 := rc.list("sourceAddresses", &w.SourceAddresses)
	h2 := rc.groups("sourceIpGroups", &w.SourceIPGroups)
	rc.need(h1 || h2, len(w.SourceAddresses)+len(w.SourceIPGroups), "sources")
}

// network converts a network rule; protoKey is ipProtocols (policy) or
// protocols (classic).
func (rc *ruleCtx) network(protoKey string, known ...string) *policy.WireRule {
	w := rc.base()
	rc.need(rc.list(protoKey, &w.Protocols), len(w.Protocols), "protocols")
	rc.sources(w)
	h1 := rc.list("destinationAddresses", &w.DestinationAddresses)
	h2 := rc.groups("destinationIpGroups", &w.DestinationIPGroups)
	h3 := rc.list("destinationFqdns", &w.DestinationFQDNs)
	rc.need(h1 || h2 || h3, len(w.DestinationAddresses)+len(w.DestinationIPGroups)+len(w.DestinationFQDNs), "destinations")
	rc.need(rc.list("destinationPorts", &w.DestinationPorts), len(w.DestinationPorts), "destination ports")
	rc.v.unknown(append([]string{"name", "description", "ruleType", protoKey, "sourceAddresses", "sourceIpGroups",
		"destinationAddresses", "destinationIpGroups", "destinationFqdns", "destinationPorts"}, known...)...)
	return w
}

// nat converts a DNAT rule.
func (rc *ruleCtx) nat(protoKey string, known ...string) *policy.WireRule {
	w := rc.base()
	rc.need(rc.list(protoKey, &w.Protocols), len(w.Protocols), "protocols")
	rc.sources(w)
	rc.need(rc.list("destinationAddresses", &w.DestinationAddresses), len(w.DestinationAddresses), "destination addresses")
	rc.need(rc.list("destinationPorts", &w.DestinationPorts), len(w.DestinationPorts), "destination ports")
	var h1, h2, h3 bool
	w.TranslatedAddress, h1 = rc.v.str("translatedAddress")
	w.TranslatedFQDN, h2 = rc.v.str("translatedFqdn")
	rc.need(h1 || h2, len(w.TranslatedAddress)+len(w.TranslatedFQDN), "translated address")
	w.TranslatedPort, h3 = rc.v.str("translatedPort")
	rc.need(h3, len(w.TranslatedPort), "translated port")
	rc.v.unknown(append([]string{"name", "description", "ruleType", protoKey, "sourceAddresses", "sourceIpGroups",
		"destinationAddresses", "destinationPorts", "translatedAddress", "translatedFqdn", "translatedPort"}, known...)...)
	return w
}

// application converts an application rule. Policy rules may carry
// features clusterwall lacks; classic ones cannot.
func (rc *ruleCtx) application(known ...string) *policy.WireRule {
	w := rc.base()
	v := rc.v
	hadProto := false
	if pn, _ := v.get("protocols"); pn != nil {
		if pn.kind != jArray {
			v.typeErr(pn, "protocols", "a list of {protocolType, port} objects")
		}
		for i, it := range pn.items {
			field := fmt.Sprintf("protocols[%d]", i)
			r, err := v.t.resolve(it, 0)
			if err != nil {
				hadProto = true
				v.drop(field, err.Error(), it)
				continue
			}
			switch r.kind {
			case jNull:
				continue
			case jString: // "Https:443", as our YAML and the az CLI flags spell it
				hadProto = true
				w.Protocols = append(w.Protocols, strings.TrimSpace(r.str))
				continue
			case jObject:
			default:
				v.typeErr(r, field, "a {protocolType, port} object")
				continue
			}
			hadProto = true
			pv := v.sub(r)
			typ, _ := pv.str("protocolType")
			port, hasPort := pv.integer("port")
			pv.unknown("protocolType", "port")
			if typ == "" {
				v.drop(field, "no protocolType", r)
				continue
			}
			if s, ok := policy.ParseScheme(typ); ok {
				typ = s.String()
			}
			if hasPort && port != 0 {
				typ += ":" + strconv.Itoa(port)
			}
			w.Protocols = append(w.Protocols, typ)
		}
	}
	rc.need(hadProto, len(w.Protocols), "protocols")
	rc.sources(w)

	h1 := rc.list("targetFqdns", &w.TargetFQDNs)
	h2 := rc.list("fqdnTags", &w.FQDNTags)
	// Match values clusterwall cannot carry: alternatives to the FQDNs.
	type alt struct{ key, why string }
	type droppedAlt struct {
		msg string
		at  *node
	}
	var dropped []string
	var notes []droppedAlt
	for _, a := range []alt{
		{"webCategories", "web categories are not supported"},
		{"targetUrls", "URL filtering (targetUrls) is not supported"},
		{"destinationAddresses", "destination addresses in application rules are not supported"},
	} {
		if !v.set(a.key) {
			continue
		}
		vals, _ := v.strs(a.key)
		shown := a.key
		if len(vals) > 0 {
			shown += " " + brief(vals)
		}
		dropped = append(dropped, shown)
		notes = append(notes, droppedAlt{fmt.Sprintf("%s: %s: left out", shown, a.why), v.raw(a.key)})
	}
	switch {
	case len(w.TargetFQDNs)+len(w.FQDNTags) > 0:
		for _, n := range notes {
			rc.narrowed(n.msg, n.at)
		}
	case len(dropped) > 0:
		rc.skip("it matches only by " + strings.Join(dropped, " and ") + ", which clusterwall does not support")
	case h1 || h2:
		rc.skip("no target FQDNs left")
	}
	if tls, _ := v.boolean("terminateTLS"); tls {
		rc.note("terminateTLS: TLS inspection is not supported: HTTPS is matched by its TLS SNI without decrypting it", v.raw("terminateTLS"), false)
	}
	if v.set("httpHeadersToInsert") {
		rc.note("httpHeadersToInsert: inserting HTTP headers is not supported: the headers are not inserted", v.raw("httpHeadersToInsert"), false)
	}
	v.unknown(append([]string{"name", "description", "ruleType", "protocols", "sourceAddresses", "sourceIpGroups",
		"targetFqdns", "fqdnTags", "webCategories", "targetUrls", "destinationAddresses", "terminateTLS",
		"httpHeadersToInsert"}, known...)...)
	return w
}

// brief renders a few values for a message.
func brief(vals []string) string {
	var q []string
	for i, s := range vals {
		if i == 3 {
			q = append(q, fmt.Sprintf("and %d more", len(vals)-3))
			break
		}
		q = append(q, strconv.Quote(s))
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// ruleKind tells a filter rule's kind from its ruleType, or from its fields
// when ruleType is missing.
func ruleKind(v *view) string {
	rt := ""
	if x := v.raw("ruleType"); x != nil && x.kind == jString {
		rt = strings.TrimSpace(x.str)
	}
	switch strings.ToLower(rt) {
	case "networkrule":
		return "Network"
	case "applicationrule":
		return "Application"
	case "natrule":
		return "DNAT"
	case "":
		for _, k := range []string{"targetFqdns", "fqdnTags", "webCategories", "targetUrls", "terminateTLS"} {
			if v.has(k) {
				return "Application"
			}
		}
		if v.has("translatedAddress") || v.has("translatedPort") {
			return "DNAT"
		}
		return "Network"
	}
	return rt
}

// normAction spells an Azure action type as the policy does.
func normAction(s string) string {
	switch strings.ToLower(s) {
	case "allow":
		return "Allow"
	case "deny":
		return "Deny"
	case "dnat":
		return "DNAT"
	case "snat":
		return "SNAT"
	}
	return s
}

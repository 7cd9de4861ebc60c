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
	// unknowns are the deploy-time values the rule needs.
	unknowns []string
	// noSource is set for a rule written without any source.
	noSource bool
}

type note struct {
	msg    string
	at     *node
	eff    Effect
	severe bool
	narrow bool // a match value left out: the rule matches less
}

// notMatchFields are the rule fields whose values do not select traffic.
var notMatchFields = map[string]bool{"name": true, "description": true, "ruletype": true}

func (im *importer) newRule(cv *view, n *node, action, collPath string, idx int) *ruleCtx {
	rc := &ruleCtx{im: im, action: action}
	v := cv.sub(n)
	v.path = fmt.Sprintf("%s/rules[%d]", collPath, idx)
	v.warnf = func(msg string, at *node, eff Effect) {
		rc.notes = append(rc.notes, note{msg: msg, at: at, eff: eff})
	}
	v.drop = func(field, why string, at *node, unk *unknown) {
		base := strings.ToLower(field)
		if i := strings.IndexByte(base, '['); i >= 0 {
			base = base[:i]
		}
		if unk != nil && !notMatchFields[base] {
			// A name or description only labels the rule: it is not needed.
			rc.unknowns = append(rc.unknowns, unk.String())
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

func (rc *ruleCtx) note(msg string, at *node, eff Effect) {
	rc.notes = append(rc.notes, note{msg: msg, at: at, eff: eff})
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
	unknown := strings.Join(dedupe(rc.unknowns), "; ")
	if rc.skipWhy != "" {
		for _, n := range rc.notes {
			if n.narrow {
				continue // the rule is skipped: the summary says what that means
			}
			im.warn(path, n.msg, n.at.pos(), n.eff, ct)
		}
		msg, eff := skipEffect(rc.action)
		if rc.noSource && rc.skipWhy != "" && strings.HasPrefix(rc.skipWhy, "the rule has no sourceAddresses") {
			switch rc.action {
			case "Deny":
				msg, eff = "RULE SKIPPED: LOOSER than in Azure if Azure matched every source with it", EffectLooser
			default:
				msg, eff = "rule skipped: STRICTER than in Azure if Azure matched every source with it", EffectStricter
			}
		}
		var why []string
		for _, n := range rc.notes {
			if n.narrow {
				why = append(why, n.msg)
			}
		}
		full := rc.skipWhy
		if len(why) > 0 {
			full += " (" + strings.Join(why, "; ") + ")"
		}
		im.warns = append(im.warns, Warning{Path: path, Msg: full + ": " + msg, Pos: rc.v.n.pos(), Effect: eff, Severe: eff.MayLoosen(), Unknown: unknown, target: ct})
		return
	}
	rt := fmt.Sprintf("%s.rules[%d]", ct, len(c.Rules))
	c.Rules = append(c.Rules, *w)
	for _, n := range rc.notes {
		msg, eff := n.msg, n.eff
		u := ""
		if n.narrow {
			var em string
			em, eff = narrowEffect(rc.action)
			msg += "; " + em
			u = unknown
		}
		im.warns = append(im.warns, Warning{Path: path, Msg: msg, Pos: n.at.pos(), Effect: eff, Severe: n.severe || eff.MayLoosen(), Unknown: u, target: rt})
	}
	for _, g := range rc.refs {
		im.useGroup(g, path, rt)
	}
}

func dedupe(l []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range l {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
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
	if !h1 && !h2 {
		// API versions before 2020 accepted a rule without sources; what
		// Azure matched with it is not documented. Matching nothing is the
		// reading that cannot let more through.
		rc.skip("the rule has no sourceAddresses or sourceIpGroups (old API versions accepted that): read as matching no source")
		rc.noSource = true
		return
	}
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
			r := it
			switch r.kind {
			case jUnknown:
				hadProto = true
				v.drop(field, unknownWhy(r), r, r.unk)
				continue
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
				v.drop(field, "no protocolType", r, nil)
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
	var tags []string
	h2 := rc.list("fqdnTags", &tags)
	tagsAt := v.raw("fqdnTags")
	for _, tag := range tags {
		switch known, ok := policy.LookupFQDNTag(tag); {
		case ok && known.FQDNs != nil:
			w.FQDNTags = append(w.FQDNTags, known.Name)
			if strings.EqualFold(known.Name, "AzureKubernetesService") {
				rc.im.usesAKSTag = true
			}
		case ok:
			rc.narrowed(fmt.Sprintf("fqdnTags %q: clusterwall does not build this Azure FQDN tag in (%s): left out (define it under fqdnTags: to keep it)", tag, known.Why), tagsAt)
		default:
			rc.narrowed(fmt.Sprintf("fqdnTags %q: not an Azure FQDN tag clusterwall knows: left out (define it under fqdnTags: to keep it)", tag), tagsAt)
		}
	}
	// Match values clusterwall cannot carry: alternatives to the FQDNs.
	type alt struct {
		shown, why string
		at         *node
	}
	var alts []alt
	if v.set("webCategories") {
		vals, _ := v.strs("webCategories")
		alts = append(alts, alt{"webCategories " + brief(vals), "web categories are not supported (they need Azure's categorisation service)", v.raw("webCategories")})
	}
	if v.set("destinationAddresses") {
		vals, _ := v.strs("destinationAddresses")
		alts = append(alts, alt{"destinationAddresses " + brief(vals), "destination addresses in application rules are not supported (a network rule can carry them)", v.raw("destinationAddresses")})
	}
	if v.set("targetUrls") {
		urls, _ := v.strs("targetUrls")
		shown := "targetUrls " + brief(urls)
		hosts := urlHosts(urls)
		switch {
		case rc.action == "Deny" && len(hosts) > 0:
			// Denying the whole host of each URL denies at least what Azure did.
			w.TargetFQDNs = append(w.TargetFQDNs, hosts...)
			rc.note(fmt.Sprintf("%s: URL filtering needs TLS inspection, which clusterwall does not do: the rule denies the whole of %s instead of those paths: STRICTER than in Azure", shown, strings.Join(hosts, ", ")), v.raw("targetUrls"), EffectStricter)
		case rc.action == "Deny":
			alts = append(alts, alt{shown, "URL filtering (targetUrls) is not supported", v.raw("targetUrls")})
		default:
			// Allowing whole hosts would allow more than Azure did.
			alts = append(alts, alt{shown, "URL filtering needs TLS inspection, which clusterwall does not do (allowing the whole host would be LOOSER)", v.raw("targetUrls")})
		}
	}
	if len(w.TargetFQDNs)+len(w.FQDNTags) > 0 {
		for _, a := range alts {
			rc.narrowed(a.shown+": "+a.why+": left out", a.at)
		}
	} else {
		var parts []string
		for _, a := range alts {
			parts = append(parts, a.shown+" ("+a.why+")")
		}
		switch {
		case len(parts) > 0:
			rc.skip("it matches only by " + strings.Join(parts, " and "))
		case h1 || h2:
			rc.skip("no target FQDNs left")
		}
	}
	if tls, _ := v.boolean("terminateTLS"); tls {
		rc.note("terminateTLS: TLS inspection is not supported: HTTPS is matched by its TLS SNI without decrypting it (the same FQDNs are allowed or denied; IDPS does not see inside)", v.raw("terminateTLS"), EffectNone)
	}
	if v.set("httpHeadersToInsert") {
		rc.note("httpHeadersToInsert: inserting HTTP headers is not supported: the headers are not inserted (what is allowed does not change)", v.raw("httpHeadersToInsert"), EffectNone)
	}
	v.unknown(append([]string{"name", "description", "ruleType", "protocols", "sourceAddresses", "sourceIpGroups",
		"targetFqdns", "fqdnTags", "webCategories", "targetUrls", "destinationAddresses", "terminateTLS",
		"httpHeadersToInsert"}, known...)...)
	return w
}

// urlHosts returns the host names of target URLs ("www.example.com/path/*").
func urlHosts(urls []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, u := range urls {
		u = strings.TrimSpace(u)
		if i := strings.Index(u, "://"); i >= 0 {
			u = u[i+3:]
		}
		host := u
		if i := strings.IndexAny(host, "/?#"); i >= 0 {
			host = host[:i]
		}
		if i := strings.LastIndexByte(host, ':'); i >= 0 {
			host = host[:i]
		}
		if _, err := policy.ParseFQDNPattern(host); err != nil || host == "" {
			return nil // a host we cannot carry: do not guess
		}
		if !seen[strings.ToLower(host)] {
			seen[strings.ToLower(host)] = true
			out = append(out, host)
		}
	}
	return out
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

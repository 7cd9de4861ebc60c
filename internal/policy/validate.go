package policy

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"time"

	"github.com/clusterwall/clusterwall/internal/iprange"
)

// Options control loading and validation.
type Options struct {
	// ServiceTagsFile overrides the policy's serviceTags field (--service-tags).
	ServiceTagsFile string
	// ServiceTags, when set, is used instead of reading any file.
	ServiceTags ServiceTags
	// Limits bound what decoding the document may cost (budget.go); the
	// zero value means the defaults.
	Limits Limits
	// Timings, when set, receives how long Load took to decode the YAML
	// and to validate it (the daemon reports its applies' stages).
	Timings *LoadTimings

	// reuse, set by a Loader, names the groups validated by the previous
	// load whose text is unchanged (incremental.go).
	reuse *groupReuse
}

// LoadTimings is where a Load's time went.
type LoadTimings struct {
	Decode, Validate time.Duration
}

// LoadFile reads, decodes and validates a policy YAML file. On any problem
// it returns an ErrorList whose entries name FILE:LINE:COL.
func LoadFile(path string, opts Options) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ErrorList{{Pos: Pos{File: path}, Msg: err.Error()}}
	}
	return Load(path, data, opts)
}

// Load decodes and validates policy bytes; name is used in positions and to
// resolve relative paths.
func Load(name string, data []byte, opts Options) (*Policy, error) {
	p, _, _, _, err := loadFull(name, data, opts, nil)
	return p, err
}

// loadFull is Load, also returning the wire policy, its positions and
// whether the fast YAML path parsed it; r (a Loader's, or nil) receives
// the validated groups.
func loadFull(name string, data []byte, opts Options, r *groupReuse) (*Policy, *File, *Positions, bool, error) {
	start := time.Now()
	f, pos, fast, err := decodeYAMLTree(name, data, opts.Limits)
	decoded := time.Now()
	if opts.Timings != nil {
		opts.Timings.Decode = decoded.Sub(start)
	}
	if f == nil {
		return nil, nil, pos, false, err
	}
	opts.reuse = r
	p, verr := validate(f, pos, name, opts)
	if opts.Timings != nil {
		opts.Timings.Validate = time.Since(decoded)
	}
	if err != nil {
		all := err.(ErrorList)
		if verr != nil {
			all = append(all, verr.(ErrorList)...)
		}
		sortErrors(all)
		return nil, f, pos, fast, all
	}
	return p, f, pos, fast, verr
}

// Validate validates a wire policy that did not come from a file (an import,
// an API request). Errors name field paths; base resolves relative paths.
func Validate(f *File, base string, opts Options) (*Policy, error) {
	return validate(f, nil, base, opts)
}

type validator struct {
	cap      errorCap
	pos      *Positions
	prefix   string // prepended to error paths (an inline base policy)
	base     *Policy
	file     string
	dir      string
	errs     ErrorList
	warns    ErrorList
	tags     ServiceTags
	tagsFrom string
	ipGroups map[string]*AddrSet
	fqdnTags map[string][]string // lower-case name -> patterns
	location string
}

func (v *validator) errorf(path, format string, args ...any) {
	if v.cap.full(v.errs) {
		return
	}
	p := v.pos.Lookup(path)
	if v.pos == nil {
		p = Pos{File: v.file}
	}
	v.errs = append(v.errs, &Error{Pos: p, Path: v.prefix + path, Msg: fmt.Sprintf(format, args...)})
}

// keyErrorf places an error on a field's key rather than its value.
// warnf records a warning at path: the policy still loads.
func (v *validator) warnf(path, format string, args ...any) {
	if v.cap.max > 0 && len(v.warns) >= v.cap.max {
		return
	}
	saved := v.errs
	v.errs = nil
	v.errorf(path, format, args...)
	v.warns = append(v.warns, v.errs...)
	v.errs = saved
}

func (v *validator) keyErrorf(path, format string, args ...any) {
	if v.cap.full(v.errs) {
		return
	}
	p := v.pos.Key(path)
	if v.pos == nil {
		p = Pos{File: v.file}
	}
	v.errs = append(v.errs, &Error{Pos: p, Path: v.prefix + path, Msg: fmt.Sprintf(format, args...)})
}

func validate(f *File, pos *Positions, file string, opts Options) (*Policy, error) {
	p, errs := validateIn(f, pos, file, opts, "", &chainState{})
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

// validateIn validates one policy of a chain: prefix names where an inline
// base policy sits in its child's file. The policy is built even when there
// are errors (a child of a bad base policy reports only its own problems).
func validateIn(f *File, pos *Positions, file string, opts Options, prefix string, st *chainState) (*Policy, ErrorList) {
	v := &validator{pos: pos, file: file, dir: filepath.Dir(file), location: f.Location, prefix: prefix,
		cap: errorCap{max: opts.Limits.withDefaults().MaxErrors}}
	if file == "" {
		v.dir = "."
	}
	p := &Policy{Name: f.Name, Location: f.Location, File: file}
	if f.BasePolicy != nil {
		v.base = v.loadBase(f, opts, st)
		if v.base != nil && v.location == "" {
			v.location = v.base.Location
			p.Location = v.base.Location
		}
	}

	if f.APIVersion != "" && f.APIVersion != "clusterwall.io/v1alpha1" {
		v.errorf("apiVersion", "apiVersion must be clusterwall.io/v1alpha1, not %q", f.APIVersion)
	}
	if f.Kind != "" && f.Kind != "FirewallPolicy" {
		v.errorf("kind", "kind must be FirewallPolicy, not %q", f.Kind)
	}

	v.loadServiceTags(f, opts)
	v.buildIPGroups(f)
	v.buildFQDNTags(f)
	p.IPGroups = v.ipGroups
	p.tags = v.tags
	p.FQDNTags = BuiltinFQDNTags()
	if v.base != nil {
		p.FQDNTags = v.base.FQDNTags
	}
	p.FQDNTags = cloneTags(p.FQDNTags)
	for name, pats := range f.FQDNTags {
		for b := range p.FQDNTags {
			if strings.EqualFold(b, name) {
				delete(p.FQDNTags, b)
			}
		}
		p.FQDNTags[name] = pats
	}
	v.threatIntel(f, p)
	v.dns(f, p)
	v.inherit(f, p)

	groupNames := map[string]int{}
	groupPrios := map[int]int{}
	reuse := opts.reuse.usable(v)  // incremental.go
	pre := v.preValidate(f, reuse) // parallel.go; nil: validate here
	for gi := range f.RuleCollectionGroups {
		wg := &f.RuleCollectionGroups[gi]
		gp := fmt.Sprintf("ruleCollectionGroups[%d]", gi)
		if g := reuse.group(gi); g != nil {
			// Unchanged text at the same place, validated before without
			// an error or warning in the same context: only the checks
			// across groups run again.
			v.groupChecks(wg, gi, gp, groupNames, groupPrios, f)
			reuse.note(gi, g)
			p.Groups = append(p.Groups, g)
			continue
		}
		var g *Group
		if pre != nil {
			g = pre.groups[gi]
		} else {
			g = &Group{Name: wg.Name, Priority: wg.Priority, Pos: v.pos.Lookup(gp), Policy: f.Name}
		}
		v.groupChecks(wg, gi, gp, groupNames, groupPrios, f)
		collNames := map[string]int{}
		collPrios := map[string]int{}
		for ci := range wg.RuleCollections {
			wc := &wg.RuleCollections[ci]
			cp := fmt.Sprintf("%s.ruleCollections[%d]", gp, ci)
			c := reuse.collection(gi, ci, g) // incremental.go
			if c == nil && pre != nil {
				c = pre.colls[gi][ci]
			}
			if c == nil {
				c = v.collection(wc, cp, g)
			}
			reuse.noteColl(gi, ci, len(wg.RuleCollections), c)
			if wc.Name != "" {
				if prev, dup := collNames[strings.ToLower(wc.Name)]; dup {
					v.errorf(cp+".name", "duplicate rule collection name %q in group %q (also ruleCollections[%d])", wc.Name, wg.Name, prev)
				} else {
					collNames[strings.ToLower(wc.Name)] = ci
				}
			}
			if c.Kind != KindInvalid && wc.Priority >= 100 && wc.Priority <= 65000 {
				key := fmt.Sprintf("%d/%d", c.Kind, wc.Priority)
				if prev, dup := collPrios[key]; dup {
					v.errorf(cp+".priority", "rule collection %q: priority %d is already used by %s collection %q in group %q", wc.Name, wc.Priority, c.Kind, wg.RuleCollections[prev].Name, wg.Name)
				} else {
					collPrios[key] = ci
				}
			}
			g.Collections = append(g.Collections, c)
		}
		sort.SliceStable(g.Collections, func(i, j int) bool { return g.Collections[i].Priority < g.Collections[j].Priority })
		reuse.note(gi, g)
		p.Groups = append(p.Groups, g)
	}
	sort.SliceStable(p.Groups, func(i, j int) bool { return p.Groups[i].Priority < p.Groups[j].Priority })
	if v.base != nil {
		// The base policy's groups come first, whatever their priorities.
		p.Groups = append(v.inheritedGroups(p), p.Groups...)
	}
	sortErrors(v.errs)
	sortErrors(v.warns)
	if v.base != nil {
		v.warns = append(append(ErrorList(nil), v.base.Warnings...), v.warns...)
	}
	p.Warnings = v.warns
	if len(v.errs) > 0 {
		return p, v.cap.finish(v.errs, v.file)
	}
	return p, nil
}

// groupChecks checks a group's name and priority, also against the
// groups before it.
func (v *validator) groupChecks(wg *WireGroup, gi int, gp string, groupNames map[string]int, groupPrios map[int]int, f *File) {
	if wg.Name == "" {
		v.errorf(gp, "rule collection group: missing name")
	} else if bg := v.baseGroup(wg.Name); bg != nil {
		v.errorf(gp+".name", "rule collection group %q is also a group of the base policy %q (%s): names must differ across a policy and its base, as the decision logs name the group", wg.Name, bg.Policy, bg.Pos)
	} else if prev, dup := groupNames[strings.ToLower(wg.Name)]; dup {
		v.errorf(gp+".name", "duplicate rule collection group name %q (also ruleCollectionGroups[%d])", wg.Name, prev)
	} else {
		groupNames[strings.ToLower(wg.Name)] = gi
	}
	if v.priority(gp+".priority", wg.Priority, named("rule collection group", wg.Name)) {
		if prev, dup := groupPrios[wg.Priority]; dup {
			v.errorf(gp+".priority", "rule collection group %q: priority %d is already used by %q", wg.Name, wg.Priority, f.RuleCollectionGroups[prev].Name)
		} else {
			groupPrios[wg.Priority] = gi
		}
	}
}

func sortErrors(l ErrorList) {
	sort.SliceStable(l, func(i, j int) bool {
		if si, sj := isCapSummary(l[i]), isCapSummary(l[j]); si != sj {
			return sj // the "... and N more errors" entries last
		}
		a, b := l[i].Pos, l[j].Pos
		if a.File != b.File {
			return false
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
}

func quote(s string) string { return strconv.Quote(s) }

func (v *validator) priority(path string, prio int, what subject) bool {
	if prio < 100 || prio > 65000 {
		if prio == 0 {
			v.keyOrValue(path, "%s: missing priority (100-65000)", what)
		} else {
			v.errorf(path, "%s: priority %d is outside 100-65000", what, prio)
		}
		return false
	}
	return true
}

// keyOrValue reports on the field if present, else on its parent.
func (v *validator) keyOrValue(path, format string, args ...any) {
	v.errorf(path, format, args...)
}

func (v *validator) loadServiceTags(f *File, opts Options) {
	v.tags = ServiceTags{}
	if v.base != nil {
		for k, s := range v.base.tags {
			v.tags[k] = s
		}
	}
	switch {
	case opts.ServiceTags != nil:
		for k, s := range opts.ServiceTags {
			v.tags[k] = s
		}
		v.tagsFrom = "the given service tags"
	case opts.ServiceTagsFile != "":
		t, err := LoadServiceTags(opts.ServiceTagsFile)
		if err != nil {
			v.errs = append(v.errs, &Error{Pos: Pos{File: opts.ServiceTagsFile}, Msg: "service tags: " + err.Error()})
		}
		for k, s := range t {
			v.tags[k] = s
		}
		v.tagsFrom = opts.ServiceTagsFile
	case f.ServiceTags != "":
		path := f.ServiceTags
		if !filepath.IsAbs(path) {
			path = filepath.Join(v.dir, path)
		}
		t, err := LoadServiceTags(path)
		if err != nil {
			v.errorf("serviceTags", "service tags: %v", err)
		}
		for k, s := range t {
			v.tags[k] = s
		}
		v.tagsFrom = path
	}
	names := make([]string, 0, len(f.ServiceTagDefinitions))
	for name := range f.ServiceTagDefinitions {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := "serviceTagDefinitions." + name
		if !validTagName(name) || looksNumeric(name) || name == "*" {
			v.keyErrorf(path, "bad service tag name %q", name)
			continue
		}
		if v.base != nil && v.base.tagDefs[strings.ToLower(name)] {
			v.keyErrorf(path, "service tag %q is defined by the base policy %q: a child policy cannot change what its base policy's rules match", name, v.base.Name)
			continue
		}
		set := v.plainAddrs(path, f.ServiceTagDefinitions[name], named("service tag", name))
		v.tags[strings.ToLower(name)] = set
	}
}

// plainAddrs parses a list of IPs, CIDRs and ranges (no names).
func (v *validator) plainAddrs(path string, list []string, what subject) AddrSet {
	var b AddrSetBuilder
	for i, a := range list {
		tok, err := ParseAddrToken(a, &b)
		if err != nil {
			v.errorf(item(path, i), "%s: %v", what, err)
			continue
		}
		if tok == TokenName {
			v.errorf(item(path, i), "%s: %q is not an IP address, CIDR or range", what, a)
		}
	}
	return b.Build()
}

func (v *validator) buildIPGroups(f *File) {
	v.ipGroups = map[string]*AddrSet{}
	if v.base != nil {
		for k, s := range v.base.IPGroups {
			v.ipGroups[k] = s
		}
	}
	names := make([]string, 0, len(f.IPGroups))
	for name := range f.IPGroups {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := "ipGroups." + name
		if !validTagName(name) {
			v.keyErrorf(path, "bad IP group name %q", name)
			continue
		}
		if _, inBase := v.ipGroups[strings.ToLower(name)]; inBase && v.base != nil {
			v.keyErrorf(path, "IP group %q is defined by the base policy %q: a child policy uses it as it is and cannot redefine it", name, v.base.Name)
			continue
		}
		set := v.plainAddrs(path, f.IPGroups[name], named("IP group", name))
		v.ipGroups[strings.ToLower(name)] = &set
	}
}

func (v *validator) buildFQDNTags(f *File) {
	v.fqdnTags = map[string][]string{}
	from := BuiltinFQDNTags()
	if v.base != nil {
		from = v.base.FQDNTags
	}
	for name, pats := range from {
		v.fqdnTags[strings.ToLower(name)] = pats
	}
	names := make([]string, 0, len(f.FQDNTags))
	for name := range f.FQDNTags {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := "fqdnTags." + name
		if !validTagName(name) {
			v.keyErrorf(path, "bad FQDN tag name %q", name)
			continue
		}
		if _, inBase := v.fqdnTags[strings.ToLower(name)]; inBase && v.base != nil {
			v.keyErrorf(path, "FQDN tag %q is already defined for the base policy %q (built in or there): a child policy cannot change it; define a tag of another name", name, v.base.Name)
			continue
		}
		for i, s := range f.FQDNTags[name] {
			if _, err := ParseFQDNPattern(expandLocation(s, v.location)); err != nil {
				v.errorf(fmt.Sprintf("%s[%d]", path, i), "FQDN tag %q: %v", name, err)
			}
		}
		v.fqdnTags[strings.ToLower(name)] = f.FQDNTags[name]
	}
}

func (v *validator) threatIntel(f *File, p *Policy) {
	ti := f.ThreatIntel
	if ti == nil {
		return
	}
	switch strings.ToLower(ti.Mode) {
	case "", "off":
		p.ThreatIntel.Mode = ActionInvalid
	case "alert":
		p.ThreatIntel.Mode = ActionAlert
	case "deny":
		p.ThreatIntel.Mode = ActionDeny
	default:
		v.errorf("threatIntel.mode", "threatIntel.mode must be Off, Alert or Deny, not %q", ti.Mode)
	}
	if al := ti.Allowlist; al != nil {
		p.ThreatIntel.AllowAddresses = v.plainAddrs("threatIntel.allowlist.ipAddresses", al.IPAddresses, subject{kind: "threat-intel allowlist"})
		for i, s := range al.FQDNs {
			pat, err := ParseFQDNPattern(s)
			if err != nil {
				v.errorf(fmt.Sprintf("threatIntel.allowlist.fqdns[%d]", i), "threat-intel allowlist: %v", err)
				continue
			}
			p.ThreatIntel.AllowFQDNs = append(p.ThreatIntel.AllowFQDNs, pat)
		}
	}
	names := map[string]bool{}
	for i, wf := range ti.Feeds {
		fp := fmt.Sprintf("threatIntel.feeds[%d]", i)
		feed := Feed{Name: wf.Name, URL: wf.URL, Format: strings.ToLower(wf.Format)}
		if wf.Name == "" {
			v.errorf(fp, "threat-intel feed: missing name")
		} else if names[wf.Name] {
			v.errorf(fp+".name", "duplicate threat-intel feed name %q", wf.Name)
		}
		names[wf.Name] = true
		if (wf.File == "") == (wf.URL == "") {
			v.errorf(fp, "threat-intel feed %q: give exactly one of file and url", wf.Name)
		}
		if wf.File != "" {
			feed.Path = wf.File
			if !filepath.IsAbs(feed.Path) {
				feed.Path = filepath.Join(v.dir, feed.Path)
			}
		}
		if wf.URL != "" && !strings.HasPrefix(wf.URL, "http://") && !strings.HasPrefix(wf.URL, "https://") {
			v.errorf(fp+".url", "threat-intel feed %q: url must be http:// or https://", wf.Name)
		}
		switch feed.Format {
		case "":
			feed.Format = "plain"
		case "plain", "drop", "hosts":
		default:
			v.errorf(fp+".format", "threat-intel feed %q: format must be plain, drop or hosts, not %q", wf.Name, wf.Format)
		}
		p.ThreatIntel.Feeds = append(p.ThreatIntel.Feeds, feed)
	}
}

func (v *validator) dns(f *File, p *Policy) {
	if f.DNS == nil {
		return
	}
	if f.DNS.EnableProxy != nil {
		p.DNS.EnableProxy = *f.DNS.EnableProxy
	}
	for i, s := range f.DNS.Servers {
		path := fmt.Sprintf("dns.servers[%d]", i)
		if ap, err := netip.ParseAddrPort(s); err == nil {
			p.DNS.Servers = append(p.DNS.Servers, ap)
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			v.errorf(path, "dns server %q: not an IP address or IP:port", s)
			continue
		}
		p.DNS.Servers = append(p.DNS.Servers, netip.AddrPortFrom(a, 53))
	}
}

func (v *validator) collection(wc *WireCollection, cp string, g *Group) *Collection {
	c := &Collection{Name: wc.Name, Priority: wc.Priority, Group: g, Pos: v.pos.Lookup(cp)}
	what := named("rule collection", wc.Name)
	if wc.Name == "" {
		v.errorf(cp, "rule collection: missing name")
	}
	v.priority(cp+".priority", wc.Priority, what)
	var ok bool
	if c.Kind, ok = ParseKind(wc.Kind); !ok {
		if wc.Kind == "" {
			v.errorf(cp, "%s: missing kind (DNAT, Network or Application)", what)
		} else {
			v.errorf(cp+".kind", "%s: kind must be DNAT, Network or Application, not %q", what, wc.Kind)
		}
	}
	if c.Action, ok = ParseAction(wc.Action); !ok {
		if wc.Action == "" {
			v.errorf(cp, "%s: missing action (Allow, Deny or DNAT)", what)
		} else {
			v.errorf(cp+".action", "%s: action must be Allow, Deny or DNAT, not %q", what, wc.Action)
		}
	} else if c.Kind == KindDNAT && c.Action != ActionDNAT {
		v.errorf(cp+".action", "%s: a DNAT collection's action must be DNAT, not %s", what, wc.Action)
	} else if c.Kind != KindDNAT && c.Kind != KindInvalid && c.Action == ActionDNAT {
		v.errorf(cp+".action", "%s: a %s collection's action must be Allow or Deny, not DNAT", what, c.Kind)
	}
	names := map[string]int{}
	at := v.pos.cursor(cp + ".rules")
	for ri := range wc.Rules {
		wr := &wc.Rules[ri]
		rp := item(cp+".rules", ri)
		if wr.Name == "" {
			v.errorf(rp, "rule in collection %q: missing name", wc.Name)
		} else if prev, dup := names[strings.ToLower(wr.Name)]; dup {
			v.errorf(rp+".name", "duplicate rule name %q in collection %q (also rules[%d])", wr.Name, wc.Name, prev)
		} else {
			names[strings.ToLower(wr.Name)] = ri
		}
		r := &Rule{Name: wr.Name, Description: wr.Description, Collection: c, Pos: at.Item(ri, rp)}
		switch c.Kind {
		case KindNetwork:
			v.networkRule(wr, rp, r)
		case KindApplication:
			v.applicationRule(wr, rp, r)
		case KindDNAT:
			v.natRule(wr, rp, r)
		}
		c.Rules = append(c.Rules, r)
	}
	return c
}

// setField is a field of a rule and whether the rule sets it.
type setField struct {
	name string
	set  bool
}

// notAllowed reports, in the order of their names, fields set on a rule
// that its kind does not have.
func (v *validator) notAllowed(rp string, kind Kind, fields ...setField) {
	var keys []string
	for _, f := range fields {
		if f.set {
			keys = append(keys, f.name)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		v.keyErrorf(rp+"."+k, "field %s is not allowed in a %s rule", k, kind)
	}
}

// subject names what a message is about — a kind and, when named, its
// quoted name ("network rule \"r\"") — built only when a message is: a
// 10,000-rule policy built a string per rule for messages it never had.
type subject struct {
	kind, name string
	named      bool
}

func named(kind, name string) subject { return subject{kind: kind, name: name, named: true} }

func (s subject) String() string {
	if !s.named {
		return s.kind
	}
	return s.kind + " " + quote(s.name)
}

// item is the path of list item i ("path[i]").
func item(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func (v *validator) sources(wr *WireRule, rp string, what subject, r *Rule) {
	if len(wr.SourceAddresses) == 0 && len(wr.SourceIPGroups) == 0 {
		v.errorf(rp, "%s: needs sourceAddresses or sourceIpGroups", what)
	}
	var b AddrSetBuilder
	v.addrs(&b, rp, ".sourceAddresses", wr.SourceAddresses, what, true)
	v.groups(&b, rp, ".sourceIpGroups", wr.SourceIPGroups, what)
	r.Source = b.Build()
}

// addrs adds address tokens of the list at rp+field; names are service
// tags when tagsOK.
func (v *validator) addrs(b *AddrSetBuilder, rp, field string, list []string, what subject, tagsOK bool) {
	for i, a := range list {
		tok, err := ParseAddrToken(a, b)
		if err != nil {
			v.errorf(item(rp+field, i), "%s: %v", what, err)
			continue
		}
		if tok != TokenName {
			continue
		}
		if !tagsOK {
			v.errorf(item(rp+field, i), "%s: %q is not an IP address (service tags are not allowed here)", what, a)
			continue
		}
		set, ok := v.tags.Lookup(a)
		if !ok {
			from := "no service tag file is loaded (set serviceTags: in the policy or pass --service-tags)"
			if v.tagsFrom != "" {
				from = "not in " + v.tagsFrom + " nor in serviceTagDefinitions"
			}
			v.errorf(item(rp+field, i), "%s: unknown service tag %q: %s", what, a, from)
			continue
		}
		b.AddSet(&set)
	}
}

func (v *validator) groups(b *AddrSetBuilder, rp, field string, list []string, what subject) {
	for i, name := range list {
		set, ok := v.ipGroups[strings.ToLower(name)]
		if !ok {
			v.errorf(item(rp+field, i), "%s: unknown IP group %q (define it under ipGroups:)", what, name)
			continue
		}
		b.AddSet(set)
	}
}

func (v *validator) ports(rp, field string, list []string, what subject, single bool) []PortRange {
	var out []PortRange
	for i, s := range list {
		pr, err := ParsePortRange(s)
		if err != nil {
			v.errorf(item(rp+field, i), "%s: %v", what, err)
			continue
		}
		if single && pr.Lo != pr.Hi {
			v.errorf(item(rp+field, i), "%s: a DNAT rule takes single ports, not %q", what, s)
			continue
		}
		out = append(out, pr)
	}
	return MergePorts(out)
}

// ParsePortRange parses "80", "1000-2000" or "*".
func ParsePortRange(s string) (PortRange, error) {
	s = strings.TrimSpace(s)
	if s == "*" {
		return PortRange{1, 65535}, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := parsePort(lo)
	if err != nil {
		return PortRange{}, err
	}
	if !isRange {
		return PortRange{a, a}, nil
	}
	b, err := parsePort(hi)
	if err != nil {
		return PortRange{}, err
	}
	if b < a {
		return PortRange{}, fmt.Errorf("bad port range %q: start is after end", s)
	}
	return PortRange{a, b}, nil
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("bad port %q: not a number", s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %d out of range 1-65535", n)
	}
	return uint16(n), nil
}

// MergePorts returns the port ranges of in (empty ones, Lo > Hi, dropped)
// sorted, with the ranges that overlap or touch merged: the one port
// merge, iprange.Merge on ports. in is not modified.
func MergePorts(in []PortRange) []PortRange {
	rs := make([]iprange.Range, 0, len(in))
	for _, r := range in {
		if r.Lo <= r.Hi {
			rs = append(rs, iprange.Range{Lo: iprange.U128{Lo: uint64(r.Lo)}, Hi: iprange.U128{Lo: uint64(r.Hi)}})
		}
	}
	rs = iprange.Merge(rs)
	out := make([]PortRange, len(rs))
	for i, r := range rs {
		out[i] = PortRange{uint16(r.Lo.Lo), uint16(r.Hi.Lo)}
	}
	return out
}

func (v *validator) protocols(rp string, list []string, what subject, icmpOK bool) Proto {
	if len(list) == 0 {
		v.errorf(rp, "%s: needs protocols", what)
		return 0
	}
	var p Proto
	for i, s := range list {
		x, ok := ParseProto(s)
		if !ok || (!icmpOK && x == ProtoICMP) {
			allowed := "TCP, UDP, ICMP or Any"
			if !icmpOK {
				allowed = "TCP, UDP or Any"
			}
			v.errorf(item(rp+".protocols", i), "%s: protocol must be %s, not %q", what, allowed, s)
			continue
		}
		p |= x
	}
	if !icmpOK {
		p &^= ProtoICMP
	}
	return p
}

func (v *validator) networkRule(wr *WireRule, rp string, r *Rule) {
	what := named("network rule", wr.Name)
	v.notAllowed(rp, KindNetwork, setField{"targetFqdns", len(wr.TargetFQDNs) > 0}, setField{"fqdnTags", len(wr.FQDNTags) > 0},
		setField{"translatedAddress", wr.TranslatedAddress != ""}, setField{"translatedFqdn", wr.TranslatedFQDN != ""}, setField{"translatedPort", wr.TranslatedPort != ""})
	r.Protocols = v.protocols(rp, wr.Protocols, what, true)
	v.sources(wr, rp, what, r)
	if len(wr.DestinationAddresses) == 0 && len(wr.DestinationIPGroups) == 0 && len(wr.DestinationFQDNs) == 0 {
		v.errorf(rp, "%s: needs destinationAddresses, destinationIpGroups or destinationFqdns", what)
	}
	var b AddrSetBuilder
	v.addrs(&b, rp, ".destinationAddresses", wr.DestinationAddresses, what, true)
	v.groups(&b, rp, ".destinationIpGroups", wr.DestinationIPGroups, what)
	r.Destination = b.Build()
	for i, s := range wr.DestinationFQDNs {
		if strings.Contains(s, "*") {
			v.errorf(item(rp+".destinationFqdns", i), "%s: wildcard FQDN %q is not allowed in a network rule (use an application rule)", what, s)
			continue
		}
		n, err := NormalizeFQDN(s)
		if err != nil {
			v.errorf(item(rp+".destinationFqdns", i), "%s: bad FQDN %q: %v", what, s, err)
			continue
		}
		r.DestinationFQDNs = append(r.DestinationFQDNs, n)
	}
	if len(wr.DestinationPorts) == 0 {
		v.errorf(rp, "%s: needs destinationPorts (use '*' for all)", what)
	}
	r.DestinationPorts = v.ports(rp, ".destinationPorts", wr.DestinationPorts, what, false)
}

func (v *validator) applicationRule(wr *WireRule, rp string, r *Rule) {
	what := named("application rule", wr.Name)
	v.notAllowed(rp, KindApplication, setField{"destinationAddresses", len(wr.DestinationAddresses) > 0}, setField{"destinationIpGroups", len(wr.DestinationIPGroups) > 0},
		setField{"destinationFqdns", len(wr.DestinationFQDNs) > 0}, setField{"destinationPorts", len(wr.DestinationPorts) > 0},
		setField{"translatedAddress", wr.TranslatedAddress != ""}, setField{"translatedFqdn", wr.TranslatedFQDN != ""}, setField{"translatedPort", wr.TranslatedPort != ""})
	if len(wr.Protocols) == 0 {
		v.errorf(rp, "%s: needs protocols (e.g. Http:80, Https:443)", what)
	}
	for i, s := range wr.Protocols {
		ap, err := ParseAppProtocol(s)
		if err != nil {
			v.errorf(fmt.Sprintf("%s.protocols[%d]", rp, i), "%s: %v", what, err)
			continue
		}
		r.AppProtocols = append(r.AppProtocols, ap)
	}
	v.sources(wr, rp, what, r)
	if len(wr.TargetFQDNs) == 0 && len(wr.FQDNTags) == 0 {
		v.errorf(rp, "%s: needs targetFqdns or fqdnTags", what)
	}
	for i, s := range wr.TargetFQDNs {
		pat, err := ParseFQDNPattern(s)
		if err != nil {
			v.errorf(fmt.Sprintf("%s.targetFqdns[%d]", rp, i), "%s: %v", what, err)
			continue
		}
		r.TargetFQDNs = append(r.TargetFQDNs, pat)
	}
	for i, tag := range wr.FQDNTags {
		pats, ok := v.fqdnTags[strings.ToLower(tag)]
		if !ok {
			if az, known := LookupFQDNTag(tag); known {
				v.errorf(fmt.Sprintf("%s.fqdnTags[%d]", rp, i), "%s: FQDN tag %q is an Azure tag clusterwall does not build in (%s): define it under fqdnTags:", what, tag, az.Why)
			} else {
				v.errorf(fmt.Sprintf("%s.fqdnTags[%d]", rp, i), "%s: unknown FQDN tag %q (built in: %s; define more under fqdnTags:)", what, tag, builtinTagNames())
			}
			continue
		}
		r.FQDNTags = append(r.FQDNTags, tag)
		for _, s := range pats {
			pat, err := ParseFQDNPattern(expandLocation(s, v.location))
			if err != nil {
				continue // reported on the tag definition
			}
			pat.Tag = tag
			r.TargetFQDNs = append(r.TargetFQDNs, pat)
		}
	}
}

// ParseAppProtocol parses "Https:443", "https=443" or "Https" (default port).
func ParseAppProtocol(s string) (AppProtocol, error) {
	name, port, hasPort := strings.Cut(strings.TrimSpace(s), ":")
	if !hasPort {
		name, port, hasPort = strings.Cut(strings.TrimSpace(s), "=")
	}
	sch, ok := ParseScheme(name)
	if !ok {
		return AppProtocol{}, fmt.Errorf("protocol must be Http, Https or Mssql with an optional port (Https:443), not %q", s)
	}
	ap := AppProtocol{Scheme: sch}
	if !hasPort {
		switch sch {
		case SchemeHTTP:
			ap.Port = 80
		case SchemeHTTPS:
			ap.Port = 443
		case SchemeMSSQL:
			ap.Port = 1433
		}
		return ap, nil
	}
	p, err := parsePort(port)
	if err != nil {
		return AppProtocol{}, err
	}
	ap.Port = p
	return ap, nil
}

func (v *validator) natRule(wr *WireRule, rp string, r *Rule) {
	what := named("DNAT rule", wr.Name)
	v.notAllowed(rp, KindDNAT, setField{"targetFqdns", len(wr.TargetFQDNs) > 0}, setField{"fqdnTags", len(wr.FQDNTags) > 0},
		setField{"destinationFqdns", len(wr.DestinationFQDNs) > 0}, setField{"destinationIpGroups", len(wr.DestinationIPGroups) > 0})
	r.Protocols = v.protocols(rp, wr.Protocols, what, false)
	v.sources(wr, rp, what, r)
	if len(wr.DestinationAddresses) == 0 {
		v.errorf(rp, "%s: needs destinationAddresses (the firewall's public IP)", what)
	}
	var b AddrSetBuilder
	for i, a := range wr.DestinationAddresses {
		addr, err := netip.ParseAddr(strings.TrimSpace(a))
		if err != nil {
			v.errorf(item(rp+".destinationAddresses", i), "%s: destination must be an IP address (the firewall's public IP), not %q", what, a)
			continue
		}
		b.AddRange(addr.Unmap(), addr.Unmap())
	}
	r.Destination = b.Build()
	if len(wr.DestinationPorts) == 0 {
		v.errorf(rp, "%s: needs destinationPorts", what)
	}
	r.DestinationPorts = v.ports(rp, ".destinationPorts", wr.DestinationPorts, what, true)
	switch {
	case wr.TranslatedAddress == "" && wr.TranslatedFQDN == "":
		v.errorf(rp, "%s: needs translatedAddress or translatedFqdn", what)
	case wr.TranslatedAddress != "" && wr.TranslatedFQDN != "":
		v.errorf(rp+".translatedFqdn", "%s: give translatedAddress or translatedFqdn, not both", what)
	case wr.TranslatedAddress != "":
		a, err := netip.ParseAddr(strings.TrimSpace(wr.TranslatedAddress))
		if err != nil {
			v.errorf(rp+".translatedAddress", "%s: translatedAddress must be an IP address, not %q", what, wr.TranslatedAddress)
		} else {
			r.TranslatedAddress = a.Unmap()
		}
	default:
		n, err := NormalizeFQDN(wr.TranslatedFQDN)
		if err != nil {
			v.errorf(rp+".translatedFqdn", "%s: bad translatedFqdn %q: %v", what, wr.TranslatedFQDN, err)
		}
		r.TranslatedFQDN = n
	}
	if wr.TranslatedPort == "" {
		v.errorf(rp, "%s: needs translatedPort", what)
	} else if p, err := parsePort(wr.TranslatedPort); err != nil {
		v.errorf(rp+".translatedPort", "%s: translatedPort: %v", what, err)
	} else {
		r.TranslatedPort = p
	}
	if r.TranslatedAddress.IsValid() {
		for _, d := range r.Destination.Ranges {
			if d.From.Is4() != r.TranslatedAddress.Is4() {
				v.errorf(rp+".translatedAddress", "%s: translatedAddress %s and destination %s are of different IP families", what, r.TranslatedAddress, d.From)
				break
			}
		}
		// A DNAT rule translates to one address family, so sources of the
		// other family can never match it (the flow's destination, the
		// public IP, has the translated address's family).
		for i, s := range wr.SourceAddresses {
			if pfx, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil && pfx.Addr().Is4() != r.TranslatedAddress.Is4() {
				v.warnf(fmt.Sprintf("%s.sourceAddresses[%d]", rp, i), "%s: source %s can never match: the rule's destination and translatedAddress are %s (add a separate DNAT rule for the other family)", what, s, family(r.TranslatedAddress))
			} else if a, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil && a.Unmap().Is4() != r.TranslatedAddress.Is4() {
				v.warnf(fmt.Sprintf("%s.sourceAddresses[%d]", rp, i), "%s: source %s can never match: the rule's destination and translatedAddress are %s (add a separate DNAT rule for the other family)", what, s, family(r.TranslatedAddress))
			}
		}
	}
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// builtinTagNames lists the built-in FQDN tags for messages.
func builtinTagNames() string {
	var names []string
	for n := range BuiltinFQDNTags() {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

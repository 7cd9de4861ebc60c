package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// Defaults of the guardrails and of the Service DNAT group.
const (
	DefaultTeamMinPriority    = 1000
	DefaultTeamMaxPriority    = 65000
	DefaultServiceDNATPrio    = 150
	ServiceDNATGroup          = "kubernetes-services"
	DefaultFirewallPolicyName = "default"
)

// Inputs is everything a composition reads: the objects of one
// FirewallPolicy as the API server has them.
type Inputs struct {
	Policy *v1.FirewallPolicy
	// Bases are the chain of base policies Policy.Spec.BasePolicy names:
	// Bases[0] its base, Bases[1] that one's base, ...
	Bases []*v1.FirewallPolicy
	// BaseError says why the chain could not be read (a missing base, a
	// cycle); the policy is then not accepted.
	BaseError string
	Groups    []v1.RuleCollectionGroup // those naming Policy
	Pods      []corev1.Pod
	Slices    []discoveryv1.EndpointSlice
	Services  []corev1.Service
	// Options are the validator's options (service tags), the same as the
	// daemon's.
	Options policy.Options
}

// Verdict is what the composition decided about one object.
type Verdict struct {
	Accepted bool
	Reason   string // a v1alpha1.Reason* when not accepted
	Errors   []v1.FieldError
}

// Message is the verdict's errors as one condition message.
func (v Verdict) Message() string {
	var b strings.Builder
	for i, e := range v.Errors {
		if i > 0 {
			b.WriteString("; ")
		}
		if e.Field != "" {
			b.WriteString(e.Field + ": ")
		}
		b.WriteString(e.Message)
	}
	return b.String()
}

// ServiceVerdict is what happened to one annotated Service.
type ServiceVerdict struct {
	Published bool
	Message   string // why not, or what was published
}

// Origin says where a composed rule collection group came from.
type Origin struct {
	Kind      string // "FirewallPolicy", "RuleCollectionGroup" or "Service"
	Name      types.NamespacedName
	FieldBase string // e.g. spec.ruleCollectionGroups[2] or spec
	// collIdx maps composed collection index -> object collection index;
	// ruleIdx maps [composed coll][composed rule] -> object rule index.
	collIdx []int
	ruleIdx [][]int
}

// Composition is the composed policy and the verdict on every object.
type Composition struct {
	// name is the FirewallPolicy's name; bases its base policies' names.
	name  string
	bases []string

	File    *policy.File
	YAML    []byte
	Hash    string // sha256 of YAML
	Origins []Origin

	Policy   Verdict
	Groups   map[types.NamespacedName]Verdict
	Services map[types.NamespacedName]ServiceVerdict
}

// Compose builds the policy of in.Policy: its settings and groups, the
// DNAT group of the published Services, and every RuleCollectionGroup that
// passes the guardrails and the validator, with sourceSelectors resolved to
// pod addresses. When the FirewallPolicy itself is invalid, Policy is not
// accepted and File is nil: nothing may be applied.
func Compose(in Inputs) *Composition {
	c := &Composition{
		Groups:   map[types.NamespacedName]Verdict{},
		Services: map[types.NamespacedName]ServiceVerdict{},
	}
	fp := in.Policy
	c.name = fp.Name
	pods := newPodIndex(in.Pods, in.Slices)
	f := &policy.File{
		APIVersion:            "clusterwall.io/v1alpha1",
		Kind:                  "FirewallPolicy",
		Name:                  policyName(fp),
		Location:              fp.Spec.Location,
		ServiceTagDefinitions: fp.Spec.ServiceTagDefinitions,
		IPGroups:              fp.Spec.IPGroups,
		FQDNTags:              fp.Spec.FQDNTags,
		ThreatIntel:           wireThreatIntel(fp.Spec.ThreatIntel),
		DNS:                   wireDNS(fp.Spec.DNS),
	}
	if fp.Spec.BasePolicy != "" {
		if in.BaseError != "" {
			c.Policy = Verdict{Reason: v1.ReasonBasePolicy, Errors: []v1.FieldError{{Field: "spec.basePolicy", Message: in.BaseError}}}
			return c
		}
		f.BasePolicy = &policy.WireBase{Policy: baseFile(in.Bases, pods)}
		for _, b := range in.Bases {
			c.bases = append(c.bases, b.Name)
		}
	}
	fpName := types.NamespacedName{Name: fp.Name}
	var selErrs []v1.FieldError
	for i, g := range fp.Spec.RuleCollectionGroups {
		selErrs = append(selErrs, selectorErrors(g.RuleCollectionGroupSpec, fmt.Sprintf("spec.ruleCollectionGroups[%d]", i))...)
		wg, o := wireGroup(g.Name, g.RuleCollectionGroupSpec, "", pods)
		o.Kind, o.Name, o.FieldBase = "FirewallPolicy", fpName, fmt.Sprintf("spec.ruleCollectionGroups[%d]", i)
		f.RuleCollectionGroups = append(f.RuleCollectionGroups, wg)
		c.Origins = append(c.Origins, o)
	}
	if errs := c.validate(f, in.Options); len(errs) > 0 || len(selErrs) > 0 {
		c.Policy = Verdict{Reason: v1.ReasonInvalid, Errors: append(selErrs, c.fieldErrors(errs, func(Origin) bool { return true })...)}
		return c
	}
	c.Policy = Verdict{Accepted: true}

	// Services: one DNAT collection per published Service.
	if sd := fp.Spec.ServiceDNAT; sd != nil {
		if g, ok := c.serviceGroup(sd, in.Services); ok {
			f.RuleCollectionGroups = append(f.RuleCollectionGroups, g)
			c.Origins = append(c.Origins, Origin{Kind: "Service", FieldBase: "spec.serviceDNAT"})
			if errs := c.validate(f, in.Options); len(errs) > 0 {
				// The generated group does not fit (e.g. its priority is taken):
				// the FirewallPolicy's serviceDNAT is what to fix.
				f.RuleCollectionGroups = f.RuleCollectionGroups[:len(f.RuleCollectionGroups)-1]
				c.Origins = c.Origins[:len(c.Origins)-1]
				c.Policy = Verdict{Reason: v1.ReasonInvalid, Errors: serviceGroupErrors(errs, len(f.RuleCollectionGroups))}
				for k := range c.Services {
					c.Services[k] = ServiceVerdict{Message: "not published: the FirewallPolicy's serviceDNAT is invalid"}
				}
				c.File = nil
				return c
			}
		}
	}

	// Team groups, in priority order, each checked against the guardrails
	// and then validated together with everything accepted before it.
	groups := slices.Clone(in.Groups)
	sort.Slice(groups, func(i, j int) bool {
		if groups[i].Spec.Priority != groups[j].Spec.Priority {
			return groups[i].Spec.Priority < groups[j].Spec.Priority
		}
		if groups[i].Namespace != groups[j].Namespace {
			return groups[i].Namespace < groups[j].Namespace
		}
		return groups[i].Name < groups[j].Name
	})
	for i := range groups {
		g := &groups[i]
		key := types.NamespacedName{Namespace: g.Namespace, Name: g.Name}
		if errs := append(Guardrails(fp.Spec.Teams, g), selectorErrors(g.Spec.RuleCollectionGroupSpec, "spec")...); len(errs) > 0 {
			c.Groups[key] = Verdict{Reason: v1.ReasonGuardrail, Errors: errs}
			continue
		}
		wg, o := wireGroup(key.String(), g.Spec.RuleCollectionGroupSpec, g.Namespace, pods)
		o.Kind, o.Name, o.FieldBase = "RuleCollectionGroup", key, "spec"
		// Validate with placeholder sources for rules whose selector
		// matches no pod yet, so that their other fields are checked too.
		check, _ := wireGroup(key.String(), g.Spec.RuleCollectionGroupSpec, g.Namespace, placeholderPods{pods})
		f.RuleCollectionGroups = append(f.RuleCollectionGroups, check)
		c.Origins = append(c.Origins, checkOrigin(o, g.Spec.RuleCollectionGroupSpec))
		errs := c.validate(f, in.Options)
		f.RuleCollectionGroups = f.RuleCollectionGroups[:len(f.RuleCollectionGroups)-1]
		last := len(c.Origins) - 1
		if len(errs) > 0 {
			c.Groups[key] = Verdict{Reason: v1.ReasonInvalid, Errors: c.fieldErrors(errs, func(o Origin) bool { return o.Name == key })}
			c.Origins = c.Origins[:last]
			continue
		}
		c.Origins[last] = o
		f.RuleCollectionGroups = append(f.RuleCollectionGroups, wg)
		c.Groups[key] = Verdict{Accepted: true}
	}
	if errs := c.validate(f, in.Options); len(errs) > 0 {
		// Cannot happen when every part validated on its own; refuse rather
		// than apply something unchecked.
		c.Policy = Verdict{Reason: v1.ReasonInvalid, Errors: c.fieldErrors(errs, func(Origin) bool { return true })}
		return c
	}
	c.File = f
	data, err := yaml.Marshal(f)
	if err != nil {
		c.Policy = Verdict{Reason: v1.ReasonInvalid, Errors: []v1.FieldError{{Message: "encoding the composed policy: " + err.Error()}}}
		c.File = nil
		return c
	}
	c.YAML = append([]byte("# composed by the clusterwall controller from FirewallPolicy "+fp.Name+"\n"), data...)
	sum := sha256.Sum256(c.YAML)
	c.Hash = hex.EncodeToString(sum[:])
	return c
}

// policyName is the composed policy's name: the clusterwall.io/policy-name
// annotation (set by `export crd`), else the object's name.
func policyName(fp *v1.FirewallPolicy) string {
	if n := fp.Annotations["clusterwall.io/policy-name"]; n != "" {
		return n
	}
	return fp.Name
}

// validate runs the policy validator (the same as `clusterwall policy
// validate`) on f and returns its errors.
func (c *Composition) validate(f *policy.File, opts policy.Options) policy.ErrorList {
	_, err := policy.Validate(f, "", opts)
	if err == nil {
		return nil
	}
	if l, ok := err.(policy.ErrorList); ok {
		return l
	}
	return policy.ErrorList{{Msg: err.Error()}}
}

var groupPath = regexp.MustCompile(`^ruleCollectionGroups\[(\d+)\](?:\.ruleCollections\[(\d+)\](?:\.rules\[(\d+)\])?)?(.*)$`)

// MapPath turns a path of the composed policy into the object and field it
// came from: ruleCollectionGroups[3].ruleCollections[0].rules[2].destinationPorts[0]
// of a RuleCollectionGroup becomes spec.ruleCollections[0].rules[2].destinationPorts[0].
func (c *Composition) MapPath(path string) (Origin, string) {
	// A base policy's part: basePolicy.[basePolicy.]...
	depth := 0
	for strings.HasPrefix(path, "basePolicy.") {
		path = strings.TrimPrefix(path, "basePolicy.")
		depth++
	}
	if depth > 0 {
		o := Origin{Kind: "FirewallPolicy"}
		if depth-1 < len(c.bases) {
			o.Name = types.NamespacedName{Name: c.bases[depth-1]}
		}
		return o, "spec." + path
	}
	m := groupPath.FindStringSubmatch(path)
	if m == nil {
		// A top-level field (ipGroups, threatIntel, ...) of the FirewallPolicy.
		field := "spec"
		if path != "" {
			field += "." + path
		}
		return Origin{Kind: "FirewallPolicy"}, field
	}
	gi, _ := strconv.Atoi(m[1])
	if gi >= len(c.Origins) {
		return Origin{Kind: "FirewallPolicy"}, "spec"
	}
	o := c.Origins[gi]
	field := o.FieldBase
	if m[2] == "" {
		rest := m[4]
		if o.Kind == "RuleCollectionGroup" && rest == ".name" {
			return o, "metadata.name"
		}
		return o, field + rest
	}
	ci, _ := strconv.Atoi(m[2])
	oci := ci
	if ci < len(o.collIdx) {
		oci = o.collIdx[ci]
	}
	field += fmt.Sprintf(".ruleCollections[%d]", oci)
	if m[3] != "" {
		ri, _ := strconv.Atoi(m[3])
		ori := ri
		if ci < len(o.ruleIdx) && ri < len(o.ruleIdx[ci]) {
			ori = o.ruleIdx[ci][ri]
		}
		field += fmt.Sprintf(".rules[%d]", ori)
	}
	return o, field + m[4]
}

// fieldErrors maps validator errors to the fields of the objects keep selects.
func (c *Composition) fieldErrors(errs policy.ErrorList, keep func(Origin) bool) []v1.FieldError {
	var out []v1.FieldError
	for _, e := range errs {
		o, field := c.MapPath(e.Path)
		if !keep(o) {
			continue
		}
		if o.Kind == "FirewallPolicy" && o.Name.Name != "" && o.Name.Name != c.name {
			// A problem of a base policy: reported on spec.basePolicy.
			out = append(out, v1.FieldError{Field: "spec.basePolicy", Message: fmt.Sprintf("base FirewallPolicy %s: %s: %s", o.Name.Name, field, e.Msg)})
			continue
		}
		if o.Kind == "RuleCollectionGroup" && o.Name != (types.NamespacedName{}) && !strings.HasPrefix(field, "spec") && !strings.HasPrefix(field, "metadata") {
			field = "spec." + field
		}
		out = append(out, v1.FieldError{Field: field, Message: e.Msg})
	}
	if len(out) == 0 && len(errs) > 0 {
		// An error outside the object (another part of the policy): say so.
		for _, e := range errs {
			out = append(out, v1.FieldError{Field: e.Path, Message: e.Msg})
		}
	}
	return out
}

func serviceGroupErrors(errs policy.ErrorList, gi int) []v1.FieldError {
	prefix := fmt.Sprintf("ruleCollectionGroups[%d]", gi)
	var out []v1.FieldError
	for _, e := range errs {
		field := e.Path
		if strings.HasPrefix(field, prefix+".priority") {
			field = "spec.serviceDNAT.priority"
		} else if strings.HasPrefix(field, prefix) {
			field = "spec.serviceDNAT"
		}
		out = append(out, v1.FieldError{Field: field, Message: e.Msg})
	}
	return out
}

// Guardrails checks a team's group against the FirewallPolicy's limits and
// returns every violation with its field path.
func Guardrails(t *v1.TeamGuardrails, g *v1.RuleCollectionGroup) []v1.FieldError {
	minP, maxP := int32(DefaultTeamMinPriority), int32(DefaultTeamMaxPriority)
	kinds := []v1.CollectionKind{"Application"}
	actions := []v1.CollectionAction{"Allow", "Deny"}
	anySource := false
	if t != nil {
		if t.MinPriority != nil {
			minP = *t.MinPriority
		}
		if t.MaxPriority != nil {
			maxP = *t.MaxPriority
		}
		if len(t.AllowedKinds) > 0 {
			kinds = t.AllowedKinds
		}
		if len(t.AllowedActions) > 0 {
			actions = t.AllowedActions
		}
		anySource = t.AnySource
	}
	var errs []v1.FieldError
	bad := func(field, format string, args ...any) {
		errs = append(errs, v1.FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if p := g.Spec.Priority; p < minP || p > maxP {
		bad("spec.priority", "priority %d is outside the range %d-%d the FirewallPolicy allows teams", p, minP, maxP)
	}
	for ci, c := range g.Spec.RuleCollections {
		cp := fmt.Sprintf("spec.ruleCollections[%d]", ci)
		if !slices.Contains(kinds, c.Kind) {
			bad(cp+".kind", "teams may not add %s rules (the FirewallPolicy allows %s)", c.Kind, joinAny(kinds))
		}
		if !slices.Contains(actions, c.Action) && c.Kind != "DNAT" {
			bad(cp+".action", "teams may not use action %s (the FirewallPolicy allows %s)", c.Action, joinAny(actions))
		}
		if anySource {
			continue
		}
		for ri, r := range c.Rules {
			rp := fmt.Sprintf("%s.rules[%d]", cp, ri)
			if len(r.SourceAddresses) > 0 {
				bad(rp+".sourceAddresses", "teams name their sources with sourceSelector (pods of namespace %s), not addresses", g.Namespace)
			}
			if len(r.SourceIPGroups) > 0 {
				bad(rp+".sourceIpGroups", "teams name their sources with sourceSelector (pods of namespace %s), not IP groups", g.Namespace)
			}
			if s := r.SourceSelector; s != nil && s.Namespace != "" && s.Namespace != g.Namespace {
				bad(rp+".sourceSelector.namespace", "namespace %q is not this group's namespace %q", s.Namespace, g.Namespace)
			}
		}
	}
	return errs
}

// selectorErrors reports sourceSelectors that are not valid label selectors.
func selectorErrors(spec v1.RuleCollectionGroupSpec, base string) []v1.FieldError {
	var errs []v1.FieldError
	for ci, c := range spec.RuleCollections {
		for ri, r := range c.Rules {
			if r.SourceSelector == nil || r.SourceSelector.PodSelector == nil {
				continue
			}
			if _, err := metav1.LabelSelectorAsSelector(r.SourceSelector.PodSelector); err != nil {
				errs = append(errs, v1.FieldError{
					Field:   fmt.Sprintf("%s.ruleCollections[%d].rules[%d].sourceSelector.podSelector", base, ci, ri),
					Message: err.Error(),
				})
			}
		}
	}
	return errs
}

func joinAny[T ~string](l []T) string {
	s := make([]string, len(l))
	for i, v := range l {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// addrSource resolves a sourceSelector to pod addresses.
type addrSource interface {
	addrs(ns string, sel *metav1.LabelSelector) ([]string, error)
}

// placeholderPods answers like pods, but never with no address: the
// validator then checks a rule whose selector matches no pod yet.
type placeholderPods struct{ addrSource }

func (p placeholderPods) addrs(ns string, sel *metav1.LabelSelector) ([]string, error) {
	a, err := p.addrSource.addrs(ns, sel)
	if err == nil && len(a) == 0 {
		a = []string{"0.0.0.0/32"}
	}
	return a, err
}

// wireGroup turns a group spec into the wire format, resolving
// sourceSelectors; a rule whose sources resolve to nothing is left out (it
// could match nothing). defaultNS is the namespace an empty
// sourceSelector.namespace means ("" = every namespace).
func wireGroup(name string, spec v1.RuleCollectionGroupSpec, defaultNS string, pods addrSource) (policy.WireGroup, Origin) {
	wg := policy.WireGroup{Name: name, Priority: int(spec.Priority)}
	var o Origin
	for ci, c := range spec.RuleCollections {
		wc := policy.WireCollection{Name: c.Name, Kind: string(c.Kind), Priority: int(c.Priority), Action: string(c.Action)}
		var idx []int
		for ri, r := range c.Rules {
			wr := wireRule(r)
			if s := r.SourceSelector; s != nil {
				ns := s.Namespace
				if ns == "" {
					ns = defaultNS
				}
				// An invalid selector resolves to nothing; selectorErrors
				// reports it before the group is used.
				a, _ := pods.addrs(ns, s.PodSelector)
				wr.SourceAddresses = append(wr.SourceAddresses, a...)
				if len(wr.SourceAddresses) == 0 && len(wr.SourceIPGroups) == 0 {
					continue
				}
			}
			wc.Rules = append(wc.Rules, wr)
			idx = append(idx, ri)
		}
		wg.RuleCollections = append(wg.RuleCollections, wc)
		o.collIdx = append(o.collIdx, ci)
		o.ruleIdx = append(o.ruleIdx, idx)
	}
	return wg, o
}

// checkOrigin is o with identity index maps (the validation copy keeps every rule).
func checkOrigin(o Origin, spec v1.RuleCollectionGroupSpec) Origin {
	o.collIdx, o.ruleIdx = nil, nil
	for ci, c := range spec.RuleCollections {
		o.collIdx = append(o.collIdx, ci)
		idx := make([]int, len(c.Rules))
		for i := range idx {
			idx[i] = i
		}
		o.ruleIdx = append(o.ruleIdx, idx)
	}
	return o
}

func wireRule(r v1.Rule) policy.WireRule {
	return policy.WireRule{
		Name:                 r.Name,
		Description:          r.Description,
		Protocols:            r.Protocols,
		SourceAddresses:      slices.Clone(r.SourceAddresses),
		SourceIPGroups:       r.SourceIPGroups,
		DestinationAddresses: r.DestinationAddresses,
		DestinationIPGroups:  r.DestinationIPGroups,
		DestinationFQDNs:     r.DestinationFQDNs,
		DestinationPorts:     r.DestinationPorts,
		TargetFQDNs:          r.TargetFQDNs,
		FQDNTags:             r.FQDNTags,
		TranslatedAddress:    r.TranslatedAddress,
		TranslatedFQDN:       r.TranslatedFQDN,
		TranslatedPort:       r.TranslatedPort,
	}
}

func wireThreatIntel(t *v1.ThreatIntel) *policy.WireThreatIntel {
	if t == nil {
		return nil
	}
	w := &policy.WireThreatIntel{Mode: t.Mode}
	if t.Allowlist != nil {
		w.Allowlist = &policy.WireAllowlist{IPAddresses: t.Allowlist.IPAddresses, FQDNs: t.Allowlist.FQDNs}
	}
	for _, f := range t.Feeds {
		w.Feeds = append(w.Feeds, policy.WireFeed{Name: f.Name, File: f.File, URL: f.URL, Format: f.Format})
	}
	return w
}

func wireDNS(d *v1.DNS) *policy.WireDNS {
	if d == nil {
		return nil
	}
	return &policy.WireDNS{EnableProxy: d.EnableProxy, Servers: d.Servers}
}

// podIndex answers sourceSelectors from Pods (status.podIPs) and
// EndpointSlices (endpoints whose targetRef is a selected Pod): a pod's
// address is known as soon as either has it.
type podIndex struct {
	pods   []corev1.Pod
	slices map[types.NamespacedName][]string // pod -> addresses from EndpointSlices
}

func newPodIndex(pods []corev1.Pod, eps []discoveryv1.EndpointSlice) *podIndex {
	ix := &podIndex{pods: pods, slices: map[types.NamespacedName][]string{}}
	for _, s := range eps {
		for _, e := range s.Endpoints {
			if e.TargetRef == nil || e.TargetRef.Kind != "Pod" {
				continue
			}
			if e.Conditions.Terminating != nil && *e.Conditions.Terminating {
				continue
			}
			ns := e.TargetRef.Namespace
			if ns == "" {
				ns = s.Namespace
			}
			k := types.NamespacedName{Namespace: ns, Name: e.TargetRef.Name}
			ix.slices[k] = append(ix.slices[k], e.Addresses...)
		}
	}
	return ix
}

func (ix *podIndex) addrs(ns string, sel *metav1.LabelSelector) ([]string, error) {
	s := labels.Everything()
	if sel != nil {
		var err error
		if s, err = metav1.LabelSelectorAsSelector(sel); err != nil {
			return nil, err
		}
	}
	set := map[netip.Addr]bool{}
	for i := range ix.pods {
		p := &ix.pods[i]
		if ns != "" && p.Namespace != ns {
			continue
		}
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if !s.Matches(labels.Set(p.Labels)) {
			continue
		}
		ips := []string{p.Status.PodIP}
		for _, ip := range p.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		ips = append(ips, ix.slices[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}]...)
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip); err == nil {
				set[a.Unmap()] = true
			}
		}
	}
	out := make([]netip.Addr, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	strs := make([]string, len(out))
	for i, a := range out {
		strs[i] = a.String()
	}
	return strs, nil
}

// baseFile turns a chain of base FirewallPolicies into the wire form of
// the first, with the others as its bases, inline: their settings and rule
// collection groups (a base's teams, Service DNAT and team groups belong to
// the firewall it programs, not to the policies inheriting from it).
func baseFile(chain []*v1.FirewallPolicy, pods addrSource) *policy.File {
	var inner *policy.File
	for i := len(chain) - 1; i >= 0; i-- {
		b := chain[i]
		f := &policy.File{
			Name:                  policyName(b),
			Location:              b.Spec.Location,
			ServiceTagDefinitions: b.Spec.ServiceTagDefinitions,
			IPGroups:              b.Spec.IPGroups,
			FQDNTags:              b.Spec.FQDNTags,
			ThreatIntel:           wireThreatIntel(b.Spec.ThreatIntel),
			DNS:                   wireDNS(b.Spec.DNS),
		}
		for _, g := range b.Spec.RuleCollectionGroups {
			wg, _ := wireGroup(g.Name, g.RuleCollectionGroupSpec, "", pods)
			f.RuleCollectionGroups = append(f.RuleCollectionGroups, wg)
		}
		if inner != nil {
			f.BasePolicy = &policy.WireBase{Policy: inner}
		}
		inner = f
	}
	return inner
}

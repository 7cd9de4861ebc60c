package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/waf"
)

// The Gateway API part of the composition (gateway.networking.k8s.io/v1):
// GatewayClasses whose controllerName is clusterwall's, their Gateways,
// and the HTTPRoutes attached to them. Every Gateway of clusterwall's
// class is served by the same WAF: a Gateway listener is the WAF
// listeners with its port and protocol (HTTP: plain, HTTPS: TLS); its
// routes get the hostnames the listener and the route have in common.
// Conditions and reasons are the Gateway API's (docs/kubernetes.md lists
// them).

// GatewayClassResult is the verdict on a GatewayClass of clusterwall.
type GatewayClassResult struct {
	Accepted        bool
	Reason, Message string
}

// GatewayResult is what became of a Gateway of clusterwall's class.
type GatewayResult struct {
	Accepted                      bool
	AcceptedReason, AcceptedMsg   string
	AddressOK                     bool   // spec.addresses can be served
	AddressReason, AddressMsg     string // why not (Programmed False)
	Listeners                     []*ListenerResult
	gw                            *gwv1.Gateway
	programmedListeners, accepted int
}

// ListenerResult is what became of one Gateway listener.
type ListenerResult struct {
	Name                      string
	Accepted                  bool
	AcceptedReason, AcceptMsg string
	ResolvedRefs              bool
	RefsReason, RefsMsg       string
	Conflicted                bool
	ConflictReason, ConfMsg   string
	Overlapping               string // OverlappingTLSConfig reason, "" when none
	OverlapMsg                string
	SupportedKinds            []gwv1.RouteGroupKind
	AttachedRoutes            int32
	// Programmable: routes are served on it (accepted, not conflicted,
	// certificates resolved).
	Programmable bool
	ProgramMsg   string // why not

	spec     *gwv1.Listener
	wafNames []string
}

// HTTPRouteResult is what became of an HTTPRoute attached to clusterwall's
// Gateways.
type HTTPRouteResult struct {
	Parents  []*RouteParentResult // one per parentRef of clusterwall's Gateways, in spec order
	Problems []string             // Warning events (conflicts)
	Routes   int                  // WAF routes serving it
}

// RouteParentResult is the status of an HTTPRoute for one parentRef.
type RouteParentResult struct {
	Ref                         gwv1.ParentReference
	Accepted                    bool
	AcceptedReason, AcceptedMsg string
	ResolvedRefs                bool
	RefsReason, RefsMsg         string
	PartiallyInvalid            string   // "Dropped Rule ..." when some rules are invalid
	Conflicts                   []string // matches an older route claimed first
}

// ReasonWAFPolicyNotAccepted is the ResolvedRefs reason of an HTTPRoute
// whose ExtensionRef names a WAFPolicy that is not accepted (the Gateway
// API lists none for it).
const ReasonWAFPolicyNotAccepted = "WAFPolicyNotAccepted"

// ConditionConflicted is clusterwall's own condition on an HTTPRoute's
// parent status: some of its matches are served by an older route (the
// Gateway API's precedence), listed in the message.
const ConditionConflicted = "clusterwall.io/Conflicted"

const (
	gatewayGroup  = gwv1.GroupName // gateway.networking.k8s.io
	kindGateway   = "Gateway"
	kindHTTPRoute = "HTTPRoute"
)

// gwListener is a listener of a Gateway of clusterwall's class, in the
// merged set of all of them.
type gwListener struct {
	gw  *gwv1.Gateway
	res *ListenerResult
}

func (c *composer) gateways() {
	in := c.in
	classes := map[string]bool{}
	for i := range in.GatewayClasses {
		gc := &in.GatewayClasses[i]
		if gc.Spec.ControllerName != v1.GatewayControllerName {
			continue
		}
		r := &GatewayClassResult{Accepted: true, Reason: string(gwv1.GatewayClassReasonAccepted), Message: "handled by clusterwall's ingress controller"}
		if gc.Spec.ParametersRef != nil {
			r = &GatewayClassResult{Reason: string(gwv1.GatewayClassReasonInvalidParameters), Message: "clusterwall's GatewayClass takes no parametersRef"}
		}
		c.out.GatewayClasses[gc.Name] = r
		classes[gc.Name] = r.Accepted
	}
	// Gateways, oldest first (across Gateways the older keeps a port and
	// hostname).
	var gws []*gwv1.Gateway
	for i := range in.Gateways {
		g := &in.Gateways[i]
		if _, ours := classes[string(g.Spec.GatewayClassName)]; ours && g.DeletionTimestamp == nil {
			gws = append(gws, g)
		}
	}
	sort.SliceStable(gws, func(i, j int) bool { return olderObj(&gws[i].ObjectMeta, &gws[j].ObjectMeta) })
	var merged []gwListener
	for _, g := range gws {
		res := c.gateway(g, classes[string(g.Spec.GatewayClassName)], &merged)
		c.out.Gateways[types.NamespacedName{Namespace: g.Namespace, Name: g.Name}] = res
	}
	overlappingTLS(merged)

	routes := make([]*gwv1.HTTPRoute, 0, len(in.HTTPRoutes))
	for i := range in.HTTPRoutes {
		routes = append(routes, &in.HTTPRoutes[i])
	}
	for _, rt := range routes {
		if rt.DeletionTimestamp == nil {
			c.httpRoute(rt)
		}
	}
}

func olderObj(a, b *metav1.ObjectMeta) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// gateway checks one Gateway and its listeners; merged holds the listeners
// of the older Gateways.
func (c *composer) gateway(g *gwv1.Gateway, classOK bool, merged *[]gwListener) *GatewayResult {
	res := &GatewayResult{gw: g, Accepted: true, AcceptedReason: string(gwv1.GatewayReasonAccepted),
		AcceptedMsg: "accepted by clusterwall's ingress controller", AddressOK: true}
	if !classOK {
		res.Accepted, res.AcceptedReason, res.AcceptedMsg = false, string(gwv1.GatewayReasonInvalidParameters), "the GatewayClass is not accepted"
	}
	for i, a := range g.Spec.Addresses {
		typ := gwv1.IPAddressType
		if a.Type != nil {
			typ = *a.Type
		}
		switch {
		case typ != gwv1.IPAddressType:
			res.Accepted, res.AcceptedReason = false, string(gwv1.GatewayReasonUnsupportedAddress)
			res.AcceptedMsg = fmt.Sprintf("spec.addresses[%d]: type %s is not supported (only IPAddress)", i, typ)
		case a.Value != "" && !slices.Contains(c.out.Addresses, canonicalIP(a.Value)):
			res.AddressOK, res.AddressReason = false, string(gwv1.GatewayReasonAddressNotUsable)
			res.AddressMsg = fmt.Sprintf("spec.addresses[%d]: %s is not an address of the firewall's WAF (it serves %s)", i, a.Value, strings.Join(c.out.Addresses, ", "))
		}
	}
	// Listeners: validity, then conflicts within the Gateway (all of the
	// indistinct ones lose), then with older Gateways (the older wins).
	for i := range g.Spec.Listeners {
		res.Listeners = append(res.Listeners, c.listener(g, &g.Spec.Listeners[i]))
	}
	type lkey struct {
		port     int32
		hostname string
	}
	own := map[lkey][]*ListenerResult{}
	for _, l := range res.Listeners {
		if l.Accepted {
			k := lkey{l.spec.Port, hostnameOf(l.spec.Hostname)}
			own[k] = append(own[k], l)
		}
	}
	for k, ls := range own {
		if len(ls) < 2 {
			continue
		}
		var names []string
		for _, l := range ls {
			names = append(names, string(l.spec.Name))
		}
		for _, l := range ls {
			l.conflict(string(gwv1.ListenerReasonHostnameConflict), fmt.Sprintf("listeners %s share port %d and hostname %q", strings.Join(names, ", "), k.port, orAny(k.hostname)))
		}
	}
	for _, l := range res.Listeners {
		if !l.Accepted {
			continue
		}
		for _, o := range *merged {
			if o.res.Accepted && o.res.spec.Port == l.spec.Port && hostnameOf(o.res.spec.Hostname) == hostnameOf(l.spec.Hostname) {
				l.conflict(string(gwv1.ListenerReasonHostnameConflict), fmt.Sprintf("listener %s of the older Gateway %s/%s has port %d and hostname %q (every Gateway of the class is served by the same WAF)",
					o.res.Name, o.gw.Namespace, o.gw.Name, l.spec.Port, orAny(hostnameOf(l.spec.Hostname))))
				break
			}
		}
	}
	for _, l := range res.Listeners {
		*merged = append(*merged, gwListener{gw: g, res: l})
		l.Programmable = res.Accepted && l.Accepted && !l.Conflicted && l.ProgramMsg == ""
		if l.Accepted {
			res.accepted++
		}
		if l.Programmable {
			res.programmedListeners++
		}
	}
	if res.Accepted && res.accepted < len(res.Listeners) {
		var bad []string
		for _, l := range res.Listeners {
			if !l.Accepted {
				bad = append(bad, l.Name)
			}
		}
		res.AcceptedReason = string(gwv1.GatewayReasonListenersNotValid)
		res.AcceptedMsg = fmt.Sprintf("listeners not accepted: %s", strings.Join(bad, ", "))
		if res.accepted == 0 {
			res.Accepted = false
			res.AcceptedMsg = "no listener is accepted: " + strings.Join(bad, ", ")
		}
	}
	return res
}

func canonicalIP(s string) string {
	if ip := net.ParseIP(s); ip != nil {
		return ip.String()
	}
	return s
}

func hostnameOf(h *gwv1.Hostname) string {
	if h == nil {
		return ""
	}
	return strings.ToLower(string(*h))
}

func (l *ListenerResult) conflict(reason, msg string) {
	l.Conflicted, l.ConflictReason, l.ConfMsg = true, reason, msg
	l.Accepted, l.AcceptedReason, l.AcceptMsg = false, reason, msg
}

// listener checks one listener: protocol, port (a WAF listener must serve
// it), route kinds and TLS certificates.
func (c *composer) listener(g *gwv1.Gateway, l *gwv1.Listener) *ListenerResult {
	r := &ListenerResult{Name: string(l.Name), spec: l, Accepted: true, AcceptedReason: string(gwv1.ListenerReasonAccepted), AcceptMsg: "accepted",
		ResolvedRefs: true, RefsReason: string(gwv1.ListenerReasonResolvedRefs), RefsMsg: "all references resolved"}
	httpRoute := gwv1.RouteGroupKind{Group: ptrGroup(gatewayGroup), Kind: kindHTTPRoute}
	switch l.Protocol {
	case gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType:
	default:
		r.Accepted, r.AcceptedReason = false, string(gwv1.ListenerReasonUnsupportedProtocol)
		r.AcceptMsg = fmt.Sprintf("protocol %s is not supported (HTTP and HTTPS are)", l.Protocol)
		r.SupportedKinds = []gwv1.RouteGroupKind{}
		return r
	}
	wantTLS := l.Protocol == gwv1.HTTPSProtocolType
	var wrongProto []string
	for _, wl := range c.in.Listeners {
		if int32(wl.Port) != l.Port {
			continue
		}
		if wl.TLS == wantTLS {
			r.wafNames = append(r.wafNames, wl.Name)
		} else {
			wrongProto = append(wrongProto, wl.Name)
		}
	}
	if len(r.wafNames) == 0 {
		r.Accepted, r.AcceptedReason = false, string(gwv1.ListenerReasonPortUnavailable)
		switch {
		case len(wrongProto) > 0:
			r.AcceptMsg = fmt.Sprintf("the firewall's WAF serves port %d as %s, not %s", l.Port, map[bool]string{true: "HTTPS", false: "HTTP"}[!wantTLS], l.Protocol)
		default:
			r.AcceptMsg = fmt.Sprintf("the firewall's WAF has no %s listener on port %d (%s)", l.Protocol, l.Port, c.wafPorts())
		}
	}
	// Route kinds: HTTPRoute only.
	if l.AllowedRoutes == nil || len(l.AllowedRoutes.Kinds) == 0 {
		r.SupportedKinds = []gwv1.RouteGroupKind{httpRoute}
	} else {
		r.SupportedKinds = []gwv1.RouteGroupKind{}
		var bad []string
		for _, k := range l.AllowedRoutes.Kinds {
			grp := gatewayGroup
			if k.Group != nil {
				grp = string(*k.Group)
			}
			if grp == gatewayGroup && k.Kind == kindHTTPRoute {
				r.SupportedKinds = append(r.SupportedKinds, httpRoute)
			} else {
				bad = append(bad, grp+"/"+string(k.Kind))
			}
		}
		if len(bad) > 0 {
			r.ResolvedRefs, r.RefsReason = false, string(gwv1.ListenerReasonInvalidRouteKinds)
			r.RefsMsg = "route kinds not supported: " + strings.Join(bad, ", ")
		}
	}
	if !wantTLS {
		return r
	}
	// HTTPS: terminate with the certificateRefs.
	if l.TLS == nil || len(l.TLS.CertificateRefs) == 0 {
		r.ResolvedRefs, r.RefsReason, r.RefsMsg = false, string(gwv1.ListenerReasonInvalidCertificateRef), "an HTTPS listener needs tls.certificateRefs"
		r.ProgramMsg = r.RefsMsg
		return r
	}
	if l.TLS.Mode != nil && *l.TLS.Mode != gwv1.TLSModeTerminate {
		r.Accepted, r.AcceptedReason = false, string(gwv1.ListenerReasonUnsupportedValue)
		r.AcceptMsg = fmt.Sprintf("tls.mode %s is not supported for HTTPS (Terminate is)", *l.TLS.Mode)
		return r
	}
	var certs []waf.WireListenerCertificate
	for i, ref := range l.TLS.CertificateRefs {
		at := fmt.Sprintf("tls.certificateRefs[%d]", i)
		grp, kind := "", "Secret"
		if ref.Group != nil {
			grp = string(*ref.Group)
		}
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		ns := g.Namespace
		if ref.Namespace != nil {
			ns = string(*ref.Namespace)
		}
		if grp != "" || kind != "Secret" {
			r.refProblem(string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("%s: %s/%s is not a Secret", at, grp, kind))
			continue
		}
		if ns != g.Namespace && !c.granted(gatewayGroup, kindGateway, g.Namespace, "", "Secret", ns, string(ref.Name)) {
			r.refProblem(string(gwv1.ListenerReasonRefNotPermitted), fmt.Sprintf("%s: Secret %s/%s is in another namespace and no ReferenceGrant there allows Gateways of %s", at, ns, ref.Name, g.Namespace))
			continue
		}
		certPEM, keyPEM, err := c.tlsSecret(types.NamespacedName{Namespace: ns, Name: string(ref.Name)})
		if err != nil {
			r.refProblem(string(gwv1.ListenerReasonInvalidCertificateRef), fmt.Sprintf("%s: %v", at, err))
			continue
		}
		lc := waf.WireListenerCertificate{Listeners: slices.Clone(r.wafNames), CertPEM: certPEM, KeyPEM: keyPEM}
		if h := hostnameOf(l.Hostname); h != "" {
			lc.ServerNames = []string{h}
		}
		certs = append(certs, lc)
	}
	if r.ResolvedRefs || r.RefsReason == string(gwv1.ListenerReasonInvalidRouteKinds) {
		if len(r.wafNames) > 0 && r.ProgramMsg == "" {
			c.certs = append(c.certs, certs...)
		}
	}
	return r
}

// refProblem marks a certificate reference unresolved: the listener is
// not programmed (its routes are not served without its certificate).
func (l *ListenerResult) refProblem(reason, msg string) {
	if l.ResolvedRefs || l.RefsReason == string(gwv1.ListenerReasonInvalidRouteKinds) {
		l.ResolvedRefs, l.RefsReason, l.RefsMsg = false, reason, msg
	} else {
		l.RefsMsg += "; " + msg
	}
	l.ProgramMsg = l.RefsMsg
}

func (c *composer) wafPorts() string {
	var ps []string
	for _, l := range c.in.Listeners {
		p := fmt.Sprintf("%d/%s", l.Port, map[bool]string{true: "HTTPS", false: "HTTP"}[l.TLS])
		if !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return "it has no listeners"
	}
	return "it serves " + strings.Join(ps, ", ")
}

func ptrGroup(s string) *gwv1.Group {
	g := gwv1.Group(s)
	return &g
}

// overlappingTLS sets OverlappingTLSConfig on HTTPS listeners of one port
// whose hostnames overlap (one covers the other, or both are empty).
func overlappingTLS(ls []gwListener) {
	for i, a := range ls {
		for j, b := range ls {
			if i == j || !a.res.Accepted || !b.res.Accepted || a.res.spec.Protocol != gwv1.HTTPSProtocolType || b.res.spec.Protocol != gwv1.HTTPSProtocolType || a.res.spec.Port != b.res.spec.Port {
				continue
			}
			ha, hb := hostnameOf(a.res.spec.Hostname), hostnameOf(b.res.spec.Hostname)
			if _, ok := intersectHost(ha, hb); ok && ha != hb {
				a.res.Overlapping = string(gwv1.ListenerReasonOverlappingHostnames)
				a.res.OverlapMsg = fmt.Sprintf("hostname %q overlaps %q of listener %s of Gateway %s/%s", orAny(ha), orAny(hb), b.res.Name, b.gw.Namespace, b.gw.Name)
			}
		}
	}
}

// intersectHost is the hostname a route hostname and a listener hostname
// have in common ("" is any; wildcards match any number of labels): the
// more specific one, and whether they intersect at all.
func intersectHost(a, b string) (string, bool) {
	switch {
	case a == "":
		return b, true
	case b == "":
		return a, true
	case a == b:
		return a, true
	}
	wa, wb := strings.HasPrefix(a, "*."), strings.HasPrefix(b, "*.")
	switch {
	case wa && wb:
		if strings.HasSuffix(a, b[1:]) {
			return a, true
		}
		if strings.HasSuffix(b, a[1:]) {
			return b, true
		}
	case wa:
		if strings.HasSuffix(b, a[1:]) {
			return b, true
		}
	case wb:
		if strings.HasSuffix(a, b[1:]) {
			return a, true
		}
	}
	return "", false
}

// granted: a ReferenceGrant in toNS lets fromKind objects of fromNS refer
// to toKind objects (named toName) there.
func (c *composer) granted(fromGroup, fromKind, fromNS, toGroup, toKind, toNS, toName string) bool {
	for _, g := range c.in.ReferenceGrants {
		if g.Namespace != toNS {
			continue
		}
		from := false
		for _, f := range g.Spec.From {
			if string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNS {
				from = true
			}
		}
		if !from {
			continue
		}
		for _, t := range g.Spec.To {
			if string(t.Group) == toGroup && string(t.Kind) == toKind && (t.Name == nil || string(*t.Name) == toName) {
				return true
			}
		}
	}
	return false
}

// --- HTTPRoute ---

// routeRule is one rule of an HTTPRoute, translated (or why not).
type routeRule struct {
	invalid string // why the rule is dropped (UnsupportedValue)
	base    waf.WireRoute
	matches []gwv1.HTTPRouteMatch
	refsOK  bool
	refsWhy string
	refsRsn string
	// filterUnresolved: a filter could not be resolved; the rule's
	// requests get 500 (the Gateway API: such a filter must not be
	// skipped).
	filterUnresolved bool
}

func (c *composer) httpRoute(rt *gwv1.HTTPRoute) {
	key := types.NamespacedName{Namespace: rt.Namespace, Name: rt.Name}
	var res *HTTPRouteResult
	own := owner{kind: kindHTTPRoute, namespace: rt.Namespace, name: rt.Name, created: rt.CreationTimestamp.Time}
	var rules []*routeRule
	for i, pr := range rt.Spec.ParentRefs {
		grp, kind := gatewayGroup, kindGateway
		if pr.Group != nil {
			grp = string(*pr.Group)
		}
		if pr.Kind != nil {
			kind = string(*pr.Kind)
		}
		if grp != gatewayGroup || kind != kindGateway {
			continue
		}
		ns := rt.Namespace
		if pr.Namespace != nil {
			ns = string(*pr.Namespace)
		}
		gres := c.out.Gateways[types.NamespacedName{Namespace: ns, Name: string(pr.Name)}]
		if gres == nil {
			continue // not a Gateway of clusterwall's class (or none at all): not ours to report
		}
		if res == nil {
			res = &HTTPRouteResult{}
			c.out.HTTPRoutes[key] = res
			rules = c.routeRules(rt)
		}
		p := &RouteParentResult{Ref: pr, ResolvedRefs: true, RefsReason: string(gwv1.RouteReasonResolvedRefs), RefsMsg: "all references resolved"}
		res.Parents = append(res.Parents, p)
		c.attach(rt, i, p, gres, rules, own, res)
	}
}

// routeRules translates an HTTPRoute's rules: matches, filters and
// backends, each rule valid or dropped with the reason.
func (c *composer) routeRules(rt *gwv1.HTTPRoute) []*routeRule {
	var out []*routeRule
	for i := range rt.Spec.Rules {
		rule := &rt.Spec.Rules[i]
		rr := &routeRule{refsOK: true, matches: rule.Matches}
		if len(rr.matches) == 0 {
			rr.matches = []gwv1.HTTPRouteMatch{{}}
		}
		out = append(out, rr)
		for j, m := range rr.matches {
			if m.Path != nil && m.Path.Type != nil && *m.Path.Type != gwv1.PathMatchExact && *m.Path.Type != gwv1.PathMatchPathPrefix {
				rr.invalid = fmt.Sprintf("rule %d match %d: path type %s is not supported (Exact and PathPrefix are)", i, j, *m.Path.Type)
			}
			// RegularExpression header and query matches are RE2 (Go's
			// regexp); what it cannot compile drops the rule.
			for k, h := range m.Headers {
				if h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression {
					if _, err := regexp.Compile(h.Value); err != nil {
						rr.invalid = fmt.Sprintf("rule %d match %d header %d: %q is not an RE2 regular expression: %v", i, j, k, h.Value, err)
					}
				}
			}
			for k, q := range m.QueryParams {
				if q.Type != nil && *q.Type == gwv1.QueryParamMatchRegularExpression {
					if _, err := regexp.Compile(q.Value); err != nil {
						rr.invalid = fmt.Sprintf("rule %d match %d queryParam %d: %q is not an RE2 regular expression: %v", i, j, k, q.Value, err)
					}
				}
			}
		}
		policyName, policyRef := "", false
		for j, f := range rule.Filters {
			switch f.Type {
			case gwv1.HTTPRouteFilterRequestHeaderModifier:
				rr.base.RequestHeaders = headerFilter(f.RequestHeaderModifier)
			case gwv1.HTTPRouteFilterResponseHeaderModifier:
				rr.base.ResponseHeaders = headerFilter(f.ResponseHeaderModifier)
			case gwv1.HTTPRouteFilterRequestRedirect:
				rr.base.Redirect = redirect(f.RequestRedirect)
			case gwv1.HTTPRouteFilterExtensionRef:
				ref := f.ExtensionRef
				if ref == nil || string(ref.Group) != v1.GroupVersion.Group || string(ref.Kind) != "WAFPolicy" {
					rr.filterUnresolved = true
					rr.refsOK, rr.refsRsn = false, string(gwv1.RouteReasonInvalidKind)
					rr.refsWhy = fmt.Sprintf("rule %d filter %d: extensionRef must be a %s WAFPolicy; its requests get 500", i, j, v1.GroupVersion.Group)
					continue
				}
				if policyRef {
					rr.invalid = fmt.Sprintf("rule %d: more than one WAFPolicy filter", i)
					continue
				}
				policyRef = true
				pk := types.NamespacedName{Namespace: rt.Namespace, Name: string(ref.Name)}
				p := c.policies[pk]
				switch {
				case p == nil:
					// "a reference to a resource that does not exist"
					rr.filterUnresolved = true
					rr.refsOK, rr.refsRsn = false, string(gwv1.RouteReasonBackendNotFound)
					rr.refsWhy = fmt.Sprintf("rule %d filter %d: WAFPolicy %s not found; its requests get 500", i, j, pk)
				case !p.Accepted:
					p.UsedBy = appendUnique(p.UsedBy, kindHTTPRoute+"/"+rt.Name)
					rr.filterUnresolved = true
					rr.refsOK, rr.refsRsn = false, ReasonWAFPolicyNotAccepted
					rr.refsWhy = fmt.Sprintf("rule %d filter %d: WAFPolicy %s is not accepted (%s); its requests get 500", i, j, pk, p.message())
				default:
					p.used = true
					p.UsedBy = appendUnique(p.UsedBy, kindHTTPRoute+"/"+rt.Name)
					policyName = p.wire.Name
				}
			default:
				rr.invalid = fmt.Sprintf("rule %d filter %d: filter type %s is not supported (RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect and ExtensionRef to a WAFPolicy are)", i, j, f.Type)
			}
		}
		rr.base.Policy = policyName
		if rr.base.Redirect != nil {
			if rr.filterUnresolved {
				rr.base.Redirect = nil // the filter that could not be resolved answers 500
				rr.base.BackendGroups = []waf.WireBackendGroup{{EmptyStatus: 500}}
			}
			continue
		}
		// Backends (weights as given; the invalid ones answer 500 for
		// their share).
		for j, br := range rule.BackendRefs {
			if len(br.Filters) > 0 {
				rr.invalid = fmt.Sprintf("rule %d backendRef %d: filters on backendRefs are not supported", i, j)
			}
			weight := 1
			if br.Weight != nil {
				weight = int(*br.Weight)
			}
			g := waf.WireBackendGroup{Weight: &weight}
			addrs, reason, why := c.routeBackend(rt, i, j, br.BackendRef)
			if reason != "" {
				g.EmptyStatus = 500
				if rr.refsOK {
					rr.refsOK, rr.refsRsn, rr.refsWhy = false, reason, why
				}
			} else {
				g.Backends = addrs
			}
			rr.base.BackendGroups = append(rr.base.BackendGroups, g)
		}
		if len(rr.base.BackendGroups) == 0 {
			rr.base.BackendGroups = []waf.WireBackendGroup{{EmptyStatus: 500}}
		}
		if rr.filterUnresolved {
			rr.base.BackendGroups = []waf.WireBackendGroup{{EmptyStatus: 500}}
		}
	}
	return out
}

// routeBackend resolves a backendRef to addresses; reason is a
// ResolvedRefs reason when it cannot be resolved.
func (c *composer) routeBackend(rt *gwv1.HTTPRoute, i, j int, br gwv1.BackendRef) ([]string, string, string) {
	at := fmt.Sprintf("rule %d backendRef %d", i, j)
	grp, kind := "", "Service"
	if br.Group != nil {
		grp = string(*br.Group)
	}
	if br.Kind != nil {
		kind = string(*br.Kind)
	}
	if grp != "" || kind != "Service" {
		return nil, string(gwv1.RouteReasonInvalidKind), fmt.Sprintf("%s: %s/%s is not a Service", at, grp, kind)
	}
	ns := rt.Namespace
	if br.Namespace != nil {
		ns = string(*br.Namespace)
	}
	if ns != rt.Namespace && !c.granted(gatewayGroup, kindHTTPRoute, rt.Namespace, "", "Service", ns, string(br.Name)) {
		return nil, string(gwv1.RouteReasonRefNotPermitted), fmt.Sprintf("%s: Service %s/%s is in another namespace and no ReferenceGrant there allows HTTPRoutes of %s", at, ns, br.Name, rt.Namespace)
	}
	if br.Port == nil {
		return nil, string(gwv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s: a Service backendRef needs a port", at)
	}
	addrs, err := c.serviceEndpoints(types.NamespacedName{Namespace: ns, Name: string(br.Name)}, servicePortRef{number: *br.Port})
	if err != nil {
		if err.status == 503 && strings.Contains(err.msg, "has no port") || strings.Contains(err.msg, "not found") {
			return nil, string(gwv1.RouteReasonBackendNotFound), fmt.Sprintf("%s: %v", at, err)
		}
		return nil, string(gwv1.RouteReasonUnsupportedProtocol), fmt.Sprintf("%s: %v", at, err)
	}
	return addrs, "", ""
}

func headerFilter(f *gwv1.HTTPHeaderFilter) *waf.WireHeaderFilter {
	if f == nil {
		return nil
	}
	out := &waf.WireHeaderFilter{}
	for _, h := range f.Set {
		out.Set = append(out.Set, waf.WireHeader{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		out.Add = append(out.Add, waf.WireHeader{Name: string(h.Name), Value: h.Value})
	}
	out.Remove = append(out.Remove, f.Remove...)
	return out
}

func redirect(f *gwv1.HTTPRequestRedirectFilter) *waf.WireRedirect {
	if f == nil {
		return nil
	}
	r := &waf.WireRedirect{}
	if f.Scheme != nil {
		r.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		r.Hostname = string(*f.Hostname)
	}
	if f.Port != nil {
		r.Port = int(*f.Port)
	}
	if f.StatusCode != nil {
		r.StatusCode = *f.StatusCode
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gwv1.FullPathHTTPPathModifier:
			r.Path = &waf.WirePathModifier{Type: waf.PathReplaceFull, Value: deref(p.ReplaceFullPath)}
		case gwv1.PrefixMatchHTTPPathModifier:
			r.Path = &waf.WirePathModifier{Type: waf.PathReplacePrefix, Value: deref(p.ReplacePrefixMatch)}
		}
	}
	return r
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// attach attaches an HTTPRoute to the listeners its parentRef (index pi)
// selects, and adds its WAF routes.
func (c *composer) attach(rt *gwv1.HTTPRoute, pi int, p *RouteParentResult, g *GatewayResult, rules []*routeRule, own owner, res *HTTPRouteResult) {
	pr := rt.Spec.ParentRefs[pi]
	var selected []*ListenerResult
	for _, l := range g.Listeners {
		if pr.SectionName != nil && string(*pr.SectionName) != l.Name {
			continue
		}
		if pr.Port != nil && *pr.Port != l.spec.Port {
			continue
		}
		selected = append(selected, l)
	}
	reject := func(reason, msg string) {
		p.Accepted, p.AcceptedReason, p.AcceptedMsg = false, reason, msg
	}
	if len(selected) == 0 {
		reject(string(gwv1.RouteReasonNoMatchingParent), "no listener of the Gateway matches the parentRef's sectionName/port")
		return
	}
	if !g.Accepted {
		reject(string(gwv1.RouteReasonNotAllowedByListeners), "the Gateway is not accepted: "+g.AcceptedMsg)
		return
	}
	var allowed []*ListenerResult
	for _, l := range selected {
		if l.allows(rt.Namespace, g.gw.Namespace, c.in.Namespaces) {
			allowed = append(allowed, l)
		}
	}
	if len(allowed) == 0 {
		reject(string(gwv1.RouteReasonNotAllowedByListeners), "the selected listeners do not allow HTTPRoutes from namespace "+rt.Namespace)
		return
	}
	type attachment struct {
		l     *ListenerResult
		hosts []string // "" any
	}
	var atts []attachment
	for _, l := range allowed {
		lh := hostnameOf(l.spec.Hostname)
		var hosts []string
		if len(rt.Spec.Hostnames) == 0 {
			hosts = []string{lh}
		}
		for _, h := range rt.Spec.Hostnames {
			if x, ok := intersectHost(strings.ToLower(string(h)), lh); ok && !slices.Contains(hosts, x) {
				hosts = append(hosts, x)
			}
		}
		if len(hosts) > 0 {
			atts = append(atts, attachment{l, hosts})
		}
	}
	if len(atts) == 0 {
		reject(string(gwv1.RouteReasonNoMatchingListenerHostname), "no hostname of the route matches a listener's hostname")
		return
	}
	// Rules.
	var valid, dropped []string
	for i, rr := range rules {
		if rr.invalid != "" {
			dropped = append(dropped, rr.invalid)
			continue
		}
		valid = append(valid, fmt.Sprint(i))
		if !rr.refsOK && p.ResolvedRefs {
			p.ResolvedRefs, p.RefsReason, p.RefsMsg = false, rr.refsRsn, rr.refsWhy
		}
	}
	if len(valid) == 0 {
		reject(string(gwv1.RouteReasonUnsupportedValue), strings.Join(dropped, "; "))
		return
	}
	p.Accepted, p.AcceptedReason, p.AcceptedMsg = true, string(gwv1.RouteReasonAccepted), "accepted"
	if len(dropped) > 0 {
		p.PartiallyInvalid = "Dropped Rule(s): " + strings.Join(dropped, "; ")
	}
	for _, a := range atts {
		a.l.AttachedRoutes++
		if !a.l.Programmable {
			continue
		}
		gl := fmt.Sprintf("%s/%s/%s", g.gw.Namespace, g.gw.Name, a.l.Name)
		for i, rr := range rules {
			if rr.invalid != "" {
				continue
			}
			for j, m := range rr.matches {
				for hi, h := range a.hosts {
					wr := rr.base
					wr.Name = routeName(fmt.Sprintf("httproute/%s/%s/%d/%d/%s/%d", rt.Namespace, rt.Name, i, j, gl, hi))
					wr.Listeners = slices.Clone(a.l.wafNames)
					if h != "" {
						wr.Hosts = []string{h}
					}
					what := applyMatch(&wr, m)
					what = fmt.Sprintf("rule %d match %d (host %s, %s) on listener %s", i, j, orAny(h), what, gl)
					c.addCandidate(&candidate{route: wr, owner: own, rule: i, match: j, what: what,
						report: func(msg string) {
							p.Conflicts = appendUnique(p.Conflicts, msg)
							res.Problems = appendUnique(res.Problems, msg)
						},
						refused: func(msg string) {
							p.PartiallyInvalid = strings.TrimPrefix(p.PartiallyInvalid+"; "+msg, "; ")
							if !strings.HasPrefix(p.PartiallyInvalid, "Dropped Rule") {
								p.PartiallyInvalid = "Dropped Rule(s): " + p.PartiallyInvalid
							}
							res.Problems = appendUnique(res.Problems, msg)
						},
						kept: func(ls []string) { res.Routes += min(len(ls), 1) }})
				}
			}
		}
	}
}

// allows: the listener accepts HTTPRoutes from namespace ns (the
// Gateway's is gwNS).
func (l *ListenerResult) allows(ns, gwNS string, nss []corev1.Namespace) bool {
	if !l.Accepted || len(l.SupportedKinds) == 0 {
		return false
	}
	from := gwv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := l.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSame:
		return ns == gwNS
	case gwv1.NamespacesFromSelector:
		if sel == nil {
			return false
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return false
		}
		for _, n := range nss {
			if n.Name == ns {
				return s.Matches(labels.Set(n.Labels))
			}
		}
	}
	return false
}

// applyMatch puts an HTTPRouteMatch on a WAF route and describes it.
func applyMatch(wr *waf.WireRoute, m gwv1.HTTPRouteMatch) string {
	var what []string
	typ, val := gwv1.PathMatchPathPrefix, "/"
	if m.Path != nil {
		if m.Path.Type != nil {
			typ = *m.Path.Type
		}
		if m.Path.Value != nil {
			val = *m.Path.Value
		}
	}
	if typ == gwv1.PathMatchExact {
		wr.PathExact = val
	} else {
		wr.PathPrefix = val
	}
	what = append(what, fmt.Sprintf("path %s %s", typ, val))
	if m.Method != nil {
		wr.Method = string(*m.Method)
		what = append(what, "method "+wr.Method)
	}
	for _, h := range m.Headers {
		t := "Exact"
		if h.Type != nil {
			t = string(*h.Type)
		}
		wr.Headers = append(wr.Headers, waf.WireValueMatch{Name: string(h.Name), Value: h.Value, Type: t})
		what = append(what, fmt.Sprintf("header %s", h.Name))
	}
	for _, q := range m.QueryParams {
		t := "Exact"
		if q.Type != nil {
			t = string(*q.Type)
		}
		wr.QueryParams = append(wr.QueryParams, waf.WireValueMatch{Name: string(q.Name), Value: q.Value, Type: t})
		what = append(what, fmt.Sprintf("query %s", q.Name))
	}
	return strings.Join(what, ", ")
}

// routeName keeps a WAF route name within the WAF's 253 characters.
func routeName(s string) string {
	if len(s) <= 253 {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return s[:236] + "~" + hex.EncodeToString(sum[:8])
}

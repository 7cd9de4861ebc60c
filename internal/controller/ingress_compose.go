package controller

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/waf"
)

// The ingress controller's composition: Ingresses, Gateways and
// HTTPRoutes, with the Services, EndpointSlices, Secrets and WAFPolicies
// they name, become one waf.Kubernetes document for the daemons' WAF
// (PUT /v1/waf/kubernetes), and a result for every object (its status and
// events). It is a pure function of its inputs (no API calls), so that it
// can be tested table by table and its output hashed: the same objects
// always give the same document.

// IngressInputs is everything the WAF routes are composed from.
type IngressInputs struct {
	// Listeners are the WAF's (from a daemon); FileRoutes the keys of the
	// WAF config file's own routes, which win over every object's.
	Listeners  []WAFListener
	FileRoutes map[string][]waf.RouteKey
	// Settings is the FirewallPolicy's spec.ingress (nil: defaults).
	Settings *v1.IngressSettings

	IngressClasses []networkingv1.IngressClass
	Ingresses      []networkingv1.Ingress
	Services       []corev1.Service
	Slices         []discoveryv1.EndpointSlice
	Nodes          []corev1.Node
	Secrets        []corev1.Secret // kubernetes.io/tls only
	WAFPolicies    []v1.WAFPolicy
	Namespaces     []corev1.Namespace

	GatewayClasses  []gwv1.GatewayClass
	Gateways        []gwv1.Gateway
	HTTPRoutes      []gwv1.HTTPRoute
	ReferenceGrants []gwv1beta1.ReferenceGrant
}

// IngressComposition is the WAF document and what became of each object.
type IngressComposition struct {
	Doc  *waf.Kubernetes
	YAML []byte
	Hash string // SHA-256 of YAML (hex): what the daemon reports back
	// Addresses are reported in the Ingresses' and Gateways' status.
	Addresses []string

	Ingresses      map[types.NamespacedName]*IngressResult
	WAFPolicies    map[types.NamespacedName]*WAFPolicyResult
	GatewayClasses map[string]*GatewayClassResult
	Gateways       map[types.NamespacedName]*GatewayResult
	HTTPRoutes     map[types.NamespacedName]*HTTPRouteResult
}

// IngressResult is what became of an Ingress of clusterwall's class.
type IngressResult struct {
	Routes   int      // WAF routes serving it
	Problems []string // each becomes a Warning event
}

// WAFPolicyResult is the verdict on a WAFPolicy.
type WAFPolicyResult struct {
	Accepted bool
	Reason   string
	Errors   []v1.FieldError
	UsedBy   []string
	wire     waf.WirePolicy
	used     bool
}

func (r *WAFPolicyResult) message() string {
	if r.Accepted {
		return "the policy is valid and within the FirewallPolicy's guardrails"
	}
	return Verdict{Errors: r.Errors}.Message()
}

// owner is the object a WAF route comes from, for ordering and reports.
type owner struct {
	kind            string // Ingress, HTTPRoute
	namespace, name string
	created         time.Time
}

func (o owner) String() string { return o.kind + " " + o.namespace + "/" + o.name }

// candidate is a WAF route an object asks for, before conflicts are
// resolved.
type candidate struct {
	route waf.WireRoute
	owner owner
	rule  int // the rule's position in its object, then the match's
	match int
	what  string // "host shop.example.com, path Prefix /api", for reports
	// report is told which listeners an older route took; refused, that
	// the WAF's validator refuses the route (nil: report).
	report, refused func(msg string)
	// kept is told the listeners the route is served on (none: dropped).
	kept func(listeners []string)
}

// composer holds the inputs indexed, and the candidates found so far.
type composer struct {
	in        *IngressInputs
	now       time.Time
	listeners []string // every WAF listener's name
	http      []string // plain HTTP listeners
	https     []string // HTTPS listeners
	httpsPort int      // the HTTPS listeners' port (for redirects)

	services map[types.NamespacedName]*corev1.Service
	slices   map[types.NamespacedName][]*discoveryv1.EndpointSlice // by Service
	secrets  map[types.NamespacedName]*corev1.Secret
	policies map[types.NamespacedName]*WAFPolicyResult
	nodes    []string // InternalIPs of ready nodes

	cands []*candidate
	certs []waf.WireListenerCertificate
	out   *IngressComposition
}

// ComposeIngress builds the WAF document from in.
func ComposeIngress(in IngressInputs) *IngressComposition {
	c := &composer{in: &in, now: time.Now(),
		services: map[types.NamespacedName]*corev1.Service{}, slices: map[types.NamespacedName][]*discoveryv1.EndpointSlice{},
		secrets: map[types.NamespacedName]*corev1.Secret{}, policies: map[types.NamespacedName]*WAFPolicyResult{},
		out: &IngressComposition{
			Ingresses: map[types.NamespacedName]*IngressResult{}, WAFPolicies: map[types.NamespacedName]*WAFPolicyResult{},
			GatewayClasses: map[string]*GatewayClassResult{}, Gateways: map[types.NamespacedName]*GatewayResult{},
			HTTPRoutes: map[types.NamespacedName]*HTTPRouteResult{},
		}}
	for _, l := range in.Listeners {
		c.listeners = append(c.listeners, l.Name)
		if l.TLS {
			c.https = append(c.https, l.Name)
			if c.httpsPort == 0 {
				c.httpsPort = l.Port
			}
		} else {
			c.http = append(c.http, l.Name)
		}
	}
	c.out.Addresses = ingressAddresses(in)
	for i := range in.Services {
		s := &in.Services[i]
		c.services[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	for i := range in.Slices {
		s := &in.Slices[i]
		if svc := s.Labels[discoveryv1.LabelServiceName]; svc != "" {
			k := types.NamespacedName{Namespace: s.Namespace, Name: svc}
			c.slices[k] = append(c.slices[k], s)
		}
	}
	for i := range in.Secrets {
		s := &in.Secrets[i]
		c.secrets[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	for _, n := range in.Nodes {
		if !nodeReady(&n) {
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				c.nodes = append(c.nodes, a.Address)
			}
		}
	}
	sort.Strings(c.nodes)
	var guard *v1.WAFGuardrails
	if in.Settings != nil {
		guard = in.Settings.WAFPolicies
	}
	for i := range in.WAFPolicies {
		p := &in.WAFPolicies[i]
		k := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
		r := checkWAFPolicy(p, guard)
		c.policies[k] = r
		c.out.WAFPolicies[k] = r
	}

	for i := range in.Ingresses {
		c.ingress(&in.Ingresses[i])
	}
	c.gateways()
	c.resolve()

	doc := &waf.Kubernetes{Certificates: c.certs}
	for _, cand := range c.cands {
		if len(cand.route.Listeners) > 0 {
			doc.Routes = append(doc.Routes, cand.route)
		}
	}
	var names []string
	for k, p := range c.policies {
		if p.Accepted && p.used {
			names = append(names, k.String())
		}
		sort.Strings(p.UsedBy)
	}
	sort.Strings(names)
	for _, n := range names {
		ns, name, _ := strings.Cut(n, "/")
		doc.Policies = append(doc.Policies, c.policies[types.NamespacedName{Namespace: ns, Name: name}].wire)
	}
	c.out.Doc = doc
	data, err := yaml.Marshal(doc)
	if err != nil {
		panic(fmt.Sprintf("controller: the WAF document does not marshal: %v", err)) // only plain types
	}
	c.out.YAML = data
	sum := sha256.Sum256(data)
	c.out.Hash = hex.EncodeToString(sum[:])
	return c.out
}

// ingressAddresses are the addresses objects report: spec.ingress.addresses,
// or the WAF listeners' own addresses (not unspecified ones, not loopback).
func ingressAddresses(in IngressInputs) []string {
	if in.Settings != nil && len(in.Settings.Addresses) > 0 {
		return slices.Clone(in.Settings.Addresses)
	}
	var out []string
	for _, l := range in.Listeners {
		host, _, err := net.SplitHostPort(l.Address)
		if err != nil {
			continue
		}
		ip := net.ParseIP(host)
		if ip == nil || ip.IsUnspecified() {
			continue
		}
		if s := ip.String(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// resolve orders the candidates (oldest object first, then kind, namespace,
// name, rule and match order: the Gateway API's tie-break, which also
// decides between Ingresses), checks each with the WAF's own validator,
// and gives every listener, host and match to the first that claims it.
// The WAF config file's routes claim theirs before all.
func (c *composer) resolve() {
	sort.SliceStable(c.cands, func(i, j int) bool {
		a, b := c.cands[i], c.cands[j]
		if !a.owner.created.Equal(b.owner.created) {
			return a.owner.created.Before(b.owner.created)
		}
		if a.owner.kind != b.owner.kind {
			return a.owner.kind < b.owner.kind
		}
		if a.owner.namespace != b.owner.namespace {
			return a.owner.namespace < b.owner.namespace
		}
		if a.owner.name != b.owner.name {
			return a.owner.name < b.owner.name
		}
		if a.rule != b.rule {
			return a.rule < b.rule
		}
		return a.match < b.match
	})
	type claim struct {
		by          string
		owner       owner
		rule, match int
	}
	claimed := map[waf.RouteKey]claim{}
	fileNames := make([]string, 0, len(c.in.FileRoutes))
	for n := range c.in.FileRoutes {
		fileNames = append(fileNames, n)
	}
	sort.Strings(fileNames)
	for _, n := range fileNames {
		for _, k := range c.in.FileRoutes[n] {
			if _, dup := claimed[k]; !dup {
				claimed[k] = claim{by: fmt.Sprintf("the WAF config's route %q", n), rule: -1}
			}
		}
	}
	for _, cand := range c.cands {
		keys, err := waf.CheckRoute(cand.route, c.listeners)
		if err != nil {
			// The composition made a route the WAF refuses: report it on
			// its object rather than send it (it would refuse the whole
			// document).
			cand.route.Listeners = nil
			msg := fmt.Sprintf("%s is not served: the WAF refuses it: %v", cand.what, err)
			if cand.refused != nil {
				cand.refused(msg)
			} else {
				cand.report(msg)
			}
			cand.kept(nil)
			continue
		}
		var lost []string
		byWhom := ""
		keep := map[string]bool{}
		for _, k := range keys {
			if other, dup := claimed[k]; dup {
				if other.owner == cand.owner && other.rule == cand.rule && other.match == cand.match {
					continue // the same match, attached twice (two Gateway listeners on one WAF listener)
				}
				if !slices.Contains(lost, k.Listener) {
					lost = append(lost, k.Listener)
				}
				byWhom = other.by
				if other.owner == cand.owner {
					byWhom = fmt.Sprintf("its own rule %d", other.rule)
				}
				continue
			}
			keep[k.Listener] = true
		}
		var ls []string
		for _, l := range cand.route.Listeners {
			if keep[l] && !slices.Contains(lost, l) {
				ls = append(ls, l)
			}
		}
		cand.route.Listeners = ls
		for _, k := range keys {
			if _, dup := claimed[k]; !dup && slices.Contains(ls, k.Listener) {
				claimed[k] = claim{by: cand.owner.String(), owner: cand.owner, rule: cand.rule, match: cand.match}
			}
		}
		if len(lost) > 0 {
			cand.report(fmt.Sprintf("%s is not served on %s: %s claimed it first", cand.what, listOrAll(lost), byWhom))
		}
		cand.kept(ls)
	}
}

// --- Ingress ---

// ingressClassOf returns whether ing belongs to clusterwall: its
// spec.ingressClassName (or the deprecated kubernetes.io/ingress.class
// annotation) names an IngressClass whose controller is clusterwall's, or
// it names none and clusterwall's class is the default.
func ingressClassOf(ing *networkingv1.Ingress, classes []networkingv1.IngressClass) bool {
	name := ""
	if ing.Spec.IngressClassName != nil {
		name = *ing.Spec.IngressClassName
	} else if a := ing.Annotations["kubernetes.io/ingress.class"]; a != "" {
		name = a
	}
	for _, cl := range classes {
		if cl.Spec.Controller != v1.IngressControllerName {
			continue
		}
		if name == cl.Name {
			return true
		}
		if name == "" && cl.Annotations[networkingv1.AnnotationIsDefaultIngressClass] == "true" {
			return true
		}
	}
	return false
}

// ingress adds the routes of one Ingress (if it is of clusterwall's class).
func (c *composer) ingress(ing *networkingv1.Ingress) {
	if !ingressClassOf(ing, c.in.IngressClasses) || ing.DeletionTimestamp != nil {
		return
	}
	key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
	res := &IngressResult{}
	c.out.Ingresses[key] = res
	problem := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if !slices.Contains(res.Problems, msg) {
			res.Problems = append(res.Problems, msg)
		}
	}
	own := owner{kind: "Ingress", namespace: ing.Namespace, name: ing.Name, created: ing.CreationTimestamp.Time}
	if len(c.listeners) == 0 {
		problem("the WAF has no listeners")
		return
	}

	policy := c.wafPolicyRef(ing.Namespace, ing.Annotations[v1.AnnotationWAFPolicy], "Ingress/"+ing.Name, func(msg string) {
		problem("%s: %s; its routes use the WAF listener's policy (the platform's)", v1.AnnotationWAFPolicy, msg)
	})

	redirect := true
	if v, ok := ing.Annotations[v1.AnnotationSSLRedirect]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			problem("%s: %q is not true or false; redirecting", v1.AnnotationSSLRedirect, v)
		} else {
			redirect = b
		}
	}

	// TLS: certificates for the HTTPS listeners, and the hosts they cover.
	var ruleHosts []string
	for _, r := range ing.Spec.Rules {
		if r.Host != "" && !slices.Contains(ruleHosts, r.Host) {
			ruleHosts = append(ruleHosts, r.Host)
		}
	}
	tlsHosts := map[string]bool{}
	for i, t := range ing.Spec.TLS {
		hosts := t.Hosts
		if len(hosts) == 0 {
			hosts = ruleHosts // the Ingress's own hosts
		}
		for _, h := range hosts {
			tlsHosts[strings.ToLower(h)] = true
		}
		if t.SecretName == "" {
			continue // hosts served with the listener's default certificate
		}
		if len(c.https) == 0 {
			problem("spec.tls[%d]: the WAF has no HTTPS listener", i)
			continue
		}
		certPEM, keyPEM, err := c.tlsSecret(types.NamespacedName{Namespace: ing.Namespace, Name: t.SecretName})
		if err != nil {
			problem("spec.tls[%d].secretName: %v; the hosts get the listener's default certificate", i, err)
			continue
		}
		c.certs = append(c.certs, waf.WireListenerCertificate{Listeners: slices.Clone(c.https),
			CertPEM: certPEM, KeyPEM: keyPEM, ServerNames: lowerAll(hosts)})
	}

	add := func(name, host string, rule, match int, path networkingv1.HTTPIngressPath, be networkingv1.IngressBackend, at string) {
		wr := waf.WireRoute{Name: name, WildcardMatch: "SingleLabel", Policy: policy}
		if host != "" {
			wr.Hosts = []string{strings.ToLower(host)}
		}
		what := fmt.Sprintf("host %s, path", orAny(host))
		pt := networkingv1.PathTypeImplementationSpecific
		if path.PathType != nil {
			pt = *path.PathType
		}
		p := path.Path
		if p == "" {
			p = "/"
		}
		switch pt {
		case networkingv1.PathTypeExact:
			wr.PathExact = p
			what += " Exact " + p
		default: // Prefix; ImplementationSpecific is Prefix here (docs)
			wr.PathPrefix = p
			what += " Prefix " + p
		}
		tlsHost := host != "" && tlsHosts[strings.ToLower(host)]
		served := slices.Clone(c.listeners)
		if tlsHost && redirect && len(c.https) > 0 && len(c.http) > 0 {
			served = slices.Clone(c.https)
			rd := wr
			rd.Name = name + "/https-redirect"
			rd.Listeners = slices.Clone(c.http)
			rd.Redirect = &waf.WireRedirect{Scheme: "https", StatusCode: 308}
			if c.httpsPort != 443 {
				rd.Redirect.Port = c.httpsPort
			}
			c.addCandidate(&candidate{route: rd, owner: own, rule: rule, match: match, what: what + " (redirect to HTTPS)",
				report: func(msg string) { problem("%s", msg) },
				kept:   func(ls []string) { res.Routes += min(len(ls), 1) }})
		}
		wr.Listeners = served
		wr.BackendGroups = []waf.WireBackendGroup{c.ingressBackend(ing.Namespace, be, at, problem)}
		c.addCandidate(&candidate{route: wr, owner: own, rule: rule, match: match, what: what,
			report: func(msg string) { problem("%s", msg) },
			kept:   func(ls []string) { res.Routes += min(len(ls), 1) }})
	}
	for i, r := range ing.Spec.Rules {
		if r.HTTP == nil {
			continue
		}
		for j, p := range r.HTTP.Paths {
			add(fmt.Sprintf("ingress/%s/%s/%d/%d", ing.Namespace, ing.Name, i, j), r.Host, i, j, p, p.Backend,
				fmt.Sprintf("spec.rules[%d].http.paths[%d].backend", i, j))
		}
	}
	if be := ing.Spec.DefaultBackend; be != nil {
		prefix := networkingv1.PathTypePrefix
		add(fmt.Sprintf("ingress/%s/%s/default", ing.Namespace, ing.Name), "", len(ing.Spec.Rules), 0,
			networkingv1.HTTPIngressPath{Path: "/", PathType: &prefix}, *be, "spec.defaultBackend")
	}
}

func (c *composer) addCandidate(cand *candidate) { c.cands = append(c.cands, cand) }

// ingressBackend resolves an Ingress backend to a backend group: the
// Service's ready endpoints (503 without any), or 500 for what cannot be
// served (a resource backend, an ExternalName Service).
func (c *composer) ingressBackend(ns string, be networkingv1.IngressBackend, at string, problem func(string, ...any)) waf.WireBackendGroup {
	if be.Resource != nil || be.Service == nil {
		problem("%s: only Service backends are supported; requests get 500", at)
		return waf.WireBackendGroup{EmptyStatus: 500}
	}
	port := servicePortRef{name: be.Service.Port.Name, number: be.Service.Port.Number}
	addrs, err := c.serviceEndpoints(types.NamespacedName{Namespace: ns, Name: be.Service.Name}, port)
	if err != nil {
		problem("%s: %v; requests get %d", at, err, err.status)
		return waf.WireBackendGroup{EmptyStatus: err.status}
	}
	return waf.WireBackendGroup{Backends: addrs}
}

// servicePortRef names a Service port by number or name.
type servicePortRef struct {
	name   string
	number int32
}

func (p servicePortRef) String() string {
	if p.name != "" {
		return strconv.Quote(p.name)
	}
	return strconv.Itoa(int(p.number))
}

// backendError is why a Service cannot be a backend, and the status the
// requests for it get.
type backendError struct {
	msg    string
	status int
}

func (e *backendError) Error() string { return e.msg }

// serviceEndpoints returns the addresses (ip:port, sorted) the WAF sends a
// Service port's requests to: the ready endpoints of its EndpointSlices (or,
// when none is ready, those still serving while they terminate), or with
// the annotation clusterwall.io/backend: NodePort, every ready node's
// InternalIP with the port's nodePort. No endpoint is not an error: the
// requests get 503 until one is ready.
func (c *composer) serviceEndpoints(key types.NamespacedName, ref servicePortRef) ([]string, *backendError) {
	svc := c.services[key]
	if svc == nil {
		return nil, &backendError{fmt.Sprintf("Service %s not found", key), 503}
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, &backendError{fmt.Sprintf("Service %s is of type ExternalName, which the WAF does not resolve", key), 500}
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if (ref.name != "" && p.Name == ref.name) || (ref.name == "" && p.Port == ref.number) {
			sp = p
			break
		}
	}
	if sp == nil {
		return nil, &backendError{fmt.Sprintf("Service %s has no port %s", key, ref), 503}
	}
	if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
		return nil, &backendError{fmt.Sprintf("Service %s port %s is %s, not TCP", key, ref, sp.Protocol), 500}
	}
	if strings.EqualFold(svc.Annotations[v1.AnnotationBackend], "NodePort") {
		if sp.NodePort == 0 {
			return nil, &backendError{fmt.Sprintf("Service %s is annotated %s: NodePort but port %s has no nodePort", key, v1.AnnotationBackend, ref), 503}
		}
		var out []string
		for _, n := range c.nodes {
			out = append(out, net.JoinHostPort(n, strconv.Itoa(int(sp.NodePort))))
		}
		return out, nil
	}
	var ready, serving []string
	for _, s := range c.slices[key] {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		var port int32
		found := false
		for _, p := range s.Ports {
			if p.Port != nil && (p.Name == nil && sp.Name == "" || p.Name != nil && *p.Name == sp.Name) &&
				(p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
				port, found = *p.Port, true
				break
			}
		}
		if !found {
			continue
		}
		for _, e := range s.Endpoints {
			cond := e.Conditions
			isReady := cond.Ready == nil || *cond.Ready
			isServing := cond.Serving != nil && *cond.Serving
			for _, a := range e.Addresses {
				hp := net.JoinHostPort(a, strconv.Itoa(int(port)))
				switch {
				case isReady:
					ready = append(ready, hp)
				case isServing:
					serving = append(serving, hp)
				}
			}
		}
	}
	out := ready
	if len(out) == 0 {
		out = serving
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

// tlsSecret reads a kubernetes.io/tls Secret's certificate and key (PEM),
// checking that they load.
func (c *composer) tlsSecret(key types.NamespacedName) (string, string, error) {
	s := c.secrets[key]
	if s == nil {
		return "", "", fmt.Errorf("Secret %s not found (or not of type kubernetes.io/tls)", key)
	}
	if s.Type != corev1.SecretTypeTLS {
		return "", "", fmt.Errorf("Secret %s is of type %s, not kubernetes.io/tls", key, s.Type)
	}
	certPEM, keyPEM := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return "", "", fmt.Errorf("Secret %s: %v", key, err)
	}
	if pair.Leaf != nil && c.now.After(pair.Leaf.NotAfter) {
		return "", "", fmt.Errorf("Secret %s: the certificate expired on %s", key, pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return string(certPEM), string(keyPEM), nil
}

// wafPolicyRef resolves a WAFPolicy name in namespace ns for user (an
// Ingress or HTTPRoute): the WAF policy's name in the document, or "" (the
// listener's policy) with a problem when it is missing or not accepted.
func (c *composer) wafPolicyRef(ns, name, user string, problem func(string)) string {
	if name == "" {
		return ""
	}
	k := types.NamespacedName{Namespace: ns, Name: name}
	p := c.policies[k]
	switch {
	case p == nil:
		problem(fmt.Sprintf("WAFPolicy %s not found", k))
		return ""
	case !p.Accepted:
		p.UsedBy = appendUnique(p.UsedBy, user)
		problem(fmt.Sprintf("WAFPolicy %s is not accepted (%s)", k, p.message()))
		return ""
	}
	p.used = true
	p.UsedBy = appendUnique(p.UsedBy, user)
	return p.wire.Name
}

func appendUnique(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

func lowerAll(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.ToLower(s)
	}
	return out
}

func orAny(host string) string {
	if host == "" {
		return "(any)"
	}
	return host
}

func listOrAll(ls []string) string {
	if len(ls) == 0 {
		return "any listener"
	}
	return "listener " + strings.Join(ls, ", ")
}

package controller

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/waf"
)

// The WAF's listeners in these tests: HTTP on 80 and HTTPS on 443, each
// on an IPv4 and an IPv6 address (as in the lab).
var testListeners = []WAFListener{
	{Name: "https4", Address: "203.0.113.33:443", Port: 443, TLS: true},
	{Name: "https6", Address: "[2001:db8:cafe::33]:443", Port: 443, TLS: true},
	{Name: "http4", Address: "203.0.113.33:80", Port: 80},
	{Name: "http6", Address: "[2001:db8:cafe::33]:80", Port: 80},
}

func ingressObj(ns, name string, created time.Time, mutate func(*networkingv1.Ingress)) networkingv1.Ingress {
	ing := networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("clusterwall")}}
	if mutate != nil {
		mutate(&ing)
	}
	return ing
}

func rule(host string, paths ...networkingv1.HTTPIngressPath) networkingv1.IngressRule {
	return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}}}
}

func typedPath(pt networkingv1.PathType, path, svc string) networkingv1.HTTPIngressPath {
	p := prefixPath(path, svc)
	p.PathType = &pt
	return p
}

// baseInputs: clusterwall's class, a Service web (two ready endpoints, one
// not ready, one terminating but serving) and a TLS Secret.
func baseInputs(t *testing.T) IngressInputs {
	ca := newTestCA(t)
	svc, es := serviceWithEndpoints("shop", "web", "10.0.0.2:8080", "10.0.0.1:8080")
	es.Endpoints = append(es.Endpoints,
		discoveryv1.Endpoint{Addresses: []string{"10.0.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
		discoveryv1.Endpoint{Addresses: []string{"10.0.0.4"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}})
	other, otherES := serviceWithEndpoints("shop", "api", "10.0.1.1:9000")
	return IngressInputs{
		Listeners:      testListeners,
		IngressClasses: []networkingv1.IngressClass{*ingressClass("clusterwall", false), {ObjectMeta: metav1.ObjectMeta{Name: "nginx"}, Spec: networkingv1.IngressClassSpec{Controller: "k8s.io/ingress-nginx"}}},
		Services:       []corev1.Service{*svc, *other},
		Slices:         []discoveryv1.EndpointSlice{*es, *otherES},
		Secrets:        []corev1.Secret{*ca.secret(t, "shop", "web-tls", "web", "shop.example.com")},
	}
}

func routeNamed(doc *waf.Kubernetes, name string) *waf.WireRoute {
	for i := range doc.Routes {
		if doc.Routes[i].Name == name {
			return &doc.Routes[i]
		}
	}
	return nil
}

func TestComposeIngress(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := baseInputs(t)
	in.Ingresses = []networkingv1.Ingress{
		ingressObj("shop", "web", t0, func(i *networkingv1.Ingress) {
			i.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"shop.example.com"}, SecretName: "web-tls"}}
			i.Spec.Rules = []networkingv1.IngressRule{
				rule("shop.example.com", typedPath(networkingv1.PathTypePrefix, "/", "web"), typedPath(networkingv1.PathTypeExact, "/login", "web")),
				rule("*.shop.example.com", typedPath(networkingv1.PathTypeImplementationSpecific, "/img", "web")),
			}
			i.Spec.DefaultBackend = &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}
		}),
		// Another controller's: ignored.
		ingressObj("shop", "nginx", t0, func(i *networkingv1.Ingress) {
			i.Spec.IngressClassName = ptr.To("nginx")
			i.Spec.Rules = []networkingv1.IngressRule{rule("nginx.example.com", typedPath(networkingv1.PathTypePrefix, "/", "web"))}
		}),
	}
	comp := ComposeIngress(in)
	if len(comp.Ingresses) != 1 || comp.Ingresses[types.NamespacedName{Namespace: "shop", Name: "web"}] == nil {
		t.Fatalf("ingresses: %v", comp.Ingresses)
	}
	res := comp.Ingresses[types.NamespacedName{Namespace: "shop", Name: "web"}]
	if len(res.Problems) != 0 {
		t.Errorf("problems: %q", res.Problems)
	}
	doc := comp.Doc
	// A TLS host: served on HTTPS, redirected (308) on HTTP.
	r := routeNamed(doc, "ingress/shop/web/0/0")
	if r == nil || strings.Join(r.Listeners, ",") != "https4,https6" || r.PathPrefix != "/" || r.WildcardMatch != "SingleLabel" ||
		len(r.BackendGroups) != 1 || strings.Join(r.BackendGroups[0].Backends, ",") != "10.0.0.1:8080,10.0.0.2:8080" {
		t.Errorf("route 0/0: %+v", r)
	}
	rd := routeNamed(doc, "ingress/shop/web/0/0/https-redirect")
	if rd == nil || strings.Join(rd.Listeners, ",") != "http4,http6" || rd.Redirect == nil || rd.Redirect.Scheme != "https" || rd.Redirect.StatusCode != 308 || rd.Redirect.Port != 0 {
		t.Errorf("redirect: %+v", rd)
	}
	if r := routeNamed(doc, "ingress/shop/web/0/1"); r == nil || r.PathExact != "/login" || r.PathPrefix != "" {
		t.Errorf("Exact path: %+v", r)
	}
	// Not a TLS host: every listener; ImplementationSpecific is Prefix.
	if r := routeNamed(doc, "ingress/shop/web/1/0"); r == nil || len(r.Listeners) != 4 || r.PathPrefix != "/img" || r.Hosts[0] != "*.shop.example.com" {
		t.Errorf("wildcard host: %+v", r)
	}
	if r := routeNamed(doc, "ingress/shop/web/default"); r == nil || len(r.Hosts) != 0 || r.PathPrefix != "/" || len(r.Listeners) != 4 {
		t.Errorf("default backend: %+v", r)
	}
	if len(doc.Certificates) != 1 || strings.Join(doc.Certificates[0].ServerNames, ",") != "shop.example.com" || strings.Join(doc.Certificates[0].Listeners, ",") != "https4,https6" {
		t.Errorf("certificates: %+v", doc.Certificates)
	}
	if strings.Join(comp.Addresses, ",") != "203.0.113.33,2001:db8:cafe::33" {
		t.Errorf("addresses %q", comp.Addresses)
	}
	// The merged document is one the WAF accepts.
	checkMerges(t, comp)

	// Deterministic: the same objects in another order, the same hash.
	in.Ingresses[0], in.Ingresses[1] = in.Ingresses[1], in.Ingresses[0]
	in.Services[0], in.Services[1] = in.Services[1], in.Services[0]
	if again := ComposeIngress(in); again.Hash != comp.Hash {
		t.Errorf("hash changed with the input order:\n%s\n%s", comp.YAML, again.YAML)
	}
}

// checkMerges merges comp's document into a WAF config with testListeners,
// as the daemon does.
func checkMerges(t *testing.T, comp *IngressComposition) {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCA(t)
	c, k := ca.issue(t, "default", "default.example")
	var b strings.Builder
	b.WriteString("listeners:\n")
	for _, l := range testListeners {
		b.WriteString("  - name: " + l.Name + "\n    address: \"" + strings.Replace(l.Address, ":", ":", 1) + "\"\n")
		if l.TLS {
			b.WriteString("    tls:\n      certificates:\n        - certPEM: |\n")
			for _, line := range strings.Split(strings.TrimSpace(string(c)), "\n") {
				b.WriteString("            " + line + "\n")
			}
			b.WriteString("          keyPEM: |\n")
			for _, line := range strings.Split(strings.TrimSpace(string(k)), "\n") {
				b.WriteString("            " + line + "\n")
			}
		}
	}
	b.WriteString("policies:\n  - name: default\n    mode: Off\n")
	cfg, err := waf.ParseConfig(dir+"/waf.yaml", []byte(b.String()))
	if err != nil {
		t.Fatalf("test WAF config: %v\n%s", err, b.String())
	}
	doc, err := waf.ParseKubernetes("doc", comp.YAML)
	if err != nil {
		t.Fatalf("the document does not parse: %v\n%s", err, comp.YAML)
	}
	if _, err := cfg.WithKubernetes(doc); err != nil {
		t.Fatalf("the WAF refuses the document: %v\n%s", err, comp.YAML)
	}
}

func TestComposeIngressClasses(t *testing.T) {
	t0 := time.Now()
	in := baseInputs(t)
	p := rule("a.example.com", typedPath(networkingv1.PathTypePrefix, "/", "web"))
	in.Ingresses = []networkingv1.Ingress{
		ingressObj("shop", "named", t0, func(i *networkingv1.Ingress) { i.Spec.Rules = []networkingv1.IngressRule{p} }),
		ingressObj("shop", "annotated", t0, func(i *networkingv1.Ingress) {
			i.Spec.IngressClassName = nil
			i.Annotations = map[string]string{"kubernetes.io/ingress.class": "clusterwall"}
			i.Spec.Rules = []networkingv1.IngressRule{rule("b.example.com", typedPath(networkingv1.PathTypePrefix, "/", "web"))}
		}),
		ingressObj("shop", "classless", t0, func(i *networkingv1.Ingress) {
			i.Spec.IngressClassName = nil
			i.Spec.Rules = []networkingv1.IngressRule{rule("c.example.com", typedPath(networkingv1.PathTypePrefix, "/", "web"))}
		}),
	}
	comp := ComposeIngress(in)
	if len(comp.Ingresses) != 2 {
		t.Errorf("without a default class: %d Ingresses are ours, want 2 (named, annotated)", len(comp.Ingresses))
	}
	in.IngressClasses[0].Annotations = map[string]string{networkingv1.AnnotationIsDefaultIngressClass: "true"}
	if comp := ComposeIngress(in); len(comp.Ingresses) != 3 {
		t.Errorf("with clusterwall the default class: %d Ingresses are ours, want 3", len(comp.Ingresses))
	}
}

func TestComposeIngressBackends(t *testing.T) {
	t0 := time.Now()
	in := baseInputs(t)
	// web's only ready endpoints gone: the serving, terminating one stays.
	in.Slices[0].Endpoints = in.Slices[0].Endpoints[2:]
	ext := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "x.example.net"}}
	np := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "np", Annotations: map[string]string{v1.AnnotationBackend: "NodePort"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30080}}}}
	empty, emptyES := serviceWithEndpoints("shop", "empty")
	in.Services = append(in.Services, ext, np, *empty)
	in.Slices = append(in.Slices, *emptyES)
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue}
	in.Nodes = []corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{ready}, Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.224.0.5"}, {Type: corev1.NodeHostName, Address: "n2"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{ready}, Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.224.0.4"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "down"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.224.0.9"}}}},
	}
	paths := []networkingv1.HTTPIngressPath{
		typedPath(networkingv1.PathTypePrefix, "/web", "web"),
		typedPath(networkingv1.PathTypePrefix, "/missing", "missing"),
		typedPath(networkingv1.PathTypePrefix, "/ext", "ext"),
		typedPath(networkingv1.PathTypePrefix, "/np", "np"),
		typedPath(networkingv1.PathTypePrefix, "/empty", "empty"),
		typedPath(networkingv1.PathTypePrefix, "/badport", "web"),
	}
	paths[5].Backend.Service.Port = networkingv1.ServiceBackendPort{Number: 8443}
	in.Ingresses = []networkingv1.Ingress{ingressObj("shop", "b", t0, func(i *networkingv1.Ingress) {
		i.Spec.Rules = []networkingv1.IngressRule{rule("b.example.com", paths...)}
	})}
	comp := ComposeIngress(in)
	want := map[string]waf.WireBackendGroup{
		"ingress/shop/b/0/0": {Backends: []string{"10.0.0.4:8080"}},
		"ingress/shop/b/0/1": {EmptyStatus: 503},
		"ingress/shop/b/0/2": {EmptyStatus: 500},
		"ingress/shop/b/0/3": {Backends: []string{"10.224.0.4:30080", "10.224.0.5:30080"}},
		"ingress/shop/b/0/4": {},
		"ingress/shop/b/0/5": {EmptyStatus: 503},
	}
	for name, g := range want {
		r := routeNamed(comp.Doc, name)
		if r == nil || len(r.BackendGroups) != 1 || strings.Join(r.BackendGroups[0].Backends, ",") != strings.Join(g.Backends, ",") || r.BackendGroups[0].EmptyStatus != g.EmptyStatus {
			t.Errorf("%s: %+v, want %+v", name, r, g)
		}
	}
	problems := strings.Join(comp.Ingresses[types.NamespacedName{Namespace: "shop", Name: "b"}].Problems, "\n")
	for _, p := range []string{"spec.rules[0].http.paths[1].backend: Service shop/missing not found; requests get 503",
		"spec.rules[0].http.paths[2].backend: Service shop/ext is of type ExternalName",
		"spec.rules[0].http.paths[5].backend: Service shop/web has no port 8443"} {
		if !strings.Contains(problems, p) {
			t.Errorf("problems\n%s\nwant %q", problems, p)
		}
	}
	checkMerges(t, comp)
}

// TestComposeIngressConflicts: two Ingresses claim the same host and path:
// the older wins, the newer is told; a host and path of the WAF config's
// own routes is the file's; a bad Secret leaves the default certificate.
func TestComposeIngressConflicts(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := baseInputs(t)
	in.FileRoutes = map[string][]waf.RouteKey{"store-front": {{Listener: "https4", Host: "store.example.com", Match: "prefix  method "}}}
	in.Secrets = append(in.Secrets, corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "broken"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: []byte("not PEM"), corev1.TLSPrivateKeyKey: []byte("x")}})
	mk := func(name string, created time.Time) networkingv1.Ingress {
		return ingressObj("shop", name, created, func(i *networkingv1.Ingress) {
			i.Spec.Rules = []networkingv1.IngressRule{rule("dup.example.com", typedPath(networkingv1.PathTypePrefix, "/", "web"), typedPath(networkingv1.PathTypePrefix, "/only-"+name, "web"))}
		})
	}
	store := ingressObj("shop", "store", t0, func(i *networkingv1.Ingress) {
		i.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{"store.example.com"}, SecretName: "broken"}}
		i.Spec.Rules = []networkingv1.IngressRule{rule("store.example.com", typedPath(networkingv1.PathTypePrefix, "/", "web"))}
	})
	in.Ingresses = []networkingv1.Ingress{mk("newer", t0.Add(time.Minute)), mk("older", t0), store}
	comp := ComposeIngress(in)
	if r := routeNamed(comp.Doc, "ingress/shop/older/0/0"); r == nil || len(r.Listeners) != 4 {
		t.Errorf("the older Ingress's route: %+v", r)
	}
	if r := routeNamed(comp.Doc, "ingress/shop/newer/0/0"); r != nil {
		t.Errorf("the newer Ingress's conflicting route was sent: %+v", r)
	}
	if r := routeNamed(comp.Doc, "ingress/shop/newer/0/1"); r == nil {
		t.Error("the newer Ingress's own path was dropped")
	}
	newer := comp.Ingresses[types.NamespacedName{Namespace: "shop", Name: "newer"}]
	if newer.Routes != 1 || len(newer.Problems) != 1 || !strings.Contains(newer.Problems[0], "host dup.example.com, path Prefix / is not served on listener https4, https6, http4, http6: Ingress shop/older claimed it first") {
		t.Errorf("newer: %+v", newer)
	}
	if older := comp.Ingresses[types.NamespacedName{Namespace: "shop", Name: "older"}]; len(older.Problems) != 0 {
		t.Errorf("older: %+v", older)
	}
	st := comp.Ingresses[types.NamespacedName{Namespace: "shop", Name: "store"}]
	if r := routeNamed(comp.Doc, "ingress/shop/store/0/0"); r == nil || strings.Join(r.Listeners, ",") != "https6" {
		t.Errorf("store: %+v (https4 is the file's)", r)
	}
	all := strings.Join(st.Problems, "\n")
	if !strings.Contains(all, `the WAF config's route "store-front" claimed it first`) || !strings.Contains(all, "spec.tls[0].secretName: Secret shop/broken") {
		t.Errorf("store problems:\n%s", all)
	}
	if len(comp.Doc.Certificates) != 0 {
		t.Errorf("a broken Secret's certificate was sent")
	}
	checkMerges(t, comp)
}

// TestWAFPolicyGuardrails: a WAFPolicy is accepted only within the
// FirewallPolicy's guardrails (strict by default), then checked by the
// WAF's own validator; an Ingress naming one that is not accepted keeps
// the listener's (the platform's) policy.
func TestWAFPolicyGuardrails(t *testing.T) {
	pol := func(name string, spec v1.WAFPolicySpec) v1.WAFPolicy {
		return v1.WAFPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: spec}
	}
	tests := []struct {
		name   string
		guard  *v1.WAFGuardrails
		spec   v1.WAFPolicySpec
		reason string
		want   string
	}{
		{"defaults: stricter is fine", nil, v1.WAFPolicySpec{ParanoiaLevel: 2, InboundAnomalyThreshold: 3}, v1.ReasonAccepted, ""},
		{"defaults: no Detection", nil, v1.WAFPolicySpec{Mode: "Detection"}, v1.ReasonGuardrail, "spec.mode: mode Detection is not allowed by the FirewallPolicy (allowed: Prevention)"},
		{"defaults: no Off", nil, v1.WAFPolicySpec{Mode: "Off"}, v1.ReasonGuardrail, "spec.mode: mode Off is not allowed"},
		{"defaults: threshold", nil, v1.WAFPolicySpec{InboundAnomalyThreshold: 50}, v1.ReasonGuardrail, "spec.inboundAnomalyThreshold: inbound anomaly threshold 50 is above the maximum 5"},
		{"defaults: no exclusions", nil, v1.WAFPolicySpec{Exclusions: []v1.WAFExclusion{{RuleIDs: []string{"942100"}}}}, v1.ReasonGuardrail, "spec.exclusions: the FirewallPolicy does not allow teams exclusions"},
		{"defaults: no custom rules", nil, v1.WAFPolicySpec{CustomRules: `SecAction "id:1,phase:1,pass,nolog,ctl:ruleEngine=Off"`}, v1.ReasonGuardrail, "spec.customRules: the FirewallPolicy does not allow teams custom rules"},
		{"min paranoia", &v1.WAFGuardrails{MinParanoiaLevel: ptr.To[int32](2)}, v1.WAFPolicySpec{ParanoiaLevel: 1}, v1.ReasonGuardrail, "spec.paranoiaLevel: paranoia level 1 is below the minimum 2"},
		{"Detection allowed", &v1.WAFGuardrails{AllowedModes: []v1.WAFMode{"Prevention", "Detection"}}, v1.WAFPolicySpec{Mode: "Detection"}, v1.ReasonAccepted, ""},
		{"exclusions allowed", &v1.WAFGuardrails{AllowExclusions: true}, v1.WAFPolicySpec{Exclusions: []v1.WAFExclusion{{RuleIDs: []string{"942100-942199"}, PathPrefix: "/search"}}}, v1.ReasonAccepted, ""},
		{"excluding the blocking evaluation is Off", &v1.WAFGuardrails{AllowExclusions: true}, v1.WAFPolicySpec{Exclusions: []v1.WAFExclusion{{RuleIDs: []string{"942100", "949000-949999"}}}}, v1.ReasonGuardrail, "spec.exclusions[0].ruleIds[1]: 949000-949999 removes CRS initialization or blocking evaluation rules"},
		{"excluding OWASP_CRS is Off", &v1.WAFGuardrails{AllowExclusions: true}, v1.WAFPolicySpec{Exclusions: []v1.WAFExclusion{{Tags: []string{"OWASP_CRS"}}}}, v1.ReasonGuardrail, "spec.exclusions[0].tags[0]: tag OWASP_CRS covers the CRS blocking evaluation rules"},
		{"a target of the blocking rules is fine", &v1.WAFGuardrails{AllowExclusions: true}, v1.WAFPolicySpec{Exclusions: []v1.WAFExclusion{{RuleIDs: []string{"949110"}, Targets: []string{"ARGS:q"}}}}, v1.ReasonAccepted, ""},
		{"the WAF's validator", &v1.WAFGuardrails{AllowExclusions: true}, v1.WAFPolicySpec{Exclusions: []v1.WAFExclusion{{RuleIDs: []string{"94x"}}}}, v1.ReasonInvalid, `spec.exclusions[0].ruleIds[0]: "94x" is not a rule ID or range`},
		{"SecLang", &v1.WAFGuardrails{AllowCustomRules: true}, v1.WAFPolicySpec{CustomRules: `SecRule ARGS "@nosuchop x" "id:10002,phase:1,deny"`}, v1.ReasonInvalid, "spec.customRules: line 1 of the custom rules"},
		{"custom rules allowed", &v1.WAFGuardrails{AllowCustomRules: true}, v1.WAFPolicySpec{CustomRules: `SecRule ARGS:debug "@streq 1" "id:10001,phase:1,deny,status:403"`}, v1.ReasonAccepted, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pol("p", tt.spec)
			r := checkWAFPolicy(&p, tt.guard)
			if r.Reason != tt.reason || r.Accepted != (tt.reason == v1.ReasonAccepted) || !strings.Contains(r.message(), tt.want) {
				t.Errorf("%s %v: %q, want %s %q", r.Reason, r.Accepted, r.message(), tt.reason, tt.want)
			}
		})
	}

	// Used by an Ingress: accepted ones are sent and named on the route;
	// a rejected one is not, and the route keeps the listener's policy.
	in := baseInputs(t)
	in.WAFPolicies = []v1.WAFPolicy{pol("strict", v1.WAFPolicySpec{ParanoiaLevel: 3}), pol("lax", v1.WAFPolicySpec{Mode: "Off"})}
	use := func(name, policy string) networkingv1.Ingress {
		return ingressObj("shop", name, time.Now(), func(i *networkingv1.Ingress) {
			i.Annotations = map[string]string{v1.AnnotationWAFPolicy: policy}
			i.Spec.Rules = []networkingv1.IngressRule{rule(name+".example.com", typedPath(networkingv1.PathTypePrefix, "/", "web"))}
		})
	}
	in.Ingresses = []networkingv1.Ingress{use("a", "strict"), use("b", "lax"), use("c", "nope")}
	comp := ComposeIngress(in)
	if len(comp.Doc.Policies) != 1 || comp.Doc.Policies[0].Name != "wafpolicy/shop/strict" || comp.Doc.Policies[0].ParanoiaLevel != 3 {
		t.Errorf("policies sent: %+v", comp.Doc.Policies)
	}
	if r := routeNamed(comp.Doc, "ingress/shop/a/0/0"); r == nil || r.Policy != "wafpolicy/shop/strict" {
		t.Errorf("route a: %+v", r)
	}
	if r := routeNamed(comp.Doc, "ingress/shop/b/0/0"); r == nil || r.Policy != "" {
		t.Errorf("route b (rejected policy): %+v", r)
	}
	pb := strings.Join(comp.Ingresses[types.NamespacedName{Namespace: "shop", Name: "b"}].Problems, "\n")
	pc := strings.Join(comp.Ingresses[types.NamespacedName{Namespace: "shop", Name: "c"}].Problems, "\n")
	if !strings.Contains(pb, "WAFPolicy shop/lax is not accepted (spec.mode: mode Off is not allowed") || !strings.Contains(pc, "WAFPolicy shop/nope not found") {
		t.Errorf("problems:\n%s\n%s", pb, pc)
	}
	if u := comp.WAFPolicies[types.NamespacedName{Namespace: "shop", Name: "lax"}].UsedBy; len(u) != 1 || u[0] != "Ingress/b" {
		t.Errorf("lax used by %q", u)
	}
	checkMerges(t, comp)
}

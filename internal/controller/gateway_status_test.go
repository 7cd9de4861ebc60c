package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/waf"
)

// fakeDaemon is a daemon's admin API for the WAF part only: it reports
// testListeners and merges what is pushed into a real WAF config with
// them (waf.Config.WithKubernetes), answering 422 as the daemon would.
type fakeDaemon struct {
	*httptest.Server
	cfg *waf.Config

	mu     sync.Mutex
	hash   string
	doc    *waf.Kubernetes
	pushes int
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	t.Helper()
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, "default", "default.example")
	var b strings.Builder
	b.WriteString("listeners:\n")
	for _, l := range testListeners {
		fmt.Fprintf(&b, "  - name: %s\n    address: %q\n", l.Name, strings.Replace(l.Address, fmt.Sprint(l.Port), "0", 1))
		if l.TLS {
			fmt.Fprintf(&b, "    tls:\n      certificates:\n        - certPEM: %q\n          keyPEM: %q\n", certPEM, keyPEM)
		}
	}
	b.WriteString("policies:\n  - name: default\n    mode: Off\n")
	cfg, err := waf.ParseConfig("fake/waf.yaml", []byte(b.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	f := &fakeDaemon{cfg: cfg}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/waf/kubernetes" {
			http.NotFound(w, r)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			json.NewEncoder(w).Encode(map[string]any{"hash": f.hash, "listeners": testListeners, "fileRoutes": map[string]any{}})
			return
		}
		data, _ := io.ReadAll(r.Body)
		doc, err := waf.ParseKubernetes("kubernetes", data)
		if err == nil {
			_, err = cfg.WithKubernetes(doc)
		}
		if err != nil {
			w.WriteHeader(http.StatusUnprocessableEntity)
			json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"message": err.Error()}}})
			return
		}
		sum := sha256.Sum256(data)
		f.hash, f.doc = hex.EncodeToString(sum[:]), doc
		f.pushes++
		json.NewEncoder(w).Encode(map[string]any{"generation": f.pushes, "hash": f.hash})
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeDaemon) routes() []waf.WireRoute {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.doc == nil {
		return nil
	}
	return f.doc.Routes
}

// gwStatus fetches a Gateway.
func getGateway(c client.Client, ns, name string) (*gwv1.Gateway, error) {
	var g gwv1.Gateway
	err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &g)
	return &g, err
}

func listenerStatus(g *gwv1.Gateway, name string) *gwv1.ListenerStatus {
	for i := range g.Status.Listeners {
		if string(g.Status.Listeners[i].Name) == name {
			return &g.Status.Listeners[i]
		}
	}
	return nil
}

func lconds(g *gwv1.Gateway, name string) []metav1.Condition {
	if l := listenerStatus(g, name); l != nil {
		return l.Conditions
	}
	return nil
}

// conds checks conditions: each want is TYPE=STATUS/REASON[~message part].
func conds(cs []metav1.Condition, gen int64, wants ...string) string {
	for _, w := range wants {
		spec, msg, _ := strings.Cut(w, "~")
		typ, rest, _ := strings.Cut(spec, "=")
		status, reason, _ := strings.Cut(rest, "/")
		if d := condIs(cs, typ, metav1.ConditionStatus(status), reason, gen, msg); d != "" {
			return d
		}
	}
	return ""
}

// TestGatewayStatus: the conditions and reasons the Gateway API defines,
// on GatewayClasses, Gateways, listeners and HTTPRoutes, for valid and
// invalid objects of every kind the controller checks, against a real
// API server; the WAF document stays one the WAF accepts throughout.
func TestGatewayStatus(t *testing.T) {
	c := kubeClient(t)
	d := newFakeDaemon(t)
	startIngressController(t, kube(t), IngressOptions{Daemons: []string{d.URL}, Resync: time.Hour, GatewayAPI: true})
	ctx := context.Background()
	ns, other := "gws-a", "gws-b"
	namespace(t, c, ns)
	namespace(t, c, other)
	ca := newTestCA(t)
	create(t, c, ca.secret(t, ns, "tls", "a", "*.a.example"))
	create(t, c, ca.secret(t, other, "foreign-tls", "b", "b.example"))
	svc, es := serviceWithEndpoints(ns, "web", "10.0.0.1:8080")
	create(t, c, svc)
	create(t, c, es)

	// Classes: ours, ours with parameters (not supported), another's.
	create(t, c, gatewayClass("gws"))
	withParams := gatewayClass("gws-params")
	withParams.Spec.ParametersRef = &gwv1.ParametersReference{Group: "", Kind: "ConfigMap", Name: "x", Namespace: ptr.To(gwv1.Namespace(ns))}
	create(t, c, withParams)
	foreign := gatewayClass("not-ours")
	foreign.Spec.ControllerName = "example.net/other"
	create(t, c, foreign)

	tcp := gwv1.Listener{Name: "tcp", Port: 80, Protocol: gwv1.TCPProtocolType}
	kinds := httpListener("kinds", 80, "kinds.example")
	kinds.AllowedRoutes.Kinds = []gwv1.RouteGroupKind{{Kind: "GRPCRoute"}, {Kind: "HTTPRoute"}}
	same := httpListener("same-ns", 80, "same.example")
	same.AllowedRoutes.Namespaces.From = ptr.To(gwv1.NamespacesFromSame)
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gwv1.GatewaySpec{GatewayClassName: "gws", Listeners: []gwv1.Listener{
		httpListener("http", 80, ""),
		httpsListener("wild", 443, "*.a.example", "", "tls"),
		httpsListener("exact", 443, "foo.a.example", "", "tls"),
		httpsListener("missing-secret", 443, "m.example", "", "nope"),
		httpsListener("foreign-secret", 443, "b.example", other, "foreign-tls"),
		httpsListener("wrong-port", 80, "w.example", "", "tls"),
		tcp, kinds, same,
	}}}
	create(t, c, gw)
	eventually(t, 15*time.Second, "Gateway status", func() string {
		g, err := getGateway(c, ns, "gw")
		if err != nil {
			return err.Error()
		}
		gen := g.Generation
		if d := conds(g.Status.Conditions, gen, "Accepted=True/ListenersNotValid~listeners not accepted: wrong-port, tcp", "Programmed=True/Programmed"); d != "" {
			return "Gateway: " + d
		}
		want := map[string][]string{
			"http":           {"Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs", "Conflicted=False/NoConflicts", "Programmed=True/Programmed"},
			"wild":           {"Accepted=True/Accepted", "Programmed=True/Programmed", "OverlappingTLSConfig=True/OverlappingHostnames~overlaps \"foo.a.example\""},
			"exact":          {"Accepted=True/Accepted", "Programmed=True/Programmed", "OverlappingTLSConfig=True/OverlappingHostnames~overlaps \"*.a.example\""},
			"missing-secret": {"Accepted=True/Accepted", "ResolvedRefs=False/InvalidCertificateRef~Secret gws-a/nope not found", "Programmed=False/Invalid"},
			"foreign-secret": {"Accepted=True/Accepted", "ResolvedRefs=False/RefNotPermitted~no ReferenceGrant", "Programmed=False/Invalid"},
			"wrong-port":     {"Accepted=False/PortUnavailable~serves port 80 as HTTP, not HTTPS", "Programmed=False/Invalid"},
			"tcp":            {"Accepted=False/UnsupportedProtocol~protocol TCP is not supported", "Programmed=False/Invalid"},
			"kinds":          {"Accepted=True/Accepted", "ResolvedRefs=False/InvalidRouteKinds~gateway.networking.k8s.io/GRPCRoute", "Programmed=True/Programmed"},
		}
		for name, ws := range want {
			l := listenerStatus(g, name)
			if l == nil {
				return "no status for listener " + name
			}
			if d := conds(l.Conditions, gen, ws...); d != "" {
				return "listener " + name + ": " + d
			}
		}
		if l := listenerStatus(g, "http"); meta.FindStatusCondition(l.Conditions, "OverlappingTLSConfig") != nil {
			return "OverlappingTLSConfig on an HTTP listener"
		}
		if l := listenerStatus(g, "kinds"); len(l.SupportedKinds) != 1 || l.SupportedKinds[0].Kind != "HTTPRoute" {
			return fmt.Sprintf("supportedKinds %+v", l.SupportedKinds)
		}
		if l := listenerStatus(g, "tcp"); len(l.SupportedKinds) != 0 {
			return fmt.Sprintf("tcp supportedKinds %+v", l.SupportedKinds)
		}
		var gc, gp gwv1.GatewayClass
		c.Get(ctx, client.ObjectKey{Name: "gws"}, &gc)
		c.Get(ctx, client.ObjectKey{Name: "gws-params"}, &gp)
		if d := conds(gc.Status.Conditions, gc.Generation, "Accepted=True/Accepted"); d != "" {
			return "GatewayClass: " + d
		}
		if d := conds(gp.Status.Conditions, gp.Generation, "Accepted=False/InvalidParameters"); d != "" {
			return "GatewayClass with parameters: " + d
		}
		var gf gwv1.GatewayClass
		c.Get(ctx, client.ObjectKey{Name: "not-ours"}, &gf)
		if len(gf.Status.Conditions) != 0 && gf.Status.Conditions[0].Reason != "Pending" {
			return fmt.Sprintf("another controller's class got conditions: %+v", gf.Status.Conditions)
		}
		return ""
	})

	// A ReferenceGrant resolves the foreign Secret.
	create(t, c, &gwv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "gateways"}, Spec: gwv1beta1.ReferenceGrantSpec{
		From: []gwv1beta1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "Gateway", Namespace: gwv1.Namespace(ns)}},
		To:   []gwv1beta1.ReferenceGrantTo{{Group: "", Kind: "Secret", Name: ptr.To(gwv1.ObjectName("foreign-tls"))}}}})
	eventually(t, 15*time.Second, "granted Secret", func() string {
		g, _ := getGateway(c, ns, "gw")
		return conds(lconds(g, "foreign-secret"), g.Generation, "ResolvedRefs=True/ResolvedRefs", "Programmed=True/Programmed")
	})

	// Gateways: addresses; a newer one with an older one's port and hostname.
	badAddr := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "addr"}, Spec: gwv1.GatewaySpec{GatewayClassName: "gws",
		Addresses: []gwv1.GatewaySpecAddress{{Value: "192.0.2.99"}}, Listeners: []gwv1.Listener{httpListener("http", 80, "addr.example")}}}
	hostAddr := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hostaddr"}, Spec: gwv1.GatewaySpec{GatewayClassName: "gws",
		Addresses: []gwv1.GatewaySpecAddress{{Type: ptr.To(gwv1.HostnameAddressType), Value: "lb.example"}}, Listeners: []gwv1.Listener{httpListener("http", 80, "hostaddr.example")}}}
	newer := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "newer"}, Spec: gwv1.GatewaySpec{GatewayClassName: "gws",
		Listeners: []gwv1.Listener{httpListener("http", 80, ""), httpListener("own", 80, "newer.example")}}}
	time.Sleep(1100 * time.Millisecond)
	for _, g := range []*gwv1.Gateway{badAddr, hostAddr, newer} {
		create(t, c, g)
	}
	eventually(t, 15*time.Second, "Gateways with addresses and conflicts", func() string {
		g, _ := getGateway(c, ns, "addr")
		if d := conds(g.Status.Conditions, g.Generation, "Accepted=True/Accepted", "Programmed=False/AddressNotUsable~192.0.2.99 is not an address of the firewall's WAF"); d != "" {
			return "addr: " + d
		}
		g, _ = getGateway(c, ns, "hostaddr")
		if d := conds(g.Status.Conditions, g.Generation, "Accepted=False/UnsupportedAddress", "Programmed=False/Invalid"); d != "" {
			return "hostaddr: " + d
		}
		g, _ = getGateway(c, ns, "newer")
		if d := conds(lconds(g, "http"), g.Generation, "Conflicted=True/HostnameConflict~of the older Gateway gws-a/gw", "Accepted=False/HostnameConflict", "Programmed=False/Invalid"); d != "" {
			return "newer/http: " + d
		}
		if d := conds(lconds(g, "own"), g.Generation, "Accepted=True/Accepted", "Programmed=True/Programmed"); d != "" {
			return "newer/own: " + d
		}
		old, _ := getGateway(c, ns, "gw")
		return conds(lconds(old, "http"), old.Generation, "Conflicted=False/NoConflicts", "Programmed=True/Programmed")
	})

	// HTTPRoutes.
	ok := gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backend("web", 1)}}
	rewrite := gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/rw")}, BackendRefs: []gwv1.HTTPBackendRef{backend("web", 1)},
		Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterURLRewrite, URLRewrite: &gwv1.HTTPURLRewriteFilter{Hostname: ptr.To(gwv1.PreciseHostname("x.example"))}}}}
	regex := gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchRegularExpression, "/re.*")}, BackendRefs: []gwv1.HTTPBackendRef{backend("web", 1)}}
	badKind := gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/kind")}, BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
		BackendObjectReference: gwv1.BackendObjectReference{Group: ptr.To(gwv1.Group("example.net")), Kind: ptr.To(gwv1.Kind("Bucket")), Name: "b"}}}}}
	missing := gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/missing")}, BackendRefs: []gwv1.HTTPBackendRef{backend("nope", 1)}}
	pr := func(section string) []gwv1.ParentReference {
		return []gwv1.ParentReference{parentRef(ns, "gw", section)}
	}
	routes := []*gwv1.HTTPRoute{
		httpRoute(ns, "good", []string{"good.example"}, pr("http"), ok),
		httpRoute(ns, "no-section", nil, pr("nope"), ok),
		httpRoute(ns, "no-hostname", []string{"other.example"}, pr("wild"), ok),
		httpRoute(other, "not-allowed", []string{"same.example"}, pr("same-ns"), ok),
		httpRoute(ns, "partly", []string{"partly.example"}, pr("http"), ok, rewrite),
		httpRoute(ns, "all-invalid", []string{"invalid.example"}, pr("http"), rewrite, regex),
		httpRoute(ns, "bad-kind", []string{"kind.example"}, pr("http"), badKind),
		httpRoute(ns, "missing", []string{"missing.example"}, pr("http"), missing),
		httpRoute(ns, "wildcard", []string{"*.a.example"}, pr("exact"), ok),
		httpRoute(ns, "foreign", nil, []gwv1.ParentReference{{Name: "elsewhere"}}, ok),
	}
	for _, rt := range routes {
		create(t, c, rt)
	}
	foreignGW := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "elsewhere"}, Spec: gwv1.GatewaySpec{GatewayClassName: "not-ours",
		Listeners: []gwv1.Listener{httpListener("http", 80, "")}}}
	create(t, c, foreignGW)
	want := map[string][]string{
		"good":        {"Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"},
		"no-section":  {"Accepted=False/NoMatchingParent"},
		"no-hostname": {"Accepted=False/NoMatchingListenerHostname"},
		"not-allowed": {"Accepted=False/NotAllowedByListeners~namespace gws-b"},
		"partly":      {"Accepted=True/Accepted", "PartiallyInvalid=True/UnsupportedValue~Dropped Rule(s): rule 1 filter 0: filter type URLRewrite is not supported"},
		"all-invalid": {"Accepted=False/UnsupportedValue~path type RegularExpression is not supported"},
		"bad-kind":    {"Accepted=True/Accepted", "ResolvedRefs=False/InvalidKind~example.net/Bucket is not a Service"},
		"missing":     {"Accepted=True/Accepted", "ResolvedRefs=False/BackendNotFound~Service gws-a/nope not found"},
		"wildcard":    {"Accepted=True/Accepted"},
	}
	eventually(t, 15*time.Second, "HTTPRoute status", func() string {
		for _, rt := range routes {
			var got gwv1.HTTPRoute
			if err := c.Get(ctx, client.ObjectKeyFromObject(rt), &got); err != nil {
				return err.Error()
			}
			if rt.Name == "foreign" {
				if len(got.Status.Parents) != 0 {
					return fmt.Sprintf("a route of another controller's Gateway got our status: %+v", got.Status.Parents)
				}
				continue
			}
			if len(got.Status.Parents) != 1 || got.Status.Parents[0].ControllerName != v1.GatewayControllerName {
				return fmt.Sprintf("%s: parents %+v", rt.Name, got.Status.Parents)
			}
			if d := conds(got.Status.Parents[0].Conditions, got.Generation, want[rt.Name]...); d != "" {
				return rt.Name + ": " + d
			}
			if rt.Name == "good" && meta.FindStatusCondition(got.Status.Parents[0].Conditions, "PartiallyInvalid") != nil {
				return "PartiallyInvalid on a valid route"
			}
		}
		g, _ := getGateway(c, ns, "gw")
		// Attached: good, partly, bad-kind, missing on http; wildcard on exact.
		if l := listenerStatus(g, "http"); l == nil || l.AttachedRoutes != 4 {
			return fmt.Sprintf("http listener %+v, want 4 attachedRoutes", l)
		}
		if n := listenerStatus(g, "exact").AttachedRoutes; n != 1 {
			return fmt.Sprintf("exact attachedRoutes %d, want 1", n)
		}
		return ""
	})
	// What was sent: the wildcard route on the exact listener has the
	// listener's hostname; the invalid kind's share answers 500.
	found := map[string]waf.WireRoute{}
	for _, r := range d.routes() {
		found[r.Name] = r
	}
	if r, ok := found["httproute/gws-a/wildcard/0/0/gws-a/gw/exact/0"]; !ok || strings.Join(r.Hosts, ",") != "foo.a.example" || strings.Join(r.Listeners, ",") != "https4,https6" {
		t.Errorf("wildcard route: %+v (sent: %v)", r, keys(found))
	}
	if r, ok := found["httproute/gws-a/bad-kind/0/0/gws-a/gw/http/0"]; !ok || len(r.BackendGroups) != 1 || r.BackendGroups[0].EmptyStatus != 500 {
		t.Errorf("bad-kind route: %+v", r)
	}
	if _, ok := found["httproute/gws-a/partly/1/0/gws-a/gw/http/0"]; ok {
		t.Error("the dropped rule was sent")
	}

	// An Ingress on the same WAF: status and a conflict event on the
	// newer of two Ingresses.
	create(t, c, ingressClass("gws-ingress", false))
	mkIng := func(name string) *networkingv1.Ingress {
		return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("gws-ingress"),
			Rules: []networkingv1.IngressRule{{Host: "ing.example", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{prefixPath("/", "web")}}}}}}}
	}
	first := mkIng("first")
	create(t, c, first)
	time.Sleep(1100 * time.Millisecond)
	second := mkIng("second")
	create(t, c, second)
	eventually(t, 15*time.Second, "Ingress status and the conflict event", func() string {
		var a, b networkingv1.Ingress
		c.Get(ctx, client.ObjectKeyFromObject(first), &a)
		c.Get(ctx, client.ObjectKeyFromObject(second), &b)
		if len(a.Status.LoadBalancer.Ingress) != 2 || a.Status.LoadBalancer.Ingress[0].IP != "203.0.113.33" || a.Status.LoadBalancer.Ingress[1].IP != "2001:db8:cafe::33" {
			return fmt.Sprintf("first: %+v", a.Status.LoadBalancer)
		}
		if len(b.Status.LoadBalancer.Ingress) != 0 {
			return fmt.Sprintf("second (nothing served) has an address: %+v", b.Status.LoadBalancer)
		}
		var evs corev1.EventList
		c.List(ctx, &evs, client.InNamespace(ns))
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "Ingress" && e.InvolvedObject.Name == "second" && e.Type == corev1.EventTypeWarning && e.Reason == "Conflict" &&
				strings.Contains(e.Message, "host ing.example, path Prefix / is not served on listener https4, https6, http4, http6: Ingress gws-a/first claimed it first") {
				return ""
			}
		}
		return "no Conflict event on Ingress second"
	})
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

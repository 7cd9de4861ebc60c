package controller

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/lab"
)

// --- Gateway API objects ---

func gatewayClass(name string) *gwv1.GatewayClass {
	return &gwv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: gwv1.GatewayClassSpec{ControllerName: v1.GatewayControllerName}}
}

func httpListener(name string, port int32, hostname string) gwv1.Listener {
	l := gwv1.Listener{Name: gwv1.SectionName(name), Port: port, Protocol: gwv1.HTTPProtocolType,
		AllowedRoutes: &gwv1.AllowedRoutes{Namespaces: &gwv1.RouteNamespaces{From: ptr.To(gwv1.NamespacesFromAll)}}}
	if hostname != "" {
		l.Hostname = ptr.To(gwv1.Hostname(hostname))
	}
	return l
}

func httpsListener(name string, port int32, hostname, secretNS, secret string) gwv1.Listener {
	l := httpListener(name, port, hostname)
	l.Protocol = gwv1.HTTPSProtocolType
	ref := gwv1.SecretObjectReference{Name: gwv1.ObjectName(secret)}
	if secretNS != "" {
		ref.Namespace = ptr.To(gwv1.Namespace(secretNS))
	}
	l.TLS = &gwv1.ListenerTLSConfig{Mode: ptr.To(gwv1.TLSModeTerminate), CertificateRefs: []gwv1.SecretObjectReference{ref}}
	return l
}

func parentRef(ns, name, section string) gwv1.ParentReference {
	p := gwv1.ParentReference{Group: ptr.To(gwv1.Group(gwv1.GroupName)), Kind: ptr.To(gwv1.Kind("Gateway")), Namespace: ptr.To(gwv1.Namespace(ns)), Name: gwv1.ObjectName(name)}
	if section != "" {
		p.SectionName = ptr.To(gwv1.SectionName(section))
	}
	return p
}

func backend(svc string, weight int32) gwv1.HTTPBackendRef {
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
		Name: gwv1.ObjectName(svc), Port: ptr.To(gwv1.PortNumber(80))}, Weight: ptr.To(weight)}}
}

func pathMatch(typ gwv1.PathMatchType, value string) gwv1.HTTPRouteMatch {
	return gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: ptr.To(typ), Value: ptr.To(value)}}
}

func httpRoute(ns, name string, hostnames []string, parents []gwv1.ParentReference, rules ...gwv1.HTTPRouteRule) *gwv1.HTTPRoute {
	rt := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: gwv1.HTTPRouteSpec{
		CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parents}, Rules: rules}}
	for _, h := range hostnames {
		rt.Spec.Hostnames = append(rt.Spec.Hostnames, gwv1.Hostname(h))
	}
	return rt
}

// condIs describes how a condition differs from what is wanted ("" when
// it is exactly that, with observedGeneration gen).
func condIs(conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string, gen int64, msgHas string) string {
	c := meta.FindStatusCondition(conds, typ)
	switch {
	case c == nil:
		return fmt.Sprintf("no %s condition", typ)
	case c.Status != status || c.Reason != reason || c.ObservedGeneration != gen || !strings.Contains(c.Message, msgHas):
		return fmt.Sprintf("%s = %s/%s gen %d %q; want %s/%s gen %d containing %q", typ, c.Status, c.Reason, c.ObservedGeneration, c.Message, status, reason, gen, msgHas)
	}
	return ""
}

// TestGatewayAPILab runs Gateway API objects through the controller into
// the real daemon's WAF in a lab: a Gateway with HTTP and HTTPS listeners
// and an HTTPRoute are served within 5 s; every match and filter kind the
// controller supports answers positive and negative requests as the
// Gateway API says; precedence across routes and the reporting of
// conflicts; weighted backends; a WAFPolicy by ExtensionRef; cross-
// namespace references with and without a ReferenceGrant; Secret
// rotation without a failed request; and 404 within 5 s once the route
// is deleted. Conditions are checked field by field.
func TestGatewayAPILab(t *testing.T) {
	f := newIngressLab(t, true)
	c, ctx := f.c, context.Background()
	infra, app, other := "gw-infra", "gw-app", "gw-other"
	for _, ns := range []string{infra, app, other} {
		namespace(t, c, ns)
	}
	podA := startPod(t, f.Lab, "pod-a", lab.NodeV4.String()+":8181")
	podB := startPod(t, f.Lab, "pod-b", lab.NodeV4.String()+":8182")
	for _, s := range []struct{ ns, name, addr string }{{app, "v1", podA.addr}, {app, "v2", podB.addr}, {other, "elsewhere", podB.addr}} {
		svc, es := serviceWithEndpoints(s.ns, s.name, s.addr)
		create(t, c, svc)
		create(t, c, es)
	}
	secret := f.ca.secret(t, infra, "gw-tls", "gw-v1", "*.gw.example.com")
	create(t, c, secret)
	// The platform lets teams add custom rules (for the WAFPolicy below).
	create(t, c, &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1.FirewallPolicySpec{
		Ingress: &v1.IngressSettings{WAFPolicies: &v1.WAFGuardrails{AllowCustomRules: true}}}})
	create(t, c, &v1.WAFPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: "no-debug"}, Spec: v1.WAFPolicySpec{
		CustomRules: `SecRule ARGS:debug "@streq 1" "id:10001,phase:1,deny,status:403,log,msg:'debug parameter'"`}})

	create(t, c, gatewayClass("clusterwall"))
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: infra, Name: "web"}, Spec: gwv1.GatewaySpec{GatewayClassName: "clusterwall",
		Listeners: []gwv1.Listener{
			httpListener("http", 80, ""),
			httpsListener("https", 443, "*.gw.example.com", "", "gw-tls"),
			httpListener("unavailable", 8080, ""),
		}}}
	create(t, c, gw)

	const host = "app.gw.example.com"
	matchRoute := httpRoute(app, "matches", []string{host}, []gwv1.ParentReference{parentRef(infra, "web", "")},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchExact, "/exact")}, BackendRefs: []gwv1.HTTPBackendRef{backend("v1", 1)}},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/prefix")}, BackendRefs: []gwv1.HTTPBackendRef{backend("v1", 1)}},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Path: pathMatch(gwv1.PathMatchPathPrefix, "/h").Path,
			Headers: []gwv1.HTTPHeaderMatch{{Name: "X-Env", Value: "canary"}}}}, BackendRefs: []gwv1.HTTPBackendRef{backend("v2", 1)}},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Path: pathMatch(gwv1.PathMatchPathPrefix, "/q").Path,
			QueryParams: []gwv1.HTTPQueryParamMatch{{Name: "mode", Value: "beta"}}}}, BackendRefs: []gwv1.HTTPBackendRef{backend("v2", 1)}},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Path: pathMatch(gwv1.PathMatchPathPrefix, "/m").Path, Method: ptr.To(gwv1.HTTPMethodPost)}},
			BackendRefs: []gwv1.HTTPBackendRef{backend("v2", 1)}},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/hdr")}, BackendRefs: []gwv1.HTTPBackendRef{backend("v1", 1)},
			Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwv1.HTTPHeaderFilter{
				Set: []gwv1.HTTPHeader{{Name: "X-Set", Value: "set"}}, Add: []gwv1.HTTPHeader{{Name: "X-Add", Value: "added"}}, Remove: []string{"X-Remove"}}}}},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/redir")},
			Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gwv1.HTTPRequestRedirectFilter{
				Scheme: ptr.To("https"), StatusCode: ptr.To(301)}}}},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/w")}, BackendRefs: []gwv1.HTTPBackendRef{backend("v1", 3), backend("v2", 1)}},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/guarded")}, BackendRefs: []gwv1.HTTPBackendRef{backend("v1", 1)},
			Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterExtensionRef, ExtensionRef: &gwv1.LocalObjectReference{Group: "clusterwall.io", Kind: "WAFPolicy", Name: "no-debug"}}}},
	)
	start := time.Now()
	create(t, c, matchRoute)
	plainGet := func(method, path string, hdr ...string) result {
		return f.ic.do(f.plain, method, "http://"+host+path, hdr...)
	}
	d := f.ic.waitFor(t, 5*time.Second, "HTTPRoute created → pod-a over HTTPS", func() result { return f.ic.do(f.https, "GET", "https://"+host+"/exact") },
		func(r result) bool { return r.err == nil && r.status == 200 && r.pod == "pod-a" && r.cn == "gw-v1" })
	t.Logf("HTTPRoute and Gateway created %s before; served after %s of polling", time.Since(start).Round(time.Millisecond), d.Round(time.Millisecond))

	t.Run("matches and filters", func(t *testing.T) {
		tests := []struct {
			name, method, path string
			hdr                []string
			status             int
			pod                string
		}{
			{"Exact: the path", "GET", "/exact", nil, 200, "pod-a"},
			{"Exact: not below it", "GET", "/exact/x", nil, 404, ""},
			{"Exact: not a trailing slash", "GET", "/exact/", nil, 404, ""},
			{"PathPrefix: below", "GET", "/prefix/a/b", nil, 200, "pod-a"},
			{"PathPrefix: whole segments only", "GET", "/prefixes", nil, 404, ""},
			{"header: matches", "GET", "/h", []string{"X-Env", "canary"}, 200, "pod-b"},
			{"header: name case-insensitive", "GET", "/h/x", []string{"x-env", "canary"}, 200, "pod-b"},
			{"header: other value", "GET", "/h", []string{"X-Env", "prod"}, 404, ""},
			{"header: missing", "GET", "/h", nil, 404, ""},
			{"query: matches", "GET", "/q?mode=beta", nil, 200, "pod-b"},
			{"query: other value", "GET", "/q?mode=alpha", nil, 404, ""},
			{"query: name case-sensitive", "GET", "/q?Mode=beta", nil, 404, ""},
			{"method: POST", "POST", "/m", nil, 200, "pod-b"},
			{"method: not GET", "GET", "/m", nil, 404, ""},
			{"no rule: 404", "GET", "/nothing", nil, 404, ""},
		}
		for _, tt := range tests {
			if r := plainGet(tt.method, tt.path, tt.hdr...); r.err != nil || r.status != tt.status || r.pod != tt.pod {
				t.Errorf("%s: %s %s: %s; want %d from %q", tt.name, tt.method, tt.path, r, tt.status, tt.pod)
			}
		}
		// RequestHeaderModifier.
		r := plainGet("GET", "/hdr", "X-Set", "client", "X-Add", "client", "X-Remove", "client")
		var a podAnswer
		if err := jsonUnmarshal(r.body, &a); err != nil || a.Pod != "pod-a" {
			t.Fatalf("/hdr: %s", r)
		}
		if got := a.Header.Values("X-Set"); strings.Join(got, ",") != "set" {
			t.Errorf("X-Set at the pod: %q", got)
		}
		if got := a.Header.Values("X-Add"); strings.Join(got, ",") != "client,added" {
			t.Errorf("X-Add at the pod: %q", got)
		}
		if got := a.Header.Values("X-Remove"); len(got) != 0 {
			t.Errorf("X-Remove reached the pod: %q", got)
		}
		if got := plainGet("GET", "/exact", "X-Remove", "kept"); !strings.Contains(got.body, `"X-Remove":["kept"]`) {
			t.Errorf("another rule's request lost X-Remove: %s", got)
		}
		// RequestRedirect: scheme https, 301, the port of the scheme.
		if r := plainGet("GET", "/redir/x?y=1"); r.status != 301 || r.header.Get("Location") != "https://"+host+"/redir/x?y=1" {
			t.Errorf("redirect: %s Location %q", r, r.header.Get("Location"))
		}
		// Weighted backendRefs: 3:1.
		counts := map[string]int{}
		for i := 0; i < 40; i++ {
			counts[plainGet("GET", "/w").pod]++
		}
		if counts["pod-a"] != 30 || counts["pod-b"] != 10 {
			t.Errorf("weights 3:1 over 40 requests: %v", counts)
		}
		// The rule with the WAFPolicy: its custom rule; not the others'.
		if r := plainGet("GET", "/guarded?debug=1"); r.status != 403 {
			t.Errorf("WAFPolicy rule: %s, want 403", r)
		}
		if r := plainGet("GET", "/prefix?debug=1"); r.status != 200 {
			t.Errorf("another rule with ?debug=1: %s, want 200", r)
		}
		// The CRS (the listener's policy) on every rule.
		if r := plainGet("GET", "/prefix?id="+url.QueryEscape("1' OR '1'='1")); r.status != 403 || r.pod != "" {
			t.Errorf("SQL injection: %s", r)
		}
	})

	t.Run("status", func(t *testing.T) {
		eventually(t, 10*time.Second, "GatewayClass, Gateway, listeners and HTTPRoute status", func() string {
			var gc gwv1.GatewayClass
			if err := c.Get(ctx, client.ObjectKey{Name: "clusterwall"}, &gc); err != nil {
				return err.Error()
			}
			if d := condIs(gc.Status.Conditions, "Accepted", metav1.ConditionTrue, "Accepted", gc.Generation, ""); d != "" {
				return "GatewayClass: " + d
			}
			var g gwv1.Gateway
			if err := c.Get(ctx, client.ObjectKeyFromObject(gw), &g); err != nil {
				return err.Error()
			}
			for _, want := range []struct {
				typ, reason string
				status      metav1.ConditionStatus
				msg         string
			}{{"Accepted", "ListenersNotValid", metav1.ConditionTrue, "unavailable"}, {"Programmed", "Programmed", metav1.ConditionTrue, ""}} {
				if d := condIs(g.Status.Conditions, want.typ, want.status, want.reason, g.Generation, want.msg); d != "" {
					return "Gateway: " + d
				}
			}
			if len(g.Status.Addresses) != 2 || g.Status.Addresses[0].Value != lab.FWIngressV4.String() || *g.Status.Addresses[0].Type != gwv1.IPAddressType ||
				g.Status.Addresses[1].Value != lab.FWIngressV6.String() {
				return fmt.Sprintf("Gateway addresses %+v", g.Status.Addresses)
			}
			if len(g.Status.Listeners) != 3 {
				return fmt.Sprintf("%d listener statuses", len(g.Status.Listeners))
			}
			for _, l := range g.Status.Listeners[:2] {
				if l.AttachedRoutes != 1 || len(l.SupportedKinds) != 1 || l.SupportedKinds[0].Kind != "HTTPRoute" || *l.SupportedKinds[0].Group != gwv1.GroupName {
					return fmt.Sprintf("listener %s: attachedRoutes %d kinds %+v", l.Name, l.AttachedRoutes, l.SupportedKinds)
				}
				for _, w := range [][3]string{{"Accepted", "True", "Accepted"}, {"ResolvedRefs", "True", "ResolvedRefs"}, {"Programmed", "True", "Programmed"}, {"Conflicted", "False", "NoConflicts"}} {
					if d := condIs(l.Conditions, w[0], metav1.ConditionStatus(w[1]), w[2], g.Generation, ""); d != "" {
						return fmt.Sprintf("listener %s: %s", l.Name, d)
					}
				}
				if meta.FindStatusCondition(l.Conditions, "OverlappingTLSConfig") != nil {
					return "OverlappingTLSConfig set without overlap"
				}
			}
			u := g.Status.Listeners[2]
			if d := condIs(u.Conditions, "Accepted", metav1.ConditionFalse, "PortUnavailable", g.Generation, "no HTTP listener on port 8080"); d != "" {
				return "listener unavailable: " + d
			}
			if d := condIs(u.Conditions, "Programmed", metav1.ConditionFalse, "Invalid", g.Generation, ""); d != "" {
				return "listener unavailable: " + d
			}
			var rt gwv1.HTTPRoute
			if err := c.Get(ctx, client.ObjectKeyFromObject(matchRoute), &rt); err != nil {
				return err.Error()
			}
			if len(rt.Status.Parents) != 1 {
				return fmt.Sprintf("%d parent statuses", len(rt.Status.Parents))
			}
			p := rt.Status.Parents[0]
			if p.ControllerName != v1.GatewayControllerName || p.ParentRef.Name != "web" || *p.ParentRef.Namespace != gwv1.Namespace(infra) || *p.ParentRef.Kind != "Gateway" {
				return fmt.Sprintf("parent %+v", p)
			}
			if d := condIs(p.Conditions, "Accepted", metav1.ConditionTrue, "Accepted", rt.Generation, ""); d != "" {
				return "HTTPRoute: " + d
			}
			if d := condIs(p.Conditions, "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs", rt.Generation, ""); d != "" {
				return "HTTPRoute: " + d
			}
			if len(p.Conditions) != 2 {
				return fmt.Sprintf("HTTPRoute conditions %+v", p.Conditions)
			}
			return ""
		})
	})

	t.Run("precedence and conflicts", func(t *testing.T) {
		// An older route wins the same match; the newer one says so.
		older := httpRoute(app, "claim-older", []string{host}, []gwv1.ParentReference{parentRef(infra, "web", "http")},
			gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchExact, "/claimed")}, BackendRefs: []gwv1.HTTPBackendRef{backend("v1", 1)}})
		create(t, c, older)
		time.Sleep(1100 * time.Millisecond) // creation timestamps have seconds
		newer := httpRoute(app, "claim-newer", []string{host}, []gwv1.ParentReference{parentRef(infra, "web", "http")},
			gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchExact, "/claimed")}, BackendRefs: []gwv1.HTTPBackendRef{backend("v2", 1)}},
			// A longer prefix than the older route's /prefix: wins below it.
			gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/prefix/deep")}, BackendRefs: []gwv1.HTTPBackendRef{backend("v2", 1)}})
		create(t, c, newer)
		eventually(t, 10*time.Second, "the newer route reports the conflict", func() string {
			var rt gwv1.HTTPRoute
			if err := c.Get(ctx, client.ObjectKeyFromObject(newer), &rt); err != nil || len(rt.Status.Parents) != 1 {
				return fmt.Sprintf("%v %+v", err, rt.Status)
			}
			if d := condIs(rt.Status.Parents[0].Conditions, ConditionConflicted, metav1.ConditionTrue, "ShadowedByOlderRoute", rt.Generation,
				"rule 0 match 0 (host app.gw.example.com, path Exact /claimed) on listener gw-infra/web/http is not served on listener public-http, public6-http: HTTPRoute gw-app/claim-older claimed it first"); d != "" {
				return d
			}
			return condIs(rt.Status.Parents[0].Conditions, "Accepted", metav1.ConditionTrue, "Accepted", rt.Generation, "")
		})
		if r := plainGet("GET", "/claimed"); r.pod != "pod-a" {
			t.Errorf("/claimed: %s, want the older route's pod-a", r)
		}
		if r := plainGet("GET", "/prefix/deep/x"); r.pod != "pod-b" {
			t.Errorf("/prefix/deep/x: %s, want the longer prefix's pod-b", r)
		}
		if r := plainGet("GET", "/prefix/shallow"); r.pod != "pod-a" {
			t.Errorf("/prefix/shallow: %s", r)
		}
		var old gwv1.HTTPRoute
		c.Get(ctx, client.ObjectKeyFromObject(older), &old)
		if meta.FindStatusCondition(old.Status.Parents[0].Conditions, ConditionConflicted) != nil {
			t.Errorf("the older route reports a conflict: %+v", old.Status.Parents[0].Conditions)
		}
		// Host precedence: an exact hostname's rules before a wildcard's.
		wild := httpRoute(app, "wildcard", []string{"*.gw.example.com"}, []gwv1.ParentReference{parentRef(infra, "web", "http")},
			gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{backend("v2", 1)}})
		create(t, c, wild)
		f.ic.waitFor(t, 5*time.Second, "the wildcard route serves other hosts", func() result { return f.ic.do(f.plain, "GET", "http://other.gw.example.com/exact") },
			func(r result) bool { return r.pod == "pod-b" })
		if r := plainGet("GET", "/exact"); r.pod != "pod-a" {
			t.Errorf("app.gw.example.com/exact with a wildcard route: %s, want pod-a (the exact hostname's)", r)
		}
		if r := plainGet("GET", "/unmatched"); r.pod != "pod-b" {
			t.Errorf("app.gw.example.com/unmatched: %s, want the wildcard route's pod-b", r)
		}
	})

	t.Run("references", func(t *testing.T) {
		cross := httpRoute(app, "cross", []string{"cross.gw.example.com"}, []gwv1.ParentReference{parentRef(infra, "web", "http")},
			gwv1.HTTPRouteRule{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
				Name: "elsewhere", Namespace: ptr.To(gwv1.Namespace(other)), Port: ptr.To(gwv1.PortNumber(80))}}}}},
			gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/missing-policy")}, BackendRefs: []gwv1.HTTPBackendRef{backend("v1", 1)},
				Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterExtensionRef, ExtensionRef: &gwv1.LocalObjectReference{Group: "clusterwall.io", Kind: "WAFPolicy", Name: "nope"}}}})
		create(t, c, cross)
		crossGet := func(path string) result { return f.ic.do(f.plain, "GET", "http://cross.gw.example.com"+path) }
		f.ic.waitFor(t, 5*time.Second, "a Service of another namespace without a ReferenceGrant → 500", func() result { return crossGet("/") },
			func(r result) bool { return r.status == 500 })
		eventually(t, 10*time.Second, "RefNotPermitted", func() string {
			var rt gwv1.HTTPRoute
			if err := c.Get(ctx, client.ObjectKeyFromObject(cross), &rt); err != nil || len(rt.Status.Parents) != 1 {
				return fmt.Sprintf("%v %+v", err, rt.Status)
			}
			if d := condIs(rt.Status.Parents[0].Conditions, "ResolvedRefs", metav1.ConditionFalse, "RefNotPermitted", rt.Generation, "Service gw-other/elsewhere is in another namespace"); d != "" {
				return d
			}
			return condIs(rt.Status.Parents[0].Conditions, "Accepted", metav1.ConditionTrue, "Accepted", rt.Generation, "")
		})
		if r := crossGet("/missing-policy"); r.status != 500 {
			t.Errorf("a rule whose WAFPolicy filter cannot be resolved: %s, want 500", r)
		}
		create(t, c, &gwv1beta1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: other, Name: "from-app"}, Spec: gwv1beta1.ReferenceGrantSpec{
			From: []gwv1beta1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: gwv1.Namespace(app)}},
			To:   []gwv1beta1.ReferenceGrantTo{{Group: "", Kind: "Service"}}}})
		f.ic.waitFor(t, 5*time.Second, "the ReferenceGrant lets it through", func() result { return crossGet("/") },
			func(r result) bool { return r.status == 200 && r.pod == "pod-b" })
		eventually(t, 10*time.Second, "the ExtensionRef still unresolved", func() string {
			var rt gwv1.HTTPRoute
			c.Get(ctx, client.ObjectKeyFromObject(cross), &rt)
			if len(rt.Status.Parents) != 1 {
				return "no status"
			}
			return condIs(rt.Status.Parents[0].Conditions, "ResolvedRefs", metav1.ConditionFalse, "BackendNotFound", rt.Generation, "WAFPolicy gw-app/nope not found")
		})
	})

	t.Run("Secret rotation", func(t *testing.T) {
		httpsGet := func() result { return f.ic.do(f.https, "GET", "https://"+host+"/exact") }
		load := startLoad(t, httpsGet, func(r result) bool { return r.err == nil && r.status == 200 && r.pod == "pod-a" })
		time.Sleep(300 * time.Millisecond)
		secret.Data = f.ca.secret(t, infra, "gw-tls", "gw-v2", "*.gw.example.com").Data
		if err := c.Update(ctx, secret); err != nil {
			t.Fatal(err)
		}
		f.ic.waitFor(t, 5*time.Second, "rotated → gw-v2 served", httpsGet, func(r result) bool { return r.cn == "gw-v2" })
		time.Sleep(300 * time.Millisecond)
		load.stopAndCheck(t, "during the Secret rotation")
	})

	t.Run("bad objects never take the listener down", func(t *testing.T) {
		// While they come: requests to a good route keep succeeding.
		load := startLoad(t, func() result { return plainGet("GET", "/exact") }, func(r result) bool { return r.err == nil && r.status == 200 && r.pod == "pod-a" })
		broken := &v1.WAFPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: app, Name: "broken"}, Spec: v1.WAFPolicySpec{
			CustomRules: `SecRule ARGS "@nosuchoperator x" "id:10009,phase:1,deny"`}}
		create(t, c, broken)
		badRegex := gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Path: pathMatch(gwv1.PathMatchPathPrefix, "/re").Path,
			Headers: []gwv1.HTTPHeaderMatch{{Type: ptr.To(gwv1.HeaderMatchRegularExpression), Name: "X-A", Value: "(unclosed"}}}},
			BackendRefs: []gwv1.HTTPBackendRef{backend("v2", 1)}}
		usesBroken := gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/broken-policy")}, BackendRefs: []gwv1.HTTPBackendRef{backend("v2", 1)},
			Filters: []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterExtensionRef, ExtensionRef: &gwv1.LocalObjectReference{Group: "clusterwall.io", Kind: "WAFPolicy", Name: "broken"}}}}
		fine := gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/fine")}, BackendRefs: []gwv1.HTTPBackendRef{backend("v2", 1)}}
		bad := httpRoute(app, "bad", []string{host}, []gwv1.ParentReference{parentRef(infra, "web", "http")}, badRegex, usesBroken, fine)
		create(t, c, bad)
		f.ic.waitFor(t, 5*time.Second, "the bad route's good rule is served", func() result { return plainGet("GET", "/fine") },
			func(r result) bool { return r.status == 200 && r.pod == "pod-b" })
		if r := plainGet("GET", "/broken-policy"); r.status != 500 {
			t.Errorf("the rule whose WAFPolicy does not compile: %s, want 500", r)
		}
		if r := plainGet("GET", "/re", "X-A", "(unclosed"); r.status != 404 {
			t.Errorf("the dropped rule: %s, want 404", r)
		}
		eventually(t, 10*time.Second, "reported", func() string {
			var p v1.WAFPolicy
			c.Get(ctx, client.ObjectKeyFromObject(broken), &p)
			if d := condIs(p.Status.Conditions, "Accepted", metav1.ConditionFalse, "Invalid", p.Generation, "spec.customRules: line 1 of the custom rules"); d != "" {
				return "WAFPolicy: " + d
			}
			var rt gwv1.HTTPRoute
			c.Get(ctx, client.ObjectKeyFromObject(bad), &rt)
			if len(rt.Status.Parents) != 1 {
				return "no route status"
			}
			return conds(rt.Status.Parents[0].Conditions, rt.Generation, "Accepted=True/Accepted",
				`PartiallyInvalid=True/UnsupportedValue~Dropped Rule(s): rule 0 match 0 header 0: "(unclosed" is not an RE2 regular expression`,
				"ResolvedRefs=False/WAFPolicyNotAccepted~WAFPolicy gw-app/broken is not accepted")
		})
		load.stopAndCheck(t, "while bad objects came")
	})

	t.Run("delete", func(t *testing.T) {
		if err := c.Delete(ctx, matchRoute); err != nil {
			t.Fatal(err)
		}
		f.ic.waitFor(t, 5*time.Second, "HTTPRoute deleted → 404", func() result { return f.ic.do(f.https, "GET", "https://"+host+"/m") },
			func(r result) bool { return r.err == nil && r.status == http.StatusNotFound })
	})
}

package controller

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
)

// docsExample returns the objects of the YAML block after the marker
// <!-- example: NAME --> in docs/kubernetes.md.
func docsExample(t *testing.T, name string) []client.Object {
	t.Helper()
	data, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "<!-- example: "+name+" -->\n```yaml\n")
	if !ok {
		t.Fatalf("docs/kubernetes.md has no example %q", name)
	}
	block, _, ok := strings.Cut(rest, "\n```\n")
	if !ok {
		t.Fatalf("example %q does not end", name)
	}
	s, _ := NewScheme()
	dec := serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
	var out []client.Object
	for i, doc := range strings.Split(block, "\n---\n") {
		o, _, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("example %q, document %d: %v\n%s", name, i, err, doc)
		}
		out = append(out, o.(client.Object))
	}
	return out
}

// TestDocsExample applies the complete example of docs/kubernetes.md
// ("Ingress and Gateway API") as written to a real API server (strict
// field validation), with EndpointSlices standing in for the pods, and
// checks what the controller makes of it: every object accepted and
// programmed, and a document the WAF takes.
func TestDocsExample(t *testing.T) {
	c := kubeClient(t)
	d := newFakeDaemon(t)
	startIngressController(t, kube(t), IngressOptions{Daemons: []string{d.URL}, Resync: time.Hour, GatewayAPI: true})
	ctx := context.Background()
	objs := docsExample(t, "ingress")
	if len(objs) != 13 {
		t.Fatalf("the example has %d objects", len(objs))
	}
	for _, o := range objs {
		if err := c.Create(ctx, o, &client.CreateOptions{FieldValidation: "Strict"}); err != nil {
			if _, ns := o.(*corev1.Namespace); ns && apierrors.IsAlreadyExists(err) {
				continue // (envtest deletes no namespace)
			}
			t.Fatalf("apply %T %s: %v", o, o.GetName(), err)
		}
		t.Cleanup(func() { c.Delete(context.Background(), o) })
	}
	// The endpoints the Deployments' pods would have.
	for _, s := range []struct{ svc, addr string }{{"storefront", "10.224.0.20:8080"}, {"api-v2", "10.224.0.30:8080"}} {
		create(t, c, endpointSlice("shop", s.svc, s.svc+"-x", s.addr))
	}
	eventually(t, 20*time.Second, "the example's status", func() string {
		var ing networkingv1.Ingress
		c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "storefront"}, &ing)
		if lb := ing.Status.LoadBalancer.Ingress; len(lb) != 2 || lb[0].IP != "203.0.113.33" || lb[1].IP != "2001:db8:cafe::33" {
			return fmt.Sprintf("Ingress status %+v", ing.Status)
		}
		var p v1.WAFPolicy
		c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "strict"}, &p)
		if d := conds(p.Status.Conditions, p.Generation, "Accepted=True/Accepted"); d != "" {
			return "WAFPolicy: " + d
		}
		if len(p.Status.UsedBy) != 2 || p.Status.UsedBy[0] != "HTTPRoute/api" || p.Status.UsedBy[1] != "Ingress/storefront" {
			return fmt.Sprintf("WAFPolicy usedBy %q", p.Status.UsedBy)
		}
		g, err := getGateway(c, "shop", "public")
		if err != nil {
			return err.Error()
		}
		if d := conds(g.Status.Conditions, g.Generation, "Accepted=True/Accepted", "Programmed=True/Programmed"); d != "" {
			return "Gateway: " + d
		}
		for _, l := range []string{"http", "https"} {
			if d := conds(lconds(g, l), g.Generation, "Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs", "Programmed=True/Programmed"); d != "" {
				return "listener " + l + ": " + d
			}
		}
		for _, name := range []string{"api", "api-https-redirect"} {
			var rt gwv1.HTTPRoute
			c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: name}, &rt)
			if len(rt.Status.Parents) != 1 {
				return fmt.Sprintf("HTTPRoute %s: %+v", name, rt.Status)
			}
			if d := conds(rt.Status.Parents[0].Conditions, rt.Generation, "Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"); d != "" {
				return "HTTPRoute " + name + ": " + d
			}
		}
		return ""
	})
	got := map[string]bool{}
	for _, r := range d.routes() {
		got[r.Name] = true
	}
	for _, want := range []string{"ingress/shop/storefront/0/0", "ingress/shop/storefront/0/0/https-redirect", "ingress/shop/storefront/0/1",
		"httproute/shop/api/0/0/shop/public/https/0", "httproute/shop/api/1/0/shop/public/https/0", "httproute/shop/api/2/0/shop/public/https/0",
		"httproute/shop/api-https-redirect/0/0/shop/public/http/0"} {
		if !got[want] {
			t.Errorf("the WAF document lacks route %s (has %v)", want, keys(got))
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.doc.Policies) != 1 || d.doc.Policies[0].Name != "wafpolicy/shop/strict" || len(d.doc.Certificates) != 2 {
		t.Errorf("policies %+v, %d certificates", d.doc.Policies, len(d.doc.Certificates))
	}
}

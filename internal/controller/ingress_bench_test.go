package controller

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// TestRouteChangeLatency measures, in the lab with the real daemon, the
// time from an object change (an Ingress's or an HTTPRoute's new path) to
// the WAF serving it to the internet client, while clients keep sending
// requests to a route that stays (keep-alive and new connections, and
// requests that take 200 ms, so that some are in flight at every change):
// none of them may fail. CLUSTERWALL_ROUTE_CHANGES sets the number of
// changes per kind (default 10; docs/benchmarks.md records 100).
func TestRouteChangeLatency(t *testing.T) {
	n := 10
	if s := os.Getenv("CLUSTERWALL_ROUTE_CHANGES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("CLUSTERWALL_ROUTE_CHANGES=%q", s)
		}
	}
	f := newIngressLab(t, true)
	c, ctx := f.c, context.Background()
	ns := "bench"
	namespace(t, c, ns)
	pod := startPod(t, f.Lab, "pod-a", lab.NodeV4.String()+":8281")
	svc, es := serviceWithEndpoints(ns, "web", pod.addr)
	create(t, c, svc)
	create(t, c, es)
	create(t, c, ingressClass("bench", false))
	create(t, c, gatewayClass("bench"))
	create(t, c, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"}, Spec: gwv1.GatewaySpec{GatewayClassName: "bench",
		Listeners: []gwv1.Listener{httpListener("http", 80, "")}}})
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "bench"}, Spec: networkingv1.IngressSpec{IngressClassName: strPtr("bench"),
		Rules: []networkingv1.IngressRule{rule("ing.bench.example", prefixPath("/stable", "web"), prefixPath("/v0", "web"))}}}
	create(t, c, ing)
	rt := httpRoute(ns, "bench", []string{"gw.bench.example"}, []gwv1.ParentReference{parentRef(ns, "gw", "")},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/stable")}, BackendRefs: []gwv1.HTTPBackendRef{backend("web", 1)}},
		gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, "/v0")}, BackendRefs: []gwv1.HTTPBackendRef{backend("web", 1)}})
	create(t, c, rt)
	keepAlive := f.ic.client(true)
	for _, h := range []string{"ing.bench.example", "gw.bench.example"} {
		f.ic.waitFor(t, 10*time.Second, h+" served", func() result { return f.ic.do(f.plain, "GET", "http://"+h+"/v0") },
			func(r result) bool { return r.status == 200 })
	}

	// The load: per host, a keep-alive client, a new connection per
	// request, and requests of 200 ms.
	var total, failed atomic.Int64
	var fmu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, h := range []string{"ing.bench.example", "gw.bench.example"} {
		for _, w := range []struct {
			client func() result
		}{
			{func() result { return f.ic.do(keepAlive, "GET", "http://"+h+"/stable") }},
			{func() result { return f.ic.do(f.plain, "GET", "http://"+h+"/stable") }},
			{func() result { return f.ic.do(keepAlive, "GET", "http://"+h+"/stable/slow") }},
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					r := w.client()
					total.Add(1)
					if r.err != nil || r.status != 200 || r.pod != "pod-a" {
						failed.Add(1)
						fmu.Lock()
						failures = append(failures, r.String())
						fmu.Unlock()
					}
				}
			}()
		}
	}

	measure := func(kind, host string, change func(i int) error) []time.Duration {
		var ds []time.Duration
		for i := 1; i <= n; i++ {
			path := fmt.Sprintf("/v%d", i)
			start := time.Now()
			if err := retry.RetryOnConflict(retry.DefaultRetry, func() error { return change(i) }); err != nil {
				t.Fatal(err)
			}
			for {
				r := f.ic.do(f.plain, "GET", "http://"+host+path)
				if r.status == 200 {
					break
				}
				if time.Since(start) > 10*time.Second {
					t.Fatalf("%s change %d: %s not served after 10 s: %s", kind, i, path, r)
				}
				time.Sleep(time.Millisecond)
			}
			ds = append(ds, time.Since(start))
		}
		return ds
	}
	ingDs := measure("Ingress", "ing.bench.example", func(i int) error {
		var cur networkingv1.Ingress
		if err := c.Get(ctx, client.ObjectKeyFromObject(ing), &cur); err != nil {
			return err
		}
		cur.Spec.Rules[0].HTTP.Paths[1] = prefixPath(fmt.Sprintf("/v%d", i), "web")
		return c.Update(ctx, &cur)
	})
	rtDs := measure("HTTPRoute", "gw.bench.example", func(i int) error {
		var cur gwv1.HTTPRoute
		if err := c.Get(ctx, client.ObjectKeyFromObject(rt), &cur); err != nil {
			return err
		}
		cur.Spec.Rules[1].Matches = []gwv1.HTTPRouteMatch{pathMatch(gwv1.PathMatchPathPrefix, fmt.Sprintf("/v%d", i))}
		return c.Update(ctx, &cur)
	})
	close(stop)
	wg.Wait()
	if os.Getenv("CLUSTERWALL_ROUTE_CHANGES_LOG") != "" {
		data, _ := os.ReadFile(f.LogFile(lab.DaemonProc))
		for _, l := range strings.Split(string(data), "\n") {
			if strings.Contains(l, "from Kubernetes applied") {
				t.Log(l)
			}
		}
	}
	for _, k := range []struct {
		kind string
		ds   []time.Duration
	}{{"Ingress", ingDs}, {"HTTPRoute", rtDs}} {
		p50, p99, worst := percentiles(k.ds)
		t.Logf("%s: %d changes: object change → WAF serving it: p50 %s, p99 %s, max %s", k.kind, len(k.ds), p50, p99, worst)
	}
	t.Logf("load during %d route changes: %d requests, %d failed", 2*n, total.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed during the route changes; first: %v", failed.Load(), total.Load(), failures[:min(5, len(failures))])
	}
	if total.Load() < int64(10*n) {
		t.Fatalf("only %d requests during %d changes", total.Load(), 2*n)
	}
}

// percentiles: p50 and p99 (nearest rank) and the maximum.
func percentiles(ds []time.Duration) (p50, p99, worst time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)].Round(100 * time.Microsecond)
	}
	return rank(0.50), rank(0.99), s[len(s)-1].Round(100 * time.Microsecond)
}

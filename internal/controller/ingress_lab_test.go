package controller

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// ingressLab is a lab whose daemon runs the WAF (lab.WAFConfig: HTTPS on
// 203.0.113.33:443, HTTP on :80), an ingress controller pushing to it,
// and a client for requests from the lab's internet.
type ingressLab struct {
	*lab.Lab
	c     client.Client
	ca    *testCA
	ic    *ingressClient
	https *http.Client // verifies the WAF's certificate with ca
	plain *http.Client
	admin *http.Client // the daemon's admin API, with the token
}

const ingressToken = "lab-ingress-token-9d2e"

func newIngressLab(t *testing.T, gatewayAPI bool) *ingressLab {
	t.Helper()
	lab.RequireLab(t)
	c := kubeClient(t)
	exe := lab.BuildBinary(t)
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	os.WriteFile(pol, []byte("name: ingress-lab\n"), 0o644)
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte(ingressToken+" controller\n"), 0o600)
	l := lab.NewTestLab(t, lab.Config{Exe: exe, Daemon: &lab.DaemonOptions{Policy: pol, WAF: true, TokenFile: tokens}})
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(l.LogFile(lab.DaemonProc))
			if len(data) > 20000 {
				data = data[len(data)-20000:]
			}
			t.Logf("daemon.log (end):\n%s", data)
		}
	})
	hc, err := l.HTTPClient(lab.HostFW)
	if err != nil {
		t.Fatal(err)
	}
	startIngressController(t, kube(t), IngressOptions{Daemons: []string{"http://" + lab.DaemonAdmin}, HTTP: hc, Token: ingressToken,
		Resync: 5 * time.Second, GatewayAPI: gatewayAPI})
	ca := newTestCA(t)
	ic := &ingressClient{l: l, pool: ca.pool, ip: lab.FWIngressV4.String()}
	return &ingressLab{Lab: l, c: c, ca: ca, ic: ic, https: ic.client(false), plain: ic.client(false),
		admin: &http.Client{Timeout: 10 * time.Second, Transport: bearer{ingressToken, hc.Transport}}}
}

// TestIngressLab: an Ingress of clusterwall's class, created in a real API
// server, is served by the real daemon's WAF in a lab within 5 s (HTTPS
// with the Secret's certificate, HTTP redirected to HTTPS), SQL injection
// is blocked by the CRS, the Ingress's status names the ingress
// addresses, a Secret rotation serves the new certificate without a
// failed request, endpoint churn moves traffic without failing a request
// (one held at the old pod completes), and deleting the Ingress gives 404
// within 5 s.
func TestIngressLab(t *testing.T) {
	f := newIngressLab(t, false)
	c, ctx := f.c, context.Background()
	ns := "ing-shop"
	namespace(t, c, ns)
	podA := startPod(t, f.Lab, "pod-a", lab.NodeV4.String()+":8081")
	podB := startPod(t, f.Lab, "pod-b", lab.NodeV4.String()+":8082")
	create(t, c, ingressClass("clusterwall", false))
	svc, slice := serviceWithEndpoints(ns, "web", podA.addr)
	create(t, c, svc)
	create(t, c, slice)
	secret := f.ca.secret(t, ns, "web-tls", "cert-v1", "shop.example.com")
	create(t, c, secret)

	const host = "shop.example.com"
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}, Spec: networkingv1.IngressSpec{
		IngressClassName: strPtr("clusterwall"),
		TLS:              []networkingv1.IngressTLS{{Hosts: []string{host}, SecretName: "web-tls"}},
		Rules: []networkingv1.IngressRule{{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{prefixPath("/", "web")}}}}},
	}}
	httpsGet := func(path string) result { return f.ic.do(f.https, "GET", "https://"+host+path) }
	if r := httpsGet("/"); r.err == nil && r.pod != "" {
		t.Fatalf("served before the Ingress exists: %s", r)
	}
	create(t, c, ing)
	d := f.ic.waitFor(t, 5*time.Second, "Ingress created → the client reaches pod-a over HTTPS", func() result { return httpsGet("/hello") },
		func(r result) bool { return r.err == nil && r.status == 200 && r.pod == "pod-a" && r.cn == "cert-v1" })
	if d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
	// HTTP is redirected to HTTPS, path and query kept.
	if r := f.ic.do(f.plain, "GET", "http://"+host+"/a/b?c=1"); r.status != http.StatusPermanentRedirect || r.header.Get("Location") != "https://"+host+"/a/b?c=1" {
		t.Fatalf("HTTP: %s Location %q, want 308 to https", r, r.header.Get("Location"))
	}
	// The CRS blocks an SQL injection for the same host.
	if r := httpsGet("/?id=" + url.QueryEscape("1' OR '1'='1")); r.status != http.StatusForbidden || r.pod != "" || r.header.Get("X-Correlation-Id") == "" {
		t.Fatalf("SQL injection: %s", r)
	}
	// Status: the ingress addresses, field by field.
	eventually(t, 5*time.Second, "Ingress status", func() string {
		var got networkingv1.Ingress
		if err := c.Get(ctx, client.ObjectKeyFromObject(ing), &got); err != nil {
			return err.Error()
		}
		want := []networkingv1.IngressLoadBalancerIngress{{IP: lab.FWIngressV4.String()}, {IP: lab.FWIngressV6.String()}}
		if !reflect.DeepEqual(got.Status.LoadBalancer.Ingress, want) {
			return "status.loadBalancer.ingress = " + strings.TrimSpace(strings.ReplaceAll(fmtJSON(got.Status.LoadBalancer.Ingress), "\n", ""))
		}
		return ""
	})

	// Secret rotation: the new certificate is served; no request fails.
	load := startLoad(t, func() result { return httpsGet("/") }, func(r result) bool { return r.err == nil && r.status == 200 && r.pod == "pod-a" })
	time.Sleep(300 * time.Millisecond)
	v2 := f.ca.secret(t, ns, "web-tls", "cert-v2", host)
	secret.Data = v2.Data
	if err := c.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	f.ic.waitFor(t, 5*time.Second, "Secret rotated → cert-v2 served", func() result { return httpsGet("/") },
		func(r result) bool { return r.err == nil && r.cn == "cert-v2" })
	time.Sleep(300 * time.Millisecond)
	load.stopAndCheck(t, "during the Secret rotation")

	// Endpoint churn: a request held at pod-a completes while the
	// endpoints move to pod-b; meanwhile no request fails.
	held := make(chan result, 1)
	go func() { held <- httpsGet("/hold") }()
	time.Sleep(300 * time.Millisecond)
	load = startLoad(t, func() result { return httpsGet("/") }, func(r result) bool { return r.err == nil && r.status == 200 })
	setEndpoints(slice, podB.addr)
	if err := c.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	f.ic.waitFor(t, 5*time.Second, "endpoints moved → pod-b answers", func() result { return httpsGet("/") },
		func(r result) bool { return r.err == nil && r.pod == "pod-b" })
	close(podA.hold)
	if r := <-held; r.err != nil || r.status != 200 || r.pod != "pod-a" {
		t.Fatalf("the request held at pod-a during the endpoint change: %s", r)
	}
	time.Sleep(300 * time.Millisecond)
	load.stopAndCheck(t, "during the endpoint change")

	// Deleted: 404 within 5 s (over HTTP, now that nothing redirects).
	if err := c.Delete(ctx, ing); err != nil {
		t.Fatal(err)
	}
	f.ic.waitFor(t, 5*time.Second, "Ingress deleted → 404", func() result { return f.ic.do(f.plain, "GET", "http://"+host+"/") },
		func(r result) bool { return r.err == nil && r.status == http.StatusNotFound })
	insecure := (&ingressClient{l: f.Lab, ip: f.ic.ip}).client(false)
	if r := f.ic.do(insecure, "GET", "https://"+host+"/"); r.status != http.StatusNotFound || r.cn != lab.StoreServerName {
		// The Secret's certificate went with the Ingress: the listener's
		// default (the lab's store.example.com) answers.
		t.Fatalf("HTTPS after the delete: %s", r)
	}
}

func strPtr(s string) *string { return &s }

// load sends requests one after the other until stopped, counting those
// ok refuses.
type load struct {
	stop          chan struct{}
	done          sync.WaitGroup
	total, failed atomic.Int64
	mu            sync.Mutex
	firstFailures []string
}

func startLoad(t *testing.T, send func() result, ok func(result) bool) *load {
	l := &load{stop: make(chan struct{})}
	for w := 0; w < 2; w++ {
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				r := send()
				l.total.Add(1)
				if !ok(r) {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.firstFailures) < 5 {
						l.firstFailures = append(l.firstFailures, r.String())
					}
					l.mu.Unlock()
				}
			}
		}()
	}
	return l
}

func (l *load) stopAndCheck(t *testing.T, what string) {
	t.Helper()
	close(l.stop)
	l.done.Wait()
	t.Logf("%s: %d requests, %d failed", what, l.total.Load(), l.failed.Load())
	if l.failed.Load() > 0 || l.total.Load() < 10 {
		t.Fatalf("%s: %d of %d requests failed: %v", what, l.failed.Load(), l.total.Load(), l.firstFailures)
	}
}

package controller

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/lab"
)

// initialPolicy is what the lab's daemon starts with: nothing allowed.
const initialPolicy = "name: before-the-controller\n"

// tunnel dials nonazure.example.net's TCP 9000 (which writes its name and
// closes) from host; it reports whether the connection got through.
func tunnel(l *lab.Lab, host string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	c, err := l.DialContext(host)(ctx, "tcp", "192.0.2.99:9000")
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(700 * time.Millisecond))
	data, _ := io.ReadAll(c)
	return strings.Contains(string(data), "nonazure.example.net")
}

// published fetches http://203.0.113.32:PORT/ from the outside client and
// returns the body, or "" when the connection does not get through.
func published(l *lab.Lab, port int) string {
	hc := &http.Client{Timeout: 700 * time.Millisecond, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.DialContext(lab.HostClient)(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
	resp, err := hc.Get(fmt.Sprintf("http://%s:%d/", lab.FWPublicV4, port))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return string(data)
}

func waitFlow(t *testing.T, what string, want bool, check func() bool) {
	t.Helper()
	start := time.Now()
	eventually(t, 30*time.Second, what, func() string {
		if check() == want {
			return ""
		}
		return fmt.Sprintf("flow still %v", !want)
	})
	t.Logf("%s: %v after %s", what, want, time.Since(start).Round(time.Millisecond))
}

func podWithIP(t *testing.T, c client.Client, ns, name string, lbl map[string]string, ip netip.Addr) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}},
	}
	create(t, c, p)
	// No kubelet here: set what it would report.
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	if err := c.Status().Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLabEndToEnd runs the controller against a real API server and the
// real daemon in a lab: what is applied through the objects changes real
// flows through the firewall's kernel.
func TestLabEndToEnd(t *testing.T) {
	lab.RequireLab(t)
	c := kubeClient(t)
	exe := lab.BuildBinary(t)
	dir := t.TempDir()
	polFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(polFile, []byte(initialPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	// The daemon's admin API demands a bearer token: the controller's
	// requests carry it (Options.Token), the test's own add it (authed).
	const token = "lab-controller-token-5f1c"
	tokenFile := filepath.Join(dir, "admin-tokens")
	if err := os.WriteFile(tokenFile, []byte(token+" controller\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := lab.NewTestLab(t, lab.Config{Exe: exe, Daemon: &lab.DaemonOptions{Policy: polFile, TokenFile: tokenFile}})
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(l.LogFile(lab.DaemonProc))
			t.Logf("daemon.log:\n%s", data)
		}
	})
	hc, err := l.HTTPClient(lab.HostFW)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := hc.Get("http://" + lab.DaemonAdmin + "/v1/status"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin API without the token: %v %v, want 401", resp, err)
	} else {
		resp.Body.Close()
	}
	authed := &http.Client{Timeout: hc.Timeout, Transport: bearer{token, hc.Transport}}
	const pol = "lab"
	startController(t, Options{PolicyName: pol, Daemons: []string{"http://" + lab.DaemonAdmin}, HTTP: hc, Token: token, Resync: 5 * time.Second})
	ctx := context.Background()
	for _, ns := range []string{"lab-apps", "lab-team-a", "lab-team-b", "lab-shop"} {
		namespace(t, c, ns)
	}

	if tunnel(l, lab.HostNode) {
		t.Fatal("the initial policy lets node reach 192.0.2.99:9000")
	}

	// 1. A FirewallPolicy whose platform group allows the pods labelled
	//    app=tunnel in lab-apps to reach 192.0.2.99:9000, and teams
	//    that may add Network rules.
	fp := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: pol}, Spec: v1.FirewallPolicySpec{
		Teams: &v1.TeamGuardrails{AllowedKinds: []v1.CollectionKind{"Network", "Application"}},
		RuleCollectionGroups: []v1.RuleCollectionGroupSpecNamed{{Name: "platform", RuleCollectionGroupSpec: v1.RuleCollectionGroupSpec{
			Priority: 200,
			RuleCollections: []v1.RuleCollection{{Name: "tunnels", Kind: "Network", Priority: 100, Action: "Allow", Rules: []v1.Rule{{
				Name: "to-nonazure", Protocols: []string{"TCP"}, DestinationAddresses: []string{"192.0.2.99"}, DestinationPorts: []string{"9000"},
				SourceSelector: &v1.SourceSelector{Namespace: "lab-apps", PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "tunnel"}}},
			}}}},
		}}},
		ServiceDNAT: &v1.ServiceDNAT{PublicIPs: []string{lab.FWPublicV4.String()}},
	}}
	create(t, c, fp)
	eventually(t, 30*time.Second, "policy programmed", policyCond(c, pol, v1.ConditionProgrammed, metav1.ConditionTrue, "applied to 1 daemon"))
	var got v1.FirewallPolicy
	if err := c.Get(ctx, types.NamespacedName{Name: pol}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status.DaemonGeneration < 2 || got.Status.PolicyHash == "" {
		t.Fatalf("status %+v", got.Status)
	}
	if tunnel(l, lab.HostNode) {
		t.Fatal("no pod selected yet, but node reaches 192.0.2.99:9000")
	}

	// 2. Pod churn: a pod with node's address appears, goes, and another
	//    pod (store's address) appears; an EndpointSlice names a third.
	tun := podWithIP(t, c, "lab-apps", "tunnel-1", map[string]string{"app": "tunnel"}, lab.NodeV4)
	waitFlow(t, "pod tunnel-1 (10.42.1.10) selected: node → 192.0.2.99:9000", true, func() bool { return tunnel(l, lab.HostNode) })
	if tunnel(l, lab.HostStore) {
		t.Fatal("store reaches 192.0.2.99:9000 without being selected")
	}
	if err := c.Delete(ctx, tun, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	waitFlow(t, "pod tunnel-1 deleted: node → 192.0.2.99:9000", false, func() bool { return tunnel(l, lab.HostNode) })
	podWithIP(t, c, "lab-apps", "tunnel-2", map[string]string{"app": "tunnel"}, lab.StoreV4)
	waitFlow(t, "pod tunnel-2 (10.42.1.100) selected: store → 192.0.2.99:9000", true, func() bool { return tunnel(l, lab.HostStore) })
	if tunnel(l, lab.HostNode) {
		t.Fatal("node still reaches 192.0.2.99:9000 after its pod went")
	}
	// A pod whose status has no address yet, but which an EndpointSlice lists.
	fresh := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "lab-apps", Name: "tunnel-3", Labels: map[string]string{"app": "tunnel"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}}}
	create(t, c, fresh)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "lab-apps", Name: "tunnel-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: "tunnel"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{lab.APIV4.String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "lab-apps", Name: "tunnel-3"}}},
	}
	create(t, c, slice)
	waitFlow(t, "EndpointSlice lists tunnel-3 (10.42.1.200): api → 192.0.2.99:9000", true, func() bool { return tunnel(l, lab.HostAPI) })
	if err := c.Delete(ctx, slice); err != nil {
		t.Fatal(err)
	}
	waitFlow(t, "EndpointSlice deleted: api → 192.0.2.99:9000", false, func() bool { return tunnel(l, lab.HostAPI) })

	// 3. Team groups: team-a's is within the guardrails and goes in; team-b's
	//    three break them and are rejected in their status.
	good := v1.RuleCollectionGroup{ObjectMeta: metav1.ObjectMeta{Namespace: "lab-team-a", Name: "egress"}, Spec: v1.TeamRuleCollectionGroupSpec{
		FirewallPolicy: pol, RuleCollectionGroupSpec: v1.RuleCollectionGroupSpec{Priority: 1000, RuleCollections: []v1.RuleCollection{{
			Name: "tunnel", Kind: "Network", Priority: 100, Action: "Allow", Rules: []v1.Rule{{
				Name: "team-tunnel", Protocols: []string{"TCP"}, DestinationAddresses: []string{"192.0.2.0/24"}, DestinationPorts: []string{"9000"},
				SourceSelector: &v1.SourceSelector{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}},
			}}}}}}}
	create(t, c, &good)
	podWithIP(t, c, "lab-team-a", "a-1", map[string]string{"team": "a"}, lab.NodeV4)
	eventually(t, 30*time.Second, "team-a accepted", groupCond(c, client.ObjectKeyFromObject(&good), v1.ConditionAccepted, metav1.ConditionTrue, ""))
	eventually(t, 30*time.Second, "team-a programmed", groupCond(c, client.ObjectKeyFromObject(&good), v1.ConditionProgrammed, metav1.ConditionTrue, ""))
	waitFlow(t, "team-a's group selects a-1 (10.42.1.10): node → 192.0.2.99:9000", true, func() bool { return tunnel(l, lab.HostNode) })

	low := good.DeepCopy()
	low.ObjectMeta = metav1.ObjectMeta{Namespace: "lab-team-b", Name: "too-early"}
	low.Spec.Priority = 150 // before the platform's group: must be refused
	low.Spec.RuleCollections[0].Rules[0].SourceSelector = &v1.SourceSelector{PodSelector: &metav1.LabelSelector{}}
	foreign := low.DeepCopy()
	foreign.Name, foreign.Spec.Priority = "foreign", 1100
	foreign.Spec.RuleCollections[0].Rules[0].SourceSelector = &v1.SourceSelector{Namespace: "lab-apps"}
	invalid := low.DeepCopy()
	invalid.Name, invalid.Spec.Priority = "invalid", 1200
	invalid.Spec.RuleCollections[0].Rules[0].DestinationPorts = []string{"9000", "70000"}
	for _, g := range []*v1.RuleCollectionGroup{low, foreign, invalid} {
		create(t, c, g)
	}
	podWithIP(t, c, "lab-team-b", "b-1", map[string]string{"team": "b"}, lab.APIV4)
	eventually(t, 30*time.Second, "too-early rejected", groupCond(c, client.ObjectKeyFromObject(low), v1.ConditionAccepted, metav1.ConditionFalse, "spec.priority: priority 150 is outside the range 1000-65000"))
	eventually(t, 30*time.Second, "foreign rejected", groupCond(c, client.ObjectKeyFromObject(foreign), v1.ConditionAccepted, metav1.ConditionFalse, "spec.ruleCollections[0].rules[0].sourceSelector.namespace"))
	eventually(t, 30*time.Second, "invalid rejected", groupCond(c, client.ObjectKeyFromObject(invalid), v1.ConditionAccepted, metav1.ConditionFalse, "spec.ruleCollections[0].rules[0].destinationPorts[1]"))
	eventually(t, 30*time.Second, "invalid not programmed", groupCond(c, client.ObjectKeyFromObject(invalid), v1.ConditionProgrammed, metav1.ConditionFalse, "not accepted"))
	// The platform's group and team-a's still apply; the rejected groups'
	// allows (for b-1, api's address) are not in the kernel.
	if !tunnel(l, lab.HostStore) || !tunnel(l, lab.HostNode) {
		t.Fatal("store or node lost its allow")
	}
	if tunnel(l, lab.HostAPI) {
		t.Fatal("a rejected group's allow reached the kernel: api → 192.0.2.99:9000 passes")
	}
	if err := c.Get(ctx, types.NamespacedName{Name: pol}, &got); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Status.Groups, ",") != "platform,lab-team-a/egress" {
		t.Fatalf("composed groups %q", got.Status.Groups)
	}
	resp, err := authed.Get("http://" + lab.DaemonAdmin + "/v1/policy")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "lab-team-a/egress") || strings.Contains(string(body), "lab-team-b") || !strings.Contains(string(body), "10.42.1.100") {
		t.Fatalf("the daemon's policy:\n%s", body)
	}

	// 4. Service auto-DNAT: published with the Service, gone with it.
	if b := published(l, 8080); b != "" {
		t.Fatalf("203.0.113.32:8080 answers before any Service: %q", b)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "lab-shop", Name: "store-front", Annotations: map[string]string{v1.AnnotationPublish: "8080:80"}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	create(t, c, svc)
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lab.StoreV4.String()}}
	if err := c.Status().Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	waitFlow(t, "Service published: client → 203.0.113.32:8080 reaches store-front", true, func() bool { return published(l, 8080) == lab.StoreBody })
	if err := c.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	waitFlow(t, "Service deleted: client → 203.0.113.32:8080", false, func() bool { return published(l, 8080) != "" })
	if err := c.Get(ctx, types.NamespacedName{Name: pol}, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Status.PublishedServices) != 0 {
		t.Fatalf("published services after delete: %q", got.Status.PublishedServices)
	}

	// 5. Idempotent: with nothing changing, the daemon's generation stays.
	gen1 := daemonGeneration(t, authed)
	time.Sleep(7 * time.Second) // longer than Resync: the controller checks, does not re-apply
	if gen2 := daemonGeneration(t, authed); gen2 != gen1 {
		t.Fatalf("daemon generation moved from %d to %d with nothing changing", gen1, gen2)
	}
	// A daemon restart or someone else's apply is noticed and undone.
	if _, err := (&DaemonClient{URL: "http://" + lab.DaemonAdmin, HTTP: hc, Token: token}).Apply(ctx, []byte(initialPolicy)); err != nil {
		t.Fatal(err)
	}
	waitFlow(t, "someone else's apply is replaced: store → 192.0.2.99:9000", true, func() bool { return tunnel(l, lab.HostStore) })
}

// bearer adds an admin API token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func daemonGeneration(t *testing.T, hc *http.Client) int64 {
	t.Helper()
	g, err := (&DaemonClient{URL: "http://" + lab.DaemonAdmin, HTTP: hc}).Generation(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return g
}

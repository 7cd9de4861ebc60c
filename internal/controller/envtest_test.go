package controller

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/kubetest"
	"github.com/clusterwall/clusterwall/internal/lab"
)

// The tests below run against a real kube-apiserver and etcd (envtest),
// built by scripts/k8s-test-bins.sh. They find the binaries through
// KUBEBUILDER_ASSETS or in the script's cache; without them they skip,
// except under CI=true, where they fail.

func TestMain(m *testing.M) {
	lab.ServeIfAsked()
	// controller-runtime's own logs: errors only, on standard error.
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	code := m.Run()
	kubeEnv.Stop()
	os.Exit(code)
}

var kubeEnv = kubetest.Env{CRDDirs: []string{filepath.Join("..", "..", "deploy", "crds")}}

// kube starts (once) a kube-apiserver with the CRDs of deploy/crds and
// returns its config.
func kube(t *testing.T) *rest.Config {
	t.Helper()
	return kubeEnv.Config(t)
}

func kubeClient(t *testing.T) client.Client {
	t.Helper()
	cfg := kube(t)
	s, err := NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startController runs a controller manager for opts until the test ends.
func startController(t *testing.T, opts Options) {
	t.Helper()
	startControllerAs(t, kube(t), opts, "")
}

// startControllerAs runs a controller manager with cfg's credentials, with
// leader election in leaderNS when it is set.
func startControllerAs(t *testing.T, cfg *rest.Config, opts Options, leaderNS string) {
	t.Helper()
	s, err := NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  s,
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		Controller:              config.Controller{SkipNameValidation: ptr.To(true)},
		LeaderElection:          leaderNS != "",
		LeaderElectionNamespace: leaderNS,
		LeaderElectionID:        "clusterwall-controller",
	})
	if err != nil {
		t.Fatal(err)
	}
	r := New(mgr.GetClient(), mgr.GetEventRecorderFor("clusterwall-test"), opts)
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
}

func namespace(t *testing.T, c client.Client, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func create(t *testing.T, c client.Client, o client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), o); err != nil {
		t.Fatalf("create %T %s: %v", o, o.GetName(), err)
	}
	t.Cleanup(func() { c.Delete(context.Background(), o) })
}

// eventually polls cond until it returns "" or the timeout passes, and
// fails with cond's last complaint.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		if last = cond(); last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after %s: %s", what, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// groupCond describes a RuleCollectionGroup's condition (empty when it is as wanted).
func groupCond(c client.Client, key types.NamespacedName, typ string, want metav1.ConditionStatus, msgHas string) func() string {
	return func() string {
		var g v1.RuleCollectionGroup
		if err := c.Get(context.Background(), key, &g); err != nil {
			return err.Error()
		}
		cond := meta.FindStatusCondition(g.Status.Conditions, typ)
		if cond == nil {
			return fmt.Sprintf("no %s condition yet (status %+v)", typ, g.Status)
		}
		if cond.Status != want || !strings.Contains(cond.Message, msgHas) || g.Status.ObservedGeneration != g.Generation || cond.ObservedGeneration != g.Generation {
			return fmt.Sprintf("%s=%s gen %d/%d %q; want %s containing %q", typ, cond.Status, cond.ObservedGeneration, g.Generation, cond.Message, want, msgHas)
		}
		return ""
	}
}

func policyCond(c client.Client, name, typ string, want metav1.ConditionStatus, msgHas string) func() string {
	return func() string {
		var p v1.FirewallPolicy
		if err := c.Get(context.Background(), types.NamespacedName{Name: name}, &p); err != nil {
			return err.Error()
		}
		cond := meta.FindStatusCondition(p.Status.Conditions, typ)
		if cond == nil {
			return fmt.Sprintf("no %s condition yet", typ)
		}
		if cond.Status != want || !strings.Contains(cond.Message, msgHas) || p.Status.ObservedGeneration != p.Generation {
			return fmt.Sprintf("%s=%s gen %d/%d %q; want %s containing %q", typ, cond.Status, p.Status.ObservedGeneration, p.Generation, cond.Message, want, msgHas)
		}
		return ""
	}
}

// TestCRDValidation: the API server itself (OpenAPI schema + CEL of
// deploy/crds) refuses bad objects, with messages that say why.
func TestCRDValidation(t *testing.T) {
	c := kubeClient(t)
	namespace(t, c, "crd-validation")
	ctx := context.Background()
	ok := appGroup("crd-validation", "ok", 1000, selRule("r", "", map[string]string{"app": "web"}, "ghcr.io"))
	ok.Spec.FirewallPolicy = ""
	create(t, c, &ok)
	var got v1.RuleCollectionGroup
	if err := c.Get(ctx, client.ObjectKeyFromObject(&ok), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.FirewallPolicy != "default" {
		t.Errorf("spec.firewallPolicy defaulted to %q, want default", got.Spec.FirewallPolicy)
	}

	bad := []struct {
		name   string
		mutate func(*v1.RuleCollectionGroup)
		want   string
	}{
		{"priority below 100", func(g *v1.RuleCollectionGroup) { g.Spec.Priority = 50 }, "spec.priority: Invalid value: 50: spec.priority in body should be greater than or equal to 100"},
		{"unknown kind", func(g *v1.RuleCollectionGroup) { g.Spec.RuleCollections[0].Kind = "Layer7" }, `spec.ruleCollections[0].kind: Unsupported value: "Layer7"`},
		{"DNAT action on Application", func(g *v1.RuleCollectionGroup) { g.Spec.RuleCollections[0].Action = "DNAT" }, "spec.ruleCollections[0].action: Invalid value: \"object\": a DNAT collection's action is DNAT"},
		{"no source", func(g *v1.RuleCollectionGroup) { g.Spec.RuleCollections[0].Rules[0].SourceSelector = nil }, "a rule needs sourceAddresses, sourceIpGroups or sourceSelector"},
		{"collection priority above 65000", func(g *v1.RuleCollectionGroup) { g.Spec.RuleCollections[0].Priority = 70000 }, "spec.ruleCollections[0].priority: Invalid value: 70000: spec.ruleCollections[0].priority in body should be less than or equal to 65000"},
		{"duplicate rule names", func(g *v1.RuleCollectionGroup) {
			g.Spec.RuleCollections[0].Rules = append(g.Spec.RuleCollections[0].Rules, g.Spec.RuleCollections[0].Rules[0])
		}, `spec.ruleCollections[0].rules[1]: Duplicate value: {"name":"r"}`},
	}
	for i, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			g := appGroup("crd-validation", fmt.Sprintf("bad%d", i), 1000, selRule("r", "", map[string]string{"app": "web"}, "ghcr.io"))
			tc.mutate(&g)
			err := c.Create(ctx, &g)
			if err == nil {
				c.Delete(ctx, &g)
				t.Fatal("the API server accepted it")
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}

	fp := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "crd-validation"}, Spec: v1.FirewallPolicySpec{
		Teams: &v1.TeamGuardrails{MinPriority: i32(3000), MaxPriority: i32(2000)},
	}}
	if err := c.Create(ctx, fp); err == nil || !strings.Contains(err.Error(), "minPriority must not exceed maxPriority") {
		c.Delete(ctx, fp)
		t.Fatalf("inverted priority range: %v", err)
	}
	fp.Spec.Teams = nil
	fp.Spec.ThreatIntel = &v1.ThreatIntel{Mode: "Deny", Feeds: []v1.ThreatIntelFeed{{Name: "x"}}}
	if err := c.Create(ctx, fp); err == nil || !strings.Contains(err.Error(), "a feed needs exactly one of file and url") {
		c.Delete(ctx, fp)
		t.Fatalf("feed without a source: %v", err)
	}
}

// TestControllerStatus: the controller reports guardrail violations and
// the validator's errors on each group at the group's own field path, with
// observedGeneration; fixing a group makes it accepted; an invalid
// FirewallPolicy is reported on itself. No daemon: Programmed stays False.
func TestControllerStatus(t *testing.T) {
	c := kubeClient(t)
	const pol = "status-test"
	startController(t, Options{PolicyName: pol})
	for _, ns := range []string{"st-a", "st-b"} {
		namespace(t, c, ns)
	}
	ctx := context.Background()
	web := map[string]string{"app": "web"}

	// A group before its FirewallPolicy exists.
	early := appGroup("st-a", "early", 1000, selRule("r", "", web, "ghcr.io"))
	early.Spec.FirewallPolicy = pol
	create(t, c, &early)
	eventually(t, 20*time.Second, "group without policy", groupCond(c, client.ObjectKeyFromObject(&early), v1.ConditionAccepted, metav1.ConditionFalse, `FirewallPolicy "status-test" does not exist`))

	fp := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: pol}}
	create(t, c, fp)
	eventually(t, 20*time.Second, "policy accepted", policyCond(c, pol, v1.ConditionAccepted, metav1.ConditionTrue, ""))
	eventually(t, 20*time.Second, "policy not programmed without daemons", policyCond(c, pol, v1.ConditionProgrammed, metav1.ConditionFalse, "no daemons"))
	eventually(t, 20*time.Second, "early group accepted", groupCond(c, client.ObjectKeyFromObject(&early), v1.ConditionAccepted, metav1.ConditionTrue, ""))

	low := appGroup("st-b", "low", 500, selRule("r", "", web, "ghcr.io"))
	foreign := appGroup("st-b", "foreign", 1200, selRule("r", "st-a", web, "ghcr.io"))
	invalid := appGroup("st-b", "invalid", 1300, selRule("r", "", web, "ghcr.io", "exa*mple.org"))
	network := appGroup("st-b", "network", 1400)
	network.Spec.RuleCollections[0] = v1.RuleCollection{Name: "net", Kind: "Network", Priority: 100, Action: "Allow", Rules: []v1.Rule{{
		Name: "ssh", Protocols: []string{"TCP"}, DestinationAddresses: []string{"*"}, DestinationPorts: []string{"22"},
		SourceSelector: &v1.SourceSelector{PodSelector: &metav1.LabelSelector{MatchLabels: web}}}}}
	for _, g := range []*v1.RuleCollectionGroup{&low, &foreign, &invalid, &network} {
		g.Spec.FirewallPolicy = pol
		create(t, c, g)
	}
	for _, tc := range []struct {
		g    *v1.RuleCollectionGroup
		want string
	}{
		{&low, "spec.priority: priority 500 is outside the range 1000-65000"},
		{&foreign, `spec.ruleCollections[0].rules[0].sourceSelector.namespace: namespace "st-a" is not this group's namespace "st-b"`},
		{&invalid, "spec.ruleCollections[0].rules[0].targetFqdns[1]: "},
		{&network, "spec.ruleCollections[0].kind: teams may not add Network rules"},
	} {
		eventually(t, 20*time.Second, tc.g.Name, groupCond(c, client.ObjectKeyFromObject(tc.g), v1.ConditionAccepted, metav1.ConditionFalse, tc.want))
	}
	var got v1.RuleCollectionGroup
	if err := c.Get(ctx, client.ObjectKeyFromObject(&invalid), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Status.Errors) != 1 || got.Status.Errors[0].Field != "spec.ruleCollections[0].rules[0].targetFqdns[1]" {
		t.Fatalf("status.errors %+v", got.Status.Errors)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, v1.ConditionAccepted); c.Reason != v1.ReasonInvalid {
		t.Fatalf("reason %q", c.Reason)
	}
	t.Logf("rejected: %s", meta.FindStatusCondition(got.Status.Conditions, v1.ConditionAccepted).Message)

	// Fix it: a new generation, accepted.
	got.Spec.RuleCollections[0].Rules[0].TargetFQDNs = []string{"ghcr.io", "example.org"}
	if err := c.Update(ctx, &got); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "fixed group", groupCond(c, client.ObjectKeyFromObject(&invalid), v1.ConditionAccepted, metav1.ConditionTrue, ""))

	// An invalid FirewallPolicy: reported on itself.
	var p v1.FirewallPolicy
	if err := c.Get(ctx, types.NamespacedName{Name: pol}, &p); err != nil {
		t.Fatal(err)
	}
	p.Spec.IPGroups = map[string][]string{"office": {"10.1.2.300"}}
	if err := c.Update(ctx, &p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "invalid policy", policyCond(c, pol, v1.ConditionAccepted, metav1.ConditionFalse, "spec.ipGroups.office[0]: "))
}

// TestRBAC: the controller runs with exactly the permissions of
// deploy/rbac (impersonating its ServiceAccount, with leader election) and
// does its work; the same identity may not change a Service.
func TestRBAC(t *testing.T) {
	c := kubeClient(t)
	ctx := context.Background()
	for _, f := range []string{"namespace.yaml", "serviceaccount.yaml", "clusterrole.yaml", "leader-election.yaml"} {
		for _, o := range decodeManifests(t, filepath.Join("..", "..", "deploy", "rbac", f)) {
			if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("%s: %v", f, err)
			}
		}
	}
	sa := rest.CopyConfig(kube(t))
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:clusterwall-system:clusterwall-controller"}
	const pol = "rbac-test"
	startControllerAs(t, sa, Options{PolicyName: pol}, "clusterwall-system")
	namespace(t, c, "rbac-a")
	create(t, c, &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: pol}, Spec: v1.FirewallPolicySpec{
		ServiceDNAT: &v1.ServiceDNAT{PublicIPs: []string{"203.0.113.32"}}}})
	g := appGroup("rbac-a", "g", 1000, selRule("r", "", map[string]string{"app": "web"}, "ghcr.io"))
	g.Spec.FirewallPolicy = pol
	create(t, c, &g)
	eventually(t, 30*time.Second, "policy status written by the ServiceAccount", policyCond(c, pol, v1.ConditionAccepted, metav1.ConditionTrue, ""))
	eventually(t, 30*time.Second, "group status written by the ServiceAccount", groupCond(c, client.ObjectKeyFromObject(&g), v1.ConditionAccepted, metav1.ConditionTrue, ""))
	var lease coordinationv1.Lease
	if err := c.Get(ctx, types.NamespacedName{Namespace: "clusterwall-system", Name: "clusterwall-controller"}, &lease); err != nil {
		t.Fatalf("leader election lease: %v", err)
	}
	// Events on Services are allowed, changing them is not.
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "rbac-a", Name: "s", Annotations: map[string]string{v1.AnnotationPublish: "80"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80}}}}
	create(t, c, svc)
	eventually(t, 30*time.Second, "NotPublished event", func() string {
		var evs corev1.EventList
		if err := c.List(ctx, &evs, client.InNamespace("rbac-a")); err != nil {
			return err.Error()
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == "s" && e.Reason == "NotPublished" && strings.Contains(e.Message, "no IPv4 load-balancer IP") {
				return ""
			}
		}
		return fmt.Sprintf("%d events, none NotPublished for s", len(evs.Items))
	})
	s, _ := NewScheme()
	as, err := client.New(sa, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	svc.Labels = map[string]string{"x": "y"}
	if err := as.Update(ctx, svc); !apierrors.IsForbidden(err) {
		t.Fatalf("the controller's identity updated a Service: %v", err)
	}
	if err := as.Delete(ctx, &g); !apierrors.IsForbidden(err) {
		t.Fatalf("the controller's identity deleted a RuleCollectionGroup: %v", err)
	}
}

// decodeManifests reads the objects of a YAML stream.
func decodeManifests(t *testing.T, path string) []client.Object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := NewScheme()
	apiextensionsv1.AddToScheme(s)
	dec := serializer.NewCodecFactory(s).UniversalDeserializer()
	var out []client.Object
	for _, doc := range strings.Split(string(data), "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		o, _, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, o.(client.Object))
	}
	return out
}

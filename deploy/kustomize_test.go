// Package deploy holds no code: its test builds the kustomizations under
// deploy/kustomize with the kustomize library (sigs.k8s.io/kustomize/api)
// and applies what they produce to a real kube-apiserver (envtest).
package deploy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/clusterwall/clusterwall/internal/kubetest"
	"github.com/clusterwall/clusterwall/internal/lab"
)

const (
	namespace      = "clusterwall-system"
	serviceAccount = "clusterwall-controller"
)

// object is one object of a kustomize build.
type object struct {
	u   *unstructured.Unstructured
	gvk schema.GroupVersionKind
	key string // Kind/namespace/name
}

// build runs kustomize on dir exactly as `kubectl apply -k dir` does.
func build(dir string) ([]object, error) {
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, err
	}
	var objs []object
	for _, r := range rm.Resources() {
		// Through JSON: kyaml's maps hold int, unstructured wants int64.
		data, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", r.CurId(), err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			return nil, fmt.Errorf("%s: %v", r.CurId(), err)
		}
		objs = append(objs, object{u: u, gvk: u.GroupVersionKind(), key: keyOf(u)})
	}
	return objs, nil
}

func keyOf(u *unstructured.Unstructured) string {
	return u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
}

func find(objs []object, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.gvk.Kind == kind && o.u.GetName() == name {
			return o.u
		}
	}
	return nil
}

// typed converts one built object into its Go type.
func typed[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	v := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, v, true); err != nil {
		t.Fatalf("%s does not decode into %T: %v", keyOf(u), v, err)
	}
	return v
}

// The base's objects: what every way of running the controller needs.
var baseKeys = []string{
	"CustomResourceDefinition//firewallpolicies.clusterwall.io",
	"CustomResourceDefinition//rulecollectiongroups.clusterwall.io",
	"CustomResourceDefinition//wafpolicies.clusterwall.io",
	"Namespace//" + namespace,
	"ServiceAccount/" + namespace + "/" + serviceAccount,
	"ClusterRole//clusterwall-controller",
	"ClusterRoleBinding//clusterwall-controller",
	"ClusterRole//clusterwall-ingress-controller",
	"ClusterRoleBinding//clusterwall-ingress-controller",
	"Role/" + namespace + "/clusterwall-controller-leader-election",
	"RoleBinding/" + namespace + "/clusterwall-controller-leader-election",
}

type kustomization struct {
	name, dir string
	keys      []string // exactly the objects it must produce
	check     func(t *testing.T, objs []object)
}

var kustomizations = []kustomization{
	{
		name:  "base",
		dir:   "kustomize/base",
		keys:  baseKeys,
		check: checkRBAC,
	},
	{
		name:  "next-to-firewall",
		dir:   "kustomize/overlays/next-to-firewall",
		keys:  append(slices.Clone(baseKeys), "Secret/"+namespace+"/clusterwall-controller-token"),
		check: checkNextToFirewall,
	},
	{
		name:  "in-cluster",
		dir:   "kustomize/overlays/in-cluster",
		keys:  append(slices.Clone(baseKeys), "Deployment/"+namespace+"/clusterwall-controller"),
		check: checkInCluster,
	},
}

// TestKustomize builds base and both overlays with the kustomize library,
// checks that each holds what its purpose needs (docs/kubernetes.md), and
// creates every object in a real kube-apiserver with strict field
// validation, so schema errors and unknown fields fail the test. One
// apiserver serves all three in turn: each object is created by the first
// kustomization that has it and strictly updated by the later ones.
func TestKustomize(t *testing.T) {
	built := map[string][]object{}
	for _, k := range kustomizations {
		t.Run("build/"+k.name, func(t *testing.T) {
			objs, err := build(k.dir)
			if err != nil {
				t.Fatalf("kustomize build %s: %v", k.dir, err)
			}
			var got []string
			for _, o := range objs {
				got = append(got, o.key)
			}
			sort.Strings(got)
			want := slices.Sorted(slices.Values(k.keys))
			if !slices.Equal(got, want) {
				t.Fatalf("kustomize build %s produced\n  %s\nwant\n  %s", k.dir, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			k.check(t, objs)
			built[k.name] = objs
			t.Logf("%s: %d objects", k.dir, len(objs))
		})
	}

	c := kubeClient(t)
	ctx := context.Background()
	for _, k := range kustomizations {
		t.Run("apply/"+k.name, func(t *testing.T) {
			objs, ok := built[k.name]
			if !ok {
				t.Skip("did not build")
			}
			start := time.Now()
			created, updated := apply(t, ctx, c, objs)
			t.Logf("%s: created %d, updated %d objects in %s", k.dir, created, updated, time.Since(start).Round(time.Millisecond))
			checkNamespaced(t, c, objs)
			checkAccess(t, ctx, c)
			if k.name == "in-cluster" {
				// The apiserver's defaults did not change what the overlay set.
				d := &appsv1.Deployment{}
				if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "clusterwall-controller"}, d); err != nil {
					t.Fatal(err)
				}
				want := typed[appsv1.Deployment](t, find(objs, "Deployment", "clusterwall-controller"))
				if !slices.Equal(d.Spec.Template.Spec.Containers[0].Args, want.Spec.Template.Spec.Containers[0].Args) {
					t.Fatalf("stored args %q, built %q", d.Spec.Template.Spec.Containers[0].Args, want.Spec.Template.Spec.Containers[0].Args)
				}
			}
		})
	}
}

// TestKustomizeCatchesErrors: the two steps TestKustomize relies on do
// fail on bad input — a patch that does not apply stops the build with
// kustomize's error, and the apiserver refuses an unknown field.
func TestKustomizeCatchesErrors(t *testing.T) {
	dir := t.TempDir()
	abs, err := filepath.Abs("controller")
	if err != nil {
		t.Fatal(err)
	}
	// Kustomize only loads from inside the kustomization's root: copy the Deployment.
	data, err := os.ReadFile(filepath.Join(abs, "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "deployment.yaml"), data, 0o644)
	os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(`resources: [deployment.yaml]
patches:
  - target: {kind: Deployment, name: clusterwall-controller}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/args/9
        value: --daemon=http://192.0.2.1:9180
`), 0o644)
	if _, err := build(dir); err == nil || !strings.Contains(err.Error(), "args/9") {
		t.Fatalf("a patch of a missing argument built (err %v)", err)
	} else {
		t.Logf("kustomize: %v", err)
	}

	objs, err := build("kustomize/overlays/in-cluster")
	if err != nil {
		t.Fatal(err)
	}
	d := find(objs, "Deployment", "clusterwall-controller").DeepCopy()
	d.SetNamespace("default")
	spec := d.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	spec["serviceAcountName"] = spec["serviceAccountName"] // a typo
	c := kubeClient(t)
	err = c.Create(context.Background(), d, client.FieldValidation("Strict"), client.DryRunAll)
	if err == nil || !strings.Contains(err.Error(), "serviceAcountName") {
		t.Fatalf("the apiserver took a Deployment with an unknown field (err %v)", err)
	}
	t.Logf("kube-apiserver: %v", err)
}

// checkRBAC: the ServiceAccount the bindings name exists, in the namespace,
// and the leader-election Role is in the same namespace as its binding.
func checkRBAC(t *testing.T, objs []object) {
	crb := typed[rbacv1.ClusterRoleBinding](t, find(objs, "ClusterRoleBinding", "clusterwall-controller"))
	rb := typed[rbacv1.RoleBinding](t, find(objs, "RoleBinding", "clusterwall-controller-leader-election"))
	if crb.RoleRef.Kind != "ClusterRole" || find(objs, "ClusterRole", crb.RoleRef.Name) == nil {
		t.Errorf("ClusterRoleBinding refers to %s %q, which the build does not have", crb.RoleRef.Kind, crb.RoleRef.Name)
	}
	if rb.RoleRef.Kind != "Role" || find(objs, "Role", rb.RoleRef.Name) == nil {
		t.Errorf("RoleBinding refers to %s %q, which the build does not have", rb.RoleRef.Kind, rb.RoleRef.Name)
	}
	for _, s := range append(crb.Subjects, rb.Subjects...) {
		if s.Kind != "ServiceAccount" || s.Name != serviceAccount || s.Namespace != namespace {
			t.Errorf("a binding's subject is %+v, not ServiceAccount %s/%s", s, namespace, serviceAccount)
		}
	}
	for _, o := range objs {
		if l := o.u.GetLabels(); l != nil && l["app.kubernetes.io/name"] != "" && l["app.kubernetes.io/name"] != "clusterwall-controller" {
			t.Errorf("%s is labelled app.kubernetes.io/name=%s", o.key, l["app.kubernetes.io/name"])
		}
	}
}

// checkNextToFirewall: the controller runs outside the cluster, so there
// is no Deployment; the token Secret is a ServiceAccount token for the
// ServiceAccount the RBAC binds, in its namespace, so the kubeconfig made
// from it has exactly the RBAC's rights.
func checkNextToFirewall(t *testing.T, objs []object) {
	checkRBAC(t, objs)
	s := typed[corev1.Secret](t, find(objs, "Secret", "clusterwall-controller-token"))
	if s.Type != corev1.SecretTypeServiceAccountToken {
		t.Errorf("token Secret has type %q, want %q", s.Type, corev1.SecretTypeServiceAccountToken)
	}
	if sa := s.Annotations[corev1.ServiceAccountNameKey]; sa != serviceAccount {
		t.Errorf("token Secret is for ServiceAccount %q, want %q", sa, serviceAccount)
	}
	if s.Namespace != namespace {
		t.Errorf("token Secret is in namespace %q, the ServiceAccount in %q", s.Namespace, namespace)
	}
	if len(s.Data)+len(s.StringData) != 0 {
		t.Error("token Secret carries data: the token controller fills it")
	}
	// kubectl applies in the build's order; a token Secret whose
	// ServiceAccount does not exist yet is deleted by the token controller.
	sa, sec := -1, -1
	for i, o := range objs {
		switch o.key {
		case "ServiceAccount/" + namespace + "/" + serviceAccount:
			sa = i
		case "Secret/" + namespace + "/clusterwall-controller-token":
			sec = i
		}
	}
	if sa < 0 || sa > sec {
		t.Errorf("the build puts the token Secret (#%d) before its ServiceAccount (#%d)", sec, sa)
	}
}

// checkInCluster: the Deployment runs the controller command as the RBAC's
// ServiceAccount, with the overlay's --daemon, leader election in the
// namespace the Role covers, the admin token mounted where --token-file
// reads it, probes on the port the controller serves them, and labels
// its selector matches.
func checkInCluster(t *testing.T, objs []object) {
	checkRBAC(t, objs)
	d := typed[appsv1.Deployment](t, find(objs, "Deployment", "clusterwall-controller"))
	ps := d.Spec.Template.Spec
	if ps.ServiceAccountName != serviceAccount {
		t.Errorf("Deployment runs as ServiceAccount %q, the RBAC binds %q", ps.ServiceAccountName, serviceAccount)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Deployment selector %v does not match its pod labels %v (%v)", d.Spec.Selector, d.Spec.Template.Labels, err)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("Deployment replicas %v: the overlay runs two with leader election", d.Spec.Replicas)
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(ps.Containers))
	}
	ctr := ps.Containers[0]
	if !strings.HasPrefix(ctr.Image, "ghcr.io/clusterwall/clusterwall:") {
		t.Errorf("image %q is not ghcr.io/clusterwall/clusterwall:TAG", ctr.Image)
	}
	flags := map[string][]string{}
	for _, a := range ctr.Args[1:] {
		name, val, _ := strings.Cut(a, "=")
		flags[name] = append(flags[name], val)
	}
	if len(ctr.Args) == 0 || ctr.Args[0] != "controller" {
		t.Fatalf("args %q do not run `clusterwall controller`", ctr.Args)
	}
	// The overlay's patch (deploy/kustomize/overlays/in-cluster).
	if got := flags["--daemon"]; !slices.Equal(got, []string{"http://10.42.2.4:9180"}) {
		t.Errorf("--daemon %q, want the overlay's [http://10.42.2.4:9180]", got)
	}
	if _, ok := flags["--leader-elect"]; !ok {
		t.Error("two replicas without --leader-elect")
	}
	if ns := flags["--leader-election-namespace"]; len(ns) > 0 && ns[0] != d.Namespace {
		t.Errorf("leader election in %q, the Role is in %q", ns[0], d.Namespace)
	}
	// --token-file must be a key of a Secret volume mounted at its directory.
	tf := flags["--token-file"]
	if len(tf) != 1 {
		t.Fatalf("--token-file %q", tf)
	}
	var mounted bool
	for _, m := range ctr.VolumeMounts {
		if m.MountPath != path.Dir(tf[0]) {
			continue
		}
		for _, v := range ps.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			key := path.Base(tf[0])
			if len(v.Secret.Items) > 0 {
				key = ""
				for _, it := range v.Secret.Items {
					if it.Path == path.Base(tf[0]) {
						key = it.Key
					}
				}
			}
			if v.Secret.SecretName == "clusterwall-admin-token" && key == "token" {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("--token-file=%s is not key \"token\" of Secret clusterwall-admin-token (docs/kubernetes.md) mounted at %s", tf[0], path.Dir(tf[0]))
	}
	// Probes reach the port the controller serves them on (default :8081).
	probe := ":8081"
	if p := flags["--health-probe-bind-address"]; len(p) > 0 {
		probe = p[0]
	}
	for _, pr := range []*corev1.Probe{ctr.LivenessProbe, ctr.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			t.Error("missing HTTP liveness/readiness probe")
			continue
		}
		port := pr.HTTPGet.Port.String()
		for _, cp := range ctr.Ports {
			if cp.Name == port {
				port = fmt.Sprint(cp.ContainerPort)
			}
		}
		if !strings.HasSuffix(probe, ":"+port) {
			t.Errorf("probe %s goes to port %s, the controller serves probes on %s", pr.HTTPGet.Path, port, probe)
		}
	}
	sc := ctr.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("container is not read-only / may escalate privileges")
	}
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
		t.Error("pod may run as root")
	}
	checkArgsAccepted(t, ctr.Args)
}

// checkArgsAccepted runs the real clusterwall binary with the Deployment's
// args and --help: cobra refuses unknown flags and bad values before it
// prints the help.
func checkArgsAccepted(t *testing.T, args []string) {
	if testing.Short() {
		t.Log("-short: not building cmd/clusterwall to check the args")
		return
	}
	bin := lab.BuildBinary(t)
	out, err := exec.Command(bin, append(slices.Clone(args), "--help")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--daemon") {
		t.Errorf("clusterwall %s --help: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// apply creates objs in the apiserver: CRDs first (waiting until they are
// established and served), then namespaces, then the rest. An object an
// earlier kustomization created is updated instead. Both with strict field
// validation.
func apply(t *testing.T, ctx context.Context, c client.Client, objs []object) (created, updated int) {
	t.Helper()
	rank := func(o object) int {
		switch o.gvk.Kind {
		case "CustomResourceDefinition":
			return 0
		case "Namespace":
			return 1
		}
		return 2
	}
	objs = slices.Clone(objs)
	slices.SortStableFunc(objs, func(a, b object) int { return rank(a) - rank(b) })
	var crds []object
	nsSeen := map[string]bool{}
	for i, o := range objs {
		if i > 0 && rank(objs[i-1]) == 0 && rank(o) > 0 {
			waitEstablished(t, ctx, c, crds)
		}
		if ns := o.u.GetNamespace(); ns != "" && !nsSeen[ns] && o.gvk.Kind != "Namespace" {
			ensureNamespace(t, ctx, c, ns)
		}
		if o.gvk.Kind == "Namespace" {
			nsSeen[o.u.GetName()] = true
		}
		u := o.u.DeepCopy()
		err := c.Create(ctx, u, client.FieldValidation("Strict"))
		switch {
		case err == nil:
			created++
		case apierrors.IsAlreadyExists(err):
			cur := &unstructured.Unstructured{}
			cur.SetGroupVersionKind(o.gvk)
			if err := c.Get(ctx, client.ObjectKeyFromObject(u), cur); err != nil {
				t.Fatalf("%s: %v", o.key, err)
			}
			u.SetResourceVersion(cur.GetResourceVersion())
			if err := c.Update(ctx, u, client.FieldValidation("Strict")); err != nil {
				t.Fatalf("kube-apiserver refuses %s (update): %v", o.key, err)
			}
			updated++
		default:
			t.Fatalf("kube-apiserver refuses %s: %v", o.key, err)
		}
		if o.gvk.Kind == "CustomResourceDefinition" {
			crds = append(crds, o)
		}
	}
	return created, updated
}

// ensureNamespace creates ns unless it exists (for manifests whose
// namespace is not among their objects).
func ensureNamespace(t *testing.T, ctx context.Context, c client.Client, ns string) {
	t.Helper()
	err := c.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
	if apierrors.IsNotFound(err) {
		t.Logf("namespace %s is not in the manifests: creating it", ns)
		err = c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// waitEstablished waits until every CRD is Established and its kinds are
// served (the client's REST mapper knows them).
func waitEstablished(t *testing.T, ctx context.Context, c client.Client, crds []object) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, o := range crds {
		for {
			cur := &unstructured.Unstructured{}
			cur.SetGroupVersionKind(o.gvk)
			err := c.Get(ctx, client.ObjectKey{Name: o.u.GetName()}, cur)
			established := false
			if err == nil {
				conds, _, _ := unstructured.NestedSlice(cur.Object, "status", "conditions")
				for _, cd := range conds {
					m, _ := cd.(map[string]any)
					if m["type"] == "Established" && m["status"] == "True" {
						established = true
					}
				}
			}
			if established {
				group, _, _ := unstructured.NestedString(cur.Object, "spec", "group")
				kind, _, _ := unstructured.NestedString(cur.Object, "spec", "names", "kind")
				_, err = c.RESTMapper().RESTMapping(schema.GroupKind{Group: group, Kind: kind})
				if err == nil {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not established and served after 30s (last error %v, status %v)", o.u.GetName(), err, cur.Object["status"])
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// checkNamespaced: every object the apiserver says is namespaced has the
// controller's namespace set in the manifest (none relies on kubectl's
// current namespace), and no cluster-scoped one has a namespace.
func checkNamespaced(t *testing.T, c client.Client, objs []object) {
	t.Helper()
	for _, o := range objs {
		nsd, err := c.IsObjectNamespaced(o.u)
		if err != nil {
			t.Fatalf("%s: %v", o.key, err)
		}
		if nsd && o.u.GetNamespace() != namespace {
			t.Errorf("namespaced %s has namespace %q, want %q", o.key, o.u.GetNamespace(), namespace)
		}
		if !nsd && o.u.GetNamespace() != "" {
			t.Errorf("cluster-scoped %s has namespace %q", o.key, o.u.GetNamespace())
		}
	}
}

// checkAccess asks the apiserver's RBAC authorizer what the controller's
// ServiceAccount may do with the RBAC as applied (docs/kubernetes.md).
func checkAccess(t *testing.T, ctx context.Context, c client.Client) {
	t.Helper()
	type ra = authorizationv1.ResourceAttributes
	cases := []struct {
		attr  ra
		allow bool
	}{
		{ra{Verb: "watch", Group: "clusterwall.io", Resource: "firewallpolicies"}, true},
		{ra{Verb: "list", Group: "clusterwall.io", Resource: "rulecollectiongroups"}, true},
		{ra{Verb: "update", Group: "clusterwall.io", Resource: "rulecollectiongroups", Subresource: "status", Namespace: "shop"}, true},
		{ra{Verb: "patch", Group: "clusterwall.io", Resource: "firewallpolicies", Subresource: "status"}, true},
		{ra{Verb: "list", Group: "discovery.k8s.io", Resource: "endpointslices"}, true},
		{ra{Verb: "watch", Resource: "pods"}, true},
		{ra{Verb: "create", Resource: "events", Namespace: "shop"}, true},
		{ra{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: namespace}, true},
		{ra{Verb: "update", Group: "clusterwall.io", Resource: "firewallpolicies"}, false},
		{ra{Verb: "update", Resource: "services", Namespace: "shop"}, false},
		{ra{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-system"}, false},
		// The ingress controller (deploy/rbac/ingress.yaml): certificates
		// from Secrets, status of Ingresses and Gateway API objects, never
		// a spec, never a Secret written.
		{ra{Verb: "list", Resource: "secrets"}, true},
		{ra{Verb: "update", Resource: "secrets", Namespace: "shop"}, false},
		{ra{Verb: "watch", Group: "networking.k8s.io", Resource: "ingresses"}, true},
		{ra{Verb: "update", Group: "networking.k8s.io", Resource: "ingresses", Subresource: "status", Namespace: "shop"}, true},
		{ra{Verb: "update", Group: "networking.k8s.io", Resource: "ingresses", Namespace: "shop"}, false},
		{ra{Verb: "patch", Group: "gateway.networking.k8s.io", Resource: "httproutes", Subresource: "status", Namespace: "shop"}, true},
		{ra{Verb: "update", Group: "gateway.networking.k8s.io", Resource: "gateways", Namespace: "shop"}, false},
		{ra{Verb: "update", Group: "clusterwall.io", Resource: "wafpolicies", Subresource: "status", Namespace: "shop"}, true},
		{ra{Verb: "list", Resource: "configmaps"}, false},
	}
	user := "system:serviceaccount:" + namespace + ":" + serviceAccount
	for _, tc := range cases {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               user,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
			ResourceAttributes: &tc.attr,
		}}
		if err := c.Create(ctx, sar); err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != tc.allow {
			t.Errorf("%s may %s %s/%s %s in %q: %v, want %v (%s)", serviceAccount, tc.attr.Verb, tc.attr.Group, tc.attr.Resource, tc.attr.Subresource, tc.attr.Namespace, sar.Status.Allowed, tc.allow, sar.Status.Reason)
		}
	}
}

// --- the real kube-apiserver (envtest), as internal/controller's tests ---

var kubeEnv kubetest.Env

func TestMain(m *testing.M) {
	code := m.Run()
	kubeEnv.Stop()
	os.Exit(code)
}

// kubeClient starts (once) an empty kube-apiserver + etcd and returns an
// admin client. Without the binaries it skips, except under CI=true.
func kubeClient(t *testing.T) client.Client {
	t.Helper()
	cfg := kubeEnv.Config(t)
	c, err := client.New(cfg, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

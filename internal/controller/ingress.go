package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
)

// The ingress controller (docs/kubernetes.md, "Ingress and Gateway API"):
// Ingresses of clusterwall's IngressClass and HTTPRoutes attached to
// Gateways of its GatewayClass become routes of the daemons' WAF. One
// reconcile composes everything (ComposeIngress), pushes the document to
// every daemon whose WAF runs another (PUT /v1/waf/kubernetes: merged
// with the WAF config file and swapped atomically there), and writes the
// status of every object: Ingress status.loadBalancer, Gateway, listener
// and HTTPRoute conditions as the Gateway API defines them, WAFPolicy
// conditions, and Warning events for what could not be served.

// IngressKey is the one reconcile request of the ingress controller.
var IngressKey = types.NamespacedName{Name: "clusterwall-ingress"}

// IngressOptions configure an IngressReconciler.
type IngressOptions struct {
	// PolicyName is the FirewallPolicy whose spec.ingress holds the
	// settings and guardrails (default "default").
	PolicyName string
	// Daemons are the admin API base URLs of the firewalls whose WAF
	// serves the routes; Token is their bearer token.
	Daemons []string
	Token   string
	HTTP    *http.Client
	// Resync is how often the daemons are checked for the document even
	// when nothing changed (default 1 min).
	Resync time.Duration
	// GatewayAPI watches GatewayClasses, Gateways, HTTPRoutes and
	// ReferenceGrants (their CRDs must be installed: see GatewayAPIInstalled).
	GatewayAPI bool
}

// IngressReconciler is the ingress controller.
type IngressReconciler struct {
	client.Client
	Recorder record.EventRecorder
	opts     IngressOptions
	daemons  []*DaemonClient

	mu     sync.Mutex
	events map[string]string // object → the problems last reported
}

// NewIngress returns an IngressReconciler for the manager's client.
func NewIngress(c client.Client, rec record.EventRecorder, o IngressOptions) *IngressReconciler {
	if o.PolicyName == "" {
		o.PolicyName = DefaultFirewallPolicyName
	}
	if o.Resync <= 0 {
		o.Resync = time.Minute
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	r := &IngressReconciler{Client: c, Recorder: rec, opts: o, events: map[string]string{}}
	for _, u := range o.Daemons {
		r.daemons = append(r.daemons, &DaemonClient{URL: u, Token: o.Token, HTTP: o.HTTP})
	}
	return r
}

// IngressCacheOptions are the manager's cache options the ingress
// controller needs: only Secrets of type kubernetes.io/tls are cached (the
// certificates; other Secrets never reach the controller's memory).
func IngressCacheOptions() cache.Options {
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}: {Field: fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS))},
	}}
}

// GatewayAPIInstalled reports whether the cluster serves the Gateway API
// kinds the controller uses (gateway.networking.k8s.io v1 GatewayClass,
// Gateway, HTTPRoute; v1beta1 ReferenceGrant).
func GatewayAPIInstalled(mgr ctrl.Manager) bool {
	for _, o := range []client.Object{&gwv1.GatewayClass{}, &gwv1.Gateway{}, &gwv1.HTTPRoute{}, &gwv1beta1.ReferenceGrant{}} {
		gvk, err := mgr.GetClient().GroupVersionKindFor(o)
		if err != nil {
			return false
		}
		if _, err := mgr.GetRESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return false
		}
	}
	return true
}

// SetupWithManager registers the controller and its watches.
func (r *IngressReconciler) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: IngressKey}}
	})
	// Objects whose status the controller writes: only spec (generation)
	// and annotation changes matter, not the controller's own writes.
	spec := builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, predicate.LabelChangedPredicate{}))
	b := ctrl.NewControllerManagedBy(mgr).
		Named("clusterwall-ingress").
		Watches(&networkingv1.IngressClass{}, all).
		Watches(&networkingv1.Ingress{}, all, spec).
		Watches(&corev1.Service{}, all).
		Watches(&discoveryv1.EndpointSlice{}, all).
		Watches(&corev1.Secret{}, all).
		Watches(&corev1.Node{}, all, builder.WithPredicates(nodePredicate())).
		Watches(&v1.WAFPolicy{}, all, spec).
		Watches(&v1.FirewallPolicy{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{},
			predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == r.opts.PolicyName })))
	if r.opts.GatewayAPI {
		b = b.Watches(&gwv1.GatewayClass{}, all, spec).
			Watches(&gwv1.Gateway{}, all, spec).
			Watches(&gwv1.HTTPRoute{}, all, spec).
			Watches(&gwv1beta1.ReferenceGrant{}, all).
			Watches(&corev1.Namespace{}, all, builder.WithPredicates(predicate.LabelChangedPredicate{}))
	}
	return b.Complete(r)
}

// nodePredicate passes node changes that change what NodePort backends
// are: addresses and readiness (not the kubelet's heartbeats).
func nodePredicate() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			a, ok1 := e.ObjectOld.(*corev1.Node)
			b, ok2 := e.ObjectNew.(*corev1.Node)
			if !ok1 || !ok2 {
				return true
			}
			return !reflect.DeepEqual(a.Status.Addresses, b.Status.Addresses) || nodeReady(a) != nodeReady(b)
		},
	}
}

// Reconcile composes the WAF document, pushes it where it differs, and
// writes every object's status.
func (r *IngressReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	if req.NamespacedName != IngressKey {
		return ctrl.Result{}, nil
	}
	in := IngressInputs{}
	began := time.Now()

	// The daemons' WAF: listeners, the file's routes, what runs.
	infos := make([]*WAFInfo, len(r.daemons))
	var reachErr error
	for i, d := range r.daemons {
		info, err := d.WAF(ctx)
		if err != nil {
			reachErr = errors.Join(reachErr, err)
			continue
		}
		infos[i] = info
		if in.Listeners == nil {
			in.Listeners, in.FileRoutes = info.Listeners, info.FileRoutes
		}
	}

	var fp v1.FirewallPolicy
	if err := r.Get(ctx, types.NamespacedName{Name: r.opts.PolicyName}, &fp); err == nil {
		in.Settings = fp.Spec.Ingress
	} else if !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	if err := r.list(ctx, &in); err != nil {
		return ctrl.Result{}, err
	}
	composeStart := time.Now()
	comp := ComposeIngress(in)
	composed := time.Since(composeStart)

	// Push.
	var pushErr error
	var rejected *RejectedError
	programmed := len(r.daemons) > 0
	for i, d := range r.daemons {
		if infos[i] == nil {
			programmed = false
			continue
		}
		if infos[i].Hash == comp.Hash {
			continue
		}
		pushStart := time.Now()
		gen, err := d.PutWAF(ctx, comp.YAML)
		if err != nil {
			programmed = false
			if rej, ok := IsRejected(err); ok {
				rejected = rej
			} else {
				pushErr = errors.Join(pushErr, err)
			}
			continue
		}
		logger.Info("WAF routes pushed", "daemon", d.URL, "generation", gen, "routes", len(comp.Doc.Routes), "hash", comp.Hash[:12],
			"sinceReconcileMs", ms(time.Since(began)), "composeMs", ms(composed), "pushMs", ms(time.Since(pushStart)))
	}
	st := programState{ok: programmed && reachErr == nil}
	switch {
	case len(r.daemons) == 0:
		st.reason, st.msg = "Pending", "no daemons configured"
	case len(in.Listeners) == 0 && reachErr == nil:
		st.reason, st.msg = "Pending", "the daemons' WAF has no listeners"
	case reachErr != nil:
		st.reason, st.msg = "Pending", reachErr.Error()
	case rejected != nil:
		st.reason, st.msg = "Invalid", rejected.Error()
	case pushErr != nil:
		st.reason, st.msg = "Pending", pushErr.Error()
	default:
		st.reason, st.msg = "Programmed", fmt.Sprintf("served by the WAF of %d daemon(s)", len(r.daemons))
	}

	// Status.
	var statusErr error
	statusErr = errors.Join(statusErr, r.ingressStatus(ctx, in.Ingresses, comp, st))
	statusErr = errors.Join(statusErr, r.wafPolicyStatus(ctx, in.WAFPolicies, comp))
	if r.opts.GatewayAPI {
		statusErr = errors.Join(statusErr, r.gatewayStatus(ctx, &in, comp, st))
	}
	r.forgetEvents(comp)
	if reachErr == nil && pushErr == nil && statusErr != nil && onlyConflicts(statusErr) {
		// Someone changed an HTTPRoute's status meanwhile (another
		// controller, or the spec): read again and redo, soon.
		return ctrl.Result{RequeueAfter: 50 * time.Millisecond}, nil
	}
	if err := errors.Join(reachErr, pushErr, statusErr); err != nil {
		if ctx.Err() != nil {
			return ctrl.Result{}, nil // shutting down
		}
		logger.Error(err, "ingress reconcile")
		return ctrl.Result{}, err // backoff
	}
	return ctrl.Result{RequeueAfter: r.opts.Resync}, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// onlyConflicts: every error joined in err is an optimistic-lock conflict.
func onlyConflicts(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !onlyConflicts(e) {
				return false
			}
		}
		return true
	}
	return apierrors.IsConflict(err)
}

// programState is whether the document runs on every daemon, and why not.
type programState struct {
	ok          bool
	reason, msg string
}

// list reads every input from the informer cache.
func (r *IngressReconciler) list(ctx context.Context, in *IngressInputs) error {
	var (
		classes  networkingv1.IngressClassList
		ings     networkingv1.IngressList
		svcs     corev1.ServiceList
		slicesL  discoveryv1.EndpointSliceList
		secrets  corev1.SecretList
		nodes    corev1.NodeList
		policies v1.WAFPolicyList
	)
	for _, l := range []client.ObjectList{&classes, &ings, &svcs, &slicesL, &secrets, &nodes, &policies} {
		if err := r.List(ctx, l); err != nil {
			return err
		}
	}
	in.IngressClasses, in.Ingresses, in.Services, in.Slices, in.Nodes, in.WAFPolicies = classes.Items, ings.Items, svcs.Items, slicesL.Items, nodes.Items, policies.Items
	for _, s := range secrets.Items {
		if s.Type == corev1.SecretTypeTLS {
			in.Secrets = append(in.Secrets, s)
		}
	}
	if !r.opts.GatewayAPI {
		return nil
	}
	var (
		gcs    gwv1.GatewayClassList
		gws    gwv1.GatewayList
		routes gwv1.HTTPRouteList
		grants gwv1beta1.ReferenceGrantList
		nss    corev1.NamespaceList
	)
	for _, l := range []client.ObjectList{&gcs, &gws, &routes, &grants, &nss} {
		if err := r.List(ctx, l); err != nil {
			return err
		}
	}
	in.GatewayClasses, in.Gateways, in.HTTPRoutes, in.ReferenceGrants, in.Namespaces = gcs.Items, gws.Items, routes.Items, grants.Items, nss.Items
	return nil
}

// ingressStatus sets status.loadBalancer.ingress of the Ingresses the WAF
// serves to the firewall's ingress addresses (and clears it on those it
// no longer serves), and reports problems as Warning events.
func (r *IngressReconciler) ingressStatus(ctx context.Context, ings []networkingv1.Ingress, comp *IngressComposition, st programState) error {
	want := loadBalancerStatus(comp.Addresses)
	var errs error
	for i := range ings {
		ing := &ings[i]
		key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
		res, ours := comp.Ingresses[key]
		var lb []networkingv1.IngressLoadBalancerIngress
		switch {
		case ours && st.ok && res.Routes > 0:
			lb = want
		case ours && !st.ok && st.reason == "Pending":
			// A daemon out of reach says nothing about what it serves:
			// the status stays until it answers again.
			lb = ing.Status.LoadBalancer.Ingress
		case ours:
			lb = nil
		case sameLB(ing.Status.LoadBalancer.Ingress, want):
			lb = nil // no longer ours: take our addresses back
		default:
			continue // another controller's
		}
		if !sameLB(ing.Status.LoadBalancer.Ingress, lb) {
			orig := ing.DeepCopy()
			ing.Status.LoadBalancer.Ingress = lb
			// A merge patch of the status alone: the Ingress's spec may
			// change meanwhile (status.loadBalancer is the controller's).
			errs = errors.Join(errs, ignoreGone(r.Status().Patch(ctx, ing, client.MergeFrom(orig))))
		}
		if ours {
			r.report(ing, "Ingress/"+key.String(), res.Problems, st, res.Routes)
		}
	}
	return errs
}

// report emits an Ingress's problems as Warning events (each once while
// it lasts) and a Normal event when it becomes served.
func (r *IngressReconciler) report(obj client.Object, key string, problems []string, st programState, routes int) {
	if r.Recorder == nil {
		return
	}
	summary := strings.Join(problems, "\n")
	served := st.ok && routes > 0
	if served {
		summary += fmt.Sprintf("\nserved: %d route(s)", routes)
	}
	r.mu.Lock()
	prev, seen := r.events[key]
	r.events[key] = summary
	r.mu.Unlock()
	if seen && prev == summary {
		return
	}
	for _, p := range problems {
		if !strings.Contains(prev, p) {
			r.Recorder.Event(obj, corev1.EventTypeWarning, eventReason(p), p)
		}
	}
	if served && !strings.Contains(prev, "served:") {
		r.Recorder.Eventf(obj, corev1.EventTypeNormal, "Programmed", "served by the WAF with %d route(s)", routes)
	}
}

// forgetEvents drops what was reported about objects that are gone (or
// no longer clusterwall's).
func (r *IngressReconciler) forgetEvents(comp *IngressComposition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.events {
		kind, name, _ := strings.Cut(k, "/")
		ns, n, _ := strings.Cut(name, "/")
		key := types.NamespacedName{Namespace: ns, Name: n}
		switch {
		case kind == "Ingress" && comp.Ingresses[key] != nil:
		case kind == "HTTPRoute" && comp.HTTPRoutes[key] != nil:
		default:
			delete(r.events, k)
		}
	}
}

// eventReason classifies a problem for its event.
func eventReason(p string) string {
	switch {
	case strings.Contains(p, "claimed it first"):
		return "Conflict"
	case strings.Contains(p, "WAFPolicy"):
		return "WAFPolicyNotUsed"
	case strings.Contains(p, "Secret"), strings.Contains(p, "certificate"):
		return "InvalidCertificate"
	case strings.Contains(p, "Service"):
		return "BackendNotReady"
	}
	return "Invalid"
}

func loadBalancerStatus(addrs []string) []networkingv1.IngressLoadBalancerIngress {
	var out []networkingv1.IngressLoadBalancerIngress
	for _, a := range addrs {
		if net.ParseIP(a) != nil {
			out = append(out, networkingv1.IngressLoadBalancerIngress{IP: a})
		} else {
			out = append(out, networkingv1.IngressLoadBalancerIngress{Hostname: a})
		}
	}
	return out
}

func sameLB(a, b []networkingv1.IngressLoadBalancerIngress) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

// wafPolicyStatus writes each WAFPolicy's Accepted condition, errors and users.
func (r *IngressReconciler) wafPolicyStatus(ctx context.Context, ps []v1.WAFPolicy, comp *IngressComposition) error {
	var errs error
	for i := range ps {
		p := &ps[i]
		res := comp.WAFPolicies[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}]
		if res == nil {
			continue
		}
		st := p.Status.DeepCopy()
		st.ObservedGeneration = p.Generation
		st.Errors = res.Errors
		st.UsedBy = slices.Clone(res.UsedBy)
		reason := res.Reason
		setCond(&st.Conditions, p.Generation, v1.ConditionAccepted, res.Accepted, reason, res.message())
		if reflect.DeepEqual(&p.Status, st) {
			continue
		}
		orig := p.DeepCopy()
		p.Status = *st
		errs = errors.Join(errs, ignoreGone(r.Status().Patch(ctx, p, client.MergeFrom(orig))))
	}
	return errs
}

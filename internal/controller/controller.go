// Package controller is clusterwall's Kubernetes controller: it watches the
// clusterwall.io FirewallPolicy and RuleCollectionGroups, LoadBalancer
// Services annotated clusterwall.io/publish, and Pods / EndpointSlices for
// sourceSelectors; composes one policy (internal/policy's format, checked
// by the same validator as `clusterwall policy validate`); pushes it to the
// daemons' admin API (POST /v1/apply) when it changed; and reports on every
// object in status.conditions (Accepted, Programmed) with the validator's
// message and the object's field path. Built on
// sigs.k8s.io/controller-runtime (manager, cache, leader election).
package controller

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// NewScheme returns a scheme with the core Kubernetes types and clusterwall.io/v1alpha1.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1.AddToScheme(s); err != nil {
		return nil, err
	}
	// The Gateway API (ingress.go); a cluster without its CRDs is fine.
	if err := gwv1.Install(s); err != nil {
		return nil, err
	}
	if err := gwv1beta1.Install(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Options configure a Reconciler.
type Options struct {
	// PolicyName is the FirewallPolicy this controller programs (default "default").
	PolicyName string
	// Daemons are the admin API base URLs of the firewalls that run it.
	Daemons []string
	// Token is the admin API bearer token.
	Token string
	// HTTP is the client for the admin API (default: 10 s timeout).
	HTTP *http.Client
	// PolicyOptions are the validator's options (--service-tags), as the daemon's.
	PolicyOptions policy.Options
	// Resync is how often a daemon's generation is checked even when
	// nothing changed, to re-apply after a daemon restart (default 1 min).
	Resync time.Duration
}

// Reconciler reconciles one FirewallPolicy (and everything that feeds it)
// into the daemons.
type Reconciler struct {
	client.Client
	Recorder record.EventRecorder
	opts     Options
	daemons  []*DaemonClient

	mu      sync.Mutex
	applied map[string]appliedState // daemon URL -> last applied
	svcMsgs map[types.NamespacedName]string
}

type appliedState struct {
	hash       string
	generation int64
	checked    time.Time
}

// New returns a Reconciler for the manager's client.
func New(c client.Client, rec record.EventRecorder, o Options) *Reconciler {
	if o.PolicyName == "" {
		o.PolicyName = DefaultFirewallPolicyName
	}
	if o.Resync <= 0 {
		o.Resync = time.Minute
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	r := &Reconciler{Client: c, Recorder: rec, opts: o, applied: map[string]appliedState{}, svcMsgs: map[types.NamespacedName]string{}}
	for _, u := range o.Daemons {
		r.daemons = append(r.daemons, &DaemonClient{URL: u, Token: o.Token, HTTP: o.HTTP})
	}
	return r
}

// SetupWithManager registers the controller and its watches.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: r.opts.PolicyName}}}
	})
	specOnly := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).
		Named("clusterwall").
		For(&v1.FirewallPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{},
			predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == r.opts.PolicyName }))).
		Watches(&v1.RuleCollectionGroup{}, all, specOnly).
		// A base policy's changes change this one.
		Watches(&v1.FirewallPolicy{}, all, specOnly).
		Watches(&corev1.Service{}, all, builder.WithPredicates(servicePredicate())).
		Watches(&corev1.Pod{}, all, builder.WithPredicates(podPredicate())).
		Watches(&discoveryv1.EndpointSlice{}, all).
		Complete(r)
}

// servicePredicate passes Services that are or were published.
func servicePredicate() predicate.Predicate {
	annotated := func(o client.Object) bool {
		_, ok := o.GetAnnotations()[v1.AnnotationPublish]
		return ok
	}
	return predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool { return annotated(e.Object) },
		DeleteFunc: func(e event.DeleteEvent) bool { return annotated(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool { return annotated(e.ObjectOld) || annotated(e.ObjectNew) },
	}
}

// podPredicate passes pod changes that can change a selector's addresses.
func podPredicate() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			a, ok1 := e.ObjectOld.(*corev1.Pod)
			b, ok2 := e.ObjectNew.(*corev1.Pod)
			if !ok1 || !ok2 {
				return true
			}
			return !reflect.DeepEqual(a.Labels, b.Labels) || a.Status.PodIP != b.Status.PodIP ||
				!reflect.DeepEqual(a.Status.PodIPs, b.Status.PodIPs) || a.Status.Phase != b.Status.Phase ||
				(a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil)
		},
	}
}

// Reconcile composes the policy, applies it where it changed and writes
// every object's status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	if req.Name != r.opts.PolicyName {
		return ctrl.Result{}, nil
	}
	var groups v1.RuleCollectionGroupList
	if err := r.List(ctx, &groups); err != nil {
		return ctrl.Result{}, err
	}
	mine := groups.Items[:0]
	for _, g := range groups.Items {
		name := g.Spec.FirewallPolicy
		if name == "" {
			name = DefaultFirewallPolicyName
		}
		if name == r.opts.PolicyName {
			mine = append(mine, g)
		}
	}

	var fp v1.FirewallPolicy
	if err := r.Get(ctx, types.NamespacedName{Name: r.opts.PolicyName}, &fp); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		msg := fmt.Sprintf("FirewallPolicy %q does not exist", r.opts.PolicyName)
		for i := range mine {
			v := Verdict{Reason: v1.ReasonNoFirewallPolicy, Errors: []v1.FieldError{{Field: "spec.firewallPolicy", Message: msg}}}
			if err := r.groupStatus(ctx, &mine[i], v, false, v1.ReasonPending, msg); err != nil {
				return ctrl.Result{}, err
			}
		}
		return ctrl.Result{}, nil
	}

	in := Inputs{Policy: &fp, Groups: mine, Options: r.opts.PolicyOptions}
	if err := r.baseChain(ctx, &fp, &in); err != nil {
		return ctrl.Result{}, err
	}
	var pods corev1.PodList
	var slicesList discoveryv1.EndpointSliceList
	var svcs corev1.ServiceList
	for _, l := range []client.ObjectList{&pods, &slicesList, &svcs} {
		if err := r.List(ctx, l); err != nil {
			return ctrl.Result{}, err
		}
	}
	in.Pods, in.Slices, in.Services = pods.Items, slicesList.Items, svcs.Items
	comp := Compose(in)

	// Apply.
	var (
		applyErr   error
		rejected   *RejectedError
		generation int64
		programmed = comp.File != nil && len(r.daemons) > 0
	)
	if comp.File != nil {
		for _, d := range r.daemons {
			gen, err := r.apply(ctx, d, comp)
			if err != nil {
				programmed = false
				if rej, ok := IsRejected(err); ok {
					rejected = rej
				} else if applyErr == nil {
					applyErr = err
				}
				continue
			}
			if generation == 0 {
				generation = gen
			}
		}
	}
	if applyErr != nil {
		logger.Error(applyErr, "applying the policy")
	}

	// Status: FirewallPolicy.
	st := fp.Status.DeepCopy()
	st.ObservedGeneration = fp.Generation
	st.Errors = comp.Policy.Errors
	setCond(&st.Conditions, fp.Generation, v1.ConditionAccepted, comp.Policy.Accepted, reasonOr(comp.Policy, v1.ReasonAccepted), orDefault(comp.Policy.Message(), "the policy is valid"))
	var progReason, progMsg string
	switch {
	case comp.File == nil:
		progReason, progMsg = v1.ReasonNotProgrammedHere, "not programmed: the FirewallPolicy is not accepted (the daemons keep the last good policy)"
	case len(r.daemons) == 0:
		progReason, progMsg = v1.ReasonPending, "no daemons configured"
	case rejected != nil:
		progReason = v1.ReasonRejectedByDaemon
		var fes []v1.FieldError
		for _, e := range rejected.Errors {
			fes = append(fes, r.mapDaemonError(comp, e))
		}
		st.Errors = append(st.Errors, fes...)
		progMsg = Verdict{Errors: fes}.Message()
	case applyErr != nil:
		progReason, progMsg = v1.ReasonApplyFailed, applyErr.Error()
	default:
		progReason, progMsg = v1.ReasonProgrammed, fmt.Sprintf("applied to %d daemon(s)", len(r.daemons))
	}
	setCond(&st.Conditions, fp.Generation, v1.ConditionProgrammed, programmed, progReason, progMsg)
	if programmed {
		st.PolicyHash = comp.Hash
		st.DaemonGeneration = generation
	}
	if comp.File != nil {
		st.Groups = st.Groups[:0]
		// Inherited groups first: they are processed before the policy's own.
		var inherited []string
		for b := comp.File.BasePolicy; b != nil && b.Policy != nil; b = b.Policy.BasePolicy {
			var names []string
			bgs := slices.Clone(b.Policy.RuleCollectionGroups)
			sort.SliceStable(bgs, func(i, j int) bool { return bgs[i].Priority < bgs[j].Priority })
			for _, g := range bgs {
				names = append(names, b.Policy.Name+":"+g.Name)
			}
			inherited = append(names, inherited...)
		}
		st.Groups = append(st.Groups, inherited...)
		gs := slices.Clone(comp.File.RuleCollectionGroups)
		sort.SliceStable(gs, func(i, j int) bool { return gs[i].Priority < gs[j].Priority })
		for _, g := range gs {
			st.Groups = append(st.Groups, g.Name)
		}
		st.PublishedServices = nil
		for k, v := range comp.Services {
			if v.Published {
				st.PublishedServices = append(st.PublishedServices, k.String())
			}
		}
		sort.Strings(st.PublishedServices)
	}
	if !reflect.DeepEqual(&fp.Status, st) {
		fp.Status = *st
		if err := r.Status().Update(ctx, &fp); err != nil {
			return ctrl.Result{}, err
		}
	}

	// Status: RuleCollectionGroups.
	for i := range mine {
		g := &mine[i]
		key := types.NamespacedName{Namespace: g.Namespace, Name: g.Name}
		v, ok := comp.Groups[key]
		if !ok {
			v = Verdict{Reason: v1.ReasonPending, Errors: []v1.FieldError{{Message: "the FirewallPolicy is not accepted: " + comp.Policy.Message()}}}
		}
		gProg, gReason, gMsg := programmed && v.Accepted, progReason, progMsg
		if !v.Accepted {
			gReason, gMsg = v1.ReasonNotProgrammedHere, "not programmed: the group is not accepted"
		}
		if rejected != nil && v.Accepted {
			// Blame the group only for the daemon's errors in it.
			var own []v1.FieldError
			for _, e := range rejected.Errors {
				if fe, o := r.mapDaemonErrorTo(comp, e); o.Name == key {
					own = append(own, fe)
				}
			}
			if len(own) > 0 {
				v.Errors = own
			}
		}
		if err := r.groupStatus(ctx, g, v, gProg, gReason, gMsg); err != nil {
			return ctrl.Result{}, err
		}
	}

	// Events on Services whose publication changed.
	r.serviceEvents(ctx, comp, svcs.Items)

	if applyErr != nil {
		// The workqueue's rate limiter backs off exponentially.
		return ctrl.Result{}, applyErr
	}
	return ctrl.Result{RequeueAfter: r.opts.Resync}, nil
}

// apply sends comp to d unless d already runs it (same hash, and the
// daemon's generation unchanged since the last check).
func (r *Reconciler) apply(ctx context.Context, d *DaemonClient, comp *Composition) (int64, error) {
	r.mu.Lock()
	last := r.applied[d.URL]
	r.mu.Unlock()
	if last.hash == comp.Hash {
		if time.Since(last.checked) < r.opts.Resync {
			return last.generation, nil
		}
		gen, err := d.Generation(ctx)
		if err == nil && gen == last.generation {
			last.checked = time.Now()
			r.mu.Lock()
			r.applied[d.URL] = last
			r.mu.Unlock()
			return gen, nil
		}
		// Restarted, or someone else applied: apply again.
	}
	gen, err := d.Apply(ctx, comp.YAML)
	if err != nil {
		return 0, err
	}
	log.FromContext(ctx).Info("policy applied", "daemon", d.URL, "generation", gen, "hash", comp.Hash[:12])
	r.mu.Lock()
	r.applied[d.URL] = appliedState{hash: comp.Hash, generation: gen, checked: time.Now()}
	r.mu.Unlock()
	return gen, nil
}

func (r *Reconciler) mapDaemonError(comp *Composition, de DaemonError) v1.FieldError {
	fe, _ := r.mapDaemonErrorTo(comp, de)
	return fe
}

// mapDaemonErrorTo maps a daemon's error message to the object and field it
// is about.
func (r *Reconciler) mapDaemonErrorTo(comp *Composition, de DaemonError) (v1.FieldError, Origin) {
	path, ok := de.Locate(comp.YAML)
	text := de.Message
	if !ok {
		return v1.FieldError{Message: text}, Origin{}
	}
	o, field := comp.MapPath(path)
	if o.Kind == "RuleCollectionGroup" {
		return v1.FieldError{Field: field, Message: text}, o
	}
	if o.Kind == "Service" {
		return v1.FieldError{Field: "spec.serviceDNAT", Message: text}, o
	}
	return v1.FieldError{Field: field, Message: text}, o
}

func (r *Reconciler) groupStatus(ctx context.Context, g *v1.RuleCollectionGroup, v Verdict, programmed bool, progReason, progMsg string) error {
	st := g.Status.DeepCopy()
	st.ObservedGeneration = g.Generation
	st.Errors = v.Errors
	if v.Accepted {
		st.Errors = nil
	}
	setCond(&st.Conditions, g.Generation, v1.ConditionAccepted, v.Accepted, reasonOr(v, v1.ReasonAccepted), orDefault(v.Message(), "the group is valid and within the FirewallPolicy's guardrails"))
	setCond(&st.Conditions, g.Generation, v1.ConditionProgrammed, programmed, progReason, progMsg)
	if reflect.DeepEqual(&g.Status, st) {
		return nil
	}
	g.Status = *st
	return r.Status().Update(ctx, g)
}

func (r *Reconciler) serviceEvents(ctx context.Context, comp *Composition, svcs []corev1.Service) {
	if r.Recorder == nil {
		return
	}
	for i := range svcs {
		s := &svcs[i]
		key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
		v, ok := comp.Services[key]
		r.mu.Lock()
		prev := r.svcMsgs[key]
		if ok {
			r.svcMsgs[key] = v.Message
		}
		r.mu.Unlock()
		if !ok || prev == v.Message {
			continue
		}
		if v.Published {
			r.Recorder.Event(s, corev1.EventTypeNormal, "Published", v.Message)
		} else {
			r.Recorder.Event(s, corev1.EventTypeWarning, "NotPublished", v.Message)
		}
	}
}

func setCond(conds *[]metav1.Condition, gen int64, typ string, ok bool, reason, msg string) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	if len(msg) > 32000 {
		msg = msg[:32000]
	}
	meta.SetStatusCondition(conds, metav1.Condition{Type: typ, Status: status, ObservedGeneration: gen, Reason: reason, Message: msg})
}

func reasonOr(v Verdict, ok string) string {
	if v.Accepted {
		return ok
	}
	return orDefault(v.Reason, v1.ReasonInvalid)
}

func orDefault(s, d string) string {
	if strings.TrimSpace(s) == "" {
		return d
	}
	return s
}

// maxBases bounds a chain of base FirewallPolicies.
const maxBases = 8

// baseChain reads the FirewallPolicies fp inherits from into in.
func (r *Reconciler) baseChain(ctx context.Context, fp *v1.FirewallPolicy, in *Inputs) error {
	seen := map[string]bool{fp.Name: true}
	for name := fp.Spec.BasePolicy; name != ""; {
		if seen[name] {
			in.BaseError = fmt.Sprintf("the chain of base policies comes back to FirewallPolicy %q", name)
			return nil
		}
		if len(in.Bases) >= maxBases {
			in.BaseError = fmt.Sprintf("base policies nested more than %d deep", maxBases)
			return nil
		}
		seen[name] = true
		var b v1.FirewallPolicy
		if err := r.Get(ctx, types.NamespacedName{Name: name}, &b); err != nil {
			if apierrors.IsNotFound(err) {
				in.BaseError = fmt.Sprintf("the base FirewallPolicy %q does not exist", name)
				return nil
			}
			return err
		}
		in.Bases = append(in.Bases, &b)
		name = b.Spec.BasePolicy
	}
	return nil
}

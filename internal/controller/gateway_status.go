package controller

import (
	"context"
	"errors"
	"reflect"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
)

// gatewayStatus writes the status of clusterwall's GatewayClasses, their
// Gateways (addresses, conditions, listeners) and the HTTPRoutes attached
// to them (one status.parents entry per parentRef of those Gateways),
// with the conditions and reasons of the Gateway API.
func (r *IngressReconciler) gatewayStatus(ctx context.Context, in *IngressInputs, comp *IngressComposition, st programState) error {
	var errs error
	for i := range in.GatewayClasses {
		gc := &in.GatewayClasses[i]
		res := comp.GatewayClasses[gc.Name]
		if res == nil {
			continue
		}
		s := gc.Status.DeepCopy()
		setCond(&s.Conditions, gc.Generation, string(gwv1.GatewayClassConditionStatusAccepted), res.Accepted, res.Reason, res.Message)
		if !reflect.DeepEqual(&gc.Status, s) {
			orig := gc.DeepCopy()
			gc.Status = *s
			errs = errors.Join(errs, ignoreGone(r.Status().Patch(ctx, gc, client.MergeFrom(orig))))
		}
	}
	for i := range in.Gateways {
		g := &in.Gateways[i]
		res := comp.Gateways[types.NamespacedName{Namespace: g.Namespace, Name: g.Name}]
		if res == nil {
			continue
		}
		s := gatewayStatusOf(g, res, comp, st)
		if !reflect.DeepEqual(&g.Status, s) {
			// The Gateway's status is the controller's alone: a merge patch.
			orig := g.DeepCopy()
			g.Status = *s
			errs = errors.Join(errs, ignoreGone(r.Status().Patch(ctx, g, client.MergeFrom(orig))))
		}
	}
	for i := range in.HTTPRoutes {
		rt := &in.HTTPRoutes[i]
		key := types.NamespacedName{Namespace: rt.Namespace, Name: rt.Name}
		res := comp.HTTPRoutes[key]
		s := httpRouteStatusOf(rt, res)
		if !reflect.DeepEqual(&rt.Status, s) {
			// Other controllers may write status.parents too: an update
			// (read-modify-write, optimistic lock), as the Gateway API asks.
			rt.Status = *s
			errs = errors.Join(errs, ignoreGone(r.Status().Update(ctx, rt)))
		}
		if res != nil {
			r.report(rt, "HTTPRoute/"+key.String(), res.Problems, st, res.Routes)
		}
	}
	return errs
}

func ignoreGone(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// gatewayStatusOf is the status of Gateway g.
func gatewayStatusOf(g *gwv1.Gateway, res *GatewayResult, comp *IngressComposition, st programState) *gwv1.GatewayStatus {
	s := g.Status.DeepCopy()
	gen := g.Generation
	s.Addresses = nil
	for _, a := range comp.Addresses {
		s.Addresses = append(s.Addresses, gwv1.GatewayStatusAddress{Type: ptrTo(gwv1.IPAddressType), Value: a})
	}
	setCond(&s.Conditions, gen, string(gwv1.GatewayConditionAccepted), res.Accepted, res.AcceptedReason, res.AcceptedMsg)
	prog, reason, msg := true, string(gwv1.GatewayReasonProgrammed), st.msg
	switch {
	case !res.Accepted:
		prog, reason, msg = false, string(gwv1.GatewayReasonInvalid), "the Gateway is not accepted: "+res.AcceptedMsg
	case !res.AddressOK:
		prog, reason, msg = false, res.AddressReason, res.AddressMsg
	case !st.ok:
		prog, reason = false, st.reason
	case res.programmedListeners == 0:
		prog, reason, msg = false, string(gwv1.GatewayReasonInvalid), "no listener can be programmed"
	case len(comp.Addresses) == 0:
		prog, reason, msg = false, string(gwv1.GatewayReasonAddressNotAssigned), "the WAF's listeners have no address to report (set spec.ingress.addresses in the FirewallPolicy)"
	}
	setCond(&s.Conditions, gen, string(gwv1.GatewayConditionProgrammed), prog, reason, msg)

	old := map[gwv1.SectionName][]metav1.Condition{}
	for _, l := range s.Listeners {
		old[l.Name] = l.Conditions
	}
	s.Listeners = nil
	for _, l := range res.Listeners {
		conds := old[gwv1.SectionName(l.Name)]
		setCond(&conds, gen, string(gwv1.ListenerConditionAccepted), l.Accepted, l.AcceptedReason, l.AcceptMsg)
		setCond(&conds, gen, string(gwv1.ListenerConditionResolvedRefs), l.ResolvedRefs, l.RefsReason, l.RefsMsg)
		if l.Conflicted {
			setCond(&conds, gen, string(gwv1.ListenerConditionConflicted), true, l.ConflictReason, l.ConfMsg)
		} else {
			setCond(&conds, gen, string(gwv1.ListenerConditionConflicted), false, string(gwv1.ListenerReasonNoConflicts), "no conflicts")
		}
		lprog, lreason, lmsg := true, string(gwv1.ListenerReasonProgrammed), st.msg
		switch {
		case !l.Programmable:
			why := l.ProgramMsg
			if why == "" {
				why = l.AcceptMsg
				if !res.Accepted {
					why = "the Gateway is not accepted"
				}
			}
			lprog, lreason, lmsg = false, string(gwv1.ListenerReasonInvalid), why
		case !st.ok:
			lprog, lreason = false, string(gwv1.ListenerReasonPending)
		}
		setCond(&conds, gen, string(gwv1.ListenerConditionProgrammed), lprog, lreason, lmsg)
		if l.Overlapping != "" {
			setCond(&conds, gen, string(gwv1.ListenerConditionOverlappingTLSConfig), true, l.Overlapping, l.OverlapMsg)
		} else {
			meta.RemoveStatusCondition(&conds, string(gwv1.ListenerConditionOverlappingTLSConfig)) // negative polarity: never False
		}
		s.Listeners = append(s.Listeners, gwv1.ListenerStatus{Name: gwv1.SectionName(l.Name), SupportedKinds: l.SupportedKinds,
			AttachedRoutes: l.AttachedRoutes, Conditions: conds})
	}
	return s
}

func ptrTo[T any](v T) *T { return &v }

// httpRouteStatusOf is the status of HTTPRoute rt: the entries of other
// controllers kept as they are, clusterwall's one per parentRef of its
// Gateways (none when res is nil).
func httpRouteStatusOf(rt *gwv1.HTTPRoute, res *HTTPRouteResult) *gwv1.HTTPRouteStatus {
	s := rt.Status.DeepCopy()
	gen := rt.Generation
	var others []gwv1.RouteParentStatus
	old := map[int][]metav1.Condition{}
	for _, p := range s.Parents {
		if p.ControllerName != v1.GatewayControllerName {
			others = append(others, p)
			continue
		}
		if res == nil {
			continue
		}
		for i, np := range res.Parents {
			if reflect.DeepEqual(p.ParentRef, np.Ref) {
				old[i] = p.Conditions
			}
		}
	}
	s.Parents = others
	if res == nil {
		if len(s.Parents) == 0 {
			s.Parents = nil
		}
		return s
	}
	for i, p := range res.Parents {
		conds := old[i]
		setCond(&conds, gen, string(gwv1.RouteConditionAccepted), p.Accepted, p.AcceptedReason, p.AcceptedMsg)
		setCond(&conds, gen, string(gwv1.RouteConditionResolvedRefs), p.ResolvedRefs, p.RefsReason, p.RefsMsg)
		if p.PartiallyInvalid != "" {
			setCond(&conds, gen, string(gwv1.RouteConditionPartiallyInvalid), true, string(gwv1.RouteReasonUnsupportedValue), p.PartiallyInvalid)
		} else {
			meta.RemoveStatusCondition(&conds, string(gwv1.RouteConditionPartiallyInvalid)) // only ever True
		}
		if len(p.Conflicts) > 0 {
			setCond(&conds, gen, ConditionConflicted, true, "ShadowedByOlderRoute", strings.Join(p.Conflicts, "; "))
		} else {
			meta.RemoveStatusCondition(&conds, ConditionConflicted)
		}
		s.Parents = append(s.Parents, gwv1.RouteParentStatus{ParentRef: p.Ref, ControllerName: v1.GatewayControllerName, Conditions: conds})
	}
	return s
}

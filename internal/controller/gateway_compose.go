package controller

import (
	"context"
	"k8s.io/apimachinery/pkg/types"
)

// GatewayClassResult, GatewayResult and HTTPRouteResult: filled by the
// Gateway API composition.
type GatewayClassResult struct{}

// GatewayResult is what became of a Gateway.
type GatewayResult struct{}

// HTTPRouteResult is what became of an HTTPRoute.
type HTTPRouteResult struct{}

var _ = types.NamespacedName{}

func (c *composer) gateways() {}

func (r *IngressReconciler) gatewayStatus(ctx context.Context, in *IngressInputs, comp *IngressComposition, st programState) error {
	return nil
}

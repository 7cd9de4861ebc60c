// Package v1alpha1 is the clusterwall.io/v1alpha1 Kubernetes API: the
// cluster-scoped FirewallPolicy (settings, the platform's own rule
// collection groups, the guardrails for teams, automatic DNAT for
// Services) and the namespaced RuleCollectionGroup that application teams
// own. internal/controller composes them into one policy in the format of
// internal/policy and pushes it to the daemons. The CRD manifests in
// deploy/crds are generated from these types by controller-gen
// (`make crds`); a test checks that they are in step.
//
// +kubebuilder:object:generate=true
// +groupName=clusterwall.io
package v1alpha1

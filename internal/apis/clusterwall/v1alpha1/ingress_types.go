package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The ingress controller's names (docs/kubernetes.md, "Ingress and
// Gateway API").
const (
	// IngressControllerName is the spec.controller of clusterwall's
	// IngressClass.
	IngressControllerName = "clusterwall.io/ingress-controller"
	// GatewayControllerName is the spec.controllerName of clusterwall's
	// GatewayClass.
	GatewayControllerName = "clusterwall.io/gateway-controller"
)

// Annotations read by the ingress controller.
const (
	// AnnotationWAFPolicy on an Ingress names the WAFPolicy (in the
	// Ingress's namespace) its routes are inspected with.
	AnnotationWAFPolicy = "clusterwall.io/waf-policy"
	// AnnotationSSLRedirect on an Ingress: "true" (default for the hosts
	// its spec.tls covers) answers plain HTTP for those hosts with a 308
	// redirect to HTTPS; "false" serves them on both.
	AnnotationSSLRedirect = "clusterwall.io/ssl-redirect"
	// AnnotationBackend on a Service: "NodePort" sends the WAF's requests
	// to the nodes' InternalIP and the Service's nodePort instead of the
	// pods (for clusters whose pod addresses the firewall cannot reach).
	AnnotationBackend = "clusterwall.io/backend"
)

// Reasons of a WAFPolicy's Accepted condition, besides ReasonAccepted,
// ReasonInvalid and ReasonGuardrail.
const (
	ReasonUnused = "Unused" // valid, but no Ingress or HTTPRoute names it
)

// WAFMode is what a WAF policy does with requests the rules flag.
// +kubebuilder:validation:Enum=Prevention;Detection;Off
type WAFMode string

// IngressSettings are the platform's settings for the ingress controller
// (FirewallPolicy spec.ingress).
type IngressSettings struct {
	// Addresses are reported in Ingress status.loadBalancer.ingress and
	// Gateway status.addresses. Default: the addresses of the WAF's
	// listeners (the firewall's ingress public IPs).
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Addresses []string `json:"addresses,omitempty"`
	// WAFPolicies limits what the teams' WAFPolicy objects may do. Without
	// it the defaults apply: Prevention only, paranoia level at least 1,
	// inbound anomaly threshold at most 5, no exclusions, no custom rules.
	// +optional
	WAFPolicies *WAFGuardrails `json:"wafPolicies,omitempty"`
}

// WAFGuardrails are the platform's limits on WAFPolicy objects. A
// WAFPolicy outside them is not accepted, and the routes naming it are
// not served with it (docs/kubernetes.md).
type WAFGuardrails struct {
	// AllowedModes (default [Prevention]). Detection lets a team log
	// without blocking; Off lets it turn inspection off.
	// +optional
	// +listType=set
	AllowedModes []WAFMode `json:"allowedModes,omitempty"`
	// MinParanoiaLevel is the lowest CRS paranoia level a team may choose
	// (default 1).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4
	MinParanoiaLevel *int32 `json:"minParanoiaLevel,omitempty"`
	// MaxInboundAnomalyThreshold is the highest inbound anomaly threshold a
	// team may set (default 5, the CRS default).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	MaxInboundAnomalyThreshold *int32 `json:"maxInboundAnomalyThreshold,omitempty"`
	// AllowExclusions lets teams remove CRS rules or targets (default
	// false). Exclusions of the CRS's initialization or blocking
	// evaluation rules (900000-901999, 949000-949999, 959000-959999,
	// 980000-980999) turn blocking off and need mode Off allowed as well.
	// +optional
	AllowExclusions bool `json:"allowExclusions,omitempty"`
	// AllowCustomRules lets teams add SecLang rules (default false: a
	// rule can switch the engine off).
	// +optional
	AllowCustomRules bool `json:"allowCustomRules,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=wafp,categories=clusterwall
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Paranoia",type=integer,JSONPath=`.spec.paranoiaLevel`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// WAFPolicy is a team's WAF policy (mode, paranoia level, exclusions,
// custom rules) for its Ingresses (annotation clusterwall.io/waf-policy)
// and HTTPRoutes (an ExtensionRef filter naming it), limited by the
// FirewallPolicy's spec.ingress.wafPolicies guardrails.
type WAFPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   WAFPolicySpec   `json:"spec,omitempty"`
	Status WAFPolicyStatus `json:"status,omitempty"`
}

// WAFPolicySpec is a WAF policy in the WAF config's terms (docs/waf.md,
// "Policies").
type WAFPolicySpec struct {
	// Mode (default Prevention).
	// +optional
	// +kubebuilder:default=Prevention
	Mode WAFMode `json:"mode,omitempty"`
	// ParanoiaLevel is the CRS paranoia level (default 1).
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4
	ParanoiaLevel int32 `json:"paranoiaLevel,omitempty"`
	// InboundAnomalyThreshold (default 5).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	InboundAnomalyThreshold int32 `json:"inboundAnomalyThreshold,omitempty"`
	// OutboundAnomalyThreshold (default 4).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	OutboundAnomalyThreshold int32 `json:"outboundAnomalyThreshold,omitempty"`
	// RequestBodyLimit, e.g. 12MiB (default 12.5 MiB).
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9]+\s*([KMG]i?B?|B)?$`
	RequestBodyLimit string `json:"requestBodyLimit,omitempty"`
	// ResponseInspection inspects response bodies too.
	// +optional
	ResponseInspection bool `json:"responseInspection,omitempty"`
	// Exclusions remove false positives.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Exclusions []WAFExclusion `json:"exclusions,omitempty"`
	// CustomRules are SecLang rules evaluated before the CRS.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	CustomRules string `json:"customRules,omitempty"`
}

// WAFExclusion removes CRS rules (or some of their targets) everywhere or
// under a path prefix.
// +kubebuilder:validation:XValidation:rule="has(self.ruleIds) || has(self.tags)",message="an exclusion needs ruleIds or tags"
type WAFExclusion struct {
	// RuleIDs are rule IDs or ranges (942100, 942200-942299).
	// +optional
	RuleIDs []string `json:"ruleIds,omitempty"`
	// Tags are rule tags (attack-sqli).
	// +optional
	Tags []string `json:"tags,omitempty"`
	// Targets (ARGS:q) limit the exclusion to these variables.
	// +optional
	Targets []string `json:"targets,omitempty"`
	// PathPrefix limits the exclusion to requests under it.
	// +optional
	PathPrefix string `json:"pathPrefix,omitempty"`
}

// WAFPolicyStatus is what the controller made of the policy.
type WAFPolicyStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Errors are the problems that stopped it from being accepted.
	// +optional
	Errors []FieldError `json:"errors,omitempty"`
	// UsedBy are the Ingresses and HTTPRoutes that name it
	// (Ingress/NAME, HTTPRoute/NAME).
	// +optional
	UsedBy []string `json:"usedBy,omitempty"`
}

// +kubebuilder:object:root=true

// WAFPolicyList is a list of WAFPolicy.
type WAFPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WAFPolicy `json:"items"`
}

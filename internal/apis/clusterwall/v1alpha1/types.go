package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons of both kinds' status.conditions.
const (
	// ConditionAccepted is True when the object passed the policy validator
	// (the same one as `clusterwall policy validate`) and, for a
	// RuleCollectionGroup, the FirewallPolicy's guardrails.
	ConditionAccepted = "Accepted"
	// ConditionProgrammed is True when the composed policy holding the
	// object is what every daemon runs.
	ConditionProgrammed = "Programmed"

	ReasonAccepted          = "Accepted"
	ReasonInvalid           = "Invalid"           // the policy validator rejected it
	ReasonGuardrail         = "GuardrailViolated" // a team group broke a FirewallPolicy guardrail
	ReasonNoFirewallPolicy  = "NoFirewallPolicy"  // the FirewallPolicy it names does not exist
	ReasonBasePolicy        = "BasePolicyInvalid" // spec.basePolicy names a missing, cyclic or invalid FirewallPolicy
	ReasonProgrammed        = "Programmed"
	ReasonPending           = "Pending"
	ReasonApplyFailed       = "ApplyFailed"      // a daemon could not be reached or failed
	ReasonRejectedByDaemon  = "RejectedByDaemon" // a daemon's validator refused the composed policy
	ReasonNotProgrammedHere = "NotAccepted"      // not programmed because it is not accepted
)

// Annotations read from Services.
const (
	// AnnotationPublish lists the ports of a LoadBalancer Service to publish
	// on the firewall's public IP: "80,443", or "8080:80" for public port
	// 8080 to service port 80.
	AnnotationPublish = "clusterwall.io/publish"
	// AnnotationPublicIP chooses one of spec.serviceDNAT.publicIPs (default: the first).
	AnnotationPublicIP = "clusterwall.io/public-ip"
)

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=fwp,categories=clusterwall
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Daemon generation",type=integer,JSONPath=`.status.daemonGeneration`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// FirewallPolicy is one firewall's policy: its settings, the platform
// team's rule collection groups, the guardrails for the teams'
// RuleCollectionGroups and the automatic DNAT of Services.
type FirewallPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   FirewallPolicySpec   `json:"spec,omitempty"`
	Status FirewallPolicyStatus `json:"status,omitempty"`
}

// FirewallPolicySpec holds the fields of a policy file (docs/policy.md)
// plus the Kubernetes-only parts (teams, serviceDNAT, sourceSelector).
type FirewallPolicySpec struct {
	// BasePolicy names the FirewallPolicy this one inherits from, as Azure
	// Firewall Policy's basePolicy does: the base's rule collection groups
	// are processed first whatever their priorities, its DNAT collections
	// are not inherited, threat intelligence can only be made stricter,
	// DNS settings are inherited unless set here (docs/policy.md). The
	// base's teams, serviceDNAT and team RuleCollectionGroups stay its own.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	BasePolicy string `json:"basePolicy,omitempty"`
	// Location is the Azure region name used by FQDN tags.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Location string `json:"location,omitempty"`
	// ServiceTagDefinitions are more service tags: name -> addresses.
	// +optional
	ServiceTagDefinitions map[string][]string `json:"serviceTagDefinitions,omitempty"`
	// IPGroups are named address lists for sourceIpGroups / destinationIpGroups.
	// +optional
	IPGroups map[string][]string `json:"ipGroups,omitempty"`
	// FQDNTags are named FQDN pattern lists (a built-in's name replaces it).
	// +optional
	FQDNTags map[string][]string `json:"fqdnTags,omitempty"`
	// ThreatIntel configures threat-intelligence filtering.
	// +optional
	ThreatIntel *ThreatIntel `json:"threatIntel,omitempty"`
	// DNS configures the firewall's DNS proxy.
	// +optional
	DNS *DNS `json:"dns,omitempty"`
	// RuleCollectionGroups are the platform's own groups (not subject to the
	// team guardrails).
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=50
	RuleCollectionGroups []RuleCollectionGroupSpecNamed `json:"ruleCollectionGroups,omitempty"`
	// Teams limits what namespaced RuleCollectionGroups may do. Without it,
	// the defaults apply (Application rules only, priority >= 1000, sources
	// only from pods in the group's own namespace).
	// +optional
	Teams *TeamGuardrails `json:"teams,omitempty"`
	// ServiceDNAT publishes annotated LoadBalancer Services on the
	// firewall's public IP. Without it, Services are not published.
	// +optional
	ServiceDNAT *ServiceDNAT `json:"serviceDNAT,omitempty"`
	// Ingress configures the ingress controller: the addresses it reports
	// and the guardrails for teams' WAFPolicy objects (ingress_types.go).
	// +optional
	Ingress *IngressSettings `json:"ingress,omitempty"`
}

// ThreatIntel configures threat-intelligence filtering.
type ThreatIntel struct {
	// +optional
	// +kubebuilder:validation:Enum=Off;Alert;Deny
	Mode string `json:"mode,omitempty"`
	// +optional
	Allowlist *ThreatIntelAllowlist `json:"allowlist,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	Feeds []ThreatIntelFeed `json:"feeds,omitempty"`
}

// ThreatIntelAllowlist is never blocked by threat intelligence.
type ThreatIntelAllowlist struct {
	// +optional
	IPAddresses []string `json:"ipAddresses,omitempty"`
	// +optional
	FQDNs []string `json:"fqdns,omitempty"`
}

// ThreatIntelFeed is one feed: a file on the firewall or a URL.
// +kubebuilder:validation:XValidation:rule="has(self.file) != has(self.url)",message="a feed needs exactly one of file and url"
type ThreatIntelFeed struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +optional
	File string `json:"file,omitempty"`
	// +optional
	URL string `json:"url,omitempty"`
	// +optional
	// +kubebuilder:validation:Enum=plain;drop;hosts
	Format string `json:"format,omitempty"`
}

// DNS configures the DNS proxy.
type DNS struct {
	// +optional
	EnableProxy *bool `json:"enableProxy,omitempty"`
	// Servers are the proxy's upstreams (IP or IP:port).
	// +optional
	Servers []string `json:"servers,omitempty"`
}

// TeamGuardrails are the platform's limits on namespaced RuleCollectionGroups.
// +kubebuilder:validation:XValidation:rule="!has(self.minPriority) || !has(self.maxPriority) || self.minPriority <= self.maxPriority",message="minPriority must not exceed maxPriority"
type TeamGuardrails struct {
	// AllowedKinds are the rule collection kinds teams may use (default [Application]).
	// +optional
	// +listType=set
	AllowedKinds []CollectionKind `json:"allowedKinds,omitempty"`
	// AllowedActions are the collection actions teams may use (default [Allow, Deny]).
	// +optional
	// +listType=set
	AllowedActions []CollectionAction `json:"allowedActions,omitempty"`
	// MinPriority is the highest precedence (lowest number) a team group
	// may take (default 1000), so platform groups always come first.
	// +optional
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=65000
	MinPriority *int32 `json:"minPriority,omitempty"`
	// MaxPriority is the lowest precedence a team group may take (default 65000).
	// +optional
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=65000
	MaxPriority *int32 `json:"maxPriority,omitempty"`
	// AnySource lets team rules use sourceAddresses, sourceIpGroups and
	// other namespaces in sourceSelector. By default (false) a team rule's
	// sources are only pods of its own namespace, named by sourceSelector.
	// +optional
	AnySource bool `json:"anySource,omitempty"`
}

// ServiceDNAT publishes Services of type LoadBalancer annotated
// clusterwall.io/publish on the firewall's public IP.
type ServiceDNAT struct {
	// PublicIPs are the firewall's public addresses DNAT rules listen on
	// (a Service picks one with clusterwall.io/public-ip; default the first).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	PublicIPs []string `json:"publicIPs"`
	// Priority of the generated rule collection group (default 150).
	// +optional
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=65000
	Priority *int32 `json:"priority,omitempty"`
	// SourceAddresses may reach published Services (default ["*"]).
	// +optional
	SourceAddresses []string `json:"sourceAddresses,omitempty"`
}

// RuleCollectionGroupSpecNamed is a rule collection group inside a FirewallPolicy.
type RuleCollectionGroupSpecNamed struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name                    string `json:"name"`
	RuleCollectionGroupSpec `json:",inline"`
}

// CollectionKind is a rule collection's kind.
// +kubebuilder:validation:Enum=DNAT;Network;Application
type CollectionKind string

// CollectionAction is a rule collection's action.
// +kubebuilder:validation:Enum=Allow;Deny;DNAT
type CollectionAction string

// RuleCollectionGroupSpec is a group of rule collections.
type RuleCollectionGroupSpec struct {
	// Priority orders groups: 100 first, 65000 last; unique per firewall.
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=65000
	Priority int32 `json:"priority"`
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=50
	RuleCollections []RuleCollection `json:"ruleCollections,omitempty"`
}

// RuleCollection holds rules of one kind with one action.
// +kubebuilder:validation:XValidation:rule="self.kind == 'DNAT' ? self.action == 'DNAT' : self.action != 'DNAT'",message="a DNAT collection's action is DNAT; Network and Application collections Allow or Deny",fieldPath=".action"
type RuleCollection struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name string         `json:"name"`
	Kind CollectionKind `json:"kind"`
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=65000
	Priority int32            `json:"priority"`
	Action   CollectionAction `json:"action"`
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=1000
	Rules []Rule `json:"rules,omitempty"`
}

// Rule is a rule of its collection's kind; docs/policy.md lists which
// fields each kind takes.
// +kubebuilder:validation:XValidation:rule="has(self.sourceAddresses) || has(self.sourceIpGroups) || has(self.sourceSelector)",message="a rule needs sourceAddresses, sourceIpGroups or sourceSelector"
type Rule struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name string `json:"name"`
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Description string `json:"description,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=16
	Protocols []string `json:"protocols,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=5000
	SourceAddresses []string `json:"sourceAddresses,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=100
	SourceIPGroups []string `json:"sourceIpGroups,omitempty"`
	// SourceSelector names pods as sources; the controller keeps their
	// addresses up to date as pods come and go.
	// +optional
	SourceSelector *SourceSelector `json:"sourceSelector,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=5000
	DestinationAddresses []string `json:"destinationAddresses,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=100
	DestinationIPGroups []string `json:"destinationIpGroups,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=1000
	DestinationFQDNs []string `json:"destinationFqdns,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=1000
	DestinationPorts []string `json:"destinationPorts,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=1000
	TargetFQDNs []string `json:"targetFqdns,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=100
	FQDNTags []string `json:"fqdnTags,omitempty"`
	// +optional
	TranslatedAddress string `json:"translatedAddress,omitempty"`
	// +optional
	TranslatedFQDN string `json:"translatedFqdn,omitempty"`
	// +optional
	TranslatedPort string `json:"translatedPort,omitempty"`
}

// SourceSelector selects pods by namespace and labels.
type SourceSelector struct {
	// Namespace of the pods. In a RuleCollectionGroup it defaults to the
	// group's own namespace; in a FirewallPolicy empty means every namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
	// PodSelector selects pods by label (empty: every pod of the namespace).
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// FieldError is one problem with an object, located by its field path.
type FieldError struct {
	// Field is the path in the object, e.g. spec.ruleCollections[0].rules[1].destinationPorts[0].
	Field string `json:"field,omitempty"`
	// Message is the validator's message.
	Message string `json:"message"`
}

// FirewallPolicyStatus is what the controller last did with the policy.
type FirewallPolicyStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Errors are the problems that stopped it from being accepted or programmed.
	// +optional
	Errors []FieldError `json:"errors,omitempty"`
	// PolicyHash is the SHA-256 of the composed policy last programmed.
	// +optional
	PolicyHash string `json:"policyHash,omitempty"`
	// DaemonGeneration is the generation the (first) daemon reported for it.
	// +optional
	DaemonGeneration int64 `json:"daemonGeneration,omitempty"`
	// Groups are the composed policy's rule collection groups in the order
	// they are processed: the base policies' groups first (as BASE:GROUP),
	// then the policy's own by priority.
	// +optional
	Groups []string `json:"groups,omitempty"`
	// PublishedServices are the Services published by DNAT (namespace/name).
	// +optional
	PublishedServices []string `json:"publishedServices,omitempty"`
}

// +kubebuilder:object:root=true

// FirewallPolicyList is a list of FirewallPolicy.
type FirewallPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FirewallPolicy `json:"items"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=rcg,categories=clusterwall
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// RuleCollectionGroup is a team's rule collection group, limited by its
// FirewallPolicy's guardrails. In the composed policy it is named
// NAMESPACE/NAME.
type RuleCollectionGroup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TeamRuleCollectionGroupSpec `json:"spec,omitempty"`
	Status RuleCollectionGroupStatus   `json:"status,omitempty"`
}

// TeamRuleCollectionGroupSpec is a RuleCollectionGroup's spec.
type TeamRuleCollectionGroupSpec struct {
	// FirewallPolicy is the name of the FirewallPolicy this group joins (default "default").
	// +optional
	// +kubebuilder:default=default
	// +kubebuilder:validation:MaxLength=253
	FirewallPolicy          string `json:"firewallPolicy,omitempty"`
	RuleCollectionGroupSpec `json:",inline"`
}

// RuleCollectionGroupStatus is what the controller last did with the group.
type RuleCollectionGroupStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Errors are the problems that stopped it from being accepted.
	// +optional
	Errors []FieldError `json:"errors,omitempty"`
}

// +kubebuilder:object:root=true

// RuleCollectionGroupList is a list of RuleCollectionGroup.
type RuleCollectionGroupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RuleCollectionGroup `json:"items"`
}

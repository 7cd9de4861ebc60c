package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is clusterwall.io/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: "clusterwall.io", Version: "v1alpha1"}

// AddToScheme registers this API's types in a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&FirewallPolicy{}, &FirewallPolicyList{},
		&RuleCollectionGroup{}, &RuleCollectionGroupList{},
		&WAFPolicy{}, &WAFPolicyList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

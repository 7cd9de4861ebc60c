package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
)

// TestControllerBasePolicy: against a real kube-apiserver, a FirewallPolicy
// naming a base that does not exist is not accepted; once the base exists
// the child is accepted with the base's groups first in its status; a
// change to the base alone reaches the child (the base is watched).
func TestControllerBasePolicy(t *testing.T) {
	c := kubeClient(t)
	ctx := context.Background()
	const child, base = "inherit-child", "inherit-org-base"
	startController(t, Options{PolicyName: child})

	// The CRD refuses a basePolicy that cannot be an object name.
	bad := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "inherit-bad"}, Spec: v1.FirewallPolicySpec{BasePolicy: "Not_A_Name"}}
	if err := c.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "spec.basePolicy") {
		t.Fatalf("create with basePolicy Not_A_Name: %v", err)
	}

	rule := v1.Rule{Name: "smtp", Protocols: []string{"TCP"}, SourceAddresses: []string{"10.42.0.0/16"}, DestinationAddresses: []string{"*"}, DestinationPorts: []string{"25"}}
	fp := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: child}, Spec: v1.FirewallPolicySpec{
		BasePolicy:  base,
		ThreatIntel: &v1.ThreatIntel{Mode: "Deny"},
		RuleCollectionGroups: []v1.RuleCollectionGroupSpecNamed{{Name: "cluster", RuleCollectionGroupSpec: v1.RuleCollectionGroupSpec{Priority: 100,
			RuleCollections: []v1.RuleCollection{{Name: "out", Kind: "Network", Priority: 100, Action: "Allow", Rules: []v1.Rule{
				{Name: "https", Protocols: []string{"TCP"}, SourceAddresses: []string{"10.42.0.0/16"}, DestinationAddresses: []string{"*"}, DestinationPorts: []string{"443"}}}}}}}},
	}}
	create(t, c, fp)
	eventually(t, 20*time.Second, "child without its base", policyCond(c, child, v1.ConditionAccepted, metav1.ConditionFalse, `spec.basePolicy: the base FirewallPolicy "inherit-org-base" does not exist`))

	bp := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: base}, Spec: v1.FirewallPolicySpec{
		ThreatIntel: &v1.ThreatIntel{Mode: "Alert"},
		RuleCollectionGroups: []v1.RuleCollectionGroupSpecNamed{{Name: "guardrails", RuleCollectionGroupSpec: v1.RuleCollectionGroupSpec{Priority: 65000,
			RuleCollections: []v1.RuleCollection{{Name: "no-smtp", Kind: "Network", Priority: 100, Action: "Deny", Rules: []v1.Rule{rule}}}}}},
	}}
	create(t, c, bp)
	eventually(t, 20*time.Second, "child with its base", policyCond(c, child, v1.ConditionAccepted, metav1.ConditionTrue, ""))
	eventually(t, 20*time.Second, "inherited groups first in status", func() string {
		var got v1.FirewallPolicy
		if err := c.Get(ctx, types.NamespacedName{Name: child}, &got); err != nil {
			return err.Error()
		}
		if strings.Join(got.Status.Groups, ",") != "inherit-org-base:guardrails,cluster" {
			return "status.groups = " + strings.Join(got.Status.Groups, ",")
		}
		return ""
	})

	// Only the base changes: its new error reaches the child.
	if err := c.Get(ctx, client.ObjectKeyFromObject(bp), bp); err != nil {
		t.Fatal(err)
	}
	bp.Spec.RuleCollectionGroups[0].RuleCollections[0].Rules[0].DestinationPorts = []string{"x25"}
	if err := c.Update(ctx, bp); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the base's error on the child", policyCond(c, child, v1.ConditionAccepted, metav1.ConditionFalse,
		"spec.basePolicy: base FirewallPolicy inherit-org-base: spec.ruleCollectionGroups[0].ruleCollections[0].rules[0].destinationPorts[0]"))
}

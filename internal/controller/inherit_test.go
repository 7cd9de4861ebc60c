package controller

import (
	"os"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/policy"
)

const inheritChild = "../../examples/inheritance/cluster-a.yaml"

// exportedPolicies decodes an export stream's FirewallPolicies by name.
func exportedPolicies(t *testing.T, stream []byte) map[string]*v1.FirewallPolicy {
	t.Helper()
	out := map[string]*v1.FirewallPolicy{}
	for _, doc := range strings.Split(string(stream), "\n---\n") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatal(err)
		}
		if tm.Kind != "FirewallPolicy" {
			t.Fatalf("unexpected kind %q", tm.Kind)
		}
		fp := &v1.FirewallPolicy{}
		if err := yaml.UnmarshalStrict([]byte(doc), fp); err != nil {
			t.Fatal(err)
		}
		out[fp.Name] = fp
	}
	return out
}

// TestInheritanceRoundTrip: a policy with a basePolicy file, exported as two
// FirewallPolicies (the child's spec.basePolicy naming the base) and
// composed back by the controller, decides every flow of the grid as the
// files do: the base's groups first, its settings inherited.
func TestInheritanceRoundTrip(t *testing.T) {
	orig, err := policy.LoadFile(inheritChild, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := decide(t, orig)
	data, err := os.ReadFile(inheritChild)
	if err != nil {
		t.Fatal(err)
	}
	wire, _, err := policy.DecodeYAML(inheritChild, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := policy.InlineBases(wire, inheritChild); err != nil {
		t.Fatal(err)
	}
	ex, err := Export(wire, ExportOptions{Name: "cluster-a"})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := ex.YAML()
	if err != nil {
		t.Fatal(err)
	}
	objs := exportedPolicies(t, stream)
	child, base := objs["cluster-a"], objs["org-base"]
	if child == nil || base == nil || child.Spec.BasePolicy != "org-base" || len(base.Spec.RuleCollectionGroups) != 1 {
		t.Fatalf("export:\n%s", stream)
	}
	comp := Compose(Inputs{Policy: child, Bases: []*v1.FirewallPolicy{base}})
	if !comp.Policy.Accepted {
		t.Fatalf("not accepted: %s", comp.Policy.Message())
	}
	back, err := policy.Load("composed.yaml", comp.YAML, policy.Options{})
	if err != nil {
		t.Fatalf("composed policy does not load: %v\n%s", err, comp.YAML)
	}
	if len(back.Groups) != 2 || !back.Groups[0].Inherited || back.ThreatIntel.Mode != policy.ActionDeny || !back.DNS.EnableProxy {
		t.Errorf("composed: groups %v, threat intel %v, dns %v", back.Groups, back.ThreatIntel.Mode, back.DNS)
	}
	got := decide(t, back)
	diffs, denies := 0, 0
	for i := range want {
		if got[i] != want[i] {
			diffs++
			if diffs < 10 {
				t.Errorf("flow %+v: files %q, controller %q", flows()[i], want[i], got[i])
			}
		}
		if strings.Contains(want[i], "aks-required/aks") || strings.Contains(want[i], "no-smtp/smtp") {
			denies++
		}
	}
	if denies == 0 {
		t.Fatal("no flow of the grid is decided by an inherited rule: the comparison proves little")
	}

	// Without its base the policy is not accepted, and says why.
	comp = Compose(Inputs{Policy: child, BaseError: `the base FirewallPolicy "org-base" does not exist`})
	if comp.Policy.Accepted || comp.Policy.Reason != v1.ReasonBasePolicy || comp.File != nil ||
		!strings.Contains(comp.Policy.Message(), `spec.basePolicy: the base FirewallPolicy "org-base" does not exist`) {
		t.Errorf("verdict = %+v", comp.Policy)
	}
	// A problem in the base is reported on spec.basePolicy, naming the base's field.
	bad := base.DeepCopy()
	bad.Spec.RuleCollectionGroups[0].RuleCollections[0].Rules[0].DestinationPorts = []string{"x25"}
	comp = Compose(Inputs{Policy: child, Bases: []*v1.FirewallPolicy{bad}})
	if comp.Policy.Accepted || len(comp.Policy.Errors) != 1 || comp.Policy.Errors[0].Field != "spec.basePolicy" ||
		!strings.Contains(comp.Policy.Errors[0].Message, "base FirewallPolicy org-base: spec.ruleCollectionGroups[0].ruleCollections[0].rules[0].destinationPorts[0]") {
		t.Errorf("verdict = %+v", comp.Policy)
	}
	// A child that makes threat intelligence weaker than its base is refused.
	weak := child.DeepCopy()
	weak.Spec.ThreatIntel.Mode = "Off"
	comp = Compose(Inputs{Policy: weak, Bases: []*v1.FirewallPolicy{base}})
	if comp.Policy.Accepted || !strings.Contains(comp.Policy.Message(), "spec.threatIntel.mode: threatIntel.mode Off is weaker than the base policy") {
		t.Errorf("verdict = %+v", comp.Policy)
	}
}

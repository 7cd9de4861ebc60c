package nft

import (
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

func loadExample(t testing.TB) *policy.Policy {
	t.Helper()
	p, err := policy.LoadFile("../../examples/aks-egress.yaml", policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKernelApplyShow programs the seed policy and reads it back: every
// chain, rule and set the compiler produced is in the kernel, with the
// same statements.
func TestKernelApplyShow(t *testing.T) {
	l := newLab(t)
	rs, err := compilePolicy(loadExample(t), labConfig())
	if err != nil {
		t.Fatal(err)
	}
	r := l.runner()
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	st, err := r.Show()
	if err != nil {
		t.Fatal(err)
	}
	want := stateOf(rs)
	if len(st.Chains) != len(want.Chains) {
		t.Fatalf("kernel has %d chains, compiled %d", len(st.Chains), len(want.Chains))
	}
	for _, wc := range want.Chains {
		gc := st.Chain(wc.Name)
		if gc == nil {
			t.Errorf("chain %s missing in the kernel", wc.Name)
			continue
		}
		if gc.Hook != wc.Hook || (wc.Hook != "" && (gc.Policy != wc.Policy || gc.Priority != wc.Priority)) {
			t.Errorf("chain %s: kernel hook %q policy %q prio %d, want %q %q %d", wc.Name, gc.Hook, gc.Policy, gc.Priority, wc.Hook, wc.Policy, wc.Priority)
		}
		if len(gc.Rules) != len(wc.Rules) {
			t.Errorf("chain %s: kernel has %d rules, want %d", wc.Name, len(gc.Rules), len(wc.Rules))
			continue
		}
		for i := range wc.Rules {
			if gc.Rules[i].Text != wc.Rules[i].Text || gc.Rules[i].Comment != wc.Rules[i].Comment {
				t.Errorf("chain %s rule %d:\nkernel:   %s # %s\ncompiled: %s # %s", wc.Name, i, gc.Rules[i].Text, gc.Rules[i].Comment, wc.Rules[i].Text, wc.Rules[i].Comment)
			}
		}
	}
	if len(st.Sets) != len(want.Sets) {
		t.Errorf("kernel has %d sets, compiled %d", len(st.Sets), len(want.Sets))
	}
	var b strings.Builder
	st.Format(&b, true)
	t.Logf("dataplane show:\n%s", b.String())
}

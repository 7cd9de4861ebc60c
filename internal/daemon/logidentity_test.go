package daemon

import (
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// TestSameLogIdentity: the apply's comparison of a rule's log identity
// with the last apply's (without building it) says what comparing the
// strings says, for every name and kind that differs, names that shift a
// NUL between fields included.
func TestSameLogIdentity(t *testing.T) {
	mk := func(pol, grp, coll, rule string, kind policy.Kind, act policy.Action) (*policy.Policy, *policy.Rule) {
		g := &policy.Group{Name: grp}
		c := &policy.Collection{Name: coll, Kind: kind, Action: act, Group: g}
		return &policy.Policy{Name: pol}, &policy.Rule{Name: rule, Collection: c}
	}
	type spec struct {
		pol, grp, coll, rule string
		kind                 policy.Kind
		act                  policy.Action
	}
	specs := []spec{
		{"p", "g", "c", "r", policy.KindNetwork, policy.ActionAllow},
		{"p", "g", "c", "r", policy.KindNetwork, policy.ActionDeny},
		{"p", "g", "c", "r2", policy.KindNetwork, policy.ActionAllow},
		{"p", "g", "c2", "r", policy.KindNetwork, policy.ActionAllow},
		{"p", "g2", "c", "r", policy.KindNetwork, policy.ActionAllow},
		{"p2", "g", "c", "r", policy.KindNetwork, policy.ActionAllow},
		{"p", "g", "c", "", policy.KindNetwork, policy.ActionAllow},
		{"p", "g", "c\x00r", "", policy.KindNetwork, policy.ActionAllow},
		{"p", "g", "c", "r", policy.KindApplication, policy.ActionAllow},
		{"p", "g", "c", "r", policy.KindDNAT, policy.ActionDNAT},
		{"p", "g", "c", "r2", policy.KindDNAT, policy.ActionDNAT},
		{"", "", "", "", policy.KindNetwork, policy.ActionAllow},
	}
	for _, a := range specs {
		pa, ra := mk(a.pol, a.grp, a.coll, a.rule, a.kind, a.act)
		ident := logIdentity(pa, ra)
		for _, b := range specs {
			pb, rb := mk(b.pol, b.grp, b.coll, b.rule, b.kind, b.act)
			want := ident == logIdentity(pb, rb)
			if got := sameLogIdentity(ident, pb, rb); got != want {
				t.Errorf("identity of %+v against rule %+v: same %v, want %v", a, b, got, want)
			}
			// A truncated or extended identity is never the same.
			if sameLogIdentity(ident[:len(ident)-1], pb, rb) || sameLogIdentity(ident+"x", pb, rb) {
				t.Errorf("identity of %+v with a byte less or more taken as %+v's", a, b)
			}
		}
	}
}

package nft

import (
	"strings"
	"testing"
)

// named returns the chain (or set) whose name is base and a content hash.
func chainNamed(rs *Ruleset, base string) *Chain {
	for _, c := range rs.Chains {
		if c.Name == base || stripHash(c.Name) == base && c.Name != base {
			return c
		}
	}
	return nil
}

func setNamed(rs *Ruleset, base string) *Set {
	for _, s := range rs.Sets {
		if stripHash(s.Name) == base && s.Name != base {
			return s
		}
	}
	return nil
}

func stateChainNamed(st *State, base string) *ChainState {
	for i, c := range st.Chains {
		if c.Name == base || stripHash(c.Name) == base {
			return &st.Chains[i]
		}
	}
	return nil
}

func baseNames(l []string) string {
	out := make([]string, len(l))
	for i, n := range l {
		out[i] = stripHash(n)
	}
	return strings.Join(out, ",")
}

// TestNamesByContent: chains and sets are named after their content, the
// same policy gets the same names, and a policy that changes one rule
// changes only the names on the path to that rule's leaves.
func TestNamesByContent(t *testing.T) {
	a, err := compilePolicy(bigPolicy(2000, 1), labConfig())
	if err != nil {
		t.Fatal(err)
	}
	a2, err := compilePolicy(bigPolicy(2000, 1), labConfig())
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != a2.String() {
		t.Fatal("the same policy compiled to two rulesets")
	}
	names := func(rs *Ruleset) map[string]bool {
		m := map[string]bool{}
		for _, c := range rs.Chains {
			if m[c.Name] {
				t.Errorf("chain %s twice", c.Name)
			}
			m[c.Name] = true
			if c.Hook == HookNone && stripHash(c.Name) == c.Name {
				t.Errorf("chain %s has no content hash", c.Name)
			}
		}
		for _, s := range rs.Sets {
			if m["set "+s.Name] {
				t.Errorf("set %s twice", s.Name)
			}
			m["set "+s.Name] = true
			if stripHash(s.Name) == s.Name {
				t.Errorf("set %s has no content hash", s.Name)
			}
		}
		return m
	}
	na := names(a)
	p := bigPolicy(2000, 1)
	p.Groups[3].Collections[2].Rules[7].DestinationPorts[0].Lo = 7000
	p.Groups[3].Collections[2].Rules[7].DestinationPorts[0].Hi = 7000
	b, err := compilePolicy(p, labConfig())
	if err != nil {
		t.Fatal(err)
	}
	nb := names(b)
	changed := 0
	for n := range nb {
		if !na[n] {
			changed++
		}
	}
	t.Logf("%d of %d chains and sets have other names after a one-rule change", changed, len(nb))
	if changed == 0 || changed > len(nb)/10 {
		t.Errorf("%d of %d names changed", changed, len(nb))
	}
	// Renaming a named ruleset changes nothing.
	before := b.String()
	if err := nameByContent(b); err != nil {
		t.Fatal(err)
	}
	if b.String() != before {
		t.Error("renaming a named ruleset changed it")
	}
}

// TestNamerRecords: the namer finds a chain's or set's record by the
// number of its provisional name, and by its whole name when the name has
// no number, or one another object has (a chain and a set, two prefixes):
// every reference is renamed to its own object's name.
func TestNamerRecords(t *testing.T) {
	for _, tc := range []struct{ num, v string }{{"1", "0"}, {"", "1"}, {"007", "x"}, {"123456789012", "y"}} {
		if got := provisionalNum("a#" + tc.num); (tc.num == "1") != (got == 1) || tc.num == "007" && got != 7 {
			t.Errorf("provisionalNum(a#%s) = %d", tc.num, got)
		}
	}
	leaf := func(name string, port uint64) *Chain {
		ch := &Chain{Name: name}
		ch.add("", MatchRange{Family: ipv4, Field: fieldPort, iv: ivl{lo: u128{lo: port}, hi: u128{lo: port}}}, Verdict{Kind: VerdictAccept})
		return ch
	}
	rs := &Ruleset{Table: "t"}
	base := &Chain{Name: "forward", Hook: HookForward, Type: "filter", Policy: "accept"}
	names := []string{"a#1", "b#1", "c", "d#2", "e#1000"}
	for i, name := range names {
		rs.Chains = append(rs.Chains, leaf(name, uint64(100+i)))
		base.add("", Verdict{Kind: VerdictJump, Chain: name})
	}
	set := &Set{Name: "a#2", Kind: SetPlain, Family: ipv4, Field: fieldPort, Elems: []Elem{{iv: ivl{lo: u128{lo: 7}, hi: u128{lo: 7}}}}}
	rs.Sets = append(rs.Sets, set)
	base.add("", MatchSet{Family: ipv4, Field: fieldPort, Set: "a#2"}, Verdict{Kind: VerdictAccept})
	rs.Chains = append([]*Chain{base}, rs.Chains...)
	if err := nameByContent(rs); err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		want := rs.Chains[1+i].Name
		if stripHash(want) != strings.Split(name, "#")[0] || want == name {
			t.Errorf("chain %s named %s", name, want)
		}
		if got := base.Rules[i].Stmts[0].(Verdict).Chain; got != want {
			t.Errorf("jump to %s renamed %s, the chain is %s", name, got, want)
		}
	}
	if got := base.Rules[len(names)].Stmts[0].(MatchSet).Set; got != set.Name || stripHash(got) != "a" || got == "a#2" {
		t.Errorf("set a#2 renamed %s, the set is %s", got, set.Name)
	}
}

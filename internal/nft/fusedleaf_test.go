package nft

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fusedLeafPolicy: eight rules from the lab's node subnet or another
// one to inet's 198.18.10.5, one port each (5000-5007), so that the
// classifier dispatches on the port and every rule gets a leaf of its own,
// `ip saddr . ip daddr != … return`, its decision, its verdict
// (compiler.fusedLeaf). Rules 0-3 allow from the node's subnet, 4 denies
// from it, 5-7 allow from other, another only. With other a /24, as the
// node's subnet, every leaf compares the same fields with prefixes of the
// same length, and the dispatch folds them into its key instead
// (classifier.foldKey): `th dport . ip saddr & 255.255.255.0 . ip daddr
// vmap`, each element going to its rule's decision chain.
func fusedLeafPolicy(other string) string {
	var b strings.Builder
	b.WriteString("name: fused\nruleCollectionGroups:\n  - name: g\n    priority: 200\n    ruleCollections:\n")
	for i := range 8 {
		act, src := "Allow", "10.42.1.0/24"
		if i == 4 {
			act = "Deny"
		}
		if i >= 5 {
			src = other
		}
		fmt.Fprintf(&b, "      - {name: c%d, kind: Network, priority: %d, action: %s, rules: [{name: r%d, protocols: [TCP], sourceAddresses: [%s], destinationAddresses: [198.18.10.5], destinationPorts: ['%d']}]}\n",
			i, 100+i, act, i, src, 5000+i)
	}
	return b.String()
}

// TestKernelFusedLeaf: a leaf with its rule's decision in it counts,
// logs and decides the flows that match the rule and only those: a SYN
// from the node to each port is counted by exactly the counter the
// matcher says (the rule's, or the default deny's when the rule's source
// does not match), and one decision counter per flow (the verdict ends the
// evaluation: a flow that fell out of the leaf after its decision would
// count in the default deny too). With the leaf's != written as == (tried)
// every matching flow returns and lands in the default deny.
//
// folded: the same with the leaves folded into the dispatch's key: the
// node's address (10.42.1.10) is looked up masked to its /24, and the
// flows to 5005-5007 (rules from 10.99.0.0/24) find no element. With the
// key's source and destination swapped in the elements (tried), the
// flows to 5000-5004 land in the default deny.
func TestKernelFusedLeaf(t *testing.T) {
	for _, tc := range []struct {
		name, other string
		folded      bool
	}{{"fused", "10.99.0.0/16", false}, {"folded", "10.99.0.0/24", true}} {
		t.Run(tc.name, func(t *testing.T) { testKernelFusedLeaf(t, tc.other, tc.folded) })
	}
}

func testKernelFusedLeaf(t *testing.T, other string, folded bool) {
	l := newLab(t)
	r := l.runner()
	p, err := loadPolicyBytes("fused.yaml", []byte(fusedLeafPolicy(other)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := labConfig()
	cfg.LimitRuleLogs = true
	rs, err := compilePolicy(p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	fused, decisions, cat := 0, 0, 0
	for _, c := range rs.Chains {
		if len(c.Rules) > 0 && len(c.Rules[0].Stmts) > 0 {
			if _, ok := c.Rules[0].Stmts[0].(MatchNotAll); ok {
				fused++
			}
		}
		if strings.HasPrefix(c.Name, "rule_") {
			decisions++
		}
	}
	for _, s := range rs.Sets {
		if s.Cat.n > 0 {
			cat += len(s.Elems)
		}
	}
	switch {
	case !folded && (fused != 8 || decisions != 0 || cat != 0):
		t.Fatalf("%d fused leaves, %d decision chains, %d elements with a concatenated key, want 8, 0, 0:\n%s", fused, decisions, cat, rs)
	case folded && (fused != 0 || decisions != 8 || cat != 8):
		t.Fatalf("%d fused leaves, %d decision chains, %d elements with a concatenated key, want 0, 8, 8:\n%s", fused, decisions, cat, rs)
	}
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if folded {
		// Read back from the kernel, the dispatch is the compiled one.
		st, err := r.Show()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := st.Format(&b, true); err != nil {
			t.Fatal(err)
		}
		const want = "th dport . ip saddr & 255.255.255.0 . ip daddr vmap @tcp4_map_"
		if !strings.Contains(b.String(), want) {
			t.Fatalf("the kernel's ruleset has no %q:\n%s", want, b.String())
		}
	}
	in := newInjector(t, l.node, "eth0", macOf(t, l.fw, "inside"))
	src, dst := netip.MustParseAddr("10.42.1.10"), netip.MustParseAddr("198.18.10.5")
	counts := func() map[string]uint64 {
		cs, err := r.Counters()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]uint64{}
		for _, c := range cs {
			m[c.Tag] = c.Packets
		}
		return m
	}
	for port := uint16(5000); port <= 5008; port++ {
		before := counts()
		if err := in.send(rawFlow{proto: protoTCP, src: src, dst: dst, sport: 40000 + port, dport: port}); err != nil {
			t.Fatal(err)
		}
		want := "cw:D:default"
		switch i := int(port - 5000); {
		case i < 4:
			want = LogTag{Kind: LogAllow, Index: i}.String()
		case i == 4:
			want = LogTag{Kind: LogDeny, Index: i}.String()
		}
		var after map[string]uint64
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			after = counts()
			if after[want] > before[want] || time.Now().After(deadline) {
				break
			}
		}
		var moved []string
		for tag, n := range after {
			if n != before[tag] {
				moved = append(moved, fmt.Sprintf("%s +%d", tag, n-before[tag]))
			}
		}
		if len(moved) != 1 || after[want] != before[want]+1 {
			t.Errorf("port %d: counters moved %v, want %s +1", port, moved, want)
		}
	}
}

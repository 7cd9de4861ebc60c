package nft

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// BenchmarkKernelAnonMaps: what the kernel would save if the classifier's
// interval maps were anonymous constant maps, which may leave out the end
// element of an interval that the next interval starts right after (nft
// does so for anonymous sets; the kernel's rbtree refuses two consecutive
// start elements in a named set). 400 chains, each one rule `ip saddr
// vmap @m` over 34 adjacent /24 intervals (the 10k policies' maps hold 34
// intervals on average, 90 % adjacent), 20 to a transaction (one netlink
// message each) into an empty table: today's named maps with every end element, anonymous constant
// maps with every end element, and anonymous constant maps with only the
// last interval's. The modes alternate within each iteration, each first in turn; sys-us per
// apply is the process's kernel CPU (the table's deletion not counted).
// docs/benchmarks.md (branch k10k) has the results.
func BenchmarkKernelAnonMaps(b *testing.B) {
	requireRoot(b)
	const maps, ivs, perTx = 400, 34, 20
	c, err := nftables.New(nftables.WithNetNSFd(nsFD(b, newNS(b, "anon"))))
	if err != nil {
		b.Fatal(err)
	}
	modes := []struct {
		name       string
		anon, ends bool
	}{{"named", false, true}, {"anon-ends", true, true}, {"anon-noadj", true, false}}
	apply := func(anon, ends bool) error {
		t := c.AddTable(&nftables.Table{Name: "cwanon", Family: nftables.TableFamilyINet})
		target := c.AddChain(&nftables.Chain{Name: "target", Table: t})
		c.AddRule(&nftables.Rule{Table: t, Chain: target, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
		for i := range maps {
			if i > 0 && i%perTx == 0 {
				if err := c.Flush(); err != nil {
					return err
				}
			}
			ch := c.AddChain(&nftables.Chain{Name: fmt.Sprintf("c%03d", i), Table: t})
			s := &nftables.Set{Table: t, Name: fmt.Sprintf("m%03d", i), KeyType: nftables.TypeIPAddr,
				Interval: true, IsMap: true, DataType: nftables.TypeVerdict, Anonymous: anon, Constant: anon}
			var els []nftables.SetElement
			for j := range ivs {
				els = append(els, nftables.SetElement{Key: []byte{10, byte(i >> 2), byte(i&3<<6 | j), 0},
					VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: "target"}})
				if ends || j == ivs-1 {
					els = append(els, nftables.SetElement{Key: []byte{10, byte(i >> 2), byte(i&3<<6 | j + 1), 0}, IntervalEnd: true})
				}
			}
			if err := c.AddSet(s, els); err != nil {
				return err
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: s.Name, SetID: s.ID},
			}})
		}
		return c.Flush()
	}
	sys := make([]time.Duration, len(modes))
	b.ResetTimer()
	for i := range b.N {
		for n := range modes {
			k := (i + n) % len(modes) // each mode first as often
			m := modes[k]
			_, s0 := cpuTimes()
			if err := apply(m.anon, m.ends); err != nil {
				b.Fatalf("%s: %v", m.name, err)
			}
			_, s1 := cpuTimes()
			sys[k] += s1 - s0
			c.DelTable(&nftables.Table{Name: "cwanon", Family: nftables.TableFamilyINet})
			if err := c.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	}
	for k, m := range modes {
		b.ReportMetric(float64(sys[k].Microseconds())/float64(b.N), m.name+"-sys-us")
	}
}

package nft

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// BenchmarkKernelLeafLayout is a probe of a cheaper kernel layout for a
// network rule that has one leaf rule of its own (the flat 100,000-rule
// policy: every rule), written to the kernel directly (google/nftables,
// one transaction; the encoding is user time and not compared):
//
//   - goto: as compiled today (Config.LimitRuleLogs): a leaf chain with
//     `ip saddr 10.a.b.0/24 th dport 443 goto rule_i` and the decision
//     chain rule_i with `counter name … limit name … log …` and `accept`
//     (2 chains, 3 rules, 8 expressions);
//   - return: one chain, the leaf's match negated first —
//     `ip saddr . th dport != 10.a.b.0 . 443 return`, then the decision's
//     two rules (1 chain, 3 rules, 8 expressions). A flow that does not
//     match returns (what falling off the leaf chain does); one that does
//     is counted, logged behind the shared limit and accepted, as before.
//
// Reports the kernel CPU per network rule to add them (sys-us/rule) and
// to remove the table (del-sys-us/rule); the two layouts alternate within
// each iteration. Root only.
func BenchmarkKernelLeafLayout(b *testing.B) {
	const n = 20000
	requireRoot(b)
	r := nsRunner(b, "leaf")
	lim := LimitSpec{Rate: 1000, Burst: 2000}
	port := MatchRange{Family: ipv4, Field: fieldPort, iv: ivl{u128{0, 443}, u128{0, 443}}}
	leafMatch := func(i int, neq bool) []expr.Any {
		v := uint64(10<<24 | (i&0xffff)<<8)
		ex, ok := concatLoads([]MatchRange{{Family: ipv4, Field: fieldSrc, iv: ivl{u128{0, v}, u128{0, v | 255}}}, port})
		if !ok {
			b.Fatal("no concatenation")
		}
		if neq {
			ex[len(ex)-1].(*expr.Cmp).Op = expr.CmpOpNeq
		}
		return ex
	}
	stmts := func(sts ...Stmt) []expr.Any {
		var out []expr.Any
		for _, st := range sts {
			ex, err := lowerStmt(st, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			out = append(out, ex...)
		}
		return out
	}
	const table = "cwleaf"
	rule := func(w *wire, chain string, xs []expr.Any) error {
		off := w.begin(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE, unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_APPEND)
		w.b = append(w.b, byte(nftables.TableFamilyINet), unix.NFNETLINK_V0, 0, 0)
		w.strAttr(unix.NFTA_RULE_TABLE, table)
		w.strAttr(unix.NFTA_RULE_CHAIN, chain)
		nest := w.nest(unix.NFTA_RULE_EXPRESSIONS)
		if err := w.exprs(xs); err != nil {
			return err
		}
		if err := w.closeNest(nest); err != nil {
			return err
		}
		w.end(off)
		return nil
	}
	// The objects and chains first, then the rules, as an apply's stage 1.
	add := func(layout string) []part {
		return []part{nftPart(func(c *nftables.Conn) error {
			t := c.AddTable(&nftables.Table{Name: table, Family: nftables.TableFamilyINet})
			c.AddObj(&nftables.NamedObj{Table: t, Name: lim.Name(), Type: nftables.ObjTypeLimit,
				Obj: &expr.Limit{Type: expr.LimitTypePkts, Rate: lim.Rate, Unit: expr.LimitTimeSecond, Burst: lim.Burst}})
			return nil
		}), wirePart(func(w *wire) error {
			for i := range n {
				if err := w.newCounter(table, fmt.Sprintf("cw:A:%d", i)); err != nil {
					return err
				}
				w.newChain(table, fmt.Sprintf("leaf_%d", i))
				if layout == "goto" {
					w.newChain(table, fmt.Sprintf("rule_%d", i))
				}
			}
			for i := range n {
				tag := fmt.Sprintf("cw:A:%d", i)
				decide := stmts(Counter{Name: tag}, Log{Prefix: tag, Group: 100, Limit: lim.Name()})
				accept := stmts(Verdict{Kind: VerdictAccept})
				leaf := fmt.Sprintf("leaf_%d", i)
				var err error
				switch layout {
				case "goto":
					dec := fmt.Sprintf("rule_%d", i)
					err = errors.Join(rule(w, dec, decide), rule(w, dec, accept),
						rule(w, leaf, append(leafMatch(i, false), &expr.Verdict{Kind: expr.VerdictGoto, Chain: dec})))
				case "return":
					err = errors.Join(rule(w, leaf, append(leafMatch(i, true), &expr.Verdict{Kind: expr.VerdictReturn})),
						rule(w, leaf, decide), rule(w, leaf, accept))
				}
				if err != nil {
					return err
				}
			}
			return nil
		})}
	}
	remove := nftPart(func(c *nftables.Conn) error {
		c.DelTable(&nftables.Table{Name: table, Family: nftables.TableFamilyINet})
		return nil
	})
	layouts := []string{"goto", "return"}
	sys := map[string][]float64{}
	del := map[string][]float64{}
	for it := range b.N {
		for k := range layouts {
			l := layouts[(k+it)%len(layouts)]
			parts := add(l)
			_, s0 := cpuTimes()
			if err := r.transact(n*400, parts...); err != nil {
				b.Fatalf("%s: %v", l, err)
			}
			_, s1 := cpuTimes()
			if err := r.transact(0, remove); err != nil {
				b.Fatal(err)
			}
			_, s2 := cpuTimes()
			sys[l] = append(sys[l], float64((s1-s0).Microseconds())/n)
			del[l] = append(del[l], float64((s2-s1).Microseconds())/n)
		}
	}
	for _, l := range layouts {
		sum, dsum := 0.0, 0.0
		for i := range sys[l] {
			sum, dsum = sum+sys[l][i], dsum+del[l][i]
		}
		b.Logf("%-6s add %.2f µs per rule (%.2f), remove %.2f (%.2f)", l, sum/float64(len(sys[l])), sys[l], dsum/float64(len(del[l])), del[l])
		b.ReportMetric(sum/float64(len(sys[l])), l+"-sys-us/rule")
		b.ReportMetric(dsum/float64(len(del[l])), l+"-del-sys-us/rule")
	}
}

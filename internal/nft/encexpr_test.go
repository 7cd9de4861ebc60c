package nft

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// marshalSlow is what appendRules wrote before fastExpr: google/nftables'
// encoding of each expression.
func marshalSlow(t testing.TB, exprs []expr.Any) []byte {
	var w wire
	for _, x := range exprs {
		data, err := expr.Marshal(byte(nftables.TableFamilyINet), x)
		if err != nil {
			t.Fatal(err)
		}
		w.attr(unix.NLA_F_NESTED|unix.NFTA_LIST_ELEM, data)
	}
	return w.b
}

func marshalFast(t testing.TB, exprs []expr.Any) (b []byte, fast int) {
	var w wire
	for _, x := range exprs {
		ok, err := w.fastExpr(x)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			fast++
			continue
		}
		data, err := expr.Marshal(byte(nftables.TableFamilyINet), x)
		if err != nil {
			t.Fatal(err)
		}
		w.attr(unix.NLA_F_NESTED|unix.NFTA_LIST_ELEM, data)
	}
	return w.b, fast
}

// TestFastExprSameBytes: every expression of compiled rulesets (the
// 3,000-rule policy with and without LimitRuleLogs, the flat policy, the
// kinds of kinds.yaml's rules), and of the concatenated comparisons,
// written by fastExpr is byte for byte google/nftables' encoding; and
// fastExpr takes the expressions it is meant for (most of them).
func TestFastExprSameBytes(t *testing.T) {
	limited := labConfig()
	limited.LimitRuleLogs = true
	var exprsAll [][]expr.Any
	for i, c := range []struct {
		rs *Ruleset
	}{
		{mustCompileT(t, bigPolicy(3000, 1), labConfig())},
		{mustCompileT(t, bigPolicy(3000, 2), limited)},
		{mustCompileT(t, flatPolicy(2000, 0), limited)},
	} {
		pl, err := lower(c.rs, nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range c.rs.Chains {
			for _, r := range ch.Rules {
				if j := wholeLoadRun(r.Stmts); j >= 2 {
					ms := make([]MatchRange, j)
					for k := range ms {
						ms[k] = r.Stmts[k].(MatchRange)
					}
					if x, ok := concatLoads(ms); ok {
						exprsAll = append(exprsAll, x)
					}
				}
				for _, st := range r.Stmts {
					x, err := lowerStmt(st, pl.setMap, pl.chMap)
					if err != nil {
						t.Fatalf("ruleset %d: %v", i, err)
					}
					exprsAll = append(exprsAll, x)
				}
			}
		}
	}
	// Verdicts and options the rulesets above may lack.
	exprsAll = append(exprsAll, []expr.Any{
		&expr.Verdict{Kind: expr.VerdictDrop}, &expr.Verdict{Kind: expr.VerdictReturn},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: "c"}, &expr.Verdict{Kind: expr.VerdictGoto, Chain: "chain_of_31_characters_long_xx"},
		&expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte("abc")},
		&expr.Log{Key: 1 << unix.NFTA_LOG_GROUP, Group: 7},
		&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_LEVEL, Level: 4},
		&expr.Objref{Type: 1, Name: "cw:A:1234"}, &expr.Objref{Type: 4, Name: "lim"},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 9, Data: []byte{1, 2, 3, 4, 5, 6, 7}},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 1, CsumType: expr.CsumTypeInet, CsumOffset: 10},
		&expr.Counter{},
	})
	total, fast := 0, 0
	for _, x := range exprsAll {
		want := marshalSlow(t, x)
		got, n := marshalFast(t, x)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: fast encoding\n%x\ndiffers from google/nftables'\n%x", describeExprs(x), got, want)
		}
		total += len(x)
		fast += n
	}
	t.Logf("%d expressions, %d written directly", total, fast)
	if fast*10 < total*9 {
		t.Errorf("only %d of %d expressions written directly", fast, total)
	}
}

func describeExprs(x []expr.Any) string {
	s := ""
	for _, e := range x {
		s += fmt.Sprintf("%T%+v ", e, e)
	}
	return s
}

func mustCompileT(t testing.TB, p *policy.Policy, cfg Config) *Ruleset {
	t.Helper()
	rs, err := compilePolicy(p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// BenchmarkAppendRules: writing every rule of a compiled ruleset into a
// batch (the user side of an apply's stage 1), the 10,000-rule policy and
// the flat 100,000-rule one, with LimitRuleLogs (the daemon's default).
func BenchmarkAppendRules(b *testing.B) {
	cfg := labConfig()
	cfg.LimitRuleLogs = true
	for _, c := range []struct {
		name string
		p    *policy.Policy
	}{{"10k", bigPolicy(10000, 1)}, {"100k", flatPolicy(100000, 0)}} {
		rs := mustCompileT(b, c.p, cfg)
		pl, err := lower(rs, nil, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		var chains []*Chain
		n := 0
		for _, ch := range rs.Chains {
			if ch.Hook == HookNone {
				chains = append(chains, ch)
				n += len(ch.Rules)
			}
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			u0, s0 := cpuTimes()
			for range b.N {
				w := &wire{b: make([]byte, 0, 256*n)}
				if err := appendRules(w, pl, chains); err != nil {
					b.Fatal(err)
				}
			}
			u1, s1 := cpuTimes()
			b.ReportMetric(float64((u1-u0+s1-s0).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}

// appendRulesSlow is appendRules as it was before the direct encoding
// (every expression through expr.Marshal, the comment through
// userdata.AppendString).
func appendRulesSlow(t testing.TB, w *wire, pl *plan, chains []*Chain) {
	for _, c := range chains {
		for _, r := range c.Rules {
			off := w.begin(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE, unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_APPEND)
			w.b = append(w.b, byte(nftables.TableFamilyINet), unix.NFNETLINK_V0, 0, 0)
			w.strAttr(unix.NFTA_RULE_TABLE, pl.table.Name)
			w.strAttr(unix.NFTA_RULE_CHAIN, c.Name)
			n := w.nest(unix.NFTA_RULE_EXPRESSIONS)
			for k := 0; k < len(r.Stmts); k++ {
				if j := wholeLoadRun(r.Stmts[k:]); j >= 2 {
					ms := make([]MatchRange, j)
					for i := range ms {
						ms[i] = r.Stmts[k+i].(MatchRange)
					}
					if x, ok := concatLoads(ms); ok {
						w.b = append(w.b, marshalSlow(t, x)...)
						k += j - 1
						continue
					}
				}
				x, err := lowerStmt(r.Stmts[k], pl.setMap, pl.chMap)
				if err != nil {
					t.Fatal(err)
				}
				w.b = append(w.b, marshalSlow(t, x)...)
			}
			if err := w.closeNest(n); err != nil {
				t.Fatal(err)
			}
			if r.Comment != "" {
				w.attr(unix.NFTA_RULE_USERDATA, userdata.AppendString(nil, userdata.TypeComment, r.Comment))
			}
			w.end(off)
		}
	}
}

// TestAppendRulesSameBytes: the rule messages appendRules writes are
// byte for byte those of the encoding through google/nftables (the 3,000-
// rule policy with and without LimitRuleLogs, the flat policy, comments
// of every length up to the kernel's limit).
func TestAppendRulesSameBytes(t *testing.T) {
	limited := labConfig()
	limited.LimitRuleLogs = true
	for i, rs := range []*Ruleset{
		mustCompileT(t, bigPolicy(3000, 1), labConfig()),
		mustCompileT(t, bigPolicy(3000, 2), limited),
		mustCompileT(t, flatPolicy(2000, 0), limited),
	} {
		pl, err := lower(rs, nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		chains := rs.Chains
		extra := &Chain{Name: rs.Chains[0].Name}
		for n := 1; n <= 300; n++ {
			extra.add(strings.Repeat("é", n/2)+strings.Repeat("x", n%2), Verdict{Kind: VerdictAccept})
		}
		chains = append(chains[:len(chains):len(chains)], extra)
		var fast, slow wire
		if err := appendRules(&fast, pl, chains); err != nil {
			t.Fatal(err)
		}
		appendRulesSlow(t, &slow, pl, chains)
		if !bytes.Equal(fast.b, slow.b) || !slices.Equal(fast.offs, slow.offs) {
			n := 0
			for n < min(len(fast.b), len(slow.b)) && fast.b[n] == slow.b[n] {
				n++
			}
			t.Fatalf("ruleset %d: appendRules differs from google/nftables' encoding at byte %d of %d/%d", i, n, len(fast.b), len(slow.b))
		}
	}
}

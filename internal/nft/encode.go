package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Rule messages.
//
// The rules are most of a large batch (a 10,000-rule policy has some
// 18,000), and google/nftables' AddRule builds each through several layers
// of attribute slices. appendRules writes the same NFT_MSG_NEWRULE message
// (table, chain, the list of expressions, userdata) directly into the
// batch, and the expressions most rules are made of directly too
// (fastExpr, encexpr.go); the others are marshalled by google/nftables
// (expr.Marshal). Only single matches (MatchRange, a fixed-size map key)
// are encoded once and copied: a cache of every distinct statement,
// verdicts and names included, cost more in hashing than it saved once
// the common expressions were written directly (BenchmarkAppendRules).

// wire is a netlink batch being written.
type wire struct {
	b    []byte
	offs []int // offset of each message
}

// begin starts a message and returns its offset; end fills in its length.
func (w *wire) begin(typ, flags uint16) int {
	off := len(w.b)
	w.offs = append(w.offs, off)
	w.b = binary.NativeEndian.AppendUint32(w.b, 0) // length, set by end
	w.b = binary.NativeEndian.AppendUint16(w.b, typ)
	w.b = binary.NativeEndian.AppendUint16(w.b, flags)
	w.b = binary.NativeEndian.AppendUint32(w.b, uint32(len(w.offs))) // sequence
	w.b = binary.NativeEndian.AppendUint32(w.b, 0)                   // port id
	return off
}

func (w *wire) end(off int) {
	binary.NativeEndian.PutUint32(w.b[off:], uint32(len(w.b)-off))
	for len(w.b)%4 != 0 {
		w.b = append(w.b, 0)
	}
}

func (w *wire) attr(typ uint16, data []byte) {
	l := 4 + len(data)
	w.b = binary.NativeEndian.AppendUint16(w.b, uint16(l))
	w.b = binary.NativeEndian.AppendUint16(w.b, typ)
	w.b = append(w.b, data...)
	for ; l%4 != 0; l++ {
		w.b = append(w.b, 0)
	}
}

func (w *wire) strAttr(typ uint16, s string) {
	l := 4 + len(s) + 1
	w.b = binary.NativeEndian.AppendUint16(w.b, uint16(l))
	w.b = binary.NativeEndian.AppendUint16(w.b, typ)
	w.b = append(w.b, s...)
	w.b = append(w.b, 0)
	for ; l%4 != 0; l++ {
		w.b = append(w.b, 0)
	}
}

// nest starts a nested attribute; closeNest fills in its length.
func (w *wire) nest(typ uint16) int {
	off := len(w.b)
	w.b = binary.NativeEndian.AppendUint16(w.b, 0)
	w.b = binary.NativeEndian.AppendUint16(w.b, unix.NLA_F_NESTED|typ)
	return off
}

func (w *wire) closeNest(off int) error {
	l := len(w.b) - off
	if l > 0xffff {
		return fmt.Errorf("attribute too long (%d bytes)", l)
	}
	binary.NativeEndian.PutUint16(w.b[off:], uint16(l))
	return nil
}

// exprs writes expressions as a rule's list elements: directly
// (fastExpr), or as google/nftables marshals them.
func (w *wire) exprs(xs []expr.Any) error {
	for _, x := range xs {
		ok, err := w.fastExpr(x)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		data, err := expr.Marshal(byte(nftables.TableFamilyINet), x)
		if err != nil {
			return err
		}
		w.attr(unix.NLA_F_NESTED|unix.NFTA_LIST_ELEM, data)
	}
	return nil
}

// wholeLoadRun is the number of statements at the start of sts that are
// wholeLoad matches (concatLoads).
func wholeLoadRun(sts []Stmt) int {
	n := 0
	for _, st := range sts {
		m, ok := st.(MatchRange)
		if !ok {
			break
		}
		if wholeLoadLen(m) == 0 {
			break
		}
		n++
	}
	return n
}

// concat writes sts (wholeLoad matches) as one concatenated comparison
// (concatLoads); ok is false (and nothing written) when they do not fit
// in one.
func (w *wire) concat(sts []Stmt) (bool, error) {
	var buf [4]MatchRange
	ms := buf[:0]
	for _, st := range sts {
		ms = append(ms, st.(MatchRange))
	}
	exprs, ok := concatLoads(ms)
	if !ok {
		return false, nil
	}
	return true, w.exprs(exprs)
}

// appendRules writes one NFT_MSG_NEWRULE message per rule of chains (of
// the plan's ruleset; appended to its chain, in order) to w.
func appendRules(w *wire, pl *plan, chains []*Chain) error {
	// A leaf's match (`th dport 443`, `ip daddr 10.1.2.0/24`) recurs in
	// many rules: encoded once (a fixed-size key, cheap to hash).
	ranges := map[MatchRange][]byte{}
	for _, c := range chains {
		for i, r := range c.Rules {
			off := w.begin(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE, unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_APPEND)
			w.b = append(w.b, byte(nftables.TableFamilyINet), unix.NFNETLINK_V0, 0, 0)
			w.strAttr(unix.NFTA_RULE_TABLE, pl.table.Name)
			w.strAttr(unix.NFTA_RULE_CHAIN, c.Name)
			n := w.nest(unix.NFTA_RULE_EXPRESSIONS)
			for k := 0; k < len(r.Stmts); k++ {
				if j := wholeLoadRun(r.Stmts[k:]); j >= 2 {
					if ok, err := w.concat(r.Stmts[k : k+j]); err != nil {
						return fmt.Errorf("ruleset: chain %s rule %d: %v", c.Name, i, err)
					} else if ok {
						k += j - 1
						continue
					}
				}
				m, isRange := r.Stmts[k].(MatchRange)
				if isRange {
					if b, ok := ranges[m]; ok {
						w.b = append(w.b, b...)
						continue
					}
				}
				from := len(w.b)
				exprs, err := lowerStmt(r.Stmts[k], pl.setMap, pl.chMap)
				if err == nil {
					err = w.exprs(exprs)
				}
				if err == nil && isRange {
					ranges[m] = append([]byte(nil), w.b[from:]...)
				}
				if err != nil {
					return fmt.Errorf("ruleset: chain %s rule %d: %s: %v", c.Name, i, r.Stmts[k], err)
				}
			}
			if err := w.closeNest(n); err != nil {
				return fmt.Errorf("ruleset: chain %s rule %d: %v", c.Name, i, err)
			}
			if r.Comment != "" {
				w.comment(r.Comment)
			}
			w.end(off)
		}
	}
	return nil
}

// comment writes a rule's comment as its userdata, as
// userdata.AppendString encodes it (one TLV: type, length, the text and a
// NUL; truncComment keeps it within the length byte).
func (w *wire) comment(c string) {
	l := 4 + 2 + len(c) + 1
	w.b = binary.NativeEndian.AppendUint16(w.b, uint16(l))
	w.b = binary.NativeEndian.AppendUint16(w.b, unix.NFTA_RULE_USERDATA)
	w.b = append(w.b, byte(userdata.TypeComment), byte(len(c)+1))
	w.b = append(w.b, c...)
	w.b = append(w.b, 0)
	for ; l%4 != 0; l++ {
		w.b = append(w.b, 0)
	}
}

// Messages for the chains, sets and objects an apply adds and removes,
// written directly: a 100,000-rule policy has as many chains, and
// google/nftables builds each message through several layers of
// attribute slices.

// msg starts an nf_tables message of type typ on table's family.
func (w *wire) msg(typ uint16, flags uint16) int {
	off := w.begin(unix.NFNL_SUBSYS_NFTABLES<<8|typ, unix.NLM_F_REQUEST|flags)
	w.b = append(w.b, byte(nftables.TableFamilyINet), unix.NFNETLINK_V0, 0, 0)
	return off
}

// newChain adds a regular chain.
func (w *wire) newChain(table, name string) {
	off := w.msg(unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE)
	w.strAttr(unix.NFTA_CHAIN_TABLE, table)
	w.strAttr(unix.NFTA_CHAIN_NAME, name)
	w.end(off)
}

// delChain deletes a chain (and its rules; nothing else may refer to it).
func (w *wire) delChain(table, name string) {
	off := w.msg(unix.NFT_MSG_DELCHAIN, 0)
	w.strAttr(unix.NFTA_CHAIN_TABLE, table)
	w.strAttr(unix.NFTA_CHAIN_NAME, name)
	w.end(off)
}

// flushChain deletes every rule of a chain.
func (w *wire) flushChain(table, name string) {
	off := w.msg(unix.NFT_MSG_DELRULE, 0)
	w.strAttr(unix.NFTA_RULE_TABLE, table)
	w.strAttr(unix.NFTA_RULE_CHAIN, name)
	w.end(off)
}

// delSet deletes a set.
func (w *wire) delSet(table, name string) {
	off := w.msg(unix.NFT_MSG_DELSET, 0)
	w.strAttr(unix.NFTA_SET_TABLE, table)
	w.strAttr(unix.NFTA_SET_NAME, name)
	w.end(off)
}

// newCounter adds a named counter object at zero.
func (w *wire) newCounter(table, name string) error {
	off := w.msg(unix.NFT_MSG_NEWOBJ, unix.NLM_F_CREATE)
	w.strAttr(unix.NFTA_OBJ_TABLE, table)
	w.strAttr(unix.NFTA_OBJ_NAME, name)
	w.attr(unix.NFTA_OBJ_TYPE, binary.BigEndian.AppendUint32(nil, unix.NFT_OBJECT_COUNTER))
	n := w.nest(unix.NFTA_OBJ_DATA)
	w.attr(unix.NFTA_COUNTER_BYTES, make([]byte, 8))
	w.attr(unix.NFTA_COUNTER_PACKETS, make([]byte, 8))
	if err := w.closeNest(n); err != nil {
		return err
	}
	w.end(off)
	return nil
}

// delObj deletes a named object.
func (w *wire) delObj(table, name string, typ nftables.ObjType) {
	off := w.msg(unix.NFT_MSG_DELOBJ, 0)
	w.strAttr(unix.NFTA_OBJ_TABLE, table)
	w.strAttr(unix.NFTA_OBJ_NAME, name)
	w.attr(unix.NFTA_OBJ_TYPE, binary.BigEndian.AppendUint32(nil, uint32(typ)))
	w.end(off)
}

// setElems writes the elements of a set in NEWSETELEM messages of at most
// maxElemsPerMsg elements, as google/nftables' SetAddElements encodes
// them (TestSetElemsEncoding), without its intermediate attribute slices.
func (w *wire) setElems(s *nftables.Set, elems []nftables.SetElement) error {
	for i := 0; i < len(elems); i += maxElemsPerMsg {
		chunk := elems[i:min(i+maxElemsPerMsg, len(elems))]
		off := w.msg(unix.NFT_MSG_NEWSETELEM, unix.NLM_F_CREATE)
		w.strAttr(unix.NFTA_SET_ELEM_LIST_SET, s.Name)
		w.attr(unix.NFTA_SET_ELEM_LIST_SET_ID, binary.BigEndian.AppendUint32(nil, s.ID))
		w.strAttr(unix.NFTA_SET_ELEM_LIST_TABLE, s.Table.Name)
		list := w.nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS)
		for k, e := range chunk {
			item := w.nest(uint16(k + 1))
			if e.IntervalEnd {
				w.attr(unix.NFTA_SET_ELEM_FLAGS|unix.NLA_F_NESTED, binary.BigEndian.AppendUint32(nil, unix.NFT_SET_ELEM_INTERVAL_END))
			}
			key := w.nest(unix.NFTA_SET_ELEM_KEY)
			w.attr(unix.NFTA_DATA_VALUE, e.Key)
			if err := w.closeNest(key); err != nil {
				return err
			}
			if s.HasTimeout && e.Timeout != 0 {
				w.attr(unix.NFTA_SET_ELEM_TIMEOUT, binary.BigEndian.AppendUint64(nil, uint64(e.Timeout.Milliseconds())))
			}
			switch {
			case e.VerdictData != nil:
				data := w.nest(unix.NFTA_SET_ELEM_DATA)
				verdict := w.nest(unix.NFTA_DATA_VERDICT)
				w.attr(unix.NFTA_VERDICT_CODE, binary.BigEndian.AppendUint32(nil, uint32(e.VerdictData.Kind)))
				if e.VerdictData.Chain != "" {
					w.strAttr(unix.NFTA_VERDICT_CHAIN, e.VerdictData.Chain)
				}
				if err := w.closeNest(verdict); err != nil {
					return err
				}
				if err := w.closeNest(data); err != nil {
					return err
				}
			case len(e.Val) > 0:
				data := w.nest(unix.NFTA_SET_ELEM_DATA)
				w.attr(unix.NFTA_DATA_VALUE, e.Val)
				if err := w.closeNest(data); err != nil {
					return err
				}
			}
			if err := w.closeNest(item); err != nil {
				return err
			}
		}
		if err := w.closeNest(list); err != nil {
			return err
		}
		w.end(off)
	}
	return nil
}

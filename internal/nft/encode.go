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
// batch; every expression is still marshalled by google/nftables
// (expr.Marshal), once per distinct statement: a statement such as
// `th dport 443` or `counter` is encoded once and copied into every rule
// that has it.

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

type ruleEncoder struct {
	pl    *plan
	cache map[Stmt][]byte // statement -> its NFTA_LIST_ELEM attributes
}

func (e *ruleEncoder) stmt(st Stmt) ([]byte, error) {
	if b, ok := e.cache[st]; ok {
		return b, nil
	}
	exprs, err := lowerStmt(st, e.pl.setMap, e.pl.chMap)
	if err != nil {
		return nil, err
	}
	var w wire
	for _, x := range exprs {
		data, err := expr.Marshal(byte(nftables.TableFamilyINet), x)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", st, err)
		}
		w.attr(unix.NLA_F_NESTED|unix.NFTA_LIST_ELEM, data)
	}
	e.cache[st] = w.b
	return w.b, nil
}

// appendRules writes one NFT_MSG_NEWRULE message per rule of chains (of
// the plan's ruleset; appended to its chain, in order) to w.
func appendRules(w *wire, pl *plan, chains []*Chain) error {
	e := &ruleEncoder{pl: pl, cache: map[Stmt][]byte{}}
	for _, c := range chains {
		for i, r := range c.Rules {
			off := w.begin(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE, unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_APPEND)
			w.b = append(w.b, byte(nftables.TableFamilyINet), unix.NFNETLINK_V0, 0, 0)
			w.strAttr(unix.NFTA_RULE_TABLE, pl.table.Name)
			w.strAttr(unix.NFTA_RULE_CHAIN, c.Name)
			n := w.nest(unix.NFTA_RULE_EXPRESSIONS)
			for _, st := range r.Stmts {
				b, err := e.stmt(st)
				if err != nil {
					return fmt.Errorf("ruleset: chain %s rule %d: %v", c.Name, i, err)
				}
				w.b = append(w.b, b...)
			}
			if err := w.closeNest(n); err != nil {
				return fmt.Errorf("ruleset: chain %s rule %d: %v", c.Name, i, err)
			}
			if r.Comment != "" {
				w.attr(unix.NFTA_RULE_USERDATA, userdata.AppendString(nil, userdata.TypeComment, r.Comment))
			}
			w.end(off)
		}
	}
	return nil
}

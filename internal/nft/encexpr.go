package nft

import (
	"encoding/binary"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Expressions written directly.
//
// google/nftables marshals an expression through a slice of attributes
// per nesting level (an immediate goto is four levels), allocating each:
// at 100,000 rules that was about a fifth of the CPU of an apply's
// netlink transactions. fastExpr writes the expressions that make most of
// a ruleset's rules — payload loads, comparisons, verdicts, named object
// references, logs — straight into the batch, byte for byte what
// expr.Marshal gives (TestFastExprSameBytes); any other expression, or
// one of these with options clusterwall does not set, goes through
// expr.Marshal.

// u32Attr writes a big-endian 32-bit attribute.
func (w *wire) u32Attr(typ uint16, v uint32) {
	w.b = binary.NativeEndian.AppendUint16(w.b, 8)
	w.b = binary.NativeEndian.AppendUint16(w.b, typ)
	w.b = binary.BigEndian.AppendUint32(w.b, v)
}

// rawStrAttr writes s without a terminating NUL (as google/nftables writes
// an objref's name).
func (w *wire) rawStrAttr(typ uint16, s string) {
	l := 4 + len(s)
	w.b = binary.NativeEndian.AppendUint16(w.b, uint16(l))
	w.b = binary.NativeEndian.AppendUint16(w.b, typ)
	w.b = append(w.b, s...)
	for ; l%4 != 0; l++ {
		w.b = append(w.b, 0)
	}
}

// fastExpr writes x as one element of a rule's expression list and
// reports whether it could; when it returns false, w is unchanged.
func (w *wire) fastExpr(x expr.Any) (bool, error) {
	start := len(w.b)
	el := w.nest(unix.NFTA_LIST_ELEM)
	var data int
	switch e := x.(type) {
	case *expr.Payload:
		if e.OperationType == expr.PayloadWrite || e.CsumType > 0 {
			w.b = w.b[:start]
			return false, nil
		}
		w.strAttr(unix.NFTA_EXPR_NAME, "payload")
		data = w.nest(unix.NFTA_EXPR_DATA)
		w.u32Attr(unix.NFTA_PAYLOAD_DREG, e.DestRegister)
		w.u32Attr(unix.NFTA_PAYLOAD_BASE, uint32(e.Base))
		w.u32Attr(unix.NFTA_PAYLOAD_OFFSET, e.Offset)
		w.u32Attr(unix.NFTA_PAYLOAD_LEN, e.Len)
	case *expr.Cmp:
		w.strAttr(unix.NFTA_EXPR_NAME, "cmp")
		data = w.nest(unix.NFTA_EXPR_DATA)
		w.u32Attr(unix.NFTA_CMP_SREG, e.Register)
		w.u32Attr(unix.NFTA_CMP_OP, uint32(e.Op))
		d := w.nest(unix.NFTA_CMP_DATA)
		w.attr(unix.NFTA_DATA_VALUE, e.Data)
		if err := w.closeNest(d); err != nil {
			return false, err
		}
	case *expr.Verdict:
		w.strAttr(unix.NFTA_EXPR_NAME, "immediate")
		data = w.nest(unix.NFTA_EXPR_DATA)
		w.u32Attr(unix.NFTA_IMMEDIATE_DREG, unix.NFT_REG_VERDICT)
		imm := w.nest(unix.NFTA_IMMEDIATE_DATA)
		v := w.nest(unix.NFTA_DATA_VERDICT)
		w.u32Attr(unix.NFTA_VERDICT_CODE, uint32(e.Kind))
		if e.Chain != "" {
			w.strAttr(unix.NFTA_VERDICT_CHAIN, e.Chain)
		}
		for _, n := range []int{v, imm} {
			if err := w.closeNest(n); err != nil {
				return false, err
			}
		}
	case *expr.Objref:
		w.strAttr(unix.NFTA_EXPR_NAME, "objref")
		data = w.nest(unix.NFTA_EXPR_DATA)
		w.u32Attr(unix.NFTA_OBJREF_IMM_TYPE, uint32(e.Type))
		w.rawStrAttr(unix.NFTA_OBJREF_IMM_NAME, e.Name)
	case *expr.Log:
		if e.Key&^(1<<unix.NFTA_LOG_GROUP|1<<unix.NFTA_LOG_PREFIX) != 0 {
			w.b = w.b[:start]
			return false, nil
		}
		w.strAttr(unix.NFTA_EXPR_NAME, "log")
		data = w.nest(unix.NFTA_EXPR_DATA)
		if e.Key&(1<<unix.NFTA_LOG_GROUP) != 0 {
			w.attr(unix.NFTA_LOG_GROUP, binary.BigEndian.AppendUint16(make([]byte, 0, 2), e.Group))
		}
		if e.Key&(1<<unix.NFTA_LOG_PREFIX) != 0 {
			w.b = binary.NativeEndian.AppendUint16(w.b, uint16(4+len(e.Data)+1))
			w.b = binary.NativeEndian.AppendUint16(w.b, unix.NFTA_LOG_PREFIX)
			w.b = append(w.b, e.Data...)
			w.b = append(w.b, 0)
			for l := 4 + len(e.Data) + 1; l%4 != 0; l++ {
				w.b = append(w.b, 0)
			}
		}
	default:
		w.b = w.b[:start]
		return false, nil
	}
	if err := w.closeNest(data); err != nil {
		return false, err
	}
	if err := w.closeNest(el); err != nil {
		return false, err
	}
	return true, nil
}

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Transactions.
//
// google/nftables builds every message of a batch (tables, chains, sets,
// elements, rules, the expressions in them) and Conn.Flush sends them
// wrapped in NFNL_MSG_BATCH_BEGIN/END, which the kernel applies as one
// transaction: all or nothing, and no packet ever sees a half-built
// table. Flush, though, asks for an acknowledgement of every message (and
// an echo of every rule) and reads them one datagram at a time; for a
// 10,000-rule policy that is some 30,000 receive calls and most of the
// apply time.
//
// transact therefore lets google/nftables build the batch on a capturing
// connection (its public WithTestDial option: the messages are marshalled
// exactly as Flush would send them) and sends the same batch itself, with
// the acknowledgement requested only on the last message and echoes off.
// The kernel still reports every failing message (errors are always
// sent), and a failing message aborts the whole transaction.

// batchTimeout bounds the wait for the kernel's answer.
const batchTimeout = 60 * time.Second

// part is one piece of a batch: messages google/nftables builds (nft), or
// messages written directly (wire: encode.go).
type part struct {
	nft  func(c *nftables.Conn) error
	wire func(w *wire) error
}

func nftPart(f func(c *nftables.Conn) error) part { return part{nft: f} }
func wirePart(f func(w *wire) error) part         { return part{wire: f} }

// batch lays out one transaction: BATCH_BEGIN, the parts' messages in
// order, BATCH_END, with an acknowledgement asked for on the last message
// only. It returns nil when the parts add nothing.
func batch(sizeHint int, parts ...part) (*wire, uint32, error) {
	w := &wire{b: make([]byte, 0, max(sizeHint, 64<<10))}
	batchMsg(w, unix.NFNL_MSG_BATCH_BEGIN)
	for _, p := range parts {
		if p.wire != nil {
			if err := p.wire(w); err != nil {
				return nil, 0, err
			}
			continue
		}
		var msgs []netlink.Message
		capture, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
			if req != nil {
				msgs = append(msgs, req...)
				return nil, nil
			}
			// One acknowledgement per receive: what Flush waits for.
			return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4)}}, nil
		}))
		if err != nil {
			return nil, 0, err
		}
		if err := p.nft(capture); err != nil {
			return nil, 0, err
		}
		if err := capture.Flush(); err != nil {
			return nil, 0, fmt.Errorf("building the batch: %w", err)
		}
		// google/nftables' BATCH_BEGIN and BATCH_END are ours.
		for _, m := range msgs {
			if t := uint16(m.Header.Type); t == unix.NFNL_MSG_BATCH_BEGIN || t == unix.NFNL_MSG_BATCH_END {
				continue
			}
			off := w.begin(uint16(m.Header.Type), uint16(m.Header.Flags&^(netlink.Acknowledge|unix.NLM_F_ECHO)))
			w.b = append(w.b, m.Data...)
			w.end(off)
		}
	}
	if len(w.offs) == 1 {
		return nil, 0, nil // only BATCH_BEGIN
	}
	last := w.offs[len(w.offs)-1]
	flags := binary.NativeEndian.Uint16(w.b[last+6:])
	binary.NativeEndian.PutUint16(w.b[last+6:], flags|unix.NLM_F_ACK)
	lastSeq := uint32(len(w.offs))
	batchMsg(w, unix.NFNL_MSG_BATCH_END)
	return w, lastSeq, nil
}

// batchMsg writes NFNL_MSG_BATCH_BEGIN or _END for nf_tables.
func batchMsg(w *wire, typ uint16) {
	off := w.begin(typ, unix.NLM_F_REQUEST)
	w.b = append(w.b, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	w.b = binary.BigEndian.AppendUint16(w.b, unix.NFNL_SUBSYS_NFTABLES)
	w.end(off)
}

// transact sends one transaction made of parts and waits for the kernel's
// answer. sizeHint is about how many bytes the messages take.
func (r *NetlinkRunner) transact(sizeHint int, parts ...part) error {
	w, lastSeq, err := batch(sizeHint, parts...)
	if err != nil || w == nil {
		return err
	}
	return r.send(w, lastSeq)
}

// send sends a batch (batch) and reads the kernel's answers.
func (r *NetlinkRunner) send(w *wire, lastSeq uint32) error {
	c, err := r.getRaw()
	if err != nil {
		return err
	}
	if err := c.send(w.b); err != nil {
		r.putRaw(c, false)
		return kernelErr("send batch", err)
	}
	err = readAcks(c, w, lastSeq)
	r.putRaw(c, err == nil)
	return err
}

// readAcks reads the kernel's answers until the acknowledgement of the
// message with sequence lastSeq, collecting errors.
func readAcks(c *rawConn, w *wire, lastSeq uint32) error {
	buf := make([]byte, 1<<16)
	var errs []error
	for {
		b, err := c.recv(buf)
		if err != nil {
			// ENOBUFS: answers were lost, the outcome is unknown.
			return kernelErr("read batch acknowledgement", err)
		}
		done, err := eachMsg(b, func(m nlMsg) (bool, error) {
			if m.typ != unix.NLMSG_ERROR || len(m.data) < 4 {
				return false, nil
			}
			if errno := m.errno(); errno != 0 {
				errs = append(errs, describeErr(w, m.seq, errno, extAckMsg(m.flags, m.data)))
			}
			return m.seq == lastSeq, nil
		})
		if err != nil {
			return kernelErr("read batch acknowledgement", err)
		}
		if done {
			return errors.Join(errs...)
		}
	}
}

// extAckMsg returns the kernel's extended acknowledgement text, if any.
func extAckMsg(flags uint16, data []byte) string {
	if flags&unix.NLM_F_ACK_TLVS == 0 || len(data) < 4+unix.NLMSG_HDRLEN {
		return ""
	}
	off := 4 + unix.NLMSG_HDRLEN
	if flags&unix.NLM_F_CAPPED == 0 {
		off = 4 + nlAlign(int(binary.NativeEndian.Uint32(data[4:8])))
	}
	if off > len(data) {
		return ""
	}
	ad, err := netlink.NewAttributeDecoder(data[off:])
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NLMSGERR_ATTR_MSG {
			return ad.String()
		}
	}
	return ""
}

// describeErr names the message an error is about.
func describeErr(w *wire, seq uint32, errno syscall.Errno, ext string) error {
	what := fmt.Sprintf("message %d", seq)
	if i := int(seq) - 1; i >= 0 && i < len(w.offs) {
		off := w.offs[i]
		l := int(binary.NativeEndian.Uint32(w.b[off:]))
		what = describeMsg(binary.NativeEndian.Uint16(w.b[off+4:]), w.b[off+unix.NLMSG_HDRLEN:off+l])
	}
	if ext != "" {
		return fmt.Errorf("%s: %w (%s)", what, errno, ext)
	}
	return fmt.Errorf("%s: %w", what, errno)
}

func describeMsg(typ uint16, data []byte) string {
	names := map[uint16]string{
		unix.NFT_MSG_NEWTABLE: "add table", unix.NFT_MSG_DELTABLE: "delete table",
		unix.NFT_MSG_NEWCHAIN: "add chain", unix.NFT_MSG_NEWRULE: "add rule",
		unix.NFT_MSG_NEWSET: "add set", unix.NFT_MSG_NEWSETELEM: "add set elements",
		unix.NFT_MSG_DELSETELEM: "delete set elements", unix.NFT_MSG_NEWOBJ: "add object",
	}
	op := names[typ&0xff]
	if op == "" {
		op = fmt.Sprintf("nftables message %#x", typ)
	}
	if len(data) < 4 {
		return op
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return op
	}
	var parts []string
	for ad.Next() {
		// NFTA_*_TABLE is 1 and NFTA_*_NAME / NFTA_RULE_CHAIN is 2 for
		// tables, chains, rules, sets and objects alike.
		switch ad.Type() {
		case 1, 2:
			if s := strings.TrimRight(string(ad.Bytes()), "\x00"); s != "" && isPrintable(s) {
				parts = append(parts, s)
			}
		}
	}
	if len(parts) > 0 {
		op += " " + strings.Join(parts, " ")
	}
	return op
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

package nft

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
)

// TestSetElemsEncoding: wire.setElems writes the messages google/nftables'
// SetAddElements would (set, map and timeout elements; chunks).
func TestSetElemsEncoding(t *testing.T) {
	table := &nftables.Table{Name: "clusterwall", Family: nftables.TableFamilyINet}
	var elems []nftables.SetElement
	for i := range 600 {
		e := nftables.SetElement{Key: []byte{10, 0, byte(i >> 8), byte(i)}, IntervalEnd: i%3 == 1}
		switch i % 4 {
		case 0:
			e.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: "tcp4_leaf_0123456789abcdef"}
		case 1:
			e.Val = []byte{192, 0, 2, byte(i)}
		case 2:
			e.Timeout = time.Duration(i) * time.Second
		}
		elems = append(elems, e)
	}
	for _, s := range []*nftables.Set{
		{Table: table, Name: "m", ID: 7, IsMap: true, Interval: true},
		{Table: table, Name: "fqdn_5_v4_0123456789abcdef", ID: 9, HasTimeout: true},
	} {
		var msgs []netlink.Message
		c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
			msgs = append(msgs, req...)
			return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4)}}, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(elems); i += maxElemsPerMsg {
			if err := c.SetAddElements(s, elems[i:min(i+maxElemsPerMsg, len(elems))]); err != nil {
				t.Fatal(err)
			}
		}
		c.Flush()
		var w wire
		if err := w.setElems(s, elems); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[1 : len(msgs)-1] // batch begin and end
		if len(msgs) != len(w.offs) {
			t.Fatalf("%s: %d messages, google/nftables %d", s.Name, len(w.offs), len(msgs))
		}
		for i, m := range msgs {
			end := len(w.b)
			if i+1 < len(w.offs) {
				end = w.offs[i+1]
			}
			got := w.b[w.offs[i]+16 : end]
			want := append([]byte(nil), m.Data...)
			for len(want)%4 != 0 {
				want = append(want, 0)
			}
			if !bytes.Equal(got, want) || uint16(m.Header.Type) != uint16(w.b[w.offs[i]+4])|uint16(w.b[w.offs[i]+5])<<8 {
				t.Fatalf("%s: message %d differs from google/nftables'", s.Name, i)
			}
		}
	}
}

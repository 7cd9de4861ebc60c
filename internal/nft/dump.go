package nft

import (
	"encoding/binary"
	"errors"
	"syscall"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Listing the table: netlink dumps read with a large buffer.
//
// The kernel answers a dump in rounds, each as large as the reader's
// receive calls (up to 32 KiB), and starts every round by walking the
// table's chains (or sets, or objects) from the first one. google/nftables
// reads with a page-sized buffer, so a round holds about 40 chains or
// counters and listing 100,000 of them walks the list 2,500 times (the
// object dump of a 100,000-rule ruleset took 6 s); reading with a 64 KiB
// buffer makes the rounds as large as the kernel allows.

// dump sends an nf_tables dump request (message type typ, attributes
// attrs, family inet) and calls fn with the attributes of every answer.
func (r *NetlinkRunner) dump(typ uint16, attrs []byte, fn func(ad *netlink.AttributeDecoder) error) error {
	c, err := r.openRaw()
	if err != nil {
		return err
	}
	defer c.Close()
	var w wire
	off := w.begin(unix.NFNL_SUBSYS_NFTABLES<<8|typ, unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	w.b = append(w.b, byte(nftables.TableFamilyINet), unix.NFNETLINK_V0, 0, 0)
	w.b = append(w.b, attrs...)
	w.end(off)
	if err := c.send(w.b); err != nil {
		return kernelErr("dump", err)
	}
	buf := make([]byte, 64<<10)
	for {
		b, err := c.recv(buf)
		if err != nil {
			return kernelErr("dump", err)
		}
		done, err := eachMsg(b, func(m nlMsg) (bool, error) {
			switch m.typ {
			case unix.NLMSG_DONE:
				return true, nil
			case unix.NLMSG_ERROR:
				if errno := m.errno(); errno != 0 {
					return true, kernelErr("dump", errno)
				}
				return false, nil
			}
			ad, err := m.attributes()
			if ad == nil || err != nil {
				return err != nil, err
			}
			if err := fn(ad); err != nil {
				return true, err
			}
			return false, ad.Err()
		})
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// listChains returns the chains of table (base chains with their hook,
// priority and type).
func (r *NetlinkRunner) listChains(table string) ([]*nftables.Chain, error) {
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	var out []*nftables.Chain
	err := r.dump(unix.NFT_MSG_GETCHAIN, nil, func(ad *netlink.AttributeDecoder) error {
		c := &nftables.Chain{Table: t}
		var tbl string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_CHAIN_TABLE:
				tbl = ad.String()
			case unix.NFTA_CHAIN_NAME:
				c.Name = ad.String()
			case unix.NFTA_CHAIN_TYPE:
				c.Type = nftables.ChainType(ad.String())
			case unix.NFTA_CHAIN_HOOK:
				ad.Nested(func(nd *netlink.AttributeDecoder) error {
					for nd.Next() {
						switch nd.Type() {
						case unix.NFTA_HOOK_HOOKNUM:
							h := nftables.ChainHook(nd.Uint32())
							c.Hooknum = &h
						case unix.NFTA_HOOK_PRIORITY:
							p := nftables.ChainPriority(int32(nd.Uint32()))
							c.Priority = &p
						}
					}
					return nil
				})
			}
		}
		if tbl == table {
			out = append(out, c)
		}
		return nil
	})
	return out, err
}

// listSets returns the names of the sets of table.
func (r *NetlinkRunner) listSets(table string) ([]string, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_TABLE, table)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	var out []string
	err = r.dump(unix.NFT_MSG_GETSET, attrs, func(ad *netlink.AttributeDecoder) error {
		var tbl, name string
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_SET_TABLE:
				tbl = ad.String()
			case unix.NFTA_SET_NAME:
				name = ad.String()
			}
		}
		if tbl == table {
			out = append(out, name)
		}
		return nil
	})
	return out, err
}

// object is a named object of the table, with a counter's values.
type object struct {
	typ            nftables.ObjType
	packets, bytes uint64
}

// decodeObject reads an object's table, name, type and, for a counter,
// its values from the attributes of an NFT_MSG_NEWOBJ answer.
func decodeObject(ad *netlink.AttributeDecoder) (table, name string, o object) {
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_OBJ_TABLE:
			table = ad.String()
		case unix.NFTA_OBJ_NAME:
			name = ad.String()
		case unix.NFTA_OBJ_TYPE:
			o.typ = nftables.ObjType(ad.Uint32())
		case unix.NFTA_OBJ_DATA:
			ad.Nested(func(nd *netlink.AttributeDecoder) error {
				for nd.Next() {
					switch nd.Type() {
					case unix.NFTA_COUNTER_BYTES:
						o.bytes = nd.Uint64()
					case unix.NFTA_COUNTER_PACKETS:
						o.packets = nd.Uint64()
					}
				}
				return nil
			})
		}
	}
	if o.typ != nftables.ObjTypeCounter {
		o.packets, o.bytes = 0, 0
	}
	return table, name, o
}

// listObjects returns the named objects of table (only those of type typ,
// unless 0).
func (r *NetlinkRunner) listObjects(table string, typ nftables.ObjType) (map[string]object, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian // before Uint32: the encoder writes values as they are added
	ae.String(unix.NFTA_OBJ_TABLE, table)
	if typ != 0 {
		ae.Uint32(unix.NFTA_OBJ_TYPE, uint32(typ))
	}
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	out := map[string]object{}
	err = r.dump(unix.NFT_MSG_GETOBJ, attrs, func(ad *netlink.AttributeDecoder) error {
		tbl, name, o := decodeObject(ad)
		if tbl == table && (typ == 0 || o.typ == typ) {
			out[name] = o
		}
		return nil
	})
	if errors.Is(err, syscall.ENOENT) {
		return map[string]object{}, nil
	}
	return out, err
}

package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// SNAT pool (Config.SNAT == SNATPool): new outbound flows are spread over
// several public IPs, each with a port range of its own, in proportion to
// the ranges' sizes — so every IP runs out of ports for a destination at
// about the same load, and the pool carries what one IP could not.
//
// The kernel's `snat to A-B` picks one address per source and destination
// pair (a hash) and never tries another when that address's ports are
// used up, so the spread is done here: for each family and transport
// protocol the postrouting chain has one rule per pool address,
//
//	oifname <out> meta nfproto F meta l4proto P numgen inc mod M_i < w_i snat to A_i:lo_i-hi_i
//
// where w_i is address i's port range size and M_i the sum of the sizes of
// addresses i..n; the last address's rule has no numgen. Each rule's
// counter only sees the flows the rules before it left, so address i gets
// exactly w_i / (w_1 + ... + w_n) of the new flows (round robin, no
// randomness). Protocols without ports (ICMP) are spread the same way
// without a port range.

// SNATPoolEntry is one public IP of the pool and its port range.
type SNATPoolEntry struct {
	Addr           netip.Addr
	PortLo, PortHi uint16
}

// Ports is the size of the entry's port range.
func (e SNATPoolEntry) Ports() uint32 { return uint32(e.PortHi) - uint32(e.PortLo) + 1 }

func validatePool(c Config) error {
	if c.SNAT != SNATPool {
		return nil
	}
	if len(c.SNATPool) == 0 {
		return fmt.Errorf("data plane config: SNAT pool without addresses")
	}
	for _, e := range c.SNATPool {
		if !c.isPublic(e.Addr) {
			return fmt.Errorf("data plane config: SNAT pool address %v is not a public IP (%s)", e.Addr, addrList(c.PublicIPs))
		}
		if e.PortLo == 0 || e.PortLo > e.PortHi {
			return fmt.Errorf("data plane config: SNAT pool address %v: bad port range %d-%d", e.Addr, e.PortLo, e.PortHi)
		}
	}
	return nil
}

// snatPool compiles the pool's rules (postrouting, after the DNAT accept).
func (c *compiler) snatPool(ch *Chain) {
	out := MatchIfName{Out: true, Name: c.cfg.Outside}
	for _, fam := range []family{ipv4, ipv6} {
		var pool []SNATPoolEntry
		for _, e := range c.cfg.SNATPool {
			if famOf(e.Addr) == fam {
				pool = append(pool, SNATPoolEntry{Addr: e.Addr.Unmap(), PortLo: e.PortLo, PortHi: e.PortHi})
			}
		}
		if len(pool) == 0 {
			// No pool address of this family: its first public IP, else
			// the outside interface's address.
			var st Stmt = Masquerade{}
			for _, a := range c.cfg.PublicIPs {
				if famOf(a) == fam {
					st = SNAT{Addr: a.Unmap()}
					break
				}
			}
			ch.add("", out, MatchNFProto{fam}, st)
			continue
		}
		for _, proto := range []uint8{protoTCP, protoUDP, 0} {
			var total uint32
			for _, e := range pool {
				total += e.Ports()
			}
			for i, e := range pool {
				stmts := []Stmt{out, MatchNFProto{fam}}
				if proto != 0 {
					stmts = append(stmts, MatchL4Proto{proto})
				}
				if i < len(pool)-1 {
					stmts = append(stmts, MatchNumgenBelow{Mod: total, Below: e.Ports()})
				}
				nat := SNATPorts{Addr: e.Addr}
				if proto != 0 {
					nat.PortLo, nat.PortHi = e.PortLo, e.PortHi
				}
				ch.add(fmt.Sprintf("SNAT pool %s", e.Addr), append(stmts, nat)...)
				total -= e.Ports()
			}
		}
	}
}

// MatchNumgenBelow matches when the rule's own incrementing counter,
// modulo Mod, is below Below (`numgen inc mod Mod < Below`).
type MatchNumgenBelow struct{ Mod, Below uint32 }

func (MatchNumgenBelow) stmt() {}

func (m MatchNumgenBelow) String() string {
	return fmt.Sprintf("numgen inc mod %d < %d", m.Mod, m.Below)
}

func (m MatchNumgenBelow) lower() []expr.Any {
	return []expr.Any{
		&expr.Numgen{Register: 1, Modulus: m.Mod, Type: unix.NFT_NG_INCREMENTAL},
		// The counter is in host byte order; cmp orders big-endian bytes.
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
		&expr.Cmp{Op: expr.CmpOpLt, Register: 1, Data: binaryutil.BigEndian.PutUint32(m.Below)},
	}
}

// SNATPorts rewrites the source to Addr and, when PortLo is set, a port in
// PortLo-PortHi.
type SNATPorts struct {
	Addr           netip.Addr
	PortLo, PortHi uint16
}

func (SNATPorts) stmt() {}

func (s SNATPorts) String() string {
	if s.PortLo == 0 {
		return SNAT{Addr: s.Addr}.String()
	}
	if s.Addr.Is6() {
		return fmt.Sprintf("snat ip6 to [%s]:%d-%d", s.Addr, s.PortLo, s.PortHi)
	}
	return fmt.Sprintf("%s:%d-%d", SNAT{Addr: s.Addr}, s.PortLo, s.PortHi)
}

func (s SNATPorts) lower() []expr.Any {
	n := &expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(nfproto(famOf(s.Addr))), RegAddrMin: 1}
	out := []expr.Any{&expr.Immediate{Register: 1, Data: s.Addr.Unmap().AsSlice()}}
	if s.PortLo != 0 {
		out = append(out,
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(s.PortLo)},
			&expr.Immediate{Register: 3, Data: binaryutil.BigEndian.PutUint16(s.PortHi)})
		n.RegProtoMin, n.RegProtoMax, n.Specified = 2, 3, true
	}
	return append(out, n)
}

// poolExprText renders the pool's expressions for `dataplane show`.
func poolExprText(e expr.Any, next []expr.Any) (string, int, bool) {
	switch x := e.(type) {
	case *expr.Numgen:
		// The byteorder conversion between them may be missing when read
		// back (google/nftables does not decode it).
		for n := 0; n < 2 && n < len(next); n++ {
			if c, ok := next[n].(*expr.Cmp); ok && len(c.Data) == 4 && c.Op == expr.CmpOpLt {
				return MatchNumgenBelow{Mod: x.Modulus, Below: binary.BigEndian.Uint32(c.Data)}.String(), n + 1, true
			}
		}
		return "", 0, false
	case *expr.Immediate:
		// Address, first port, last port, nat: a pool address with ports.
		if x.Register != 1 || len(next) < 3 {
			return "", 0, false
		}
		lo, ok1 := next[0].(*expr.Immediate)
		hi, ok2 := next[1].(*expr.Immediate)
		n, ok3 := next[2].(*expr.NAT)
		if !ok1 || !ok2 || !ok3 || n.RegProtoMax == 0 || len(lo.Data) != 2 || len(hi.Data) != 2 {
			return "", 0, false
		}
		a, ok := netip.AddrFromSlice(x.Data)
		if !ok {
			return "", 0, false
		}
		return SNATPorts{Addr: a, PortLo: binary.BigEndian.Uint16(lo.Data), PortHi: binary.BigEndian.Uint16(hi.Data)}.String(), 3, true
	}
	return "", 0, false
}

package nft

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// HA is the data plane's part of a high-availability pair (internal/ha,
// docs/ha.md): keepalived's VRRP and conntrackd's state sync are accepted
// on the interfaces they run on and nowhere else, and the forward chain
// insists that a new TCP flow starts with a SYN.
//
// The last rule is what makes state sync matter: with the kernel's default
// nf_conntrack_tcp_loose=1, a packet from the middle of a stream that a
// gateway has no state for counts as a new flow and would be decided (and
// often allowed) by the rules again, so a failover test would pass without
// any sync. With the rule, such a packet is dropped until conntrackd has
// handed the flow's state over; TCP retransmits it. (Packets redirected to
// the L7 proxy, whose connections cannot move, reach the proxy's listening
// socket, which answers them with a reset: a clean close, not a hang.)
type HA struct {
	// VRRPIfaces are the interfaces keepalived runs VRRP on (IPv4
	// multicast to 224.0.0.18, IP protocol 112).
	VRRPIfaces []string
	// SyncIface is the dedicated sync link; Peer the peer's address on it.
	SyncIface string
	Peer      netip.Addr
	// SyncPort is conntrackd's UDP port, APIPort the daemons' peer API
	// (TCP), both accepted from Peer on SyncIface only.
	SyncPort uint16
	APIPort  uint16
	// ProxyMark is the mark the L7 proxy gives its upstream connections
	// (proxy.Config.Mark): unlike the gateway's other connections they
	// are translated to the public IP like the flows they carry.
	ProxyMark uint32
}

// DefaultProxyMark is the L7 proxy's upstream mark in an HA pair ("cw").
const DefaultProxyMark uint32 = 0x6377

// vrrpGroup is VRRP's IPv4 multicast group; protoVRRP its IP protocol.
var vrrpGroup = netip.MustParseAddr("224.0.0.18")

const protoVRRP uint8 = 112

func (h *HA) validate(c Config) error {
	if h == nil {
		return nil
	}
	if len(h.VRRPIfaces) == 0 {
		return fmt.Errorf("data plane config: HA without a VRRP interface")
	}
	for _, n := range append([]string{h.SyncIface}, h.VRRPIfaces...) {
		if n == "" || len(n) > 15 {
			return fmt.Errorf("data plane config: HA interface name %q", n)
		}
	}
	if h.SyncIface == c.Inside || h.SyncIface == c.Outside {
		return fmt.Errorf("data plane config: the HA sync link %q must be a dedicated interface", h.SyncIface)
	}
	if !h.Peer.IsValid() || h.Peer.Zone() != "" {
		return fmt.Errorf("data plane config: HA peer address %v", h.Peer)
	}
	if h.SyncPort == 0 || h.APIPort == 0 {
		return fmt.Errorf("data plane config: HA ports %d/%d", h.SyncPort, h.APIPort)
	}
	return nil
}

// haInput accepts VRRP and the sync link's traffic (input chain, before
// its final drop).
func (c *compiler) haInput(ch *Chain) {
	h := c.cfg.HA
	if h == nil {
		return
	}
	g := addrVal(vrrpGroup)
	for _, ifc := range h.VRRPIfaces {
		ch.add("HA: VRRP (keepalived)", MatchIfName{Name: ifc}, MatchNFProto{ipv4}, MatchL4Proto{protoVRRP},
			MatchRange{Family: ipv4, Field: fieldDst, iv: ivl{g, g}}, Verdict{Kind: VerdictAccept})
	}
	peer := h.Peer.Unmap()
	fam := famOf(peer)
	p := addrVal(peer)
	for _, x := range []struct {
		proto   uint8
		port    uint16
		comment string
	}{{protoUDP, h.SyncPort, "HA: conntrackd state sync from the peer"}, {protoTCP, h.APIPort, "HA: the peer daemon's API"}} {
		pv := u128{0, uint64(x.port)}
		ch.add(x.comment, MatchIfName{Name: h.SyncIface}, MatchNFProto{fam},
			MatchRange{Family: fam, Field: fieldSrc, iv: ivl{p, p}}, MatchL4Proto{x.proto},
			MatchRange{Field: fieldPort, iv: ivl{pv, pv}}, Verdict{Kind: VerdictAccept})
	}
}

// haForward drops new TCP flows that do not start with a SYN (forward
// chain, after the established and invalid rules).
func (c *compiler) haForward(fwd *Chain) {
	if c.cfg.HA == nil {
		return
	}
	fwd.add("HA: a new TCP flow starts with a SYN (established flows' state comes from the peer)",
		MatchCtState{CtStateNew}, MatchL4Proto{protoTCP}, MatchTCPFlags{Mask: tcpFIN | tcpSYN | tcpRST | tcpACK, Value: tcpSYN, Negate: true},
		Counter{}, Verdict{Kind: VerdictDrop})
}

// haPostrouting keeps the gateway's own connections (DNS upstreams, FQDN
// refreshes, feeds) on its own address: the public IPs move between the
// gateways, and a standby's connection from an address the active holds
// would never see its replies. The L7 proxy's upstream connections (marked
// ProxyMark) are the exception: they carry the cluster's egress, which
// leaves from the public IP as every other flow does (only the active
// gateway's proxy gets connections, and it holds the public IP).
func (c *compiler) haPostrouting(post *Chain) {
	h := c.cfg.HA
	if h == nil {
		return
	}
	stmts := []Stmt{MatchIfName{Out: true, Name: c.cfg.Outside}, MatchSaddrLocal{}}
	if h.ProxyMark != 0 {
		stmts = append(stmts, MatchMark{Value: h.ProxyMark, Negate: true})
	}
	post.add("HA: the gateway's own connections keep its own address", append(stmts, Verdict{Kind: VerdictAccept})...)
}

// MatchMark matches `meta mark == Value` (!= with Negate).
type MatchMark struct {
	Value  uint32
	Negate bool
}

func (MatchMark) stmt() {}

func (m MatchMark) String() string {
	op := ""
	if m.Negate {
		op = "!= "
	}
	return fmt.Sprintf("meta mark %s0x%08x", op, m.Value)
}

func (m MatchMark) lower() []expr.Any {
	op := expr.CmpOpEq
	if m.Negate {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: binaryutil.NativeEndian.PutUint32(m.Value)},
	}
}

// TCP header flags.
const (
	tcpFIN uint8 = 0x01
	tcpSYN uint8 = 0x02
	tcpRST uint8 = 0x04
	tcpACK uint8 = 0x10
)

// MatchTCPFlags matches `tcp flags & Mask == Value` (!= with Negate). Put
// it after a MatchL4Proto{tcp}.
type MatchTCPFlags struct {
	Mask, Value uint8
	Negate      bool
}

func (MatchTCPFlags) stmt() {}

func (m MatchTCPFlags) String() string {
	op := "=="
	if m.Negate {
		op = "!="
	}
	return fmt.Sprintf("tcp flags & %s %s %s", tcpFlagNames(m.Mask), op, tcpFlagNames(m.Value))
}

func tcpFlagNames(f uint8) string {
	names := []string{"fin", "syn", "rst", "psh", "ack", "urg", "ecn", "cwr"}
	s := ""
	for i, n := range names {
		if f&(1<<i) != 0 {
			if s != "" {
				s += "|"
			}
			s += n
		}
	}
	if s == "" {
		return "0x0"
	}
	if f&(f-1) != 0 {
		return "(" + s + ")"
	}
	return s
}

func (m MatchTCPFlags) lower() []expr.Any {
	op := expr.CmpOpEq
	if m.Negate {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{m.Mask}, Xor: []byte{0}},
		&expr.Cmp{Op: op, Register: 1, Data: []byte{m.Value}},
	}
}

// MatchSaddrLocal matches packets whose source address is one of the
// gateway's own (`fib saddr type local`): its own connections.
type MatchSaddrLocal struct{}

func (MatchSaddrLocal) stmt()          {}
func (MatchSaddrLocal) String() string { return "fib saddr type local" }

func (MatchSaddrLocal) lower() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// lowerer is a statement that lowers itself (the statements of this file).
type lowerer interface{ lower() []expr.Any }

// haExprText renders the expressions of this file's statements for
// `dataplane show`; ok is false for other expressions.
func haExprText(e expr.Any, next []expr.Any) (string, int, bool) {
	switch x := e.(type) {
	case *expr.Meta:
		if x.Key != expr.MetaKeyMARK || len(next) < 1 {
			return "", 0, false
		}
		c, ok := next[0].(*expr.Cmp)
		if !ok || len(c.Data) != 4 {
			return "", 0, false
		}
		return MatchMark{Value: binaryutil.NativeEndian.Uint32(c.Data), Negate: c.Op == expr.CmpOpNeq}.String(), 1, true
	case *expr.Payload:
		if x.Base != expr.PayloadBaseTransportHeader || x.Offset != 13 || x.Len != 1 || len(next) < 2 {
			return "", 0, false
		}
		b, ok1 := next[0].(*expr.Bitwise)
		c, ok2 := next[1].(*expr.Cmp)
		if !ok1 || !ok2 || len(b.Mask) != 1 || len(c.Data) != 1 {
			return "", 0, false
		}
		return MatchTCPFlags{Mask: b.Mask[0], Value: c.Data[0], Negate: c.Op == expr.CmpOpNeq}.String(), 2, true
	case *expr.Fib:
		if len(next) < 1 || !x.FlagSADDR || !x.ResultADDRTYPE {
			return "", 0, false
		}
		c, ok := next[0].(*expr.Cmp)
		if !ok || len(c.Data) != 4 {
			return "", 0, false
		}
		if t := binaryutil.NativeEndian.Uint32(c.Data); t != unix.RTN_LOCAL {
			return "fib saddr type " + strconv.Itoa(int(t)), 1, true
		}
		return MatchSaddrLocal{}.String(), 1, true
	}
	return poolExprText(e, next) // snatpool.go
}

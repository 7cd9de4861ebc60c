package daemon

import (
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// cutDenied deletes the conntrack entries of forwarded flows that m now
// denies, as Azure Firewall does when a rule turns to deny: established
// connections the new policy still allows are left alone, so they survive a
// reload. It decides each entry's original tuple with m.Decide, the one
// matcher: DNAT and network rules by address and port.
//
// Entries of connections that end at the firewall itself are never
// touched: flows from or to its own addresses (the DNS proxy, the admin
// API, the L7 proxy's upstream side) and, above all, the flows the kernel
// redirected to the L7 proxy. Those are decided by name, which conntrack
// does not know: the proxy decides them again itself (proxy.Redecide) and
// closes the ones the new policy denies. Deleting such an entry would
// drop its NAT: the proxy's next packet would leave with the firewall's
// address and port as its source, and the client would answer it with a
// reset. It returns the number of entries deleted.
func cutDenied(m *match.Matcher, local func(netip.Addr) bool, public []netip.Addr) (uint, error) {
	f := &denyFilter{m: m, local: local, public: public}
	var total uint
	for _, fam := range []netlink.InetFamily{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

type denyFilter struct {
	m      *match.Matcher
	local  func(netip.Addr) bool
	public []netip.Addr
}

func (f *denyFilter) MatchConntrackFlow(ct *netlink.ConntrackFlow) bool {
	flow, ok := flowOf(&ct.Forward)
	if !ok || f.local(flow.Src) {
		return false // from the firewall itself (the L7 proxy's upstream side, ...)
	}
	if f.local(flow.Dst) && !slices.Contains(f.public, flow.Dst) {
		return false // to the firewall itself (DNS proxy, admin): not forwarded
	}
	if replySrc, ok := addrOf(ct.Reverse.SrcIP); ok && f.local(replySrc) {
		// The firewall answers: redirected to a local socket (the L7
		// proxy decides it by name) or to a service of the firewall on a
		// public IP. Not forwarded either.
		return false
	}
	d := f.m.Decide(flow)
	return d.Action != policy.ActionDNAT && d.Action != policy.ActionAllow
}

// flowOf turns a conntrack original tuple into a matcher flow.
func flowOf(t *netlink.IPTuple) (match.Flow, bool) {
	src, ok1 := addrOf(t.SrcIP)
	dst, ok2 := addrOf(t.DstIP)
	if !ok1 || !ok2 {
		return match.Flow{}, false
	}
	f := match.Flow{Src: src, Dst: dst}
	switch t.Protocol {
	case 6:
		f.Proto, f.Port = policy.ProtoTCP, t.DstPort
	case 17:
		f.Proto, f.Port = policy.ProtoUDP, t.DstPort
	case 1, 58:
		f.Proto = policy.ProtoICMP
	default:
		return match.Flow{}, false
	}
	return f, true
}

func addrOf(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// localAddrs returns a predicate for the addresses of this network namespace.
func localAddrs() (func(netip.Addr) bool, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	set := map[netip.Addr]bool{}
	for _, a := range addrs {
		if x, ok := addrOf(a.IP); ok {
			set[x] = true
		}
	}
	return func(a netip.Addr) bool { return set[a] || a.IsLoopback() }, nil
}

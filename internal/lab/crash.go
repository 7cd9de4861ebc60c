package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Crash simulates host dying: every link of its namespace goes down (no
// packet in or out, as if the machine lost power) and then every process
// in the namespace is killed with SIGKILL (the daemon, keepalived,
// conntrackd: nothing gets to say goodbye). Kernel state (nftables,
// conntrack) stays, as it would on a machine that froze. Revive brings the
// network back; processes are started again with Start.
func (l *Lab) Crash(host string) error {
	if err := checkHostName(host); err != nil {
		return err
	}
	ns := l.NS(host)
	if err := inNamed(ns, func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, k := range links {
			if k.Attrs().Name == "lo" {
				continue
			}
			if err := netlink.LinkSetDown(k); err != nil {
				return fmt.Errorf("%s down: %w", k.Attrs().Name, err)
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("crash %s: %w", host, err)
	}
	ino := nsInode(ns)
	if ino == 0 {
		return fmt.Errorf("crash %s: no namespace %s", host, ns)
	}
	return killInNamespaces(map[uint64]bool{ino: true}, l.log)
}

// Revive resets host's network to the lab's topology, as a reboot would:
// links up, only the topology's addresses (plus IPv6 link-local ones),
// its routes (a link that went down took the routes through it along).
func (l *Lab) Revive(ctx context.Context, host string) error {
	i := slices.IndexFunc(specFor(l.ha), func(h hostSpec) bool { return h.name == host })
	if i < 0 {
		return fmt.Errorf("revive: host %s is not in lab %s", host, l.name)
	}
	h := specFor(l.ha)[i]
	return inNamed(l.NS(host), func() error {
		for _, ifc := range h.ifaces {
			k, err := netlink.LinkByName(ifc.name)
			if err != nil {
				return err
			}
			want := append(slices.Clone(ifc.addrs), ifc.inbound...)
			have, err := netlink.AddrList(k, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			var present []netip.Prefix
			for _, a := range have {
				ip, ok := netip.AddrFromSlice(a.IP)
				if !ok || ip.IsLinkLocalUnicast() {
					continue
				}
				ones, _ := a.Mask.Size()
				p := netip.PrefixFrom(ip.Unmap(), ones)
				if slices.Contains(want, p) {
					present = append(present, p)
					continue
				}
				if err := netlink.AddrDel(k, &netlink.Addr{IPNet: &net.IPNet{IP: a.IP, Mask: a.Mask}}); err != nil {
					return fmt.Errorf("remove %s from %s: %w", p, ifc.name, err)
				}
			}
			for n, p := range want {
				if slices.Contains(present, p) {
					continue
				}
				a := &netlink.Addr{IPNet: ipNet(p)}
				if p.Addr().Is6() {
					a.Flags = unix.IFA_F_NODAD
					if n >= len(ifc.addrs) {
						a.PreferedLft, a.ValidLft = 0, 0xffffffff
					}
				}
				if err := netlink.AddrAdd(k, a); err != nil {
					return fmt.Errorf("address %s on %s: %w", p, ifc.name, err)
				}
			}
			if err := netlink.LinkSetUp(k); err != nil {
				return err
			}
		}
		for _, r := range h.routes {
			k, err := netlink.LinkByName(r.dev)
			if err != nil {
				return err
			}
			rt := &netlink.Route{LinkIndex: k.Attrs().Index, Dst: ipNet(r.dst), Gw: net.IP(r.gw.AsSlice())}
			if err := netlink.RouteReplace(rt); err != nil {
				return fmt.Errorf("route %s via %s: %w", r.dst, r.gw, err)
			}
		}
		return ctx.Err()
	})
}

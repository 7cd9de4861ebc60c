package lab

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// build creates the namespaces, links, addresses, routes, sysctls and
// resolv.conf files of lab name. It never touches the root namespace: every
// link is created inside a lab namespace (veth peers directly in the peer's
// namespace) and all netlink sockets are opened inside lab namespaces.
func build(name string, hosts []hostSpec) error {
	handles := map[string]netns.NsHandle{}
	defer func() {
		for _, h := range handles {
			h.Close()
		}
	}()
	for _, h := range hosts {
		ns, err := createNamed(nsName(name, h.name))
		if err != nil {
			return err
		}
		handles[h.name] = ns
		// Before any link exists: no duplicate address detection (addresses
		// are usable at once), no router solicitations, and forwarding.
		if err := inNetns(ns, func() error {
			sysctls := [][2]string{
				{"net.ipv6.conf.default.accept_dad", "0"},
				{"net.ipv6.conf.all.accept_dad", "0"},
				{"net.ipv6.conf.default.dad_transmits", "0"},
				{"net.ipv6.conf.default.router_solicitations", "0"},
				{"net.ipv6.conf.default.accept_ra", "0"},
			}
			if h.ecmp {
				sysctls = append(sysctls,
					[2]string{"net.ipv4.fib_multipath_hash_policy", "1"},
					[2]string{"net.ipv6.fib_multipath_hash_policy", "1"})
			}
			if h.forward {
				sysctls = append(sysctls,
					[2]string{"net.ipv4.ip_forward", "1"},
					[2]string{"net.ipv6.conf.all.forwarding", "1"},
					[2]string{"net.ipv6.conf.default.forwarding", "1"})
			}
			for _, s := range sysctls {
				if err := writeSysctl(s[0], s[1]); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("%s: %w", h.name, err)
		}
	}

	nl := map[string]*netlink.Handle{}
	defer func() {
		for _, h := range nl {
			h.Close()
		}
	}()
	for _, h := range hosts {
		nh, err := netlink.NewHandleAt(handles[h.name])
		if err != nil {
			return fmt.Errorf("%s: netlink: %w", h.name, err)
		}
		nl[h.name] = nh
	}

	// Links.
	for _, h := range hosts {
		nh := nl[h.name]
		for _, i := range h.ifaces {
			var l netlink.Link
			switch i.kind {
			case kindVeth:
				l = &netlink.Veth{
					LinkAttrs:     netlink.LinkAttrs{Name: i.name},
					PeerName:      i.peer[1],
					PeerNamespace: netlink.NsFd(handles[i.peer[0]]),
				}
			case kindDummy:
				l = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: i.name}}
				if err := nh.LinkAdd(l); err == nil {
					continue
				} else if !errors.Is(err, unix.EOPNOTSUPP) {
					return fmt.Errorf("%s: add link %s: %w", h.name, i.name, err)
				}
				// Kernels without the dummy driver: an ifb device is an
				// equivalent holder of local addresses (up, and whatever
				// is sent to it is dropped).
				l = &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: i.name}}
			case kindBridge:
				l = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: i.name}}
			default:
				continue // created as a peer by another host
			}
			if err := nh.LinkAdd(l); err != nil {
				return fmt.Errorf("%s: add link %s: %w", h.name, i.name, err)
			}
		}
	}

	// Addresses, bridge ports, link state, routes.
	for _, h := range hosts {
		nh := nl[h.name]
		lo, err := nh.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("%s: lo: %w", h.name, err)
		}
		if err := nh.LinkSetUp(lo); err != nil {
			return fmt.Errorf("%s: lo up: %w", h.name, err)
		}
		ifaces := h.ifaces
		if h.name == HostSwitch {
			ifaces = append(ifaces, bridgePorts(hosts)...)
		}
		for _, i := range ifaces {
			l, err := nh.LinkByName(i.name)
			if err != nil {
				return fmt.Errorf("%s: link %s: %w", h.name, i.name, err)
			}
			if i.master != "" {
				br, err := nh.LinkByName(i.master)
				if err != nil {
					return fmt.Errorf("%s: bridge %s: %w", h.name, i.master, err)
				}
				if err := nh.LinkSetMaster(l, br); err != nil {
					return fmt.Errorf("%s: %s master %s: %w", h.name, i.name, i.master, err)
				}
			}
			for n, p := range append(slices.Clone(i.addrs), i.inbound...) {
				a := &netlink.Addr{IPNet: ipNet(p)}
				if p.Addr().Is6() {
					a.Flags = unix.IFA_F_NODAD
					if n >= len(i.addrs) {
						// Deprecated for ever: still answers, never a source.
						a.PreferedLft, a.ValidLft = 0, math.MaxUint32
					}
				}
				if err := nh.AddrAdd(l, a); err != nil {
					return fmt.Errorf("%s: address %s on %s: %w", h.name, p, i.name, err)
				}
			}
			if err := nh.LinkSetUp(l); err != nil {
				return fmt.Errorf("%s: %s up: %w", h.name, i.name, err)
			}
		}
	}
	for _, h := range hosts {
		nh := nl[h.name]
		for _, r := range h.routes {
			l, err := nh.LinkByName(r.dev)
			if err != nil {
				return fmt.Errorf("%s: route dev %s: %w", h.name, r.dev, err)
			}
			rt := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(r.dst), Gw: net.IP(r.gw.AsSlice())}
			if r.alt.IsValid() {
				rt = &netlink.Route{Dst: ipNet(r.dst), MultiPath: []*netlink.NexthopInfo{
					{LinkIndex: l.Attrs().Index, Gw: net.IP(r.gw.AsSlice())},
					{LinkIndex: l.Attrs().Index, Gw: net.IP(r.alt.AsSlice())}}}
			}
			if err := nh.RouteAdd(rt); err != nil {
				return fmt.Errorf("%s: route %s via %s: %w", h.name, r.dst, r.gw, err)
			}
		}
	}

	// resolv.conf for `ip netns exec`.
	for _, h := range hosts {
		dir := filepath.Join(etcNetnsDir, nsName(name, h.name))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		conf := fmt.Sprintf("# clusterwall lab %s, host %s\nnameserver %s\noptions timeout:2 attempts:2\n", name, h.name, h.resolver)
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// checkTopology compares the namespaces of lab name with the spec and
// returns every difference (empty when the lab's network is intact).
func checkTopology(name string, hosts []hostSpec) []string {
	var problems []string
	for _, h := range hosts {
		ns := nsName(name, h.name)
		if !nsExists(ns) {
			problems = append(problems, fmt.Sprintf("%s: namespace %s missing", h.name, ns))
			continue
		}
		handle, err := netns.GetFromName(ns)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", h.name, err))
			continue
		}
		nh, err := netlink.NewHandleAt(handle)
		handle.Close()
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: netlink: %v", h.name, err))
			continue
		}
		problems = append(problems, checkHost(nh, h, ns, hosts)...)
		nh.Close()
	}
	return problems
}

func checkHost(nh *netlink.Handle, h hostSpec, ns string, hosts []hostSpec) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, h.name+": "+fmt.Sprintf(format, args...))
	}
	ifaces := h.ifaces
	if h.name == HostSwitch {
		ifaces = append(ifaces, bridgePorts(hosts)...)
	}
	for _, i := range ifaces {
		l, err := nh.LinkByName(i.name)
		if err != nil {
			bad("interface %s missing", i.name)
			continue
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			bad("interface %s down", i.name)
		}
		if i.master != "" {
			if br, err := nh.LinkByName(i.master); err != nil || l.Attrs().MasterIndex != br.Attrs().Index {
				bad("interface %s not a port of %s", i.name, i.master)
			}
		}
		addrs, err := nh.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			bad("addresses of %s: %v", i.name, err)
			continue
		}
		var have, deprecated []netip.Prefix
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ones, _ := a.Mask.Size()
			have = append(have, netip.PrefixFrom(ip.Unmap(), ones))
			if a.Flags&unix.IFA_F_DEPRECATED != 0 {
				deprecated = append(deprecated, netip.PrefixFrom(ip.Unmap(), ones))
			}
		}
		for _, p := range append(slices.Clone(i.addrs), i.inbound...) {
			if !slices.Contains(have, p) {
				bad("address %s missing on %s", p, i.name)
			}
		}
		for _, p := range i.inbound {
			if p.Addr().Is6() && slices.Contains(have, p) && !slices.Contains(deprecated, p) {
				bad("address %s on %s is not deprecated (the firewall could use it as a source)", p, i.name)
			}
		}
	}
	for _, r := range h.routes {
		fam := netlink.FAMILY_V4
		if r.dst.Addr().Is6() {
			fam = netlink.FAMILY_V6
		}
		routes, err := nh.RouteList(nil, fam)
		found := false
		for _, rt := range routes {
			dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if fam == netlink.FAMILY_V6 {
				dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			if rt.Dst != nil {
				ip, _ := netip.AddrFromSlice(rt.Dst.IP)
				ones, _ := rt.Dst.Mask.Size()
				dst = netip.PrefixFrom(ip.Unmap(), ones)
			}
			if gw, ok := netip.AddrFromSlice(rt.Gw); ok && gw.Unmap() == r.gw && dst == r.dst && !r.alt.IsValid() {
				found = true
			}
			if r.alt.IsValid() && dst == r.dst && len(rt.MultiPath) == 2 {
				a, _ := netip.AddrFromSlice(rt.MultiPath[0].Gw)
				b, _ := netip.AddrFromSlice(rt.MultiPath[1].Gw)
				found = found || (a.Unmap() == r.gw && b.Unmap() == r.alt) || (a.Unmap() == r.alt && b.Unmap() == r.gw)
			}
		}
		if err != nil || !found {
			bad("route %s via %s missing", r.dst, r.gw)
		}
	}
	if h.forward {
		var v4, v6 string
		err := inNamed(ns, func() error {
			var err error
			if v4, err = readSysctl("net.ipv4.ip_forward"); err != nil {
				return err
			}
			v6, err = readSysctl("net.ipv6.conf.all.forwarding")
			return err
		})
		if err != nil || v4 != "1" || v6 != "1" {
			bad("forwarding off (ipv4 %q, ipv6 %q, %v)", v4, v6, err)
		}
	}
	return problems
}

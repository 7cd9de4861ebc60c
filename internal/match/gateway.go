package match

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Side is the side of the firewall a flow arrives on. The rules do not
// depend on it, but what reaches them does: DNAT rules translate only
// what arrives on the outside (the public side, where the public IPs
// are), the L7 proxy only sees what the kernel redirects from the inside,
// and the firewall's own services each listen on one side.
type Side uint8

const (
	// FromAny: the caller cannot tell the side (the conntrack cut after a
	// reload reads flows without their interface). DNAT rules match as
	// for a flow from the outside, the L7 proxy's ports are redirected as
	// for one from the inside, and the firewall's own services are not
	// considered (the flow is decided by the rules). explain, the kernel
	// and the L7 proxy always name the side.
	FromAny Side = iota
	// FromInside: the cluster side (the inside interface).
	FromInside
	// FromOutside: the internet side (the outside interface).
	FromOutside
)

func (s Side) String() string {
	switch s {
	case FromInside:
		return "inside"
	case FromOutside:
		return "outside"
	}
	return "any"
}

// ParseSide parses "inside", "outside" or "any".
func ParseSide(s string) (Side, bool) {
	switch s {
	case "inside":
		return FromInside, true
	case "outside":
		return FromOutside, true
	case "any":
		return FromAny, true
	}
	return FromAny, false
}

// Path is the part of the firewall that decides a flow. The zero value
// is invalid; Decide always sets one.
type Path uint8

const (
	// PathForward: the kernel's forward path (after DNAT): network rules,
	// then the default deny. A DNAT-ed flow takes this path too.
	PathForward Path = iota + 1
	// PathProxy: TCP from the inside to a port an application rule names
	// is redirected by the kernel to the L7 proxy, which asks the matcher
	// with the TLS SNI or HTTP Host: network rules, then application rules,
	// then the default deny.
	PathProxy
	// PathFirewall: the flow is addressed to the firewall itself (and was
	// not translated by a DNAT rule): its own services accept it or it is
	// dropped. Network rules do not apply.
	PathFirewall
)

func (p Path) String() string {
	switch p {
	case PathForward:
		return "forward"
	case PathProxy:
		return "proxy"
	case PathFirewall:
		return "firewall"
	}
	return "invalid"
}

// Gateway describes the firewall itself: its addresses, whether the L7
// proxy receives application rules' ports, and the services it accepts
// flows to. With a Gateway (Options.Gateway), Decide answers what the
// kernel does with every new flow of a known side, including flows to the
// firewall's own addresses, which no rule decides. nft.Config.Gateway
// derives it from the data plane's configuration, and the kernel's input
// chain is compiled from its Services, so the two cannot differ.
type Gateway struct {
	// PublicIPs are the firewall's addresses on the outside. DNAT rules
	// may only name these as destinations (Compile checks).
	PublicIPs []netip.Addr
	// PrivateIPs are its addresses on the inside (the cluster's DNS
	// server, the explicit proxy).
	PrivateIPs []netip.Addr
	// Proxy is true when the L7 proxy runs: TCP from the inside to a port
	// an application rule names is redirected to it. Without it
	// application rules never match.
	Proxy bool
	// Services are what the firewall itself accepts, in order. Every other
	// new flow to one of its addresses is dropped.
	Services []Service
}

// Service is a service of the firewall itself: new flows from side From
// (FromAny: both) of protocol Proto to one of Ports on one of Addrs are
// accepted by its input path.
type Service struct {
	Name  string
	From  Side
	Proto policy.Proto // TCP, UDP and/or ICMP
	// Ports are the TCP and UDP ports, sorted and merged (ICMP has none).
	Ports []policy.PortRange
	// Addrs are the firewall's addresses it listens on; nil: every address.
	Addrs []netip.Addr
}

// Normalize checks g and returns a copy in the form the matcher keeps
// (Matcher.Gateway): unmapped addresses, sorted and merged ports.
func (g *Gateway) Normalize() (*Gateway, error) {
	out := &Gateway{Proxy: g.Proxy}
	norm := func(what string, as []netip.Addr) ([]netip.Addr, error) {
		var r []netip.Addr
		for _, a := range as {
			if !a.IsValid() || a.Zone() != "" {
				return nil, fmt.Errorf("match: gateway: bad %s address %v", what, a)
			}
			r = append(r, a.Unmap())
		}
		return r, nil
	}
	var err error
	if out.PublicIPs, err = norm("public", g.PublicIPs); err != nil {
		return nil, err
	}
	if out.PrivateIPs, err = norm("private", g.PrivateIPs); err != nil {
		return nil, err
	}
	for _, s := range g.Services {
		if s.Proto == 0 || s.Proto&^policy.ProtoAny != 0 {
			return nil, fmt.Errorf("match: gateway: service %q: bad protocols %v", s.Name, s.Proto)
		}
		if s.From > FromOutside {
			return nil, fmt.Errorf("match: gateway: service %q: bad side %d", s.Name, s.From)
		}
		if s.Proto&(policy.ProtoTCP|policy.ProtoUDP) != 0 && len(s.Ports) == 0 {
			return nil, fmt.Errorf("match: gateway: service %q: TCP or UDP without ports", s.Name)
		}
		ns := Service{Name: s.Name, From: s.From, Proto: s.Proto, Ports: sortedPorts(s.Ports)}
		if ns.Addrs, err = norm("service", s.Addrs); err != nil {
			return nil, err
		}
		out.Services = append(out.Services, ns)
	}
	return out, nil
}

// Equal reports whether g and o describe the same gateway.
func (g *Gateway) Equal(o *Gateway) bool {
	if g == nil || o == nil {
		return g == o
	}
	if g.Proxy != o.Proxy || !slices.Equal(g.PublicIPs, o.PublicIPs) || !slices.Equal(g.PrivateIPs, o.PrivateIPs) ||
		len(g.Services) != len(o.Services) {
		return false
	}
	for i, s := range g.Services {
		t := o.Services[i]
		if s.Name != t.Name || s.From != t.From || s.Proto != t.Proto || !slices.Equal(s.Ports, t.Ports) || !slices.Equal(s.Addrs, t.Addrs) {
			return false
		}
	}
	return true
}

// IsLocal reports whether a is one of the firewall's addresses.
func (g *Gateway) IsLocal(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	return slices.Contains(g.PublicIPs, a) || slices.Contains(g.PrivateIPs, a)
}

// IsPublic reports whether a is one of the firewall's public IPs.
func (g *Gateway) IsPublic(a netip.Addr) bool {
	return slices.Contains(g.PublicIPs, a.Unmap().WithZone(""))
}

// service returns the first service that accepts f (dst is f's
// destination, unmapped), or nil.
func (g *Gateway) service(f *Flow, dst netip.Addr) *Service {
	for i := range g.Services {
		s := &g.Services[i]
		if s.From != FromAny && s.From != f.From {
			continue
		}
		if f.Proto == 0 || f.Proto&s.Proto != f.Proto {
			continue
		}
		if f.Proto != policy.ProtoICMP && !portsContain(s.Ports, f.Port) {
			continue
		}
		if s.Addrs != nil && !slices.Contains(s.Addrs, dst) {
			continue
		}
		return s
	}
	return nil
}

// GatewayConfig is the part of the data plane's configuration that decides
// flows (nft.Config holds the same fields; the daemon's config fills
// them). It builds without the kernel's packages, so the offline commands
// (explain) derive the gateway exactly as the data plane does.
type GatewayConfig struct {
	PublicIPs, PrivateIPs []netip.Addr
	// ProxyPort is the L7 proxy's local port (0: no proxy).
	ProxyPort uint16
	// InsideTCPPorts are TCP ports the firewall serves to the inside (the
	// explicit proxy, SSH); OutsideTCPPorts to the internet (the ingress
	// WAF), on OutsideTCPAddrs, else on the PublicIPs.
	InsideTCPPorts, OutsideTCPPorts []uint16
	OutsideTCPAddrs                 []netip.Addr
}

// Gateway returns the gateway c describes, with its services in the order
// the kernel's input chain accepts them:
//
//   - ICMP and ICMPv6 from both sides (neighbour discovery, path MTU,
//     ping);
//   - DNS (53, UDP and TCP) from the inside, on PrivateIPs (on every
//     address when there are none);
//   - the L7 proxy's port from the inside (what the kernel redirects
//     there, and explicit connections to it);
//   - InsideTCPPorts from the inside, on every address;
//   - OutsideTCPPorts from the outside, on OutsideTCPAddrs, else on the
//     PublicIPs (on every address when there are none).
//
// A new service of the firewall is added here, and only here.
func (c GatewayConfig) Gateway() *Gateway {
	tcp := func(ps ...uint16) []policy.PortRange {
		var out []policy.PortRange
		for _, p := range ps {
			out = append(out, policy.PortRange{Lo: p, Hi: p})
		}
		return out
	}
	g := &Gateway{PublicIPs: c.PublicIPs, PrivateIPs: c.PrivateIPs, Proxy: c.ProxyPort != 0}
	g.Services = append(g.Services,
		Service{Name: "ICMP", From: FromAny, Proto: policy.ProtoICMP},
		Service{Name: "DNS", From: FromInside, Proto: policy.ProtoTCP | policy.ProtoUDP, Ports: tcp(53), Addrs: c.PrivateIPs})
	if c.ProxyPort != 0 {
		g.Services = append(g.Services, Service{Name: "L7 proxy", From: FromInside, Proto: policy.ProtoTCP, Ports: tcp(c.ProxyPort)})
	}
	if len(c.InsideTCPPorts) > 0 {
		g.Services = append(g.Services, Service{Name: "TCP services to the inside", From: FromInside, Proto: policy.ProtoTCP, Ports: tcp(c.InsideTCPPorts...)})
	}
	if len(c.OutsideTCPPorts) > 0 {
		addrs := c.PublicIPs
		if len(c.OutsideTCPAddrs) > 0 {
			addrs = c.OutsideTCPAddrs
		}
		g.Services = append(g.Services, Service{Name: "TCP services to the internet (ingress WAF)", From: FromOutside, Proto: policy.ProtoTCP,
			Ports: tcp(c.OutsideTCPPorts...), Addrs: addrs})
	}
	if n, err := g.Normalize(); err == nil {
		return n
	}
	return g // bad addresses: Compile reports them
}

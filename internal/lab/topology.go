package lab

import (
	"net/netip"
	"strings"
)

// Host names accepted by Exec, NS and `clusterwall lab exec`.
const (
	HostNode   = "node"   // a cluster node / pod
	HostStore  = "store"  // the store-front service
	HostAPI    = "api"    // stand-in for the cluster's API server endpoint
	HostFW     = "fw"     // the firewall
	HostInet   = "inet"   // the lab internet: router, name servers and DNS
	HostClient = "client" // an outside client (authorized and unauthorized addresses)
	HostSwitch = "sw"     // the cluster subnet's L2 switch (a bridge; no addresses)
)

// HostNames lists every host of a lab, in the order they are built.
var HostNames = []string{HostSwitch, HostNode, HostStore, HostAPI, HostFW, HostInet, HostClient}

// Interface names on the firewall (fixed; the daemon's config names them).
const (
	FWInside  = "cw-in"   // cluster-facing, 10.42.1.1
	FWPrivate = "cw-priv" // dummy holding the private IP 10.42.2.4
	FWOutside = "cw-out"  // internet-facing, public IPs 203.0.113.32 (egress, DNAT) and .33 (ingress WAF)
)

var mustAddr = netip.MustParseAddr

// Fixed addresses of the lab (a contract: docs/lab.md lists them).
var (
	ClusterSubnet4 = netip.MustParsePrefix("10.42.1.0/24")
	ClusterSubnet6 = netip.MustParsePrefix("2001:db8:42:1::/64")

	NodeV4  = mustAddr("10.42.1.10")
	NodeV6  = mustAddr("2001:db8:42:1::10")
	StoreV4 = mustAddr("10.42.1.100")
	StoreV6 = mustAddr("2001:db8:42:1::100")
	APIV4   = mustAddr("10.42.1.200")
	APIV6   = mustAddr("2001:db8:42:1::200")

	FWInsideV4  = mustAddr("10.42.1.1")
	FWInsideV6  = mustAddr("2001:db8:42:1::1")
	FWPrivateV4 = mustAddr("10.42.2.4")
	FWPrivateV6 = mustAddr("2001:db8:42:2::4")
	FWPublicV4  = mustAddr("203.0.113.32")
	FWPublicV6  = mustAddr("2001:db8:cafe::32")
	// FWIngressV4 and FWIngressV6 are the firewall's second public IP, the
	// ingress WAF's (as an Azure deployment gives Application Gateway a
	// public IP of its own): DNAT rules on FWPublicV4 never see its
	// connections. The firewall never uses it as a source address.
	FWIngressV4 = mustAddr("203.0.113.33")
	FWIngressV6 = mustAddr("2001:db8:cafe::33")

	InetFWSideV4     = mustAddr("203.0.113.1")
	InetFWSideV6     = mustAddr("2001:db8:cafe::1")
	InetClientSideV4 = mustAddr("198.51.100.1")
	InetClientSideV6 = mustAddr("2001:db8:c11e::1")

	// ClientAuthorizedV4 is the client address meant to be allowed by an
	// "authorized IP ranges" rule; ClientUnauthorizedV4 the one denied.
	ClientAuthorizedV4   = mustAddr("198.51.100.7")
	ClientUnauthorizedV4 = mustAddr("198.51.100.8")
	ClientAuthorizedV6   = mustAddr("2001:db8:c11e::7")
	ClientUnauthorizedV6 = mustAddr("2001:db8:c11e::8")

	// DNSV4 and DNSV6 are the lab internet's authoritative DNS server.
	DNSV4 = mustAddr("192.0.2.53")
	DNSV6 = mustAddr("2001:db8:192::53")
)

// Name is one lab internet name with addresses of its own in inet. Every
// name answers HTTP on 80 and HTTPS on 443 with its name as the body.
type Name struct {
	Name   string
	V4, V6 netip.Addr
	// NTP: answers NTP (UDP 123).
	NTP bool
	// Tunnel: answers TCP 9000 (writes the name, closes) and UDP 1194 (echo),
	// like the AKS tunnel endpoints the seed's network rules allow.
	Tunnel bool
}

// Names is the lab internet's name table: the one place that maps names to
// addresses, for the DNS server, the servers, the certificates, tests and
// the demo.
var Names = []Name{
	{Name: "ghcr.io", V4: mustAddr("192.0.2.10"), V6: mustAddr("2001:db8:192::10")},
	{Name: "mcr.microsoft.com", V4: mustAddr("192.0.2.11"), V6: mustAddr("2001:db8:192::11")},
	{Name: "mystorage.blob.core.windows.net", V4: mustAddr("192.0.2.12"), V6: mustAddr("2001:db8:192::12")},
	{Name: "ntp.ubuntu.com", V4: mustAddr("192.0.2.13"), V6: mustAddr("2001:db8:192::13"), NTP: true},
	{Name: "example.org", V4: mustAddr("192.0.2.14"), V6: mustAddr("2001:db8:192::14")},
	{Name: "registry-1.docker.io", V4: mustAddr("192.0.2.15"), V6: mustAddr("2001:db8:192::15")},
	{Name: "raw.githubusercontent.com", V4: mustAddr("192.0.2.16"), V6: mustAddr("2001:db8:192::16")},
	{Name: "foo.hcp.eastus.azmk8s.io", V4: mustAddr("192.0.2.17"), V6: mustAddr("2001:db8:192::17")},
	// A known-bad name for threat-intelligence tests.
	{Name: "evil.example.net", V4: mustAddr("192.0.2.66"), V6: mustAddr("2001:db8:192::66")},
	// An endpoint inside the AzureCloud.eastus service tag (198.18.10.0/24 and
	// 2001:db8:ac:10::/64 in examples/service-tags.json).
	{Name: "tunnel.eastus.azure.com", V4: mustAddr("198.18.10.5"), V6: mustAddr("2001:db8:ac:10::5"), Tunnel: true},
	// The same services outside any Azure range.
	{Name: "nonazure.example.net", V4: mustAddr("192.0.2.99"), V6: mustAddr("2001:db8:192::99"), Tunnel: true},
}

// Well-known entries of Names, for tests and the demo.
const (
	NameGHCR       = "ghcr.io"
	NameNTP        = "ntp.ubuntu.com"
	NameExample    = "example.org"
	NameStorage    = "mystorage.blob.core.windows.net"
	NameEvil       = "evil.example.net"
	NameAzureCloud = "tunnel.eastus.azure.com"
	NameNonAzure   = "nonazure.example.net"
)

// Lookup returns the entry of Names for name (case-insensitive, with or
// without a trailing dot).
func Lookup(name string) (Name, bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	for _, n := range Names {
		if n.Name == name {
			return n, true
		}
	}
	return Name{}, false
}

// MustLookup is Lookup for names known to be in the table; it panics otherwise
// (a programming error in a test or the demo, not bad input).
func MustLookup(name string) Name {
	n, ok := Lookup(name)
	if !ok {
		panic("lab: no name " + name)
	}
	return n
}

// NameOf returns the entry of Names that owns addr.
func NameOf(addr netip.Addr) (Name, bool) {
	addr = addr.Unmap()
	for _, n := range Names {
		if n.V4 == addr || n.V6 == addr {
			return n, true
		}
	}
	return Name{}, false
}

// Zones are the DNS zones the lab DNS server is authoritative for: the last
// two labels of every name.
func Zones() []string {
	var zones []string
	seen := map[string]bool{}
	for _, n := range Names {
		labels := strings.Split(n.Name, ".")
		z := strings.Join(labels[len(labels)-2:], ".")
		if !seen[z] {
			seen[z] = true
			zones = append(zones, z)
		}
	}
	return zones
}

// APIServerName is the DNS name in the api host's certificate (alongside its
// addresses and the firewall's public addresses, through which DNAT
// publishes it).
const APIServerName = "apiserver.lab"

// link kinds of the topology.
type linkKind int

const (
	kindVeth linkKind = iota + 1
	kindDummy
	kindBridge
)

// iface is one interface of a host in the topology spec.
type iface struct {
	name   string
	kind   linkKind
	peer   [2]string // veth: peer host and interface name (created with this end)
	master string    // bridge port of this bridge
	// bridge: for a veth whose peer is in the switch, the bridge the peer
	// is a port of ("" for br0, the cluster subnet).
	bridge string
	addrs  []netip.Prefix
	// inbound are addresses for incoming connections only, added after
	// addrs: an IPv4 one in the subnet of an addrs entry is a secondary
	// address, and IPv6 ones are deprecated (preferred lifetime 0), so the
	// kernel never picks them as a source (masquerade, the daemon's own
	// connections).
	inbound []netip.Prefix
}

type route struct {
	dst netip.Prefix
	gw  netip.Addr
	dev string
	// alt, when valid, is a second next hop: an ECMP route over gw and alt
	// (the active/active HA lab).
	alt netip.Addr
}

// hostSpec is what one namespace holds.
type hostSpec struct {
	name     string
	ifaces   []iface
	routes   []route
	forward  bool
	resolver netip.Addr
	// ecmp: hash multipath routes on L4 (source and destination ports).
	ecmp bool
}

func pfx(addr netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(addr, bits) }

var (
	any4 = netip.MustParsePrefix("0.0.0.0/0")
	any6 = netip.MustParsePrefix("::/0")
)

// spec is the whole lab. Each veth is listed once, on the host that creates
// it; its peer is created directly in the peer's namespace, so no interface
// ever exists in the root namespace.
func spec() []hostSpec {
	cluster := func(name string, v4, v6 netip.Addr) hostSpec {
		return hostSpec{
			name: name,
			ifaces: []iface{{name: "eth0", kind: kindVeth, peer: [2]string{HostSwitch, name},
				addrs: []netip.Prefix{pfx(v4, 24), pfx(v6, 64)}}},
			routes:   []route{{dst: any4, gw: FWInsideV4, dev: "eth0"}, {dst: any6, gw: FWInsideV6, dev: "eth0"}},
			resolver: FWPrivateV4,
		}
	}
	var names []netip.Prefix
	for _, n := range Names {
		names = append(names, pfx(n.V4, 32), pfx(n.V6, 128))
	}
	names = append(names, pfx(DNSV4, 32), pfx(DNSV6, 128))
	return []hostSpec{
		{
			name: HostSwitch,
			ifaces: []iface{
				{name: "br0", kind: kindBridge},
			},
			resolver: DNSV4,
		},
		cluster(HostNode, NodeV4, NodeV6),
		cluster(HostStore, StoreV4, StoreV6),
		cluster(HostAPI, APIV4, APIV6),
		{
			name: HostFW,
			ifaces: []iface{
				{name: FWInside, kind: kindVeth, peer: [2]string{HostSwitch, HostFW},
					addrs: []netip.Prefix{pfx(FWInsideV4, 24), pfx(FWInsideV6, 64)}},
				{name: FWPrivate, kind: kindDummy,
					addrs: []netip.Prefix{pfx(FWPrivateV4, 24), pfx(FWPrivateV6, 64)}},
				{name: FWOutside, kind: kindVeth, peer: [2]string{HostInet, HostFW},
					addrs:   []netip.Prefix{pfx(FWPublicV4, 24), pfx(FWPublicV6, 64)},
					inbound: []netip.Prefix{pfx(FWIngressV4, 24), pfx(FWIngressV6, 64)}},
			},
			routes:   []route{{dst: any4, gw: InetFWSideV4, dev: FWOutside}, {dst: any6, gw: InetFWSideV6, dev: FWOutside}},
			forward:  true,
			resolver: DNSV4,
		},
		{
			name: HostInet,
			ifaces: []iface{
				{name: HostFW, addrs: []netip.Prefix{pfx(InetFWSideV4, 24), pfx(InetFWSideV6, 64)}},
				{name: HostClient, kind: kindVeth, peer: [2]string{HostClient, "eth0"},
					addrs: []netip.Prefix{pfx(InetClientSideV4, 24), pfx(InetClientSideV6, 64)}},
				{name: "names", kind: kindDummy, addrs: names},
			},
			// The lab internet routes the cluster's private ranges back to
			// the firewall, so that plain forwarding works before the daemon
			// adds SNAT (servers report the peer they saw in a header).
			routes: []route{
				{dst: netip.MustParsePrefix("10.42.0.0/16"), gw: FWPublicV4, dev: HostFW},
				{dst: netip.MustParsePrefix("2001:db8:42::/48"), gw: FWPublicV6, dev: HostFW},
			},
			forward:  true,
			resolver: DNSV4,
		},
		{
			name: HostClient,
			ifaces: []iface{
				{name: "eth0", addrs: []netip.Prefix{
					pfx(ClientAuthorizedV4, 24), pfx(ClientUnauthorizedV4, 24),
					pfx(ClientAuthorizedV6, 64), pfx(ClientUnauthorizedV6, 64)}},
			},
			routes:   []route{{dst: any4, gw: InetClientSideV4, dev: "eth0"}, {dst: any6, gw: InetClientSideV6, dev: "eth0"}},
			resolver: DNSV4,
		},
	}
}

// bridgePorts returns the interfaces of the switch that are bridge ports
// of hosts: the switch-side ends of the veths into the switch, each with
// its bridge as master.
func bridgePorts(hosts []hostSpec) []iface {
	var ports []iface
	for _, h := range hosts {
		for _, i := range h.ifaces {
			if i.kind == kindVeth && i.peer[0] == HostSwitch {
				br := i.bridge
				if br == "" {
					br = "br0"
				}
				ports = append(ports, iface{name: i.peer[1], master: br})
			}
		}
	}
	return ports
}

package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/clusterwall/clusterwall/internal/nft"
)

// The SNAT pool (`snat: pool`, docs/daemon.md): new outbound flows spread
// over several public IPs with port ranges of their own (internal/nft's
// snatpool.go), and how many ports each uses (/v1/status snatPool and the
// clusterwall_snat_* metrics).

// SNATPoolEntry is one entry of the config's snatPool.
type SNATPoolEntry struct {
	// Address is one of publicIPs, an address of the outside interface.
	Address string `yaml:"address"`
	// Ports is the source port range, "LO-HI" (default 1024-65535).
	Ports string `yaml:"ports,omitempty"`
}

// defaultPoolPorts leave the well-known ports alone.
const defaultPoolPorts = "1024-65535"

// loadSNATPool validates snatPool (LoadConfig).
func (c *Config) loadSNATPool(bad func(field, format string, args ...any)) {
	switch {
	case c.snat == nft.SNATPool && len(c.SNATPool) == 0:
		bad("snatPool", "snat: pool needs at least one snatPool entry")
		return
	case c.snat != nft.SNATPool && len(c.SNATPool) > 0:
		bad("snatPool", "snatPool is only used with snat: pool (snat is %s)", c.snat)
		return
	}
	for i, e := range c.SNATPool {
		f := fmt.Sprintf("snatPool[%d]", i)
		a, err := netip.ParseAddr(e.Address)
		if err != nil || a.Zone() != "" {
			bad(f+".address", "%q is not an IP address", e.Address)
			continue
		}
		a = a.Unmap()
		if !slices.Contains(c.publicIPs, a) {
			bad(f+".address", "%s is not one of publicIPs", a)
			continue
		}
		if slices.ContainsFunc(c.snatPool, func(p nft.SNATPoolEntry) bool { return p.Addr == a }) {
			bad(f+".address", "%s is in the pool twice", a)
			continue
		}
		ports := e.Ports
		if ports == "" {
			ports = defaultPoolPorts
		}
		lo, hi, ok := parsePortRange(ports)
		if !ok {
			bad(f+".ports", "%q is not a port range LO-HI within 1-65535", e.Ports)
			continue
		}
		c.snatPool = append(c.snatPool, nft.SNATPoolEntry{Addr: a, PortLo: lo, PortHi: hi})
	}
}

func parsePortRange(s string) (lo, hi uint16, ok bool) {
	l, h, found := strings.Cut(strings.TrimSpace(s), "-")
	if !found {
		h = l
	}
	a, err1 := strconv.ParseUint(strings.TrimSpace(l), 10, 16)
	b, err2 := strconv.ParseUint(strings.TrimSpace(h), 10, 16)
	if err1 != nil || err2 != nil || a == 0 || a > b {
		return 0, 0, false
	}
	return uint16(a), uint16(b), true
}

// checkSNATPool makes sure every pool address is an address of the
// outside interface — except the HA groups' public IPs, which only the
// active gateway holds (Run, before the first apply).
func (d *Daemon) checkSNATPool() error {
	if len(d.cfg.snatPool) == 0 {
		return nil
	}
	var moving []netip.Addr
	if s := d.cfg.haSpec; s != nil {
		moving = s.Addrs()
	}
	l, err := netlink.LinkByName(d.cfg.Interfaces.Outside)
	if err != nil {
		return fmt.Errorf("%s: interfaces.outside: %w", d.cfg.path, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	var have []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			have = append(have, ip.Unmap())
		}
	}
	for i, e := range d.cfg.snatPool {
		if !slices.Contains(have, e.Addr) && !slices.Contains(moving, e.Addr) {
			return fmt.Errorf("%s: snatPool[%d].address: %s is not an address of the outside interface %s: the pool's flows would never get their replies",
				d.cfg.path, i, e.Addr, d.cfg.Interfaces.Outside)
		}
	}
	return nil
}

// SNATPoolUse is one pool address's use (/v1/status snatPool).
type SNATPoolUse struct {
	Address string `json:"address"`
	Ports   uint32 `json:"ports"` // size of its port range
	// Flows are the tracked flows SNAT'd to it; PortsUsed the most of them
	// to one destination (address, port, protocol): a connection needs a
	// free source port per destination, so that is what runs out.
	Flows     int    `json:"flows"`
	PortsUsed int    `json:"portsUsed"`
	Busiest   string `json:"busiestDestination,omitempty"`
}

// SNATPoolStatus counts the pool's ports in use from conntrack (nil
// without a pool).
func (d *Daemon) SNATPoolStatus() []SNATPoolUse {
	if len(d.cfg.snatPool) == 0 {
		return nil
	}
	type dest struct {
		ip    netip.Addr
		dst   netip.AddrPort
		proto uint8
	}
	perDest := map[dest]int{}
	flows := map[netip.Addr]int{}
	pool := map[netip.Addr]bool{}
	for _, e := range d.cfg.snatPool {
		pool[e.Addr] = true
	}
	for _, fam := range []netlink.InetFamily{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		list, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			continue
		}
		for _, f := range list {
			// SNAT'd: the reply goes to the pool address.
			to, ok := addrOf(f.Reverse.DstIP)
			if !ok || !pool[to] {
				continue
			}
			dst, _ := addrOf(f.Forward.DstIP)
			flows[to]++
			perDest[dest{to, netip.AddrPortFrom(dst, f.Forward.DstPort), f.Forward.Protocol}]++
		}
	}
	var out []SNATPoolUse
	for _, e := range d.cfg.snatPool {
		u := SNATPoolUse{Address: e.Addr.String(), Ports: e.Ports(), Flows: flows[e.Addr]}
		for k, n := range perDest {
			if k.ip == e.Addr && n > u.PortsUsed {
				u.PortsUsed, u.Busiest = n, fmt.Sprintf("%s/%s", k.dst, protoName(k.proto))
			}
		}
		out = append(out, u)
	}
	return out
}

var (
	descSNATPorts = prometheus.NewDesc("clusterwall_snat_pool_ports", "Source ports of each SNAT pool address (the size of its port range).", []string{"ip"}, nil)
	descSNATFlows = prometheus.NewDesc("clusterwall_snat_pool_flows", "Tracked flows SNAT'd to each pool address.", []string{"ip"}, nil)
	descSNATUsed  = prometheus.NewDesc("clusterwall_snat_pool_ports_used", "Source ports each pool address uses towards its busiest destination (address, port, protocol): what runs out first.", []string{"ip"}, nil)
)

// snatCollector exports the pool's use (nothing without a pool).
type snatCollector struct{ d *Daemon }

func (c snatCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSNATPorts
	ch <- descSNATFlows
	ch <- descSNATUsed
}

func (c snatCollector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range c.d.SNATPoolStatus() {
		ch <- prometheus.MustNewConstMetric(descSNATPorts, prometheus.GaugeValue, float64(u.Ports), u.Address)
		ch <- prometheus.MustNewConstMetric(descSNATFlows, prometheus.GaugeValue, float64(u.Flows), u.Address)
		ch <- prometheus.MustNewConstMetric(descSNATUsed, prometheus.GaugeValue, float64(u.PortsUsed), u.Address)
	}
}

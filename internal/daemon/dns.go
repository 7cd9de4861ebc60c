package daemon

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/clusterwall/clusterwall/internal/dnsproxy"
	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// fqdnNames returns the names the data plane needs addresses for (lower
// case): network rules' destinationFqdns and DNAT rules' translatedFqdn.
// The DNS proxy keeps them resolved and feeds every answer to the kernel.
func fqdnNames(m *match.Matcher) map[string]bool {
	names := map[string]bool{}
	for _, n := range m.FQDNs() {
		names[n] = true
	}
	return names
}

// upstreams picks the DNS proxy's upstreams: the config's, else the
// policy's dns.servers, else the nameservers of /etc/resolv.conf.
func (d *Daemon) upstreams(p *policy.Policy) []string {
	if len(d.cfg.DNS.Upstreams) > 0 {
		return d.cfg.DNS.Upstreams
	}
	var out []string
	for _, s := range p.DNS.Servers {
		out = append(out, s.String())
	}
	if len(out) > 0 {
		return out
	}
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil && !a.IsLoopback() && a != d.cfg.privateIP {
				out = append(out, netip.AddrPortFrom(a, 53).String())
			}
		}
	}
	return out
}

func (d *Daemon) dnsConfig(p *policy.Policy) dnsproxy.Config {
	return dnsproxy.Config{
		Upstreams:   d.upstreams(p),
		CacheSize:   d.cfg.DNS.CacheEntries,
		CacheBytes:  d.cfg.DNS.CacheBytes,
		MaxInflight: d.cfg.DNS.MaxInflight,
		MaxTCPConns: d.cfg.DNS.MaxTCPConns,
		OnAnswer: func(ctx context.Context, name string, addrs []netip.Addr, ttl time.Duration) error {
			// Called before the client gets its answer: the kernel's sets
			// know the addresses before the client can connect to them.
			return d.dp.AddFQDNAddrs(name, addrs, ttl+d.table.Grace())
		},
		Block: d.threatBlock(p), // threatintel.go
		Interesting: func(name string) bool {
			st := d.cur.Load()
			return st != nil && st.fqdns[name]
		},
	}
}

// startDNS starts the DNS proxy on the configured address; it returns once
// the proxy serves, and it stops when ctx ends (the daemon's goroutines).
func (d *Daemon) startDNS(ctx context.Context) error {
	st := d.cur.Load()
	px, err := dnsproxy.New(d.dnsConfig(st.policy), dnsproxy.Options{Table: d.table, Logger: d.log, Log: d.dnsLog})
	if err != nil {
		return err
	}
	l, err := dnsproxy.Listen(d.cfg.DNS.Listen, 0)
	if err != nil {
		return err
	}
	wait, err := px.Start(ctx, l)
	if err != nil {
		return err
	}
	d.dns = px
	d.spawn(func() {
		if err := wait(); err != nil && ctx.Err() == nil {
			d.componentFailed("DNS proxy", err)
		}
	})
	d.dnsUp.Store(true)
	d.spawn(func() { d.table.Run(ctx, time.Second) })
	d.spawn(func() { px.RefreshLoop(ctx, 30*time.Second, d.currentFQDNs) })
	// One refresher resolves the FQDN rules' names now and after every
	// apply (kickDNSRefresh): never a goroutine per apply.
	d.spawn(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.refreshDNS:
			}
			if err := px.Refresh(ctx, d.currentFQDNs()); err != nil && ctx.Err() == nil {
				d.log.Warn("resolving the FQDN rules' names", "err", err)
			}
		}
	})
	d.kickDNSRefresh()
	d.log.Info("DNS proxy listening", "addr", l.Addr().String(), "upstreams", d.upstreams(st.policy))
	return nil
}

// kickDNSRefresh asks the DNS refresher to resolve the current policy's
// FQDN names (at most one request waits: they are read when it runs).
func (d *Daemon) kickDNSRefresh() {
	select {
	case d.refreshDNS <- struct{}{}:
	default:
	}
}

func (d *Daemon) currentFQDNs() []string {
	st := d.cur.Load()
	if st == nil {
		return nil
	}
	out := make([]string, 0, len(st.fqdns))
	for n := range st.fqdns {
		out = append(out, n)
	}
	return out
}

// addrInUse reports whether a conntrack entry still uses addr as its
// original destination: such an address is never expired from the table
// (and its kernel set element is refreshed), so a long-lived connection to
// an FQDN rule's address survives its DNS answer's expiry and later reloads.
func (d *Daemon) addrInUse(name string, addr netip.Addr) bool {
	fam := netlink.InetFamily(netlink.FAMILY_V4)
	if addr.Is6() {
		fam = netlink.FAMILY_V6
	}
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
	if err != nil {
		return true // cannot tell: keep (fail safe for established connections)
	}
	for _, f := range flows {
		if a, ok := addrOf(f.Forward.DstIP); ok && a == addr {
			if err := d.dp.AddFQDNAddrs(name, []netip.Addr{addr}, d.table.Grace()); err != nil {
				d.log.Warn("refreshing an FQDN address in the kernel", "name", name, "addr", addr, "err", err)
			}
			return true
		}
	}
	return false
}

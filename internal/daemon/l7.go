package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/dnsproxy"
	"github.com/clusterwall/clusterwall/internal/proxy"
)

// proxyResolver answers the L7 proxy's spoofing check from the DNS proxy's
// table (addresses the firewall handed out, within TTL + grace) and, for a
// fresh lookup, asks the firewall's own DNS proxy, whose answers land in the
// same table.
type proxyResolver struct {
	table *dnsproxy.Table
	r     *net.Resolver
}

func newProxyResolver(table *dnsproxy.Table, dnsAddr string) *proxyResolver {
	r := net.DefaultResolver
	if dnsAddr != "" {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, dnsAddr)
		}}
	}
	return &proxyResolver{table: table, r: r}
}

func (p *proxyResolver) Addrs(name string) []netip.Addr { return p.table.Addrs(name) }

func (p *proxyResolver) LookupNetIP(ctx context.Context, name string) ([]netip.Addr, error) {
	addrs, err := p.r.LookupNetIP(ctx, "ip", name)
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, err
}

// startProxy starts the transparent L7 proxy (and the explicit one when
// configured); it returns once they serve, and they stop when ctx ends.
func (d *Daemon) startProxy(ctx context.Context) error {
	_, m := d.Current()
	px := proxy.New(proxy.Config{
		Matcher:  m,
		Resolver: newProxyResolver(d.table, d.cfg.DNS.Listen),
		Log:      d.proxyLog, // threatintel.go: AZFWThreatIntel lines too
		Logger:   d.log,
		Spoof:    d.cfg.spoof,
		Latency:  d.metrics.proxyObserve,
		Mark:     d.cfg.proxyMark(), // daemon_ha.go

		MaxConns:          d.cfg.Proxy.MaxConns,
		MaxConnsPerSource: d.cfg.Proxy.MaxConnsPerSource,
		MaxConnsPerPrefix: d.cfg.Proxy.MaxConnsPerPrefix,
		Loops:             d.cfg.Proxy.Loops,
	})
	ln, err := proxy.Listen("tcp", d.cfg.Proxy.Listen) // no keep-alive: see proxy.Listen
	if err != nil {
		return err
	}
	var eln net.Listener
	if d.cfg.Proxy.Explicit != "" {
		if eln, err = proxy.Listen("tcp", d.cfg.Proxy.Explicit); err != nil {
			ln.Close()
			return fmt.Errorf("explicit listener %s: %w", d.cfg.Proxy.Explicit, err)
		}
	}
	done, err := px.Start(ln)
	if err != nil {
		ln.Close()
		if eln != nil {
			eln.Close()
		}
		return err
	}
	d.proxy = px
	stopped := func(what string, err error) {
		if ctx.Err() == nil {
			d.componentFailed(what, err)
		}
	}
	d.spawn(func() { stopped("L7 proxy", <-done) })
	if eln != nil {
		d.spawn(func() { stopped("explicit proxy", px.ServeExplicit(eln)) })
	}
	d.spawn(func() {
		<-ctx.Done()
		px.Close()
	})
	d.proxyUp.Store(px)
	d.log.Info("L7 proxy listening", "transparent", ln.Addr().String(), "explicit", d.cfg.Proxy.Explicit)
	return nil
}

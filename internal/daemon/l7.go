package daemon

import (
	"context"
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

// startProxy runs the transparent L7 proxy (and the explicit one when
// configured) until ctx ends.
func (d *Daemon) startProxy(ctx context.Context) error {
	_, m := d.Current()
	px := proxy.New(proxy.Config{
		Matcher:  m,
		Resolver: newProxyResolver(d.table, d.cfg.DNS.Listen),
		Log:      d.proxyLog, // threatintel.go: AZFWThreatIntel lines too
		Logger:   d.log,
		Spoof:    d.cfg.spoof,
		Latency:  d.metrics.proxyObserve,

		MaxConns:          d.cfg.Proxy.MaxConns,
		MaxConnsPerSource: d.cfg.Proxy.MaxConnsPerSource,
		MaxConnsPerPrefix: d.cfg.Proxy.MaxConnsPerPrefix,
	})
	ln, err := proxy.Listen("tcp", d.cfg.Proxy.Listen) // no keep-alive: see proxy.Listen
	if err != nil {
		return err
	}
	d.proxy = px
	go px.Serve(ln)
	if d.cfg.Proxy.Explicit != "" {
		eln, err := proxy.Listen("tcp", d.cfg.Proxy.Explicit)
		if err != nil {
			px.Close()
			return err
		}
		go px.ServeExplicit(eln)
	}
	go func() { <-ctx.Done(); px.Close() }()
	d.proxyUp.Store(px)
	d.log.Info("L7 proxy listening", "transparent", ln.Addr().String(), "explicit", d.cfg.Proxy.Explicit)
	return nil
}

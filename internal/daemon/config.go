// Package daemon is the firewall process: it loads the config and policy,
// compiles the policy with the one matcher, programs the kernel in one
// atomic batch, reloads on SIGHUP / file change / admin API (validate first;
// a bad policy never replaces a good one), cuts connections a new policy
// denies, and turns the kernel's NFLOG messages into decision log lines.
package daemon

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/clusterwall/clusterwall/internal/dnsproxy"
	"github.com/clusterwall/clusterwall/internal/ha"
	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/proxy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// Config is the daemon's configuration file (YAML). docs/daemon.md documents it.
type Config struct {
	// Policy is the policy file (relative paths are relative to the config file).
	Policy string `yaml:"policy"`
	// ServiceTags overrides the policy's serviceTags file.
	ServiceTags string `yaml:"serviceTags,omitempty"`
	// Interfaces names the cluster-facing and internet-facing interfaces.
	Interfaces struct {
		Inside  string `yaml:"inside"`
		Outside string `yaml:"outside"`
		// AntiSpoofing is what the daemon requires of the inside
		// interface's reverse path filter: strict (default), loose or off
		// (antispoof.go).
		AntiSpoofing string `yaml:"antiSpoofing,omitempty"`
	} `yaml:"interfaces"`
	// PublicIPs are the firewall's public addresses (DNAT destinations, SNAT source).
	PublicIPs []string `yaml:"publicIPs"`
	// PrivateIP is the firewall's private address (DNS proxy, explicit proxy).
	PrivateIP string `yaml:"privateIP,omitempty"`
	// SNAT is "masquerade" (default), "fixed" (snat to the first public IP of each family), "pool" (snatPool) or "off".
	SNAT string `yaml:"snat,omitempty"`
	// SNATPool are the public IPs and port ranges of snat: pool (snatpool.go).
	SNATPool []SNATPoolEntry `yaml:"snatPool,omitempty"`
	// Admin is the admin API listener.
	Admin struct {
		Listen string `yaml:"listen,omitempty"` // default 127.0.0.1:9180
		// TokenFile, when set, holds the bearer tokens every /v1/* and
		// /metrics request must present (docs/api.md: one "TOKEN [NAME]"
		// per line).
		TokenFile string `yaml:"tokenFile,omitempty"`
		// TLS serves the admin API over HTTPS; with ClientCA, clients must
		// present a certificate it signed (mTLS).
		TLS struct {
			Cert     string `yaml:"cert,omitempty"`
			Key      string `yaml:"key,omitempty"`
			ClientCA string `yaml:"clientCA,omitempty"`
		} `yaml:"tls,omitempty"`
		// MaxBodyBytes bounds a request body (POST /v1/validate and
		// /v1/apply; default 64 MiB); MaxConnections the admin API's open
		// connections (default 64). admin_limits.go.
		MaxBodyBytes   int64 `yaml:"maxBodyBytes,omitempty"`
		MaxConnections int   `yaml:"maxConnections,omitempty"`
	} `yaml:"admin"`
	// PolicyLimits bound what parsing one policy (a file, an API body) may
	// cost: YAML nodes with aliases expanded, and nesting
	// (policy.Limits; defaults 2,000,000 and 64).
	PolicyLimits struct {
		MaxNodes int `yaml:"maxNodes,omitempty"`
		MaxDepth int `yaml:"maxDepth,omitempty"`
	} `yaml:"policyLimits,omitempty"`
	// Log configures the decision log.
	Log struct {
		// File is a path, or "-" for standard output (default).
		File string `yaml:"file,omitempty"`
		// RatePerSecond limits decision lines (default 1000). 0: no limit,
		// every decision is logged (every flow a rule decides, at line
		// rate). The kernel also limits its default-deny and input-drop
		// messages to this rate (to DefaultLogRate when 0: a flood guard).
		RatePerSecond *int `yaml:"ratePerSecond,omitempty"`
		// Rotation of File (gopkg.in/natefinch/lumberjack.v2, docs/logs.md):
		// rotate at MaxSizeMB (default 100), keep MaxBackups files
		// (default 10; an explicit 0: all) for MaxAgeDays (default 14; an
		// explicit 0: no limit), gzip them when Compress. Retention is
		// bounded unless both are set to 0 (the daemon then warns).
		MaxSizeMB  int  `yaml:"maxSizeMB,omitempty"`
		MaxBackups *int `yaml:"maxBackups,omitempty"`
		MaxAgeDays *int `yaml:"maxAgeDays,omitempty"`
		Compress   bool `yaml:"compress,omitempty"`
		// Stdout also writes the lines to standard output when File is a path.
		Stdout bool `yaml:"stdout,omitempty"`
	} `yaml:"log"`
	// DNS configures the DNS proxy the cluster uses as its resolver.
	DNS struct {
		// Listen is IP:port; default privateIP:53 when privateIP is set.
		// "off" disables the DNS proxy (network rules' destinationFqdns
		// then never match).
		Listen string `yaml:"listen,omitempty"`
		// Upstreams override the policy's dns.servers (default: the
		// nameservers of /etc/resolv.conf).
		Upstreams []string `yaml:"upstreams,omitempty"`
		// Budgets (docs/operations.md): the answer cache in entries
		// (default 10,000) and bytes (32 MiB); queries waiting for
		// upstreams (4,096; beyond, SERVFAIL at once); TCP clients (512);
		// the learned-address table's names (100,000), addresses (1,000,000)
		// and addresses per name (256).
		CacheEntries        int `yaml:"cacheEntries,omitempty"`
		CacheBytes          int `yaml:"cacheBytes,omitempty"`
		MaxInflight         int `yaml:"maxInflight,omitempty"`
		MaxTCPConns         int `yaml:"maxTCPConns,omitempty"`
		MaxNames            int `yaml:"maxNames,omitempty"`
		MaxAddresses        int `yaml:"maxAddresses,omitempty"`
		MaxAddressesPerName int `yaml:"maxAddressesPerName,omitempty"`
	} `yaml:"dns"`
	// Proxy configures the L7 proxy that decides application rules.
	Proxy struct {
		// Listen is where the kernel redirects cluster TCP to application
		// rules' ports (default "[::]:15001"; "off" disables the proxy, and
		// application rules then never allow anything).
		Listen string `yaml:"listen,omitempty"`
		// Explicit, when set, is an HTTP CONNECT / absolute-URI proxy listener.
		Explicit string `yaml:"explicit,omitempty"`
		// Spoof is "refuse" (default) or "reroute": what to do when a TLS SNI
		// or HTTP Host names an address the firewall did not resolve for it.
		Spoof string `yaml:"spoof,omitempty"`
		// Connection limits (internal/proxy limits.go): in all (default
		// 16,384), per client address (512), per client /24 or /64
		// (4,096); full limits shed the heaviest sources first. -1: off.
		MaxConns          int `yaml:"maxConns,omitempty"`
		MaxConnsPerSource int `yaml:"maxConnsPerSource,omitempty"`
		MaxConnsPerPrefix int `yaml:"maxConnsPerPrefix,omitempty"`
		// Loops is the number of the transparent proxy's event loops
		// (default 0: half the CPUs, rounded up; internal/proxy evloop.go).
		Loops int `yaml:"loops,omitempty"`
	} `yaml:"proxy"`
	// WatchPolicy reloads when the policy file changes (default true).
	WatchPolicy *bool `yaml:"watchPolicy,omitempty"`
	// WAF runs the ingress WAF (waf.go, docs/waf.md).
	WAF WAFConfig `yaml:"waf,omitempty"`
	// HA runs this gateway as one of a highly available pair
	// (daemon_ha.go, docs/ha.md).
	HA *ha.Config `yaml:"ha,omitempty"`

	// Parsed forms, filled by LoadConfig.
	path      string
	publicIPs []netip.Addr
	privateIP netip.Addr
	snat      nft.SNATMode
	spoof     proxy.SpoofPolicy
	proxyPort uint16
	haSpec    *ha.Spec
	snatPool  []nft.SNATPoolEntry
}

// LoadConfig reads and checks a daemon config file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	pos, err := policy.DecodeStrictPositions(path, data, &c)
	if err != nil {
		return nil, err
	}
	c.path = path
	var errs policy.ErrorList
	bad := func(field, format string, args ...any) {
		e := &policy.Error{Pos: pos.Lookup(field), Path: field, Msg: fmt.Sprintf(format, args...)}
		if e.Pos.Line > 0 {
			e.Msg = field + ": " + e.Msg // FILE:LINE:COL: field: message
		}
		errs = append(errs, e)
	}
	if c.Policy == "" {
		bad("policy", "missing policy file")
	} else if !filepath.IsAbs(c.Policy) {
		c.Policy = filepath.Join(filepath.Dir(path), c.Policy)
	}
	if c.ServiceTags != "" && !filepath.IsAbs(c.ServiceTags) {
		c.ServiceTags = filepath.Join(filepath.Dir(path), c.ServiceTags)
	}
	if c.Interfaces.Inside == "" || c.Interfaces.Outside == "" {
		bad("interfaces", "both interfaces.inside and interfaces.outside are required")
	}
	if len(c.PublicIPs) == 0 {
		bad("publicIPs", "at least one public IP is required")
	}
	for i, s := range c.PublicIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			bad(fmt.Sprintf("publicIPs[%d]", i), "%q is not an IP address", s)
			continue
		}
		c.publicIPs = append(c.publicIPs, a.Unmap())
	}
	if c.PrivateIP != "" {
		a, err := netip.ParseAddr(c.PrivateIP)
		if err != nil {
			bad("privateIP", "%q is not an IP address", c.PrivateIP)
		}
		c.privateIP = a
	}
	if c.snat, err = nft.ParseSNATMode(c.SNAT); err != nil {
		bad("snat", "%v", err)
	}
	c.loadHA(bad)       // daemon_ha.go
	c.loadSNATPool(bad) // snatpool.go
	switch {
	case c.DNS.Listen == "off":
		c.DNS.Listen = ""
	case c.DNS.Listen == "" && c.privateIP.IsValid():
		c.DNS.Listen = netip.AddrPortFrom(c.privateIP, 53).String()
	case c.DNS.Listen != "":
		if _, err := netip.ParseAddrPort(c.DNS.Listen); err != nil {
			bad("dns.listen", "%q is not IP:port", c.DNS.Listen)
		}
	}
	for i, u := range c.DNS.Upstreams {
		if _, err := dnsproxy.ParseUpstream(u); err != nil {
			bad(fmt.Sprintf("dns.upstreams[%d]", i), "%v", err)
		}
	}
	switch c.Proxy.Listen {
	case "off":
		c.Proxy.Listen = ""
	case "":
		c.Proxy.Listen = "[::]:15001"
	}
	if c.Proxy.Listen != "" {
		ap, err := netip.ParseAddrPort(c.Proxy.Listen)
		if err != nil || ap.Port() == 0 {
			bad("proxy.listen", "%q is not IP:port", c.Proxy.Listen)
		}
		c.proxyPort = ap.Port()
	}
	if c.Proxy.Explicit != "" {
		if _, err := netip.ParseAddrPort(c.Proxy.Explicit); err != nil {
			bad("proxy.explicit", "%q is not IP:port", c.Proxy.Explicit)
		}
	}
	if c.Proxy.Loops < 0 {
		bad("proxy.loops", "loops must be 0 (half the CPUs) or more, not %d", c.Proxy.Loops)
	}
	var ok bool
	if c.spoof, ok = proxy.ParseSpoofPolicy(c.Proxy.Spoof); !ok {
		bad("proxy.spoof", "spoof must be refuse or reroute, not %q", c.Proxy.Spoof)
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = "127.0.0.1:9180"
	}
	c.checkLimits(bad) // admin_limits.go
	c.checkAdmin(bad)
	if c.Log.File == "" {
		c.Log.File = "-"
	}
	switch r := c.Log.RatePerSecond; {
	case r == nil:
		c.Log.RatePerSecond = new(int)
		*c.Log.RatePerSecond = DefaultLogRate
	case *r < 0:
		bad("log.ratePerSecond", "ratePerSecond must be 0 (no limit) or more, not %d", *r)
	}
	if c.Log.MaxBackups == nil {
		c.Log.MaxBackups = ptrTo(telemetry.DefaultMaxBackups)
	}
	if c.Log.MaxAgeDays == nil {
		c.Log.MaxAgeDays = ptrTo(telemetry.DefaultMaxAgeDays)
	}
	if c.Log.MaxSizeMB < 0 || *c.Log.MaxBackups < 0 || *c.Log.MaxAgeDays < 0 {
		bad("log", "maxSizeMB, maxBackups and maxAgeDays must not be negative")
	}
	if c.Log.File != "-" && !filepath.IsAbs(c.Log.File) {
		c.Log.File = filepath.Join(filepath.Dir(path), c.Log.File)
	}
	errs = append(errs, c.loadWAF()...)
	if len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

// GatewayConfig is the firewall this daemon runs as the matcher sees it:
// its addresses and services (match.GatewayConfig.Gateway). explain
// --config uses it without the kernel's packages.
func (c *Config) GatewayConfig() match.GatewayConfig {
	g := match.GatewayConfig{PublicIPs: c.publicIPs, ProxyPort: c.proxyPort}
	if c.privateIP.IsValid() {
		g.PrivateIPs = []netip.Addr{c.privateIP}
	}
	if ap, err := netip.ParseAddrPort(c.Proxy.Explicit); err == nil {
		g.InsideTCPPorts = append(g.InsideTCPPorts, ap.Port())
	}
	g.OutsideTCPPorts, g.OutsideTCPAddrs = c.wafDataPlane() // waf.go
	return g
}

// DefaultLogRate is log.ratePerSecond's default: decision lines per second.
const DefaultLogRate = 1000

// LogRate is the decision log's limit in lines per second; 0: none.
func (c *Config) LogRate() int {
	if c.Log.RatePerSecond == nil {
		return DefaultLogRate
	}
	return *c.Log.RatePerSecond
}

// kernelLogRate limits the kernel's log messages: with log.ratePerSecond
// > 0 all of them (nft.Config.LimitRuleLogs), at that rate, so that the
// kernel does not send the daemon messages the decision log would throw
// away; with 0 (every flow) only the default deny's, the input chain's,
// DNAT rules' and threat intelligence's (floods and scans hit those), at
// DefaultLogRate, and every flow a network rule decides is logged. The
// kernel's counters count every flow either way (rule hits,
// clusterwall_decisions_total).
func (c *Config) kernelLogRate() int {
	if r := c.LogRate(); r > 0 {
		return r
	}
	return DefaultLogRate
}

// DataplaneConfig is the nftables configuration this daemon programs.
func (c *Config) DataplaneConfig() nft.Config {
	g := c.GatewayConfig()
	return nft.Config{
		Inside:          c.Interfaces.Inside,
		Outside:         c.Interfaces.Outside,
		PublicIPs:       g.PublicIPs,
		PrivateIPs:      g.PrivateIPs,
		ProxyPort:       g.ProxyPort,
		InsideTCPPorts:  g.InsideTCPPorts,
		OutsideTCPPorts: g.OutsideTCPPorts,
		OutsideTCPAddrs: g.OutsideTCPAddrs,
		SNAT:            c.snat,
		LogRate:         uint64(c.kernelLogRate()),
		LogBurst:        uint32(2 * c.kernelLogRate()),
		LimitRuleLogs:   c.LogRate() > 0,
		HA:              c.haDataPlane(), // daemon_ha.go
		SNATPool:        c.snatPool,
	}
}

// PolicyOptions are the options every policy load of this daemon uses.
func (c *Config) PolicyOptions() policy.Options {
	return policy.Options{ServiceTagsFile: c.ServiceTags,
		Limits: policy.Limits{MaxNodes: c.PolicyLimits.MaxNodes, MaxDepth: c.PolicyLimits.MaxDepth}}
}

// Watch reports whether the policy file is watched for changes.
func (c *Config) Watch() bool { return c.WatchPolicy == nil || *c.WatchPolicy }

// LogSink is the decision log sink the log section describes (open it with
// telemetry.OpenSink).
func (c *Config) LogSink() telemetry.SinkConfig {
	return telemetry.SinkConfig{
		File:       c.Log.File,
		MaxSizeMB:  c.Log.MaxSizeMB,
		MaxBackups: derefOr(c.Log.MaxBackups, telemetry.DefaultMaxBackups),
		MaxAgeDays: derefOr(c.Log.MaxAgeDays, telemetry.DefaultMaxAgeDays),
		Compress:   c.Log.Compress,
		Stdout:     c.Log.Stdout,
	}
}

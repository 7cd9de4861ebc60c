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
	} `yaml:"interfaces"`
	// PublicIPs are the firewall's public addresses (DNAT destinations, SNAT source).
	PublicIPs []string `yaml:"publicIPs"`
	// PrivateIP is the firewall's private address (DNS proxy, explicit proxy).
	PrivateIP string `yaml:"privateIP,omitempty"`
	// SNAT is "masquerade" (default), "fixed" (snat to the first public IP of each family) or "off".
	SNAT string `yaml:"snat,omitempty"`
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
	} `yaml:"admin"`
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
		// rotate at MaxSizeMB (default 100), keep MaxBackups files (0: all)
		// for MaxAgeDays (0: no limit), gzip them when Compress.
		MaxSizeMB  int  `yaml:"maxSizeMB,omitempty"`
		MaxBackups int  `yaml:"maxBackups,omitempty"`
		MaxAgeDays int  `yaml:"maxAgeDays,omitempty"`
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
	} `yaml:"proxy"`
	// WatchPolicy reloads when the policy file changes (default true).
	WatchPolicy *bool `yaml:"watchPolicy,omitempty"`
	// WAF runs the ingress WAF (waf.go, docs/waf.md).
	WAF WAFConfig `yaml:"waf,omitempty"`

	// Parsed forms, filled by LoadConfig.
	path      string
	publicIPs []netip.Addr
	privateIP netip.Addr
	snat      nft.SNATMode
	spoof     proxy.SpoofPolicy
	proxyPort uint16
}

// LoadConfig reads and checks a daemon config file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := policy.DecodeStrict(path, data, &c); err != nil {
		return nil, err
	}
	c.path = path
	var errs policy.ErrorList
	bad := func(field, format string, args ...any) {
		errs = append(errs, &policy.Error{Pos: policy.Pos{File: path}, Path: field, Msg: fmt.Sprintf(format, args...)})
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
	var ok bool
	if c.spoof, ok = proxy.ParseSpoofPolicy(c.Proxy.Spoof); !ok {
		bad("proxy.spoof", "spoof must be refuse or reroute, not %q", c.Proxy.Spoof)
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = "127.0.0.1:9180"
	}
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
	if c.Log.MaxSizeMB < 0 || c.Log.MaxBackups < 0 || c.Log.MaxAgeDays < 0 {
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

// DefaultLogRate is log.ratePerSecond's default: decision lines per second.
const DefaultLogRate = 1000

// LogRate is the decision log's limit in lines per second; 0: none.
func (c *Config) LogRate() int {
	if c.Log.RatePerSecond == nil {
		return DefaultLogRate
	}
	return *c.Log.RatePerSecond
}

// kernelLogRate limits the kernel's default-deny and input-drop messages
// (floods and scans hit those): the log's rate, or DefaultLogRate when the
// log has no limit. Flows a rule decides are logged by the kernel without
// a limit; the decision log applies LogRate to them.
func (c *Config) kernelLogRate() int {
	if r := c.LogRate(); r > 0 {
		return r
	}
	return DefaultLogRate
}

// DataplaneConfig is the nftables configuration this daemon programs.
func (c *Config) DataplaneConfig() nft.Config {
	dc := nft.Config{
		Inside:    c.Interfaces.Inside,
		Outside:   c.Interfaces.Outside,
		PublicIPs: c.publicIPs,
		SNAT:      c.snat,
		LogRate:   uint64(c.kernelLogRate()),
		LogBurst:  uint32(2 * c.kernelLogRate()),
	}
	if c.privateIP.IsValid() {
		dc.PrivateIPs = []netip.Addr{c.privateIP}
	}
	dc.ProxyPort = c.proxyPort
	if ap, err := netip.ParseAddrPort(c.Proxy.Explicit); err == nil {
		dc.InsideTCPPorts = append(dc.InsideTCPPorts, ap.Port())
	}
	wafPorts, wafAddrs := c.wafDataPlane() // waf.go
	dc.OutsideTCPPorts = append(dc.OutsideTCPPorts, wafPorts...)
	dc.OutsideTCPAddrs = wafAddrs
	return dc
}

// PolicyOptions are the options every policy load of this daemon uses.
func (c *Config) PolicyOptions() policy.Options {
	return policy.Options{ServiceTagsFile: c.ServiceTags}
}

// Watch reports whether the policy file is watched for changes.
func (c *Config) Watch() bool { return c.WatchPolicy == nil || *c.WatchPolicy }

// LogSink is the decision log sink the log section describes (open it with
// telemetry.OpenSink).
func (c *Config) LogSink() telemetry.SinkConfig {
	return telemetry.SinkConfig{
		File:       c.Log.File,
		MaxSizeMB:  c.Log.MaxSizeMB,
		MaxBackups: c.Log.MaxBackups,
		MaxAgeDays: c.Log.MaxAgeDays,
		Compress:   c.Log.Compress,
		Stdout:     c.Log.Stdout,
	}
}

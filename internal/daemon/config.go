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

	"github.com/clusterwall/clusterwall/internal/policy"
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
	// SNAT is "masquerade" (default) or "publicIP" (snat to the first public IP of each family) or "off".
	SNAT string `yaml:"snat,omitempty"`
	// Admin is the admin API listener.
	Admin struct {
		Listen string `yaml:"listen,omitempty"` // default 127.0.0.1:9180
	} `yaml:"admin"`
	// Log configures the decision log.
	Log struct {
		// File is a path, or "-" for standard output (default).
		File string `yaml:"file,omitempty"`
		// RatePerSecond limits decision lines (default 1000; kernel-side the log rule is rate limited too).
		RatePerSecond int `yaml:"ratePerSecond,omitempty"`
	} `yaml:"log"`
	// WatchPolicy reloads when the policy file changes (default true).
	WatchPolicy *bool `yaml:"watchPolicy,omitempty"`

	// Parsed forms, filled by LoadConfig.
	path      string
	publicIPs []netip.Addr
	privateIP netip.Addr
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
	switch c.SNAT {
	case "":
		c.SNAT = "masquerade"
	case "masquerade", "publicIP", "off":
	default:
		bad("snat", "snat must be masquerade, publicIP or off, not %q", c.SNAT)
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = "127.0.0.1:9180"
	}
	if c.Log.File == "" {
		c.Log.File = "-"
	}
	if c.Log.RatePerSecond == 0 {
		c.Log.RatePerSecond = 1000
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

// PolicyOptions are the options every policy load of this daemon uses.
func (c *Config) PolicyOptions() policy.Options {
	return policy.Options{ServiceTagsFile: c.ServiceTags}
}

// Watch reports whether the policy file is watched for changes.
func (c *Config) Watch() bool { return c.WatchPolicy == nil || *c.WatchPolicy }

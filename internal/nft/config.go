package nft

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/clusterwall/clusterwall/internal/match"
)

// SNATMode says how outbound traffic leaving the outside interface is
// source-translated.
type SNATMode uint8

const (
	// SNATMasquerade rewrites the source to the outside interface's
	// address (the default).
	SNATMasquerade SNATMode = iota
	// SNATFixed rewrites the source to the first public IP of the packet's
	// family (masquerade for a family without one).
	SNATFixed
	// SNATOff does no source translation (a routed deployment).
	SNATOff
	// SNATPool spreads new flows over Config.SNATPool (snatpool.go).
	SNATPool
)

func (m SNATMode) String() string {
	switch m {
	case SNATMasquerade:
		return "masquerade"
	case SNATFixed:
		return "fixed"
	case SNATOff:
		return "off"
	case SNATPool:
		return "pool"
	}
	return fmt.Sprintf("SNATMode(%d)", m)
}

// ParseSNATMode parses "masquerade" (or ""), "fixed", "pool" or "off".
func ParseSNATMode(s string) (SNATMode, error) {
	switch s {
	case "", "masquerade":
		return SNATMasquerade, nil
	case "fixed":
		return SNATFixed, nil
	case "off":
		return SNATOff, nil
	case "pool":
		return SNATPool, nil
	}
	return 0, fmt.Errorf("snat mode must be masquerade, fixed, pool or off, not %q", s)
}

// Config is what the data plane needs beyond the policy: the gateway's
// interfaces and addresses.
type Config struct {
	// Inside is the cluster-facing interface, Outside the internet-facing one.
	Inside, Outside string
	// PublicIPs are the firewall's public addresses (on the outside). DNAT
	// rules may only name these as destinations; SNATFixed uses them.
	PublicIPs []netip.Addr
	// PrivateIPs are the firewall's addresses the cluster uses as its DNS
	// server; when empty, DNS from the inside is accepted to any local
	// address.
	PrivateIPs []netip.Addr
	// InsideTCPPorts are TCP ports the firewall itself serves to the inside
	// (SSH, the L7 proxy's ports); by default only DNS is.
	InsideTCPPorts []uint16
	// OutsideTCPPorts are TCP ports the firewall itself serves to the
	// internet on its public IPs (the ingress WAF's listeners); by default
	// nothing is. DNAT happens before the input chain, so a DNAT rule on
	// the same port takes the connections it matches.
	OutsideTCPPorts []uint16
	// OutsideTCPAddrs, when set, narrows OutsideTCPPorts to these public
	// IPs (the addresses the ingress WAF listens on): the other public IPs
	// drop those ports like any other. Each must be one of PublicIPs.
	OutsideTCPAddrs []netip.Addr
	SNAT            SNATMode
	// SNATPool are the public IPs and port ranges of SNATPool (snatpool.go).
	SNATPool []SNATPoolEntry
	// ProxyPort, when set, is the local port of the transparent L7 proxy:
	// TCP from the inside to every port an application rule names is
	// redirected there, and the proxy decides it with the same matcher
	// (network rules first, then application rules).
	ProxyPort uint16
	// LogGroup is the NFLOG group of the decision log (default 100).
	LogGroup uint16
	// LogGeneration, when not 0, is appended to every log prefix as
	// ":g<generation>" (see LogTag).
	LogGeneration uint32
	// LogGenerations, when set, gives the generation of each decision's
	// log prefix (and named counter) instead of LogGeneration, by its tag
	// (Kind and Index; Gen 0). The daemon keeps a rule's generation for as
	// long as the rule logs the same decision line, so that an apply that
	// changes one rule changes only that rule's kernel objects.
	LogGenerations func(LogTag) uint32
	// LogRate and LogBurst limit the packets logged, all rules together,
	// per second (defaults 200 and 400): the default deny's, the input
	// chain's, DNAT rules' and threat intelligence's log statements, and,
	// with LimitRuleLogs, network rules' too.
	LogRate  uint64
	LogBurst uint32
	// LimitRuleLogs puts the network rules' log statements behind the
	// shared limit too, so that the kernel sends the daemon at most
	// LogRate messages a second however many flows the rules decide (the
	// daemon's log.ratePerSecond > 0). Without it every flow a network
	// rule decides is logged (log.ratePerSecond: 0). Either way the
	// decision's counter counts every flow and its verdict applies to
	// every flow: a limit that is over ends its rule, so a limited
	// decision is a chain of its own, the counter, limit and log in one
	// rule and the verdict in the next (decisionChain).
	LimitRuleLogs bool
	// Table is the name of the inet table (default "clusterwall").
	Table string
	// ThreatIntel, when set, drops (Deny) or logs (Alert) new flows from
	// or to listed addresses before every rule (see ThreatIntel).
	ThreatIntel *ThreatIntel
	// HA, when set, adds the rules of a high-availability pair (ha.go).
	HA *HA
}

// Defaults of Config.
const (
	DefaultTable    = "clusterwall"
	DefaultLogGroup = 100
	DefaultLogRate  = 200
	DefaultLogBurst = 400
)

func (c Config) withDefaults() Config {
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.LogGroup == 0 {
		c.LogGroup = DefaultLogGroup
	}
	if c.LogRate == 0 {
		c.LogRate = DefaultLogRate
	}
	if c.LogBurst == 0 {
		c.LogBurst = DefaultLogBurst
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	for _, x := range []struct{ what, name string }{{"inside", c.Inside}, {"outside", c.Outside}} {
		if x.name == "" {
			return fmt.Errorf("data plane config: %s interface name is empty", x.what)
		}
		if len(x.name) > 15 {
			return fmt.Errorf("data plane config: %s interface name %q is longer than 15 characters", x.what, x.name)
		}
	}
	if c.Inside == c.Outside {
		return fmt.Errorf("data plane config: inside and outside are the same interface %q", c.Inside)
	}
	for _, a := range append(append([]netip.Addr(nil), c.PublicIPs...), c.PrivateIPs...) {
		if !a.IsValid() || a.Zone() != "" {
			return fmt.Errorf("data plane config: bad address %v", a)
		}
	}
	for _, p := range c.InsideTCPPorts {
		if p == 0 {
			return fmt.Errorf("data plane config: inside TCP port 0")
		}
	}
	for _, p := range c.OutsideTCPPorts {
		if p == 0 {
			return fmt.Errorf("data plane config: outside TCP port 0")
		}
	}
	for _, a := range c.OutsideTCPAddrs {
		if !c.isPublic(a) {
			return fmt.Errorf("data plane config: outside service address %v is not a public IP (%s)", a, addrList(c.PublicIPs))
		}
	}
	if err := validatePool(c); err != nil {
		return err
	}
	if c.SNAT > SNATPool {
		return fmt.Errorf("data plane config: unknown SNAT mode %d", c.SNAT)
	}
	if err := c.HA.validate(c); err != nil {
		return err
	}
	if c.Table != "" && len(c.Table) > 64 {
		return fmt.Errorf("data plane config: table name %q is too long", c.Table)
	}
	return nil
}

// Gateway is the firewall as the matcher sees it (match.Gateway): its
// addresses, the L7 proxy, and its services (match.GatewayConfig.Gateway
// lists them). The daemon compiles its matcher with it and Compile builds
// the input chain from it, so `explain` and the kernel answer flows to the
// firewall alike.
func (c Config) Gateway() *match.Gateway {
	return match.GatewayConfig{
		PublicIPs: c.PublicIPs, PrivateIPs: c.PrivateIPs, ProxyPort: c.ProxyPort,
		InsideTCPPorts: c.InsideTCPPorts, OutsideTCPPorts: c.OutsideTCPPorts, OutsideTCPAddrs: c.OutsideTCPAddrs,
	}.Gateway()
}

func addrList(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func (c Config) isPublic(a netip.Addr) bool {
	for _, p := range c.PublicIPs {
		if p.Unmap() == a.Unmap() {
			return true
		}
	}
	return false
}

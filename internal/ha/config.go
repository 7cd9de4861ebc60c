package ha

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// Config is the daemon config's `ha:` section (docs/ha.md). It is decoded
// strictly with the rest of the daemon's config; Validate turns it into a
// Spec.
type Config struct {
	// Name is this gateway's name in status, logs and keepalived's
	// router_id (default: the host name).
	Name string `yaml:"name,omitempty"`
	// Sync is the dedicated link to the peer: conntrackd's state sync and
	// the daemons' peer API run over it, and nowhere else.
	Sync SyncConfig `yaml:"sync"`
	// Groups are the VRRP groups. One group is an active/standby pair; two
	// groups with swapped priorities are active/active (each gateway is
	// active for one group and standby for the other). A group moves its
	// inside addresses and public IPs together.
	Groups []GroupConfig `yaml:"groups"`
	// VRRP tunes keepalived.
	VRRP VRRPConfig `yaml:"vrrp,omitempty"`
	// ReplicateDNS sends the DNS proxy's learned answers to the peer
	// (default true): a client that resolved a name through one gateway
	// can then connect through the other (docs/ha.md, "FQDN state").
	ReplicateDNS *bool `yaml:"replicateDNS,omitempty"`
	// RunDir holds the rendered keepalived and conntrackd configs, their
	// pid, lock, socket and log files (default /run/clusterwall/ha; one
	// directory per daemon when several run on one machine).
	RunDir string `yaml:"runDir,omitempty"`
	// Keepalived and Conntrackd are the programs (default: found in PATH,
	// /usr/sbin).
	Keepalived string `yaml:"keepalived,omitempty"`
	Conntrackd string `yaml:"conntrackd,omitempty"`
}

// SyncConfig is the dedicated sync link.
type SyncConfig struct {
	// Interface is the sync link's interface on this gateway.
	Interface string `yaml:"interface"`
	// Address is this gateway's address on the sync link, Peer the peer's.
	Address string `yaml:"address"`
	Peer    string `yaml:"peer"`
	// Port is conntrackd's UDP port (default 3780).
	Port int `yaml:"port,omitempty"`
	// APIPort is the daemons' peer API (TCP; default 9181): each daemon
	// reads the other's role, readiness and policy generation there.
	APIPort int `yaml:"apiPort,omitempty"`
}

// GroupConfig is one VRRP group: the addresses one gateway at a time holds.
type GroupConfig struct {
	// Name identifies the group (letters, digits, '-' and '_').
	Name string `yaml:"name"`
	// VirtualRouterID is the VRRP router id (1-255), the same on every
	// gateway of the group and unique on its links.
	VirtualRouterID int `yaml:"virtualRouterID"`
	// Priority is this gateway's VRRP priority in the group (1-254): the
	// highest running and ready gateway holds the group's addresses.
	Priority int `yaml:"priority"`
	// InsideAddresses are the cluster-side gateway addresses the group
	// moves, with prefix lengths (the nodes' default route, e.g.
	// 10.42.1.1/24).
	InsideAddresses []string `yaml:"insideAddresses"`
	// PublicIPs are the public IPs the group moves, with prefix lengths;
	// each must be one of the daemon's publicIPs.
	PublicIPs []string `yaml:"publicIPs"`
}

// VRRPConfig tunes keepalived.
type VRRPConfig struct {
	// AdvertInterval is the VRRP advertisement interval (default 1s). A
	// backup takes over about 3 intervals after the active's last
	// advertisement; below 1s VRRPv3 is used (centiseconds).
	AdvertInterval string `yaml:"advertInterval,omitempty"`
	// PreemptDelay is how long a gateway that (re)starts waits before it
	// takes its groups back from a peer of lower priority (default 5s),
	// so that its state sync has caught up first. "0s": at once.
	PreemptDelay string `yaml:"preemptDelay,omitempty"`
	// NoPreempt keeps the active gateway active when a peer of higher
	// priority comes back (failback then needs a restart or `ha
	// failover`).
	NoPreempt bool `yaml:"noPreempt,omitempty"`
	// CheckInterval is how often keepalived asks the daemon's /readyz
	// (default 1s); CheckFall failed checks in a row give the group up
	// (default 2), CheckRise good ones take part again (default 2).
	CheckInterval string `yaml:"checkInterval,omitempty"`
	CheckFall     int    `yaml:"checkFall,omitempty"`
	CheckRise     int    `yaml:"checkRise,omitempty"`
}

// Defaults.
const (
	DefaultRunDir         = "/run/clusterwall/ha"
	DefaultSyncPort       = 3780
	DefaultAPIPort        = 9181
	DefaultAdvertInterval = time.Second
	DefaultPreemptDelay   = 5 * time.Second
	DefaultCheckInterval  = time.Second
	DefaultCheckFall      = 2
	DefaultCheckRise      = 2
)

// Spec is a validated HA configuration for one gateway, with what the
// daemon knows besides: the interfaces, the readiness URL and the
// addresses of the firewall itself.
type Spec struct {
	Name         string
	Inside       string // cluster-facing interface (VRRP, inside addresses)
	Outside      string // internet-facing interface (VRRP, public IPs)
	SyncIface    string
	SyncAddr     netip.Addr
	PeerAddr     netip.Addr
	SyncPort     uint16
	APIPort      uint16
	Groups       []Group
	Advert       time.Duration
	PreemptDelay time.Duration
	NoPreempt    bool
	CheckEvery   time.Duration
	CheckFall    int
	CheckRise    int
	ReplicateDNS bool
	RunDir       string
	Keepalived   string
	Conntrackd   string
	// CheckCommand is keepalived's track script: it must exit 0 while
	// the daemon is ready (the daemon sets it: `clusterwall ha check`).
	CheckCommand []string
	// LocalAddrs are the firewall's own addresses besides the groups'
	// (private IP, loopback): conntrackd does not replicate flows that
	// end at the firewall itself.
	LocalAddrs []netip.Addr
}

// Group is a validated VRRP group.
type Group struct {
	Name     string
	VRID     int
	Priority int
	Inside   []netip.Prefix
	Public   []netip.Prefix
}

// Mode names the setup: "active-standby" (one group) or "active-active".
func (s *Spec) Mode() string {
	if len(s.Groups) > 1 {
		return "active-active"
	}
	return "active-standby"
}

// Addrs returns every address the groups move.
func (s *Spec) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, g := range s.Groups {
		for _, p := range append(slices.Clone(g.Inside), g.Public...) {
			out = append(out, p.Addr())
		}
	}
	return out
}

// Problem is one error in the ha section: Field is its path below the
// daemon config's root (e.g. "ha.groups[0].priority").
type Problem struct {
	Field string
	Msg   string
}

// Env is what Validate needs from the rest of the daemon config.
type Env struct {
	// ConfigDir resolves relative paths (the daemon config's directory).
	ConfigDir string
	Inside    string
	Outside   string
	// PublicIPs are the daemon's publicIPs.
	PublicIPs []netip.Addr
	// HostName is the default Name.
	HostName string
}

var validGroupName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$`)

// Validate checks c and returns the Spec, or every problem found.
func (c *Config) Validate(env Env) (*Spec, []Problem) {
	var probs []Problem
	bad := func(field, format string, args ...any) {
		probs = append(probs, Problem{Field: "ha." + field, Msg: fmt.Sprintf(format, args...)})
	}
	s := &Spec{
		Name: c.Name, Inside: env.Inside, Outside: env.Outside,
		SyncIface: c.Sync.Interface, SyncPort: DefaultSyncPort, APIPort: DefaultAPIPort,
		Advert: DefaultAdvertInterval, PreemptDelay: DefaultPreemptDelay, NoPreempt: c.VRRP.NoPreempt,
		CheckEvery: DefaultCheckInterval, CheckFall: DefaultCheckFall, CheckRise: DefaultCheckRise,
		RunDir: c.RunDir, Keepalived: c.Keepalived, Conntrackd: c.Conntrackd,
		ReplicateDNS: c.ReplicateDNS == nil || *c.ReplicateDNS,
	}
	if s.Name == "" {
		s.Name = env.HostName
	}
	if s.Name == "" || !regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`).MatchString(s.Name) {
		bad("name", "%q is not a gateway name (letters, digits, '.', '-', '_')", s.Name)
	}
	switch {
	case c.Sync.Interface == "":
		bad("sync.interface", "the dedicated sync link's interface is required")
	case len(c.Sync.Interface) > 15:
		bad("sync.interface", "interface name %q is longer than 15 characters", c.Sync.Interface)
	case c.Sync.Interface == env.Inside || c.Sync.Interface == env.Outside:
		bad("sync.interface", "the sync link must be a dedicated interface, not %s (the %s interface)", c.Sync.Interface,
			map[bool]string{true: "inside", false: "outside"}[c.Sync.Interface == env.Inside])
	}
	addr := func(field, v string) netip.Addr {
		if v == "" {
			bad(field, "required")
			return netip.Addr{}
		}
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			bad(field, "%q is not an IP address", v)
			return netip.Addr{}
		}
		return a.Unmap()
	}
	s.SyncAddr = addr("sync.address", c.Sync.Address)
	s.PeerAddr = addr("sync.peer", c.Sync.Peer)
	if s.SyncAddr.IsValid() && s.PeerAddr.IsValid() {
		if s.SyncAddr == s.PeerAddr {
			bad("sync.peer", "the peer's address %s is this gateway's own", s.PeerAddr)
		} else if s.SyncAddr.Is4() != s.PeerAddr.Is4() {
			bad("sync.peer", "%s and sync.address %s are of different families", s.PeerAddr, s.SyncAddr)
		}
	}
	port := func(field string, v int, def uint16) uint16 {
		switch {
		case v == 0:
			return def
		case v < 1 || v > 65535:
			bad(field, "%d is not a port", v)
		}
		return uint16(v)
	}
	s.SyncPort = port("sync.port", c.Sync.Port, DefaultSyncPort)
	s.APIPort = port("sync.apiPort", c.Sync.APIPort, DefaultAPIPort)
	if s.SyncPort == s.APIPort {
		bad("sync.apiPort", "the peer API port %d is conntrackd's sync port", s.APIPort)
	}

	dur := func(field, v string, def, min time.Duration) time.Duration {
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			bad(field, "%q is not a duration (e.g. 1s, 500ms)", v)
			return def
		}
		if d < min {
			bad(field, "%s is less than %s", d, min)
			return def
		}
		return d
	}
	s.Advert = dur("vrrp.advertInterval", c.VRRP.AdvertInterval, DefaultAdvertInterval, 10*time.Millisecond)
	if s.Advert > 40*time.Second {
		bad("vrrp.advertInterval", "%s is more than VRRP's 40s", s.Advert)
	} else if s.Advert < time.Second && s.Advert%(10*time.Millisecond) != 0 {
		bad("vrrp.advertInterval", "%s: below 1s VRRPv3 counts in centiseconds", s.Advert)
	} else if s.Advert >= time.Second && s.Advert%time.Second != 0 {
		bad("vrrp.advertInterval", "%s: above 1s the interval is whole seconds", s.Advert)
	}
	s.PreemptDelay = dur("vrrp.preemptDelay", c.VRRP.PreemptDelay, DefaultPreemptDelay, 0)
	if s.PreemptDelay > time.Hour {
		bad("vrrp.preemptDelay", "%s is more than keepalived's 1h", s.PreemptDelay)
	}
	s.CheckEvery = dur("vrrp.checkInterval", c.VRRP.CheckInterval, DefaultCheckInterval, time.Second)
	if s.CheckEvery%time.Second != 0 {
		bad("vrrp.checkInterval", "%s: keepalived checks in whole seconds", s.CheckEvery)
	}
	count := func(field string, v, def int) int {
		if v == 0 {
			return def
		}
		if v < 1 || v > 100 {
			bad(field, "%d is not between 1 and 100", v)
			return def
		}
		return v
	}
	s.CheckFall = count("vrrp.checkFall", c.VRRP.CheckFall, DefaultCheckFall)
	s.CheckRise = count("vrrp.checkRise", c.VRRP.CheckRise, DefaultCheckRise)

	if s.RunDir == "" {
		s.RunDir = DefaultRunDir
	} else if !filepath.IsAbs(s.RunDir) {
		s.RunDir = filepath.Join(env.ConfigDir, s.RunDir)
	}
	// conntrackd's control socket lives there; a UNIX socket path has at
	// most 107 bytes.
	if n := len(filepath.Join(s.RunDir, ConntrackdSocket)); n > 107 {
		bad("runDir", "%q is too long for conntrackd's control socket (%d bytes, at most 107)", s.RunDir, n)
	}

	if len(c.Groups) == 0 {
		bad("groups", "at least one VRRP group is required")
	}
	seenVRID := map[int]string{}
	seenAddr := map[netip.Addr]string{}
	for i, gc := range c.Groups {
		f := fmt.Sprintf("groups[%d]", i)
		g := Group{Name: gc.Name, VRID: gc.VirtualRouterID, Priority: gc.Priority}
		if !validGroupName.MatchString(gc.Name) {
			bad(f+".name", "%q is not a group name (1-16 letters, digits, '-', '_')", gc.Name)
		}
		for _, o := range s.Groups {
			if o.Name == gc.Name {
				bad(f+".name", "group %q is defined twice", gc.Name)
			}
		}
		if g.VRID < 1 || g.VRID > 255 {
			bad(f+".virtualRouterID", "%d is not a VRRP router id (1-255)", g.VRID)
		} else if other, dup := seenVRID[g.VRID]; dup {
			bad(f+".virtualRouterID", "router id %d is also group %s's", g.VRID, other)
		}
		seenVRID[g.VRID] = gc.Name
		if g.Priority < 1 || g.Priority > 254 {
			bad(f+".priority", "%d is not a VRRP priority (1-254)", g.Priority)
		}
		pfx := func(field string, vals []string, what string) []netip.Prefix {
			var out []netip.Prefix
			if len(vals) == 0 {
				bad(field, "at least one %s is required", what)
			}
			for j, v := range vals {
				ff := fmt.Sprintf("%s[%d]", field, j)
				p, err := netip.ParsePrefix(v)
				if err != nil {
					a, aerr := netip.ParseAddr(v)
					if aerr != nil {
						bad(ff, "%q is not an address with a prefix length (e.g. 10.42.1.1/24)", v)
						continue
					}
					p = netip.PrefixFrom(a, a.BitLen())
				}
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
				if p.Addr().Zone() != "" || p.Addr().IsUnspecified() || p.Addr().IsMulticast() || p.Addr().IsLoopback() {
					bad(ff, "%s cannot be a virtual address", p.Addr())
					continue
				}
				if other, dup := seenAddr[p.Addr()]; dup {
					bad(ff, "%s is already an address of %s", p.Addr(), other)
					continue
				}
				seenAddr[p.Addr()] = "group " + gc.Name
				out = append(out, p)
			}
			return out
		}
		g.Inside = pfx(f+".insideAddresses", gc.InsideAddresses, "inside address")
		g.Public = pfx(f+".publicIPs", gc.PublicIPs, "public IP")
		hasV4 := false
		for _, p := range g.Inside {
			hasV4 = hasV4 || p.Addr().Is4()
		}
		if len(g.Inside) > 0 && !hasV4 {
			// keepalived's VRRP instances are IPv4 here; IPv6 addresses
			// ride along as excluded addresses of the IPv4 instance.
			bad(f+".insideAddresses", "needs an IPv4 address (the VRRP instance runs over IPv4; IPv6 addresses move with it)")
		}
		hasV4 = false
		for j, p := range g.Public {
			hasV4 = hasV4 || p.Addr().Is4()
			if !slices.Contains(env.PublicIPs, p.Addr()) {
				bad(fmt.Sprintf("%s.publicIPs[%d]", f, j), "%s is not one of publicIPs (%s)", p.Addr(), addrList(env.PublicIPs))
			}
		}
		if len(g.Public) > 0 && !hasV4 {
			bad(f+".publicIPs", "needs an IPv4 address (the VRRP instance runs over IPv4; IPv6 addresses move with it)")
		}
		if s.SyncAddr.IsValid() {
			for _, p := range append(slices.Clone(g.Inside), g.Public...) {
				if p.Addr() == s.SyncAddr || p.Addr() == s.PeerAddr {
					bad(f, "%s is a sync link address", p.Addr())
				}
			}
		}
		s.Groups = append(s.Groups, g)
	}
	for _, a := range env.PublicIPs {
		if _, ok := seenAddr[a]; !ok && len(c.Groups) > 0 {
			bad("groups", "public IP %s is in no group: it would not move to the peer on failover", a)
		}
	}
	return s, probs
}

func addrList(as []netip.Addr) string {
	out := ""
	for i, a := range as {
		if i > 0 {
			out += ", "
		}
		out += a.String()
	}
	return out
}

// advertString renders an interval as keepalived wants it.
func advertString(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.Itoa(int(d / time.Second))
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64)
}

package daemon

import (
	"fmt"
	"strconv"

	"github.com/clusterwall/clusterwall/internal/sysctl"
)

// Anti-spoofing on the cluster-facing interface (issue 17: a spoofed
// source is otherwise decided and logged under someone else's address).
// interfaces.antiSpoofing says what the daemon requires of IPv4's reverse
// path filter on interfaces.inside:
//
//	strict (default)  rp_filter 1: a packet whose source is not routed back
//	                  out of the interface it came in on is dropped
//	loose             rp_filter 2: its source must be routable at all
//	off               no requirement (asymmetric routing set-ups)
//
// At start the daemon sets the interface's rp_filter itself when it is
// weaker (the kernel uses the higher of conf/all and conf/<interface>); if
// it cannot (the hardened systemd unit keeps /proc/sys read-only: set it
// in /etc/sysctl.d, docs/operations.md section 3), the daemon says so
// loudly: an error line at start, and /readyz answers 503 naming the
// problem — checked again at every /readyz and scrape, so a value changed
// later shows too.

// Anti-spoofing modes and the rp_filter values they need.
var antiSpoofModes = map[string]int{"strict": 1, "loose": 2, "off": 0}

func (c *Config) checkAntiSpoofing(bad func(field, format string, args ...any)) {
	if c.Interfaces.AntiSpoofing == "" {
		c.Interfaces.AntiSpoofing = "strict"
	}
	if _, ok := antiSpoofModes[c.Interfaces.AntiSpoofing]; !ok {
		bad("interfaces.antiSpoofing", "must be strict, loose or off, not %q", c.Interfaces.AntiSpoofing)
	}
}

// rpFilter returns the effective IPv4 reverse path filter of iface: the
// higher of conf/all and conf/<iface> (what the kernel applies).
func rpFilter(iface string) (int, error) {
	all, err := readInt(sysctl.Path("net", "ipv4", "conf", "all", "rp_filter"))
	if err != nil {
		return 0, err
	}
	own, err := readInt(sysctl.Path("net", "ipv4", "conf", iface, "rp_filter"))
	if err != nil {
		return 0, err
	}
	return max(all, own), nil
}

func readInt(file string) (int, error) {
	s, err := sysctl.Read(file)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(s)
}

// rpSatisfies reports whether the effective value have meets want (1
// strict, 2 loose, 0 nothing).
func rpSatisfies(have, want int) bool {
	switch want {
	case 0:
		return true
	case 1:
		return have == 1
	}
	return have == 1 || have == 2
}

// enforceAntiSpoofing sets the inside interface's rp_filter when the
// effective one is weaker than interfaces.antiSpoofing asks (the daemon's
// network namespace only).
func (d *Daemon) enforceAntiSpoofing() {
	want := antiSpoofModes[d.cfg.Interfaces.AntiSpoofing]
	iface := d.cfg.Interfaces.Inside
	have, err := rpFilter(iface)
	if err == nil && rpSatisfies(have, want) {
		return
	}
	if err == nil {
		err = sysctl.Write(sysctl.Path("net", "ipv4", "conf", iface, "rp_filter"), strconv.Itoa(want))
	}
	if err == nil {
		if have, err = rpFilter(iface); err == nil && rpSatisfies(have, want) {
			d.log.Info("anti-spoofing: set the reverse path filter", "interface", iface, "rp_filter", have)
			return
		}
	}
	d.log.Error("anti-spoofing NOT in force: spoofed sources from the cluster are decided and logged under the addresses they claim",
		"problem", d.antiSpoofingProblem(), "err", err)
}

// antiSpoofingProblem is "" when the inside interface's reverse path filter
// is what interfaces.antiSpoofing asks for, else the readiness problem.
func (d *Daemon) antiSpoofingProblem() string {
	mode := d.cfg.Interfaces.AntiSpoofing
	want := antiSpoofModes[mode]
	if want == 0 {
		return ""
	}
	iface := d.cfg.Interfaces.Inside
	have, err := rpFilter(iface)
	switch {
	case err != nil:
		return fmt.Sprintf("anti-spoofing: cannot read the reverse path filter of %s: %v", iface, err)
	case rpSatisfies(have, want):
		return ""
	case want == 1 && have == 2:
		return fmt.Sprintf("anti-spoofing: rp_filter of %s is loose (2; net.ipv4.conf.all.rp_filter=2 overrides), interfaces.antiSpoofing is strict", iface)
	}
	return fmt.Sprintf("anti-spoofing: rp_filter of %s is off and the daemon could not set it: "+
		"set net.ipv4.conf.%s.rp_filter=%d (docs/operations.md), or interfaces.antiSpoofing: off to accept spoofed sources", iface, iface, want)
}

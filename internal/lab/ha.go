package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The highly available lab (`clusterwall lab up --ha`, docs/lab.md and
// docs/ha.md): two firewalls, fw and fw2, on a cluster-side bridge (sw's
// br0) and an internet-side bridge (sw's br1, with inet's fw interface),
// joined by a dedicated sync link (cw-sync). Each firewall has addresses
// of its own; the addresses the single-firewall lab gives fw (10.42.1.1,
// 203.0.113.32, ...) become virtual addresses keepalived moves to the
// active one. Still nothing links to the host.

// HostFW2 is the second firewall of an HA lab.
const HostFW2 = "fw2"

// FWSync is the firewalls' dedicated sync link (a veth between fw and fw2).
const FWSync = "cw-sync"

// Addresses of the HA lab (a contract: docs/lab.md lists them).
var (
	// Each firewall's own cluster-side and internet-side addresses.
	FWOwnInsideV4   = mustAddr("10.42.1.2")
	FWOwnInsideV6   = mustAddr("2001:db8:42:1::2")
	FW2OwnInsideV4  = mustAddr("10.42.1.3")
	FW2OwnInsideV6  = mustAddr("2001:db8:42:1::3")
	FWOwnOutsideV4  = mustAddr("203.0.113.2")
	FWOwnOutsideV6  = mustAddr("2001:db8:cafe::2")
	FW2OwnOutsideV4 = mustAddr("203.0.113.3")
	FW2OwnOutsideV6 = mustAddr("2001:db8:cafe::3")
	// The sync link.
	FWSyncV4  = mustAddr("10.42.255.1")
	FW2SyncV4 = mustAddr("10.42.255.2")
	// Active/active: the second group's cluster-side gateway and public IP
	// (fw2 is its active gateway; fw's group keeps 10.42.1.1 and .32).
	FWInside2V4 = mustAddr("10.42.1.4")
	FWInside2V6 = mustAddr("2001:db8:42:1::4")
	FWPublic2V4 = mustAddr("203.0.113.34")
	FWPublic2V6 = mustAddr("2001:db8:cafe::34")
)

// Bridges of an HA lab's switch: the cluster subnet and the segment
// between the firewalls and the lab internet.
const (
	bridgeCluster  = "br0"
	bridgeInternet = "br1"
)

// Lab process names of the second firewall's daemon, and its files.
const (
	Daemon2Proc       = "daemon2"
	Daemon2ConfigFile = "daemon2.yaml"
	Decision2LogFile  = "decisions2.log"
	// VRRP router ids of the lab's groups.
	labVRID  = 51
	labVRID2 = 52
)

// HAOptions make an HA lab (Config.HA).
type HAOptions struct {
	// ActiveActive gives fw2 a group of its own (10.42.1.4, 203.0.113.34)
	// and the cluster hosts an ECMP default route over both gateways.
	ActiveActive bool
	// AdvertInterval, PreemptDelay: keepalived's (the daemons' ha.vrrp);
	// defaults 300ms and 2s.
	AdvertInterval string
	PreemptDelay   string
}

func (o *HAOptions) advert() string {
	if o.AdvertInterval == "" {
		return "300ms"
	}
	return o.AdvertInterval
}

func (o *HAOptions) preempt() string {
	if o.PreemptDelay == "" {
		return "2s"
	}
	return o.PreemptDelay
}

// haSpec is the HA lab's topology: spec() changed as described above.
func haSpec(activeActive bool) []hostSpec {
	hosts := spec()
	out := make([]hostSpec, 0, len(hosts)+1)
	fw := func(host string, in4, in6, out4, out6 netip.Addr) hostSpec {
		h := hostSpec{
			name: host,
			ifaces: []iface{
				{name: FWInside, kind: kindVeth, peer: [2]string{HostSwitch, host},
					addrs: []netip.Prefix{pfx(in4, 24), pfx(in6, 64)}},
				{name: FWPrivate, kind: kindDummy,
					addrs: []netip.Prefix{pfx(FWPrivateV4, 24), pfx(FWPrivateV6, 64)}},
				{name: FWOutside, kind: kindVeth, peer: [2]string{HostSwitch, host + "-out"}, bridge: bridgeInternet,
					addrs: []netip.Prefix{pfx(out4, 24), pfx(out6, 64)}},
			},
			routes:   []route{{dst: any4, gw: InetFWSideV4, dev: FWOutside}, {dst: any6, gw: InetFWSideV6, dev: FWOutside}},
			forward:  true,
			resolver: DNSV4,
		}
		if host == HostFW {
			h.ifaces = append(h.ifaces, iface{name: FWSync, kind: kindVeth, peer: [2]string{HostFW2, FWSync},
				addrs: []netip.Prefix{pfx(FWSyncV4, 24)}})
		} else {
			h.ifaces = append(h.ifaces, iface{name: FWSync, addrs: []netip.Prefix{pfx(FW2SyncV4, 24)}})
		}
		return h
	}
	for _, h := range hosts {
		switch h.name {
		case HostSwitch:
			h.ifaces = append(h.ifaces, iface{name: bridgeInternet, kind: kindBridge})
		case HostNode, HostStore, HostAPI:
			if activeActive {
				h.ecmp = true
				for i := range h.routes {
					if h.routes[i].gw.Is4() {
						h.routes[i].alt = FWInside2V4
					} else {
						h.routes[i].alt = FWInside2V6
					}
				}
			}
		case HostFW:
			out = append(out, fw(HostFW, FWOwnInsideV4, FWOwnInsideV6, FWOwnOutsideV4, FWOwnOutsideV6),
				fw(HostFW2, FW2OwnInsideV4, FW2OwnInsideV6, FW2OwnOutsideV4, FW2OwnOutsideV6))
			continue
		case HostInet:
			for i := range h.ifaces {
				if h.ifaces[i].name == HostFW {
					// Its link to the firewalls is a port of the switch's
					// internet-side bridge.
					h.ifaces[i].kind = kindVeth
					h.ifaces[i].peer = [2]string{HostSwitch, HostInet}
					h.ifaces[i].bridge = bridgeInternet
				}
			}
		}
		out = append(out, h)
	}
	return out
}

// specFor is the topology of a lab: the single-firewall one or the HA one.
func specFor(ha *HAOptions) []hostSpec {
	if ha == nil {
		return spec()
	}
	return haSpec(ha.ActiveActive)
}

// IsHA reports whether the lab is an HA lab.
func (l *Lab) IsHA() bool { return l.ha != nil }

// Hosts lists the lab's hosts (HostNames, and fw2 in an HA lab).
func (l *Lab) Hosts() []string {
	if l.ha == nil {
		return slices.Clone(HostNames)
	}
	return append(slices.Clone(HostNames), HostFW2)
}

// FirewallHosts are the hosts that run a firewall daemon: fw, and fw2 in
// an HA lab.
func (l *Lab) FirewallHosts() []string {
	if l.ha == nil {
		return []string{HostFW}
	}
	return []string{HostFW, HostFW2}
}

// DaemonProcOf is the lab process name of host's daemon.
func DaemonProcOf(host string) string {
	if host == HostFW2 {
		return Daemon2Proc
	}
	return DaemonProc
}

// DecisionLogOf is the decision log of host's daemon.
func (l *Lab) DecisionLogOf(host string) string {
	if host == HostFW2 {
		return filepath.Join(l.dir, Decision2LogFile)
	}
	return l.DecisionLog()
}

// haDaemonConfig is the ha section (and what changes with it) of host's
// daemon config in an HA lab.
func haDaemonConfig(name, host string, o *HAOptions) string {
	var b strings.Builder
	self, peer := FWSyncV4, FW2SyncV4
	prio, prio2 := 200, 100
	if host == HostFW2 {
		self, peer = peer, self
		prio, prio2 = prio2, prio
	}
	fmt.Fprintf(&b, "ha:\n  name: %s\n  runDir: %q\n", host, filepath.Join(StateDir(name), "ha-"+host))
	fmt.Fprintf(&b, "  sync: {interface: %s, address: %q, peer: %q}\n", FWSync, self, peer)
	fmt.Fprintf(&b, "  vrrp: {advertInterval: %s, preemptDelay: %s}\n", o.advert(), o.preempt())
	b.WriteString("  groups:\n")
	fmt.Fprintf(&b, "    - name: gw\n      virtualRouterID: %d\n      priority: %d\n", labVRID, prio)
	fmt.Fprintf(&b, "      insideAddresses: [%q, %q]\n", pfx(FWInsideV4, 24), pfx(FWInsideV6, 64))
	fmt.Fprintf(&b, "      publicIPs: [%q, %q, %q, %q]\n", pfx(FWPublicV4, 24), pfx(FWPublicV6, 64), pfx(FWIngressV4, 24), pfx(FWIngressV6, 64))
	if o.ActiveActive {
		fmt.Fprintf(&b, "    - name: gw2\n      virtualRouterID: %d\n      priority: %d\n", labVRID2, prio2)
		fmt.Fprintf(&b, "      insideAddresses: [%q, %q]\n", pfx(FWInside2V4, 24), pfx(FWInside2V6, 64))
		fmt.Fprintf(&b, "      publicIPs: [%q, %q]\n", pfx(FWPublic2V4, 24), pfx(FWPublic2V6, 64))
	}
	return b.String()
}

// haPublicIPs is an HA lab daemon's publicIPs: its own group's first (the
// SNAT source of its flows), then the others.
func haPublicIPs(host string, o *HAOptions) []netip.Addr {
	own := []netip.Addr{FWPublicV4, FWPublicV6, FWIngressV4, FWIngressV6}
	if !o.ActiveActive {
		return own
	}
	other := []netip.Addr{FWPublic2V4, FWPublic2V6}
	if host == HostFW2 {
		return append(other, own...)
	}
	return append(own, other...)
}

// AdminOf sends one request to the admin API of host's daemon.
func (l *Lab) AdminOf(ctx context.Context, host, method, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+DaemonAdmin+path, nil)
	if err != nil {
		return 0, nil, err
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: l.DialContext(host), DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var body []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		body = append(body, buf[:n]...)
		if err != nil {
			break
		}
	}
	return resp.StatusCode, body, nil
}

// HARole is host's HA role as its daemon reports it (/v1/status ha.role),
// or "" when the daemon does not answer.
func (l *Lab) HARole(ctx context.Context, host string) string {
	code, body, err := l.AdminOf(ctx, host, http.MethodGet, "/v1/status")
	if err != nil || code != http.StatusOK {
		return ""
	}
	var st struct {
		HA *struct {
			Role string `json:"role"`
		} `json:"ha"`
	}
	if json.Unmarshal(body, &st) != nil || st.HA == nil {
		return ""
	}
	return st.HA.Role
}

// WaitDaemonOf waits until host's daemon is ready (/readyz).
func (l *Lab) WaitDaemonOf(ctx context.Context, host string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		code, body, err := l.AdminOf(ctx, host, http.MethodGet, "/readyz")
		switch {
		case err != nil:
			last = err
		case code == http.StatusOK:
			return nil
		default:
			last = fmt.Errorf("readyz: %d %s", code, strings.TrimSpace(string(body)))
		}
		if r, ok := l.record(DaemonProcOf(host)); ok && !l.alive(r) {
			return fmt.Errorf("daemon of %s exited (see %s)", host, r.Log)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("daemon of %s not ready after %s: %v", host, timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitRoles waits until every firewall reports the role want gives it
// (e.g. fw active, fw2 backup).
func (l *Lab) WaitRoles(ctx context.Context, want map[string]string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got := map[string]string{}
		ok := true
		for h, r := range want {
			got[h] = l.HARole(ctx, h)
			ok = ok && got[h] == r
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("HA roles %v not reached after %s (have %v)", want, timeout, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// haSettled is the second daemon's readiness in an HA lab: both daemons
// ready, fw active, fw2 backup (in active/active both active).
func haSettled(activeActive bool) func(ctx context.Context, l *Lab) error {
	return func(ctx context.Context, l *Lab) error {
		if err := l.WaitDaemonOf(ctx, HostFW2, readyTimeout); err != nil {
			return err
		}
		want := map[string]string{HostFW: "active", HostFW2: "backup"}
		if activeActive {
			want[HostFW2] = "active"
		}
		return l.WaitRoles(ctx, want, readyTimeout)
	}
}

// DaemonProcFor is the lab process of host's daemon (to restart it after
// Crash, with Start).
func (l *Lab) DaemonProcFor(host string) Proc {
	conf := DaemonConfigFile
	if host == HostFW2 {
		conf = Daemon2ConfigFile
	}
	return Proc{Name: DaemonProcOf(host), Host: host, Args: []string{"run", "--config", filepath.Join(l.dir, conf)},
		Ready: func(ctx context.Context, l *Lab) error { return l.WaitDaemonOf(ctx, host, readyTimeout) }}
}

// daemonFiles are the files Up writes for Config.Daemon: the daemon's
// config (both daemons' in an HA lab) and the WAF's.
func daemonFiles(name string, o DaemonOptions, ha *HAOptions) (map[string][]byte, error) {
	conf, err := daemonConfig(name, HostFW, o, ha)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{DaemonConfigFile: conf}
	if ha != nil {
		if o.WAF {
			return nil, fmt.Errorf("lab: the WAF does not run in the HA lab yet")
		}
		if files[Daemon2ConfigFile], err = daemonConfig(name, HostFW2, o, ha); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// daemon2Proc is the second firewall's daemon; it is ready once both
// daemons are and the HA roles have settled.
func daemon2Proc(name string, ha *HAOptions) Proc {
	return Proc{Name: Daemon2Proc, Host: HostFW2,
		Args:  []string{"run", "--config", filepath.Join(StateDir(name), Daemon2ConfigFile)},
		Ready: haSettled(ha.ActiveActive)}
}

func sameHA(a, b *HAOptions) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

// allHosts are the hosts any lab may have (to remove a lab whatever it is).
func allHosts() []string { return append(slices.Clone(HostNames), HostFW2) }

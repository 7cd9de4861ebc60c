package daemon

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterwall/clusterwall/internal/ha"
	"github.com/clusterwall/clusterwall/internal/nft"
)

// The daemon's part of high availability (internal/ha, docs/ha.md): the
// config's ha section, the data plane's HA rules, starting the HA
// manager (keepalived and conntrackd) once the daemon is ready, its state
// in /v1/status and its metrics.

// loadHA validates the ha section (LoadConfig).
func (c *Config) loadHA(bad func(field, format string, args ...any)) {
	if c.HA == nil {
		return
	}
	host, _ := os.Hostname()
	spec, probs := c.HA.Validate(ha.Env{
		ConfigDir: filepath.Dir(c.path),
		Inside:    c.Interfaces.Inside,
		Outside:   c.Interfaces.Outside,
		PublicIPs: c.publicIPs,
		HostName:  host,
	})
	for _, p := range probs {
		bad(p.Field, "%s", p.Msg)
	}
	switch {
	case c.SNAT == "":
		// The public IPs move between the gateways; the outside
		// interface's own address does not.
		c.snat = nft.SNATFixed
	case c.snat == nft.SNATMasquerade:
		bad("snat", "masquerade cannot be used with ha: it uses the outside interface's own address, which does not move to the peer on failover, so established flows would break; use fixed")
	}
	if len(probs) == 0 {
		c.haSpec = spec
	}
}

// haDataPlane is the data plane's HA part (nil without ha).
func (c *Config) haDataPlane() *nft.HA {
	s := c.haSpec
	if s == nil {
		return nil
	}
	return &nft.HA{
		VRRPIfaces: []string{s.Inside, s.Outside},
		SyncIface:  s.SyncIface,
		Peer:       s.PeerAddr,
		SyncPort:   s.SyncPort,
		APIPort:    s.APIPort,
		ProxyMark:  nft.DefaultProxyMark, // the L7 proxy's upstream connections (l7.go)
	}
}

// proxyMark is the mark of the L7 proxy's upstream connections: in an HA
// pair they leave from the public IP (nft.HA.ProxyMark); 0 otherwise.
func (c *Config) proxyMark() uint32 {
	if h := c.haDataPlane(); h != nil {
		return h.ProxyMark
	}
	return 0
}

// HASpec is the validated ha section (nil without one).
func (c *Config) HASpec() *ha.Spec { return c.haSpec }

// readyURL is the daemon's /readyz as seen from this machine.
func (c *Config) readyURL() string {
	host, port, err := net.SplitHostPort(c.Admin.Listen)
	if err != nil {
		return "http://127.0.0.1:9180/readyz"
	}
	if a, err := netip.ParseAddr(host); err != nil || a.IsUnspecified() {
		host = "127.0.0.1"
		if err == nil && a.Is6() {
			host = "::1"
		}
	}
	scheme := "http"
	if c.Admin.TLS.Cert != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/readyz"
}

// HACheckCommand is keepalived's track script: `clusterwall ha check` of
// this daemon's /readyz, with exe the clusterwall binary.
func (c *Config) HACheckCommand(exe string) []string {
	timeout := time.Second
	if c.haSpec != nil {
		timeout = c.haSpec.CheckEvery
	}
	return []string{exe, "ha", "check", "--url", c.readyURL(), "--timeout", timeout.String()}
}

// startHA starts keepalived and conntrackd (Run, once the policy is
// applied and the listeners are up: keepalived's first readiness check
// should pass).
func (d *Daemon) startHA(ctx context.Context) error {
	spec := d.cfg.haSpec
	if spec == nil {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("HA: own executable for the readiness check: %w", err)
	}
	spec.CheckCommand = d.cfg.HACheckCommand(exe)
	if d.cfg.privateIP.IsValid() {
		spec.LocalAddrs = append(spec.LocalAddrs, d.cfg.privateIP)
	}
	m := ha.NewManager(spec, ha.Options{Log: d.log, Local: d.haLocal,
		PeerHandlers: map[string]http.Handler{"POST /ha/v1/fqdn": http.HandlerFunc(d.serveFQDN)}}) // fqdn_ha.go
	var rep *fqdnReplicator
	if spec.ReplicateDNS {
		rep = &fqdnReplicator{ch: make(chan fqdnEntry, fqdnQueue)}
		d.fqdnRep.Store(rep)
	}
	if err := m.Start(ctx); err != nil {
		d.fqdnRep.Store(nil)
		return err
	}
	d.haMgr.Store(m)
	if rep != nil {
		go d.runFQDNReplication(ctx, m, rep)
	}
	return nil
}

// stopHA stops keepalived (handing the addresses to the peer) and
// conntrackd.
func (d *Daemon) stopHA() {
	if m := d.haMgr.Load(); m != nil {
		m.Stop()
	}
}

// haLocal is what the peer API tells the peer about this daemon.
func (d *Daemon) haLocal() ha.PeerInfo {
	info := ha.PeerInfo{Ready: len(d.notReady()) == 0}
	if st := d.cur.Load(); st != nil {
		info.Generation = st.gen
		info.PolicyName = st.policy.Name
	}
	if a := d.applied.Load(); a != nil {
		info.PolicySHA256 = hex.EncodeToString(a.sum[:])
	}
	return info
}

// HAStatus is the HA state (nil without ha).
func (d *Daemon) HAStatus() *ha.Status {
	m := d.haMgr.Load()
	if m == nil {
		return nil
	}
	st := m.Status()
	return &st
}

// HA metrics.
const (
	metricHARole        = "clusterwall_ha_role"
	metricHARoleChanges = "clusterwall_ha_role_changes_total"
	metricHATransitions = "clusterwall_ha_group_transitions_total"
	metricHAPeerUp      = "clusterwall_ha_peer_reachable"
	metricHAPolicyMatch = "clusterwall_ha_peer_policy_in_sync"
	metricHASyncUp      = "clusterwall_ha_sync_up"
	metricHASyncErrors  = "clusterwall_ha_sync_errors_total"
	metricHASyncEntries = "clusterwall_ha_sync_entries"
	metricHARestarts    = "clusterwall_ha_process_restarts_total"
	metricHAFQDN        = "clusterwall_ha_dns_answers_total"
)

var (
	descHARole        = prometheus.NewDesc(metricHARole, "1 for this gateway's HA role (active, backup, fault, starting, stopped), 0 for the others.", []string{"role"}, nil)
	descHARoleChanges = prometheus.NewDesc(metricHARoleChanges, "Changes of this gateway's HA role since the daemon started.", nil, nil)
	descHATransitions = prometheus.NewDesc(metricHATransitions, "VRRP group transitions keepalived reported, by group and new state.", []string{"group", "state"}, nil)
	descHAPeerUp      = prometheus.NewDesc(metricHAPeerUp, "1 when the peer daemon's API answers over the sync link.", nil, nil)
	descHAPolicyMatch = prometheus.NewDesc(metricHAPolicyMatch, "1 when the peer runs the same policy (SHA-256 of its text), 0 when it differs; absent while the peer is unreachable.", nil, nil)
	descHASyncUp      = prometheus.NewDesc(metricHASyncUp, "1 when conntrackd receives the peer's state sync messages.", nil, nil)
	descHASyncErrors  = prometheus.NewDesc(metricHASyncErrors, "State sync errors: conntrackd's send and receive errors, malformed and lost messages, and conntrackd restarts.", nil, nil)
	descHASyncEntries = prometheus.NewDesc(metricHASyncEntries, "Flows conntrackd holds: internal (this gateway's) and external (replicated from the peer).", []string{"cache"}, nil)
	descHARestarts    = prometheus.NewDesc(metricHARestarts, "Restarts of keepalived and conntrackd by the daemon after they died.", []string{"process"}, nil)
	descHAFQDN        = prometheus.NewDesc(metricHAFQDN, "DNS answers replicated between the gateways (ha.replicateDNS): sent to the peer, received from it, dropped (queue full) or failed (peer unreachable).", []string{"result"}, nil)
)

// haCollector exports the HA metrics (registered by newMetrics; it exports
// nothing without ha).
type haCollector struct{ d *Daemon }

func (c haCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHARole, descHARoleChanges, descHATransitions, descHAPeerUp, descHAPolicyMatch,
		descHASyncUp, descHASyncErrors, descHASyncEntries, descHARestarts, descHAFQDN} {
		ch <- d
	}
}

func (c haCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.d.haMgr.Load()
	if m == nil {
		return
	}
	st := m.Status()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, r := range []string{ha.RoleActive, ha.RoleBackup, ha.RoleFault, ha.RoleStarting, ha.RoleStopped} {
		ch <- prometheus.MustNewConstMetric(descHARole, prometheus.GaugeValue, b(st.Role == r), r)
	}
	ch <- prometheus.MustNewConstMetric(descHARoleChanges, prometheus.CounterValue, float64(st.RoleChanges))
	for k, n := range m.Transitions() {
		ch <- prometheus.MustNewConstMetric(descHATransitions, prometheus.CounterValue, float64(n), k[0], k[1])
	}
	ch <- prometheus.MustNewConstMetric(descHAPeerUp, prometheus.GaugeValue, b(st.Peer.Reachable))
	if st.PolicyInSync != nil {
		ch <- prometheus.MustNewConstMetric(descHAPolicyMatch, prometheus.GaugeValue, b(*st.PolicyInSync))
	}
	ch <- prometheus.MustNewConstMetric(descHASyncUp, prometheus.GaugeValue, b(st.Sync.State == "ok"))
	ch <- prometheus.MustNewConstMetric(descHASyncErrors, prometheus.CounterValue, float64(st.Sync.Errors))
	ch <- prometheus.MustNewConstMetric(descHASyncEntries, prometheus.GaugeValue, float64(st.Sync.Stats.InternalEntries), "internal")
	ch <- prometheus.MustNewConstMetric(descHASyncEntries, prometheus.GaugeValue, float64(st.Sync.Stats.ExternalEntries), "external")
	ch <- prometheus.MustNewConstMetric(descHARestarts, prometheus.CounterValue, float64(st.Keepalived.Restarts), "keepalived")
	ch <- prometheus.MustNewConstMetric(descHARestarts, prometheus.CounterValue, float64(st.Conntrackd.Restarts), "conntrackd")
	if r := c.d.fqdnRep.Load(); r != nil {
		for _, x := range []struct {
			n      *atomic.Uint64
			result string
		}{{&r.sent, "sent"}, {&r.received, "received"}, {&r.dropped, "dropped"}, {&r.failed, "failed"}} {
			ch <- prometheus.MustNewConstMetric(descHAFQDN, prometheus.CounterValue, float64(x.n.Load()), x.result)
		}
	}
}

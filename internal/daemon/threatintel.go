package daemon

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nflog"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
	"github.com/clusterwall/clusterwall/internal/threatintel"
)

// Threat intelligence in the daemon: one threatintel.Engine, configured
// from the policy's threatIntel section at every reload, asked by every
// enforcement point before every rule:
//
//   - the matcher (match.Options.ThreatIntel): the L7 proxy and the
//     conntrack cut after a reload see threat-intel decisions;
//   - the kernel (nft.Config.ThreatIntel): the listed addresses in interval
//     sets, dropped (Deny) or logged (Alert) before DNAT and in forward;
//     a feed refresh updates the sets in place (NetlinkRunner.UpdateThreatIntel)
//     or, when that is not possible, re-applies the policy;
//   - the DNS proxy (dnsproxy.Config.Block): in mode Deny a listed name or
//     CNAME target gets NXDOMAIN.
//
// Every hit is also an AZFWThreatIntel log line with ThreatDescription.

// threatIntel is the daemon's threat-intelligence state.
type threatIntel struct {
	engine *threatintel.Engine

	mu      sync.Mutex
	applied *threatintel.Set // the set the kernel holds (nil: none)
}

// threat returns the daemon's threat-intel state, making it on first use.
func (d *Daemon) threat() *threatIntel {
	d.tiOnce.Do(func() {
		d.ti = &threatIntel{engine: threatintel.New(threatintel.Options{Logger: d.log})}
		if ndp, ok := d.dp.(*NFTDataplane); ok && ndp.ThreatIntel == nil {
			ndp.ThreatIntel = d.kernelThreatIntel
		}
	})
	return d.ti
}

// ThreatIntel returns the daemon's threat-intelligence engine.
func (d *Daemon) ThreatIntel() *threatintel.Engine { return d.threat().engine }

// reloadThreatIntel configures the engine from p (before the policy is
// compiled). Feeds that cannot be read keep their previous contents; the
// error is logged, not fatal: a bad feed never stops a policy.
func (d *Daemon) reloadThreatIntel(p *policy.Policy) {
	t := d.threat()
	if err := t.engine.Reload(p.ThreatIntel); err != nil {
		d.log.Warn("threat-intel feeds not (all) loaded; they keep their previous contents", "err", err)
	}
	if p.ThreatIntel.Mode != policy.ActionInvalid {
		a, n := t.engine.Set().Len()
		d.log.Info("threat intelligence", "mode", p.ThreatIntel.Mode.String(), "feeds", len(p.ThreatIntel.Feeds),
			"addresses", a, "domains", n)
	}
}

// restoreThreatIntel puts the running policy's settings back after a new
// policy failed to apply.
func (d *Daemon) restoreThreatIntel() {
	if st := d.cur.Load(); st != nil {
		d.threat().engine.Reload(st.policy.ThreatIntel)
	} else {
		d.threat().engine.Reload(policy.ThreatIntel{})
	}
}

// matchThreatIntel is what the matcher of p asks: the engine, or nil in
// mode Off (no cost at all on the decision path).
func (d *Daemon) matchThreatIntel(p *policy.Policy) match.ThreatIntel {
	if p.ThreatIntel.Mode == policy.ActionInvalid {
		return nil
	}
	return d.threat().engine
}

// kernelThreatIntel is the kernel's part (NFTDataplane.ThreatIntel): the
// listed, not allowlisted addresses in the engine's current mode.
func (d *Daemon) kernelThreatIntel() *nft.ThreatIntel {
	t := d.threat()
	mode := t.engine.Mode()
	if mode == policy.ActionInvalid {
		t.mu.Lock()
		t.applied = nil
		t.mu.Unlock()
		return nil
	}
	set := t.engine.Set()
	v4, v6 := set.BlockedRanges()
	t.mu.Lock()
	t.applied = set
	t.mu.Unlock()
	return &nft.ThreatIntel{Deny: mode == policy.ActionDeny, V4: v4, V6: v6}
}

// threatUpdater is the part of a runner that updates the threat-intel
// sets in place (nft.NetlinkRunner).
type threatUpdater interface {
	UpdateThreatIntel(t *nft.ThreatIntel) (time.Duration, error)
}

// runThreatIntel refreshes the feeds (Engine.Run) and brings the kernel's
// sets up to date when their contents change, until ctx ends.
func (d *Daemon) runThreatIntel(ctx context.Context, every time.Duration) {
	t := d.threat()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { d.runThreatEngine(ctx, t.engine) }) // recover.go
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if t.engine.Mode() == policy.ActionInvalid {
			continue
		}
		t.mu.Lock()
		stale := t.applied != t.engine.Set()
		t.mu.Unlock()
		if stale {
			d.syncThreatKernel()
		}
	}
}

// syncThreatKernel puts the engine's current set in the kernel: in place
// when the runner can, else by applying the running policy again.
func (d *Daemon) syncThreatKernel() {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	st := d.cur.Load()
	if st == nil {
		return
	}
	start := time.Now()
	ndp, ok := d.dp.(*NFTDataplane)
	if ok {
		if up, ok := ndp.Runner.(threatUpdater); ok {
			ti := d.kernelThreatIntel()
			if ti != nil {
				took, err := up.UpdateThreatIntel(ti)
				if err == nil {
					d.log.Info("threat-intel feeds changed: kernel sets updated in place",
						"ranges", len(ti.V4)+len(ti.V6), "update_ms", took.Milliseconds())
					return
				}
				if !errors.Is(err, nft.ErrThreatIntelNeedsApply) {
					d.log.Warn("threat-intel sets: in-place update failed; applying the policy again", "err", err)
				}
			}
		}
	}
	idx, err := d.dp.Apply(st.policy, st.matcher)
	if err != nil {
		d.log.Warn("threat-intel feeds changed but the kernel keeps the previous lists", "err", err)
		return
	}
	next := *st
	next.index = idx
	d.cur.Store(&next)
	d.log.Info("threat-intel feeds changed: policy applied again", "apply_ms", time.Since(start).Milliseconds())
}

// threatBlock is the DNS proxy's Block hook for p: the engine in mode
// Deny, nil otherwise (mode Alert answers normally and logs).
func (d *Daemon) threatBlock(p *policy.Policy) func(string) (bool, string) {
	if p.ThreatIntel.Mode != policy.ActionDeny {
		return nil
	}
	return d.threat().engine.BlockName
}

// dnsLog writes the DNS proxy's AZFWDnsQuery lines and, for a query that
// threat intelligence listed, an AZFWThreatIntel line: Deny when the
// Block hook answered it (its reason carries the description), Alert when
// the engine is in mode Alert (the Block hook never blocks then, so this
// is the one place the query name is checked).
func (d *Daemon) dnsLog(rec telemetry.Record) {
	d.dlog.Log(rec)
	if rec.Category != telemetry.CategoryDNSQuery {
		return
	}
	name := strings.TrimSuffix(rec.QueryName, ".")
	var v threatintel.Verdict
	if desc, ok := strings.CutPrefix(rec.ActionReason, "threat intel: "); ok && rec.Action == "Deny" {
		v = threatintel.Verdict{Action: policy.ActionDeny, Description: desc}
	} else if e := d.threat().engine; e.Mode() == policy.ActionAlert {
		v = e.Check(netip.Addr{}, netip.Addr{}, name)
	}
	if v.Action == policy.ActionInvalid {
		return
	}
	src, _ := netip.ParseAddr(rec.SourceIp)
	r := v.Record(netip.AddrPortFrom(src, uint16(rec.SourcePort)), netip.AddrPort{}, rec.Protocol, name)
	r.Time, r.Source = rec.Time, "dns"
	r.ActionReason = "DNS query " + rec.QueryType + " " + name
	d.dlog.Log(r)
}

// proxyLog writes the L7 proxy's lines and, when the matcher's threat-intel
// stage listed the connection (its ThreatDescription is set: denied by it,
// or reported in mode Alert), an AZFWThreatIntel line built from that
// verdict.
func (d *Daemon) proxyLog(rec telemetry.Record) {
	desc := rec.ThreatDescription
	rec.ThreatDescription = "" // not a field of AZFWApplicationRule / AZFWNetworkRule
	d.dlog.Log(rec)
	if desc == "" {
		return
	}
	v := threatintel.Verdict{Action: policy.ActionAlert, Description: desc}
	if rec.ActionReason == match.ReasonThreatIntel {
		v.Action = policy.ActionDeny
	}
	r := v.Record(netip.AddrPort{}, netip.AddrPort{}, "TCP", rec.Fqdn)
	r.SourceIp, r.SourcePort = rec.SourceIp, rec.SourcePort
	r.DestinationIp, r.DestinationPort = rec.OriginalDestinationIp, rec.DestinationPort
	if r.DestinationIp == "" {
		r.DestinationIp = rec.DestinationIp
	}
	r.Time, r.Source, r.Policy = rec.Time, "proxy", rec.Policy
	d.dlog.Log(r)
}

// logThreatPacket writes the AZFWThreatIntel line for a packet the
// kernel's threat-intel chain logged ("cw:D:threat", "cw:A:threat"); it
// reports false for other packets.
func (d *Daemon) logThreatPacket(st *state, p *nflog.Packet) bool {
	if !strings.HasPrefix(p.Prefix, "cw:D:threat") && !strings.HasPrefix(p.Prefix, "cw:A:threat") {
		return false
	}
	tag, err := nft.ParseLogTag(p.Prefix)
	if err != nil || (tag.Kind != nft.LogThreatDeny && tag.Kind != nft.LogThreatAlert) {
		return false
	}
	if d.dlog == nil {
		return true
	}
	action := policy.ActionDeny
	if tag.Kind == nft.LogThreatAlert {
		action = policy.ActionAlert
	}
	// The engine names the listed entry; the kernel only knows the address.
	v := d.threat().engine.Check(p.Src, p.Dst, "")
	if v.Action == policy.ActionInvalid {
		v = threatintel.Verdict{Description: "listed address (the feed changed since)"}
	}
	v.Action = action
	src, dst := netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, 0)
	if p.Proto == 6 || p.Proto == 17 {
		dst = netip.AddrPortFrom(p.Dst, p.DstPort)
	} else {
		src = netip.AddrPortFrom(p.Src, 0)
	}
	r := v.Record(src, dst, protoName(p.Proto), "")
	r.Time, r.Source = p.Time.UTC(), "kernel"
	if st != nil && st.policy != nil {
		r.Policy = st.policy.Name
	}
	d.dlog.Log(r)
	return true
}

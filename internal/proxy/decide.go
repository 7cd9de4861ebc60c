package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// Reasons the proxy adds to the matcher's.
const (
	ReasonNoSNI       = "SNI TLS extension was missing"
	ReasonNoHost      = "Host header was missing"
	ReasonNoPolicy    = "no policy loaded"
	reasonSpoofFormat = "destination %s is not an address of %s (spoofed SNI/Host?)"
)

// TLS alert descriptions (RFC 8446 6).
const (
	alertAccessDenied     = 49
	alertDecodeError      = 50
	alertInternalError    = 80
	alertUnrecognizedName = 112
)

// request is what a decision is about.
type request struct {
	src netip.AddrPort
	// dst is the original destination (transparent mode); invalid in
	// explicit mode.
	dst    netip.AddrPort
	name   string // SNI or Host, lower case; "" when none
	port   uint16 // destination port
	scheme policy.Scheme
	// what names the name's source in messages: "SNI", "Host", "CONNECT host".
	what string
	// missing is the reason for a default deny when name is "".
	missing string
	// start is when the proxy took the connection (Config.Latency).
	start time.Time
}

// flow is the matcher's flow of req to dst.
func (req *request) flow(dst netip.Addr) match.Flow {
	return match.Flow{Src: req.src.Addr(), Dst: dst, Proto: policy.ProtoTCP, Port: req.port, Name: req.name, Scheme: req.scheme, From: match.FromInside}
}

// verdict is a decision and what enforcing it takes.
type verdict struct {
	d      match.Decision
	allow  bool
	reason string
	// dial is where to connect when allowed, in order of preference.
	dial []netip.AddrPort
	// alert and status answer a denied TLS or HTTP client.
	alert  byte
	status int
	// needLookup: undecided, the name must be resolved afresh (see
	// decideTransparent).
	needLookup bool
}

func (v *verdict) deny(reason string, alert byte, status int) {
	v.allow, v.reason, v.alert, v.status, v.dial = false, reason, alert, status, nil
}

// decideTransparent decides a redirected connection. The client's
// original destination is dialled only when the firewall can vouch for it:
//
//   - a network rule allowed it (network rules are about addresses: the
//     destination is what the rule approved);
//   - the name is an IP literal equal to the destination (an IP-literal
//     SNI/Host is decided by the rules like a name — an application rule
//     must list it, or "*" allow it — and must name the address the
//     client actually connected to);
//   - otherwise the destination must be among the addresses the DNS proxy
//     handed out for the name, or among a fresh resolution of it. If not,
//     the connection is refused as spoofed, or with SpoofReroute sent to
//     the first resolved address (if the rules allow that address too).
//
// With mayLookup false (the event loop, which must not block), a decision
// that needs a fresh lookup returns with needLookup set instead; the
// caller asks again, with mayLookup, off the loop.
func (p *Proxy) decideTransparent(m *match.Matcher, req *request, mayLookup bool) verdict {
	if m == nil {
		v := verdict{d: match.Decision{Action: policy.ActionDeny, Reason: ReasonNoPolicy}}
		v.deny(ReasonNoPolicy, alertAccessDenied, 403)
		return v
	}
	dst := req.dst.Addr()
	d := m.Decide(req.flow(dst))
	v := verdict{d: d, reason: d.Reason}
	if d.Action != policy.ActionAllow {
		reason := d.Reason
		if d.Rule == nil && req.name == "" && req.missing != "" {
			reason = req.missing
		}
		v.deny(reason, alertAccessDenied, 403)
		return v
	}
	v.allow = true
	if d.Kind == policy.KindNetwork {
		v.dial = []netip.AddrPort{req.dst}
		return v
	}
	if lit, err := netip.ParseAddr(req.name); err == nil {
		if lit.Unmap() != dst {
			v.deny(fmt.Sprintf("%s is the IP literal %s but the destination is %s (spoofed SNI/Host?)", req.what, lit, dst), alertUnrecognizedName, 403)
			return v
		}
		v.dial = []netip.AddrPort{req.dst}
		return v
	}
	if p.cfg.Resolver != nil && containsAddr(p.cfg.Resolver.Addrs(req.name), dst) {
		v.dial = []netip.AddrPort{req.dst}
		return v
	}
	if !mayLookup {
		v.needLookup = true
		return v
	}
	addrs, err := p.lookup(req.name)
	if err != nil {
		v.deny(fmt.Sprintf("cannot verify destination %s for %s: %v", dst, req.name, err), alertUnrecognizedName, 403)
		return v
	}
	if containsAddr(addrs, dst) {
		v.dial = []netip.AddrPort{req.dst}
		return v
	}
	spoofed := fmt.Sprintf(reasonSpoofFormat, dst, req.name)
	if p.cfg.Spoof == SpoofReroute && len(addrs) > 0 {
		to := pickSameFamily(addrs, dst)
		d2 := m.Decide(req.flow(to))
		if d2.Action == policy.ActionAllow {
			v.d = d2
			v.reason = spoofed + "; rerouted to " + to.String()
			v.dial = []netip.AddrPort{netip.AddrPortFrom(to, req.port)}
			p.logger.Warn("proxy: rerouting spoofed destination", "src", req.src, "name", req.name, "dst", dst, "to", to)
			return v
		}
		v.deny(spoofed+"; the resolved address "+to.String()+" is denied: "+d2.Reason, alertUnrecognizedName, 403)
		v.d = d2
		return v
	}
	v.deny(spoofed, alertUnrecognizedName, 403)
	return v
}

// decideExplicit decides an explicit-proxy request. There is no original
// destination: the name is decided, then resolved (the DNS proxy's answers
// first), then each address is decided again with the full flow, so that
// network rules about addresses apply as they would to a transparent
// connection; the allowed addresses are dialled in order.
func (p *Proxy) decideExplicit(m *match.Matcher, req *request) verdict {
	if m == nil {
		v := verdict{d: match.Decision{Action: policy.ActionDeny, Reason: ReasonNoPolicy}}
		v.deny(ReasonNoPolicy, alertAccessDenied, 403)
		return v
	}
	flow := req.flow(netip.Addr{})
	if lit, err := netip.ParseAddr(req.name); err == nil {
		flow.Dst = lit.Unmap()
		d := m.Decide(flow)
		v := verdict{d: d, reason: d.Reason}
		if d.Action != policy.ActionAllow {
			v.deny(d.Reason, alertAccessDenied, 403)
			return v
		}
		v.allow = true
		v.dial = []netip.AddrPort{netip.AddrPortFrom(flow.Dst, req.port)}
		return v
	}
	d := m.Decide(flow)
	v := verdict{d: d, reason: d.Reason}
	if d.Action != policy.ActionAllow {
		v.deny(d.Reason, alertAccessDenied, 403)
		return v
	}
	var addrs []netip.Addr
	if p.cfg.Resolver != nil {
		addrs = p.cfg.Resolver.Addrs(req.name)
	}
	if len(addrs) == 0 {
		var err error
		if addrs, err = p.lookup(req.name); err != nil {
			v.deny(fmt.Sprintf("cannot resolve %s: %v", req.name, err), alertUnrecognizedName, 502)
			return v
		}
	}
	var firstDeny *match.Decision
	for _, a := range addrs {
		flow.Dst = a.Unmap()
		d2 := m.Decide(flow)
		if d2.Action == policy.ActionAllow {
			if len(v.dial) == 0 {
				v.d = d2
			}
			v.dial = append(v.dial, netip.AddrPortFrom(flow.Dst, req.port))
			if len(v.dial) == 4 {
				break
			}
		} else if firstDeny == nil {
			firstDeny = &d2
		}
	}
	if len(v.dial) == 0 {
		v.d = *firstDeny
		v.deny(fmt.Sprintf("every address of %s is denied: %s", req.name, firstDeny.Reason), alertAccessDenied, 403)
		return v
	}
	v.allow, v.reason = true, v.d.Reason
	return v
}

func (p *Proxy) lookup(name string) ([]netip.Addr, error) {
	if p.cfg.Resolver == nil {
		return nil, fmt.Errorf("no resolver configured")
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ResolveTimeout)
	defer cancel()
	addrs, err := p.cfg.Resolver.LookupNetIP(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no addresses")
	}
	return addrs, nil
}

// pickSameFamily returns the first of addrs in dst's family, or the first.
func pickSameFamily(addrs []netip.Addr, dst netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a.Unmap().Is4() == dst.Is4() {
			return a.Unmap()
		}
	}
	return addrs[0].Unmap()
}

// emit logs the decision and counts it.
func (p *Proxy) emit(m *match.Matcher, req *request, v *verdict, dialed netip.AddrPort) {
	if v.allow {
		p.stats.allowed.Add(1)
	} else {
		p.stats.denied.Add(1)
	}
	if p.cfg.Latency != nil && !req.start.IsZero() {
		p.cfg.Latency(v.allow, time.Since(req.start))
	}
	p.cfg.Log(p.record(m, req, v, dialed))
}

// record is the decision line of req (emit logs it and counts it).
func (p *Proxy) record(m *match.Matcher, req *request, v *verdict, dialed netip.AddrPort) telemetry.Record {
	rec := telemetry.Record{
		Time:            time.Now().UTC(),
		Category:        telemetry.CategoryApplicationRule,
		Source:          "proxy",
		SourceIp:        req.src.Addr().String(),
		SourcePort:      int(req.src.Port()),
		Fqdn:            req.name,
		DestinationPort: int(req.port),
		Protocol:        protocolName(req.scheme),
		Action:          "Deny",
		ActionReason:    v.reason,
		Policy:          p.policyName(m),
	}
	if v.allow {
		rec.Action = "Allow"
	}
	// The matcher's threat-intel verdict travels with the line (the daemon
	// turns it into an AZFWThreatIntel line): nobody checks the feeds twice.
	rec.ThreatDescription = v.d.ThreatDescription
	if r := v.d.Rule; r != nil {
		rec.Rule = r.Name
		if c := r.Collection; c != nil {
			rec.RuleCollection = c.Name
			if c.Group != nil {
				rec.RuleCollectionGroup = c.Group.Name
			}
		}
		if v.d.Kind == policy.KindNetwork {
			rec.Category = telemetry.CategoryNetworkRule
		}
	}
	if req.dst.IsValid() {
		rec.OriginalDestinationIp = req.dst.Addr().String()
		if rec.Category == telemetry.CategoryNetworkRule {
			rec.DestinationIp = rec.OriginalDestinationIp
		}
	}
	if dialed.IsValid() {
		rec.ResolvedDestinationIp = dialed.Addr().String()
	}
	return rec
}

func protocolName(s policy.Scheme) string {
	switch s {
	case policy.SchemeHTTP:
		return "HTTP"
	case policy.SchemeHTTPS:
		return "HTTPS"
	}
	return ""
}

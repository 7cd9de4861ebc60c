package main

import (
	"fmt"
	"slices"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// defaultGateway is the gateway explain assumes without the daemon's
// config: the daemon's defaults (the L7 proxy on), with the policy's DNAT
// destinations as the public IPs (they must be: the daemon refuses a DNAT
// rule to another address).
func defaultGateway(p *policy.Policy) *match.Gateway {
	cfg := match.GatewayConfig{ProxyPort: 15001}
	for _, r := range p.RulesOf(policy.KindDNAT) {
		for _, d := range r.Destination.Ranges {
			for a, n := d.From, 0; n < 256; a, n = a.Next(), n+1 {
				if !slices.Contains(cfg.PublicIPs, a) {
					cfg.PublicIPs = append(cfg.PublicIPs, a)
				}
				if a == d.To {
					break
				}
			}
		}
	}
	return cfg.Gateway()
}

// explainSide sets f.From from --from, or infers it: a flow to a public IP
// of the firewall comes from the outside (an inbound question), any other
// from the inside (an egress question). It returns a note saying what it
// inferred when that matters.
func explainSide(f *match.Flow, from string, gw *match.Gateway) (string, error) {
	if from != "" {
		s, ok := match.ParseSide(from)
		if !ok || s == match.FromAny {
			return "", fmt.Errorf("--from must be inside or outside, not %q", from)
		}
		f.From = s
		return "", nil
	}
	if f.Dst.IsValid() && gw.IsPublic(f.Dst) {
		f.From = match.FromOutside
		return fmt.Sprintf("%s is a public IP of the firewall: explaining a flow from the outside (--from inside: one from the cluster, which DNAT rules do not translate)", f.Dst), nil
	}
	f.From = match.FromInside
	if f.Dst.IsValid() && gw.IsLocal(f.Dst) {
		return fmt.Sprintf("%s is an address of the firewall itself", f.Dst), nil
	}
	return "", nil
}

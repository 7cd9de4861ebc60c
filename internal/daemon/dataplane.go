package daemon

import (
	"net/netip"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// NFTDataplane programs the kernel with internal/nft: compile the policy to
// a ruleset, then replace clusterwall's table in one netlink batch.
type NFTDataplane struct {
	Runner nft.Runner
	Config nft.Config
}

// Apply implements Dataplane.
func (d *NFTDataplane) Apply(p *policy.Policy, _ *match.Matcher) (LogIndex, error) {
	rs, err := nft.Compile(p, d.Config)
	if err != nil {
		return nil, err
	}
	if err := d.Runner.Apply(rs); err != nil {
		return nil, err
	}
	return nftIndex{p}, nil
}

// AddFQDNAddrs implements Dataplane.
func (d *NFTDataplane) AddFQDNAddrs(name string, addrs []netip.Addr, ttl time.Duration) error {
	return d.Runner.AddFQDNAddrs(name, addrs, ttl)
}

// nftIndex maps the ruleset's NFLOG prefixes (nft.LogTag) to rules.
type nftIndex struct{ p *policy.Policy }

func (x nftIndex) Lookup(prefix string) (LoggedDecision, bool) {
	t, err := nft.ParseLogTag(prefix)
	if err != nil {
		return LoggedDecision{}, false
	}
	switch t.Kind {
	case nft.LogAllow, nft.LogDeny, nft.LogDNAT:
		r := t.Rule(x.p)
		if r == nil {
			return LoggedDecision{}, false
		}
		return LoggedDecision{Action: r.Action(), Kind: r.Kind(), Rule: r}, true
	case nft.LogDefaultDeny:
		return LoggedDecision{Action: policy.ActionDeny}, true
	}
	return LoggedDecision{}, false
}

package daemon

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
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
	// ThreatIntel, when set, gives every apply the threat-intel part of
	// the ruleset (threatintel.go sets it).
	ThreatIntel func() *nft.ThreatIntel

	mu     sync.Mutex
	gen    uint32 // the last log generation applied
	recent *recentIndexes
}

// Apply implements Dataplane. Each apply gets a new log generation: the
// kernel's log prefixes carry it (nft.LogTag), and the returned index maps
// a prefix to the rule of the generation that logged it, for this apply
// and the few before it. So a line logged just before a reload that
// reorders rules still names the rule that decided, never a rule of the
// new policy that happens to have the same index.
//
// The ruleset is compiled from m (nft.Compile), which must have been
// compiled for the data plane's gateway (Gateway).
func (d *NFTDataplane) Apply(p *policy.Policy, m *match.Matcher) (LogIndex, error) {
	if m == nil || m.Policy() != p {
		return nil, errors.New("data plane: apply needs the policy's compiled matcher")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gen == 0 {
		// Start at a random generation so that a restarted daemon does not
		// take the previous process's prefixes for its own.
		d.gen = rand.Uint32N(1 << 30)
	}
	d.gen++
	if d.gen == 0 {
		d.gen = 1
	}
	cfg := d.Config
	cfg.LogGeneration = d.gen
	if d.ThreatIntel != nil {
		cfg.ThreatIntel = d.ThreatIntel()
	}
	rs, err := nft.Compile(m, cfg)
	if err != nil {
		return nil, err
	}
	// Register the index before the kernel commits: the NFLOG reader may
	// see the new ruleset's first lines before Runner.Apply returns.
	if d.recent == nil {
		d.recent = &recentIndexes{}
	}
	x := newNFTIndex(m, d.gen)
	x.recent = d.recent
	d.recent.add(x)
	if err := d.Runner.Apply(rs); err != nil {
		d.recent.remove(x)
		return nil, err
	}
	return x, nil
}

// Gateway is the firewall as the matcher must see it for this data plane
// (nft.Config.Gateway): the daemon compiles its matchers with it.
func (d *NFTDataplane) Gateway() *match.Gateway { return d.Config.Gateway() }

// AddFQDNAddrs implements Dataplane.
func (d *NFTDataplane) AddFQDNAddrs(name string, addrs []netip.Addr, ttl time.Duration) error {
	return d.Runner.AddFQDNAddrs(name, addrs, ttl)
}

// keepGenerations is how many applied generations an index still maps
// (packets logged by a ruleset arrive at most a few flush timeouts after it
// was replaced; reloads are rarer than that).
const keepGenerations = 8

// nftIndex maps the ruleset's NFLOG prefixes (nft.LogTag) to rules. The
// rule lists are computed once per apply, not per packet.
type nftIndex struct {
	p       *policy.Policy
	gen     uint32
	network []*policy.Rule
	dnat    []*policy.Rule
	// recent holds the indexes of the last generations the same dataplane
	// applied (nil: this index alone).
	recent *recentIndexes
}

// newNFTIndex maps the tags of m's ruleset: rule indexes are the
// matcher's (match.Rule.Index), which nft.Compile logs.
func newNFTIndex(m *match.Matcher, gen uint32) *nftIndex {
	x := &nftIndex{p: m.Policy(), gen: gen}
	for _, r := range m.Rules(policy.KindNetwork) {
		x.network = append(x.network, r.Policy)
	}
	for _, r := range m.Rules(policy.KindDNAT) {
		x.dnat = append(x.dnat, r.Policy)
	}
	return x
}

// recentIndexes is a bounded list of applied generations, read without
// locks on the NFLOG path.
type recentIndexes struct {
	mu   sync.Mutex
	list atomic.Pointer[[]*nftIndex]
}

func (r *recentIndexes) add(x *nftIndex) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var next []*nftIndex
	if cur := r.list.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, x)
	if len(next) > keepGenerations {
		next = next[len(next)-keepGenerations:]
	}
	r.list.Store(&next)
}

func (r *recentIndexes) remove(x *nftIndex) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var next []*nftIndex
	if cur := r.list.Load(); cur != nil {
		for _, y := range *cur {
			if y != x {
				next = append(next, y)
			}
		}
	}
	r.list.Store(&next)
}

func (r *recentIndexes) find(gen uint32) *nftIndex {
	if r == nil {
		return nil
	}
	cur := r.list.Load()
	if cur == nil {
		return nil
	}
	for _, x := range *cur {
		if x.gen == gen {
			return x
		}
	}
	return nil
}

// Lookup implements LogIndex.
func (x *nftIndex) Lookup(prefix string) (LoggedDecision, bool) {
	t, err := nft.ParseLogTag(prefix)
	if err != nil {
		return LoggedDecision{}, false
	}
	if t.Gen != x.gen {
		if y := x.recent.find(t.Gen); y != nil {
			x = y
		} else {
			// A ruleset this daemon did not apply (a previous process's,
			// still in the kernel before the first apply): the verdict is
			// known, the rule is not.
			ld := LoggedDecision{Action: policy.ActionDeny, UnknownRuleset: true, Input: t.Kind == nft.LogInputDrop}
			switch t.Kind {
			case nft.LogAllow:
				ld.Action, ld.Kind = policy.ActionAllow, policy.KindNetwork
			case nft.LogDeny:
				ld.Kind = policy.KindNetwork
			case nft.LogDNAT:
				ld.Action, ld.Kind = policy.ActionDNAT, policy.KindDNAT
			}
			return ld, true
		}
	}
	var rules []*policy.Rule
	switch t.Kind {
	case nft.LogAllow, nft.LogDeny:
		rules = x.network
	case nft.LogDNAT:
		rules = x.dnat
	case nft.LogDefaultDeny:
		return LoggedDecision{Action: policy.ActionDeny, Policy: x.p}, true
	case nft.LogInputDrop:
		return LoggedDecision{Action: policy.ActionDeny, Policy: x.p, Input: true}, true
	default:
		return LoggedDecision{}, false
	}
	if t.Index < 0 || t.Index >= len(rules) {
		return LoggedDecision{}, false
	}
	r := rules[t.Index]
	return LoggedDecision{Action: r.Action(), Kind: r.Kind(), Rule: r, Policy: x.p}, true
}

package nft

import (
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Recorder is a Runner for unit tests: it records what it is asked to do
// and keeps the last applied ruleset as its "kernel". Apply lowers the
// ruleset to netlink objects exactly as the netlink runner does, so a
// ruleset the kernel runner could not program fails here too.
type Recorder struct {
	mu sync.Mutex
	// Applied holds every ruleset applied, in order.
	Applied []*Ruleset
	// Current is the ruleset in force (nil after Flush).
	Current *Ruleset
	// FQDNCalls holds every AddFQDNAddrs call.
	FQDNCalls []FQDNCall
	Flushes   int
	// FailApply, when set, is returned by Apply, which then changes nothing.
	FailApply error
}

// FQDNCall is one recorded AddFQDNAddrs call.
type FQDNCall struct {
	FQDN  string
	Sets  []string // the sets (and DNAT maps) the addresses went to
	Addrs []netip.Addr
	TTL   time.Duration
}

var _ Runner = (*Recorder)(nil)
var _ Runner = (*NetlinkRunner)(nil)

// Apply implements Runner.
func (r *Recorder) Apply(rs *Ruleset) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.FailApply != nil {
		return r.FailApply
	}
	pl, err := lower(rs, nil, time.Now())
	if err != nil {
		return err
	}
	if err := appendRules(&wire{}, pl, rs.Chains); err != nil {
		return err
	}
	for _, sp := range pl.sets {
		if _, err := pl.elems(sp); err != nil {
			return err
		}
	}
	r.Applied = append(r.Applied, rs)
	r.Current = rs
	return nil
}

// AddFQDNAddrs implements Runner.
func (r *Recorder) AddFQDNAddrs(fqdn string, addrs []netip.Addr, ttl time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	call := FQDNCall{FQDN: fqdn, Addrs: append([]netip.Addr(nil), addrs...), TTL: max(ttl, MinFQDNTTL)}
	if r.Current != nil {
		call.Sets = append(r.Current.FQDNSets(fqdn), r.Current.DNATMaps(fqdn)...)
	}
	r.FQDNCalls = append(r.FQDNCalls, call)
	return nil
}

// Flush implements Runner.
func (r *Recorder) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Flushes++
	r.Current = nil
	return nil
}

// Show implements Runner: the current ruleset, with zero counters.
func (r *Recorder) Show() (*State, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Current == nil {
		return &State{Table: DefaultTable}, nil
	}
	return stateOf(r.Current), nil
}

// stateOf describes a compiled ruleset as Show would read it back.
func stateOf(rs *Ruleset) *State {
	st := &State{Table: rs.Table, Present: true}
	for _, c := range rs.Chains {
		cs := ChainState{Name: c.Name, Hook: string(c.Hook), Type: c.Type, Priority: c.Priority, Policy: c.Policy}
		if c.Hook == HookNone {
			cs.Type = "filter"
		}
		for _, ru := range c.Rules {
			text := make([]string, len(ru.Stmts))
			hasCounter := false
			for i, s := range ru.Stmts {
				text[i] = s.String()
				if _, ok := s.(Counter); ok {
					hasCounter = true
				}
			}
			cs.Rules = append(cs.Rules, RuleState{Comment: ru.Comment, Text: strings.Join(text, " "), HasCounter: hasCounter})
		}
		st.Chains = append(st.Chains, cs)
	}
	for _, s := range rs.Sets {
		elems := len(s.Elems)
		if s.Kind == SetDNATFQDN {
			elems = 0 // filled at run time
		}
		st.Sets = append(st.Sets, SetState{Name: s.Name, KeyType: s.KeyType(), Map: s.vmap() || s.Kind == SetDNATFQDN,
			Interval: !s.dynamic() && s.Kind != SetVMapHash, Timeout: s.dynamic(), Elements: elems, Comment: s.Comment})
	}
	return st
}

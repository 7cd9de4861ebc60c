package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterwall/clusterwall/internal/recovery"
)

// upstream is one resolver the proxy forwards to. Its health survives
// configuration reloads that keep its address.
type upstream struct {
	addr  netip.AddrPort
	saddr string
	udp   *dns.Client
	tcp   *dns.Client
	fails atomic.Int32 // consecutive failures
	down  atomic.Bool
	// Counters for status.
	queries  atomic.Uint64
	failures atomic.Uint64
}

func newUpstream(a netip.AddrPort) *upstream {
	return &upstream{
		addr:  a,
		saddr: a.String(),
		udp:   &dns.Client{Net: "udp", UDPSize: ednsSize},
		tcp:   &dns.Client{Net: "tcp"},
	}
}

// UpstreamStatus describes one upstream.
type UpstreamStatus struct {
	Addr     netip.AddrPort
	Healthy  bool
	Fails    int // consecutive failures
	Queries  uint64
	Failures uint64
}

var errMismatch = errors.New("answer does not match the question")

// exchange sends m over UDP, and over TCP when the UDP answer is truncated.
func (u *upstream) exchange(ctx context.Context, m *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	u.queries.Add(1)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := exchangeOn(ctx, u.udp, m, u.saddr)
	if err == nil && r.Truncated {
		r, err = exchangeOn(ctx, u.tcp, m, u.saddr)
	}
	if err != nil {
		return nil, err
	}
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, m.Question[0].Name) ||
		r.Question[0].Qtype != m.Question[0].Qtype || r.Question[0].Qclass != m.Question[0].Qclass {
		return nil, errMismatch
	}
	return r, nil
}

// exchangeOn is c.ExchangeContext that also ends when ctx is cancelled
// (miekg/dns honours only its deadline): a refresh or query stuck on a
// silent upstream ends with the daemon's shutdown, not at its timeout.
func exchangeOn(ctx context.Context, c *dns.Client, m *dns.Msg, addr string) (*dns.Msg, error) {
	conn, err := c.DialContext(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop() // before the caller's cancel: no callback after a normal end
	r, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return r, err
}

// failed records a failure; after maxFails in a row the upstream is down.
func (u *upstream) failed(log *slog.Logger, maxFails int, err error) {
	u.failures.Add(1)
	if n := u.fails.Add(1); int(n) >= maxFails && !u.down.Swap(true) {
		log.Warn("dns upstream down", "upstream", u.saddr, "consecutive_failures", n, "err", err)
	}
}

// succeeded clears the failure count and marks the upstream up.
func (u *upstream) succeeded(log *slog.Logger) {
	u.fails.Store(0)
	if u.down.Swap(false) {
		log.Info("dns upstream up", "upstream", u.saddr)
	}
}

// order returns the upstreams to try: healthy ones in random order, then
// the ones marked down (still better than no answer). Every upstream is in
// the result exactly once: each one's health is read once, so an upstream
// that changes state while order runs (forward and the health check flip
// it concurrently) cannot fall between the two groups and leave the list
// empty.
func order(us []*upstream) []*upstream {
	out := make([]*upstream, len(us))
	healthy, down := 0, len(us)
	for _, u := range us {
		if u.down.Load() {
			down--
			out[down] = u
		} else {
			out[healthy] = u
			healthy++
		}
	}
	rand.Shuffle(healthy, func(i, j int) { out[i], out[j] = out[j], out[i] })
	rest := out[healthy:]
	rand.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	return out
}

// forward asks the upstreams for q: a random healthy one first, failing
// over to another on an error, a timeout, SERVFAIL or REFUSED.
func (p *Proxy) forward(ctx context.Context, cfg *runtimeConfig, q *query) (*dns.Msg, error) {
	if len(cfg.upstreams) == 0 {
		return nil, &Error{Num: ErrUpstream, Rcode: rcodeServFail, Msg: "no upstreams configured"}
	}
	m := new(dns.Msg)
	m.SetQuestion(q.fqdn, q.qtype)
	m.Question[0].Qclass = q.qclass
	m.RecursionDesired = true
	m.CheckingDisabled = q.cd()
	m.AuthenticatedData = true
	m.SetEdns0(ednsSize, q.do)

	tries := order(cfg.upstreams)
	if len(tries) > cfg.attempts {
		tries = tries[:cfg.attempts]
	}
	var errs []string
	for _, u := range tries {
		if ctx.Err() != nil {
			break
		}
		m.Id = dns.Id()
		r, err := u.exchange(ctx, m, cfg.timeout)
		if err != nil && errors.Is(ctx.Err(), context.Canceled) {
			// The query was shed or the proxy stops: not the upstream's fault.
			errs = append(errs, context.Cause(ctx).Error())
			break
		}
		if err != nil {
			u.failed(p.log, cfg.maxFails, err)
			errs = append(errs, fmt.Sprintf("%s: %v", u.saddr, err))
			continue
		}
		if r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused {
			err := fmt.Errorf("answered %s", dns.RcodeToString[r.Rcode])
			u.failed(p.log, cfg.maxFails, err)
			errs = append(errs, fmt.Sprintf("%s: %v", u.saddr, err))
			continue
		}
		u.succeeded(p.log)
		return r, nil
	}
	if len(errs) == 0 {
		// Nothing was tried: the query's deadline passed before the first
		// exchange (order never returns an empty list for configured
		// upstreams).
		reason := "no upstream tried"
		if err := context.Cause(ctx); err != nil {
			reason = err.Error()
		}
		errs = append(errs, reason)
	}
	return nil, &Error{Num: ErrUpstream, Rcode: rcodeServFail, Msg: "upstreams failed: " + strings.Join(errs, "; ")}
}

// healthLoop probes every upstream each HealthInterval with a query for
// ". NS": any answer means alive (the passive marks in forward take an
// upstream down; this brings it back, or takes a silent one down).
func (p *Proxy) healthLoop(ctx context.Context) {
	for {
		cfg := p.cfg.Load()
		t := time.NewTimer(cfg.healthInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		cfg = p.cfg.Load()
		done := make(chan struct{}, len(cfg.upstreams))
		for _, u := range cfg.upstreams {
			go func() {
				defer func() { done <- struct{}{} }()
				defer func() {
					if v := recover(); v != nil {
						recovery.Report(p.log, recovery.DNS, v, "health check", u.saddr)
					}
				}()
				p.probe(ctx, cfg, u)
			}()
		}
		for range cfg.upstreams {
			<-done
		}
	}
}

func (p *Proxy) probe(ctx context.Context, cfg *runtimeConfig, u *upstream) {
	m := new(dns.Msg)
	m.SetQuestion(".", dns.TypeNS)
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	_, _, err := u.udp.ExchangeContext(ctx, m, u.saddr)
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
		return
	}
	if err != nil {
		if !u.down.Swap(true) {
			p.log.Warn("dns upstream down", "upstream", u.saddr, "reason", "health check", "err", err)
		}
		return
	}
	u.succeeded(p.log)
}

package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterwall/clusterwall/internal/recovery"
)

// refreshTypes are the types re-resolved for the names rules need.
var refreshTypes = []uint16{dns.TypeA, dns.TypeAAAA}

// Refresh resolves the A and AAAA records of names now, bypassing the
// cache, as if a client had asked: answers are cached, learned and passed
// to OnAnswer (for names Interesting returns true for), so the kernel's
// sets hold fresh addresses before clients ask. Names are plain DNS names
// (wildcards cannot be resolved). Errors for single names are joined.
func (p *Proxy) Refresh(ctx context.Context, names []string) error {
	type job struct {
		name  string
		qtype uint16
	}
	var jobs []job
	for _, n := range names {
		for _, t := range refreshTypes {
			jobs = append(jobs, job{n, t})
		}
	}
	return p.refreshJobs(ctx, len(jobs), func(i int) (string, uint16) { return jobs[i].name, jobs[i].qtype })
}

// refreshJobs runs n resolutions, at most 8 at a time.
func (p *Proxy) refreshJobs(ctx context.Context, n int, job func(int) (string, uint16)) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 8)
	)
	for i := range n {
		name, qtype := job(i)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return errors.Join(append(errs, ctx.Err())...)
		}
		wg.Go(func() {
			defer func() { <-sem }()
			defer func() {
				if v := recover(); v != nil {
					recovery.Report(p.log, recovery.DNS, v, "refresh", name)
					p.panics.Add(1)
				}
			}()
			if err := p.resolveInternal(ctx, name, qtype, true); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("refresh %s %s: %w", name, typeString(qtype), err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// resolveInternal runs the chain for a query the proxy makes itself.
func (p *Proxy) resolveInternal(ctx context.Context, name string, qtype uint16, force bool) error {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	wire, err := m.Pack()
	if err != nil {
		return fmt.Errorf("bad name %q: %w", name, err)
	}
	r := new(request)
	r.reset()
	if pe := parseQuery(wire, &r.q, &r.namebuf); pe != nil {
		return fmt.Errorf("bad name %q: %s", name, pe.msg)
	}
	r.proto, r.refresh, r.cfg, r.now = "internal", force, p.cfg.Load(), p.now().UnixNano()
	_, err = p.chain.serve(ctx, r)
	return err
}

// RefreshLoop re-resolves, every interval (default 10 s), those of names()
// whose cached A or AAAA answer is missing or expires before the next
// round, until ctx is done. Failures are logged.
func (p *Proxy) RefreshLoop(ctx context.Context, every time.Duration, names func() []string) {
	if every <= 0 {
		every = 10 * time.Second
	}
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		if err := p.refreshDue(ctx, names(), every); err != nil && ctx.Err() == nil {
			p.log.Warn("dns refresh", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// refreshDue refreshes the (name, type) pairs whose cached answer is
// missing or expires within margin.
func (p *Proxy) refreshDue(ctx context.Context, names []string, margin time.Duration) error {
	type job struct {
		name  string
		qtype uint16
	}
	var jobs []job
	deadline := p.now().Add(margin + time.Second).UnixNano()
	for _, n := range names {
		for _, t := range refreshTypes {
			k := cacheKey{name: canonical(n), qtype: t, qclass: classIN}
			if r := p.cache.peek(k, p.now().UnixNano()); r != nil && r.expires > deadline {
				continue
			}
			jobs = append(jobs, job{n, t})
		}
	}
	return p.refreshJobs(ctx, len(jobs), func(i int) (string, uint16) { return jobs[i].name, jobs[i].qtype })
}

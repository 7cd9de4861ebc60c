package waf

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// backend is one backend address of a route and its health. Health
// outlives reloads: the registry hands the same backend to a reloaded
// route of the same name and address.
type backend struct {
	addr string

	mu          sync.Mutex
	activeDown  bool // the active check says down
	okStreak    int
	failStreak  int
	passiveFail int       // consecutive proxy failures
	downUntil   time.Time // passive: out until then
}

func (b *backend) healthy(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.activeDown && !now.Before(b.downUntil)
}

// proxyResult records the outcome of one proxied request (passive health).
func (b *backend) proxyResult(ok bool, maxFails int, failTimeout time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ok {
		b.passiveFail = 0
		return
	}
	b.passiveFail++
	if b.passiveFail >= maxFails {
		b.downUntil = time.Now().Add(failTimeout)
		b.passiveFail = 0
	}
}

// checkResult records the outcome of one active health check.
func (b *backend) checkResult(ok bool, hc *HealthCheck) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ok {
		b.okStreak++
		b.failStreak = 0
		if b.activeDown && b.okStreak >= hc.HealthyThreshold {
			b.activeDown = false
			b.downUntil = time.Time{}
		}
		return
	}
	b.failStreak++
	b.okStreak = 0
	if b.failStreak >= hc.UnhealthyThreshold {
		b.activeDown = true
	}
}

// pool is a route's backends, picked round-robin among the healthy ones.
type pool struct {
	route    *Route
	backends []*backend
	next     atomic.Uint64
}

// pick returns the next healthy backend, or, when none is healthy, the next
// one anyway (a backend marked down may have come back; failing every
// request would be worse).
func (p *pool) pick() *backend {
	n := len(p.backends)
	start := p.next.Add(1) - 1
	now := time.Now()
	for i := 0; i < n; i++ {
		b := p.backends[(start+uint64(i))%uint64(n)]
		if b.healthy(now) {
			return b
		}
	}
	return p.backends[start%uint64(n)]
}

// registry keeps backends by route name and address across reloads.
type registry struct {
	mu sync.Mutex
	m  map[string]*backend
}

func (r *registry) get(route, addr string) *backend {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]*backend{}
	}
	k := route + "\x00" + addr
	b := r.m[k]
	if b == nil {
		b = &backend{addr: addr}
		r.m[k] = b
	}
	return b
}

// retain forgets the backends of routes and addresses not in routes (the
// configuration now in force), so that endpoint churn does not grow the
// registry; requests in flight keep the backends they hold.
func (r *registry) retain(routes []*Route) {
	keep := map[string]bool{}
	for _, rt := range routes {
		for _, g := range rt.Groups {
			for _, a := range g.Backends {
				keep[rt.Name+"\x00"+a] = true
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.m {
		if !keep[k] {
			delete(r.m, k)
		}
	}
}

// runHealthChecks checks every backend of the pool until ctx ends.
func runHealthChecks(ctx context.Context, p *pool, wg *sync.WaitGroup) {
	hc := p.route.HealthCheck
	if hc == nil {
		return
	}
	host := ""
	for _, h := range p.route.Hosts {
		if h[0] != '*' {
			host = h
			break
		}
	}
	client := &http.Client{
		Timeout: hc.Timeout,
		Transport: &http.Transport{
			DialContext:       (&net.Dialer{Timeout: hc.Timeout}).DialContext,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for _, b := range p.backends {
		wg.Add(1)
		go func(b *backend) {
			defer wg.Done()
			check := func() {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr+hc.Path, nil)
				if err != nil {
					return
				}
				if host != "" {
					req.Host = host
				}
				req.Header.Set("User-Agent", "clusterwall-health-check")
				res, err := client.Do(req)
				if ctx.Err() != nil {
					return
				}
				ok := err == nil && res.StatusCode >= 200 && res.StatusCode < 400
				if res != nil {
					res.Body.Close()
				}
				b.checkResult(ok, hc)
			}
			check()
			t := time.NewTicker(hc.Interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					check()
				}
			}
		}(b)
	}
}

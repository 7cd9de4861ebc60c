package daemon

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// What the admin API lets one client make the daemon hold (issue 17: one
// 60 MB POST /v1/validate took the daemon from 48 MB to 6 GB):
//
//   - a body is at most admin.maxBodyBytes (64 MiB) and must arrive within
//     bodyReadTimeout;
//   - one body-carrying request (validate, apply) is read and parsed at a
//     time: the others wait up to bodyWaitTimeout for their turn, then get
//     503 with Retry-After — so at most one body is in memory at once;
//   - parsing one policy (a body, or the policy file on a reload) is
//     bounded by policyLimits (policy.Limits: nodes with aliases expanded,
//     nesting; checked on the bytes before yaml.v3 builds its tree), and
//     one parse runs at a time;
//   - at most admin.maxConnections connections are open; more are closed
//     at once.
const (
	DefaultAdminMaxBody        = 64 << 20
	DefaultAdminMaxConnections = 64
	bodyReadTimeout            = 60 * time.Second
)

// bodyWaitTimeout is how long a body-carrying request waits for its turn
// (a variable for tests).
var bodyWaitTimeout = 30 * time.Second

// adminLimits is the admin API's bookkeeping for those bounds.
type adminLimits struct {
	once      sync.Once
	bodyGate  chan struct{} // one body-carrying request at a time
	parseSlot chan struct{} // one policy parse at a time
	waiting   atomic.Int64  // requests waiting for bodyGate
	busy      atomic.Int64  // 1 while a body request runs
	refused   atomic.Uint64 // bodies refused: too large, too slow, or no turn in time

	conns        atomic.Int64
	connsRefused atomic.Uint64
}

func (a *adminLimits) init() {
	a.once.Do(func() {
		a.bodyGate = make(chan struct{}, 1)
		a.parseSlot = make(chan struct{}, 1)
	})
}

func (c *Config) checkLimits(bad func(field, format string, args ...any)) {
	c.checkAntiSpoofing(bad) // antispoof.go
	if c.Admin.MaxBodyBytes < 0 {
		bad("admin.maxBodyBytes", "must not be negative")
	} else if c.Admin.MaxBodyBytes == 0 {
		c.Admin.MaxBodyBytes = DefaultAdminMaxBody
	}
	if c.Admin.MaxConnections < 0 {
		bad("admin.maxConnections", "must not be negative")
	} else if c.Admin.MaxConnections == 0 {
		c.Admin.MaxConnections = DefaultAdminMaxConnections
	}
	if c.PolicyLimits.MaxNodes < 0 || c.PolicyLimits.MaxDepth < 0 {
		bad("policyLimits", "maxNodes and maxDepth must not be negative")
	}
	for f, v := range map[string]int{"proxy.maxConns": c.Proxy.MaxConns, "proxy.maxConnsPerSource": c.Proxy.MaxConnsPerSource,
		"proxy.maxConnsPerPrefix": c.Proxy.MaxConnsPerPrefix} {
		if v < -1 {
			bad(f, "must be a positive number, or -1 (no limit)")
		}
	}
	for f, v := range map[string]int{"dns.cacheEntries": c.DNS.CacheEntries, "dns.cacheBytes": c.DNS.CacheBytes,
		"dns.maxInflight": c.DNS.MaxInflight, "dns.maxTCPConns": c.DNS.MaxTCPConns, "dns.maxNames": c.DNS.MaxNames,
		"dns.maxAddresses": c.DNS.MaxAddresses, "dns.maxAddressesPerName": c.DNS.MaxAddressesPerName} {
		if v < 0 {
			bad(f, "must not be negative (0: the default)")
		}
	}
}

// loadPolicy parses and validates policy bytes in the parse slot.
func (d *Daemon) loadPolicy(data []byte) (*policy.Policy, error) {
	defer d.parsing()()
	return policy.Load(d.cfg.Policy, data, d.cfg.PolicyOptions())
}

// parsing takes the parse slot (waiting as long as it takes: a reload of
// the policy file must not fail because an API client is validating) and
// returns its release.
func (d *Daemon) parsing() (release func()) {
	d.adminLim.init()
	d.adminLim.parseSlot <- struct{}{}
	return func() { <-d.adminLim.parseSlot }
}

// readBody waits for the request's turn, then reads its body within the
// size and time bounds. On failure it has answered (413, 408 or 503) and
// returns ok=false; otherwise the caller must call done when it has
// finished with the body (that ends the request's turn).
func (d *Daemon) readBody(w http.ResponseWriter, r *http.Request) (data []byte, done func(), ok bool) {
	a := &d.adminLim
	a.init()
	a.waiting.Add(1)
	t := time.NewTimer(bodyWaitTimeout)
	select {
	case a.bodyGate <- struct{}{}:
		a.waiting.Add(-1)
		t.Stop()
	case <-t.C:
		a.waiting.Add(-1)
		a.refused.Add(1)
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"errors": apiErrors(
			fmt.Errorf("busy: another policy is being validated or applied; try again (waited %s)", bodyWaitTimeout))})
		return nil, nil, false
	case <-r.Context().Done():
		a.waiting.Add(-1)
		t.Stop()
		return nil, nil, false
	}
	a.busy.Store(1)
	done = func() { a.busy.Store(0); <-a.bodyGate }
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyReadTimeout))
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, d.cfg.Admin.MaxBodyBytes))
	if err != nil {
		done()
		a.refused.Add(1)
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			err = fmt.Errorf("request body larger than admin.maxBodyBytes (%d bytes)", tooBig.Limit)
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"errors": apiErrors(err)})
		default:
			writeJSON(w, http.StatusRequestTimeout, map[string]any{"errors": apiErrors(fmt.Errorf("reading the request body: %w", err))})
		}
		return nil, nil, false
	}
	return data, done, true
}

func (d *Daemon) adminBudgets() []budget {
	a := &d.adminLim
	return []budget{
		{name: "admin_bodies", used: float64(a.busy.Load() + a.waiting.Load()), limit: 1, refused: float64(a.refused.Load())},
		{name: "admin_connections", used: float64(a.conns.Load()), limit: float64(d.cfg.Admin.MaxConnections), refused: float64(a.connsRefused.Load())},
	}
}

// limitListener closes connections beyond max at once (a client that
// cannot connect retries; one that holds connections cannot lock the
// operator out for longer than the server's timeouts).
type limitListener struct {
	net.Listener
	a   *adminLimits
	max int64
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.a.conns.Add(1) > l.max {
			l.a.conns.Add(-1)
			l.a.connsRefused.Add(1)
			c.Close()
			continue
		}
		return &limitConn{Conn: c, a: l.a}, nil
	}
}

type limitConn struct {
	net.Conn
	a    *adminLimits
	once sync.Once
}

func (c *limitConn) Close() error {
	c.once.Do(func() { c.a.conns.Add(-1) })
	return c.Conn.Close()
}

// AdminServer returns the admin API's HTTP server (run it with Serve on
// AdminListener): header, idle and body timeouts so that a client cannot
// hold a connection for free.
func (d *Daemon) AdminServer() *http.Server {
	return &http.Server{Handler: d.AdminHandler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
}

package daemon

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nflog"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/recovery"
)

// panickyDataplane panics where told: reading counters (the admin API's
// /v1/rules, and every apply's fold of the counters), or applying.
type panickyDataplane struct {
	fakeDataplane
	counters, apply atomic.Bool
}

func (p *panickyDataplane) Counters() ([]nft.RuleCounter, error) {
	if p.counters.Load() {
		var m map[string]int
		m["x"]++ // a real runtime panic
	}
	return nil, nil
}

func (p *panickyDataplane) Apply(pol *policy.Policy, m *match.Matcher) (LogIndex, error) {
	if p.apply.Load() {
		panic("kernel programming bug")
	}
	return p.fakeDataplane.Apply(pol, m)
}

func scrape(t *testing.T, srv *httptest.Server, metric string) string {
	t.Helper()
	_, body := do(t, "GET", srv.URL+"/metrics", testToken, "")
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, metric+" ") {
			return strings.TrimPrefix(line, metric+" ")
		}
	}
	return "missing"
}

// TestAdminAndApplyPanics: a panic in one admin request is answered 500,
// logged and counted, and the API goes on (its locks released); a panic
// while applying a policy before the kernel is touched is a rejected
// reload (the running policy stays); one while programming the kernel
// stops the daemon (recovery.Fatal: fail closed).
func TestAdminAndApplyPanics(t *testing.T) {
	d, _, _, logs := newAuthDaemon(t)
	dp := &panickyDataplane{}
	d.dp = dp
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	admin0, reload0 := recovery.Count(recovery.Admin), recovery.Count(recovery.Reload)

	dp.counters.Store(true)
	if code, body := do(t, "GET", srv.URL+"/v1/rules", testToken, ""); code != http.StatusInternalServerError {
		t.Errorf("GET /v1/rules with a panic: %d %s", code, body)
	}
	if code, _ := do(t, "GET", srv.URL+"/v1/status", testToken, ""); code != 200 {
		t.Errorf("status after the panic: %d", code)
	}
	// The apply folds the counters first: a panic before the kernel.
	code, body := do(t, "POST", srv.URL+"/v1/apply", testToken, appliedPolicy)
	if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "internal error") || d.Status().Generation != 1 {
		t.Errorf("apply with a panic before the kernel: %d %s, generation %d", code, body, d.Status().Generation)
	}
	if recovery.Count(recovery.Admin)-admin0 != 1 || recovery.Count(recovery.Reload)-reload0 != 1 {
		t.Errorf("counted %d admin, %d reload panics; want 1 and 1", recovery.Count(recovery.Admin)-admin0, recovery.Count(recovery.Reload)-reload0)
	}
	if got := scrape(t, srv, `clusterwall_panics_recovered_total{where="admin"}`); got == "missing" || got == "0" {
		t.Errorf("panic metric: %s", got)
	}
	dp.counters.Store(false)
	if code, body := do(t, "POST", srv.URL+"/v1/apply", testToken, appliedPolicy); code != 200 {
		t.Fatalf("apply after the panics: %d %s", code, body)
	}
	if !strings.Contains(logs.String(), "panic recovered") {
		t.Errorf("no log line for the panics")
	}

	// A panic while programming the kernel: the daemon must stop.
	var fatal atomic.Value
	old := recovery.Fatal
	recovery.Fatal = func(v any) { fatal.Store(v) }
	defer func() { recovery.Fatal = old }()
	dp.apply.Store(true)
	d.ApplyBytes("test", []byte(testPolicy))
	c, ok := fatal.Load().(recovery.Corrupt)
	if !ok || !strings.Contains(c.What, "programming the kernel") {
		t.Fatalf("a panic while programming the kernel: fatal %v", fatal.Load())
	}
	if !strings.Contains(logs.String(), "fail closed") {
		t.Errorf("no fail-closed log line")
	}
}

// panickyIndex panics on every lookup.
type panickyIndex struct{}

func (panickyIndex) Lookup(string) (LoggedDecision, bool) { panic("index bug") }

// TestNFLOGBatchPanic: a panic on a batch of kernel log messages drops the
// batch, not the process.
func TestNFLOGBatchPanic(t *testing.T) {
	d, _, _ := newTestDaemon(t)
	before := recovery.Count(recovery.NFLOG)
	d.logPackets(newFlowLogger(d), &state{index: panickyIndex{}, policy: &policy.Policy{}}, make([]nflog.Packet, 3))
	if recovery.Count(recovery.NFLOG) != before+1 {
		t.Errorf("NFLOG panics counted: %d", recovery.Count(recovery.NFLOG)-before)
	}
}

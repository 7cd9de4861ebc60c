// Package soak runs clusterwall's standing attack suite (internal/soak) as
// a test: 2 minutes in `make test`, longer with `make soak`.
package soak

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/soak"
)

// TestSoak: floods and hostile clients against the real daemon in a lab,
// together with normal traffic, for CW_SOAK_DURATION (default 2m; `make
// soak` sets SOAK_MINUTES). It fails on a daemon restart or when fewer
// than 99.9 % of the normal clients' requests got the right answer.
// CW_SOAK_MAXCONNS sets the proxy's global limit the idle attackers
// overfill (default 2,048 here: under the race detector a test may not
// run more than 8,128 goroutines; `make soak` uses the daemon's default
// 16,384).
func TestSoak(t *testing.T) {
	lab.RequireLab(t)
	if _, err := exec.LookPath("dnsperf"); err != nil {
		t.Skip("dnsperf is missing (apt-get install dnsperf)")
	}
	d := 2 * time.Minute
	if s := os.Getenv("CW_SOAK_DURATION"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			t.Fatalf("CW_SOAK_DURATION: %v", err)
		}
	}
	maxConns := 2048
	if s := os.Getenv("CW_SOAK_MAXCONNS"); s != "" {
		maxConns, _ = strconv.Atoi(s)
	}
	exe, err := lab.BuildBinaryTo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+3*time.Minute)
	defer cancel()
	rep, err := soak.Run(ctx, soak.Options{Exe: exe, Name: lab.UniqueName(), Duration: d, ProxyMaxConns: maxConns,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if rep.Restarts != 0 {
		t.Errorf("the daemon restarted %d times", rep.Restarts)
	}
	if r := rep.SuccessRate(); r < 0.999 {
		t.Errorf("normal clients: %.3f %% answered, want ≥ 99.9 %%", 100*r)
	}
	// The proxy's limits were under pressure: the attackers were refused
	// or shed (the lab's cluster subnet is one /24, so its per-network
	// limit, 4,096, holds them when it is below the global one).
	refused := rep.Budgets["proxy_connections"][2] + rep.Budgets["proxy_connections_per_network"][2]
	if refused == 0 || rep.PeakUsed["proxy_connections"] < float64(min(maxConns, 4096))*9/10 {
		t.Errorf("the proxy's connection limits were not under pressure: peak %v connections, %v refused or shed",
			rep.PeakUsed["proxy_connections"], refused)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

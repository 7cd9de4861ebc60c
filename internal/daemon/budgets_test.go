package daemon

import (
	"context"
	"io"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// TestBudgetsDocumented: every budget a daemon with all its parts running
// exports is in docs/operations.md's Budgets table, within its bound at
// rest, and in the metrics.
func TestBudgetsDocumented(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxyAddr := ln.Addr().String()
	ln.Close()
	dlog := telemetry.NewDecisionLog(io.Discard, telemetry.Options{})
	defer dlog.Close()
	d := loadTestDaemon(t, writeDaemonConfig(t, dir, "dns: {listen: '127.0.0.1:0', upstreams: ['127.0.0.1:1']}\nproxy: {listen: '"+proxyAddr+"'}\n"),
		&fakeDataplane{}, nil, dlog)
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := d.startDNS(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.startProxy(ctx); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	i := strings.Index(text, "## 8. Budgets")
	j := strings.Index(text[i:], "\n## ")
	section := text[i:]
	if j > 0 {
		section = text[i : i+j+1]
	}
	bs := d.budgets()
	if len(bs) < 12 {
		t.Errorf("only %d budgets", len(bs))
	}
	for _, b := range bs {
		if !strings.Contains(section, "`"+b.name+"`") {
			t.Errorf("budget %s is not in docs/operations.md's Budgets table", b.name)
		}
		if b.used > b.limit || b.limit <= 0 {
			t.Errorf("budget %s: used %v of %v at rest", b.name, b.used, b.limit)
		}
	}
	families, err := d.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == metricBudgetUsed && len(f.GetMetric()) != len(bs) {
			t.Errorf("%s has %d series for %d budgets", metricBudgetUsed, len(f.GetMetric()), len(bs))
		}
	}
}

package daemon

import (
	"context"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// lastReloadMetric scrapes clusterwall_policy_last_reload_success.
func lastReloadMetric(t *testing.T, d *Daemon) string {
	t.Helper()
	rec := httptest.NewRecorder()
	d.metrics.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, metricLastReloadOK+" ") {
			return strings.TrimPrefix(line, metricLastReloadOK+" ")
		}
	}
	return "missing"
}

// TestLastReloadRecoversWhenFileFixed is the regression test for issue 17's
// "last_reload_success stays 0 after a bad policy file is fixed": the
// operator breaks the watched policy file (rejected: 0), then puts the
// running policy's text back. The file and the running policy agree
// again, so the last reload is a success (1) at once — before the fix the
// watcher saw "these bytes are already applied", did nothing, and the
// metric stayed 0 until some later reload.
func TestLastReloadRecoversWhenFileFixed(t *testing.T) {
	dir := t.TempDir()
	d := loadTestDaemon(t, writeDaemonConfig(t, dir, "proxy: {listen: 'off'}\n"), &fakeDataplane{}, nil, nil)
	pol := filepath.Join(dir, "policy.yaml")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	defer func() { cancel(); <-done }()

	wait := func(what, want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := lastReloadMetric(t, d)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s = %s, want %s (status %+v)", what, metricLastReloadOK, got, want, d.Status())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("after start", "1")
	if err := os.WriteFile(pol, []byte(strings.Replace(testPolicy, "['443']", "['70000']", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	wait("after a bad edit", "0")
	if !strings.Contains(d.Status().LastReload, "70000") {
		t.Fatalf("status after a bad edit: %+v", d.Status())
	}
	// Fixed: the running policy's own text again.
	if err := os.WriteFile(pol, []byte(testPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	wait("after the file is fixed", "1")
	if st := d.Status(); st.LastReload != "ok" || st.Generation != 1 {
		t.Fatalf("status after the fix: %+v (want ok, the same generation 1)", st)
	}
}

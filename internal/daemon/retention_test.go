package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// TestLogRetentionBoundedByDefault is the regression test for issue 17's
// "decision logs are never deleted by default": a config that names a
// log file and says nothing about retention keeps a bounded number of
// rotated files for a bounded time (before: maxBackups 0 and maxAgeDays
// 0, kept forever). Explicit zeros still mean "keep everything", with a
// warning.
func TestLogRetentionBoundedByDefault(t *testing.T) {
	dir := t.TempDir()
	d := loadTestDaemon(t, writeDaemonConfig(t, dir, "log: {file: decisions.log}\n"), &fakeDataplane{}, nil, nil)
	sc := d.cfg.LogSink()
	if sc.MaxBackups != telemetry.DefaultMaxBackups || sc.MaxAgeDays != telemetry.DefaultMaxAgeDays || sc.Unbounded() {
		t.Fatalf("default retention: %d backups, %d days; want %d and %d", sc.MaxBackups, sc.MaxAgeDays,
			telemetry.DefaultMaxBackups, telemetry.DefaultMaxAgeDays)
	}
	if w := d.cfg.Warnings(); len(w) != 0 {
		t.Errorf("warnings for the defaults: %v", w)
	}
	// Explicit zeros: unbounded on purpose, and said loudly.
	dir2 := t.TempDir()
	d2 := loadTestDaemon(t, writeDaemonConfig(t, dir2, "log: {file: decisions.log, maxBackups: 0, maxAgeDays: 0}\n"), &fakeDataplane{}, nil, nil)
	if sc := d2.cfg.LogSink(); !sc.Unbounded() {
		t.Errorf("explicit zeros: %+v, want unbounded", sc)
	}
	if w := d2.cfg.Warnings(); len(w) != 1 || !strings.Contains(w[0], "unbounded") {
		t.Errorf("warnings: %v", w)
	}
	// The shipped config is bounded.
	data, err := os.ReadFile("../../deploy/clusterwall.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir3 := t.TempDir()
	text := strings.NewReplacer("/run/credentials/clusterwall.service/admin-token", "", "tokenFile:", "# tokenFile:").Replace(string(data))
	os.WriteFile(filepath.Join(dir3, "policy.yaml"), []byte(testPolicy), 0o644)
	text = strings.Replace(text, "/var/lib/clusterwall/policy.yaml", filepath.Join(dir3, "policy.yaml"), 1)
	os.WriteFile(filepath.Join(dir3, "c.yaml"), []byte(text), 0o644)
	cfg, err := LoadConfig(filepath.Join(dir3, "c.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if sc := cfg.LogSink(); sc.Unbounded() || sc.MaxBackups == 0 || sc.MaxAgeDays == 0 {
		t.Errorf("deploy/clusterwall.yaml retention: %+v", sc)
	}
}

// TestLogRetentionHoldsUnderFlood writes far more than the default
// retention through the daemon's sink (1 MB files for the test, the
// default number of backups) and checks the disk use stays bounded.
func TestLogRetentionHoldsUnderFlood(t *testing.T) {
	dir := t.TempDir()
	d := loadTestDaemon(t, writeDaemonConfig(t, dir, "log: {file: decisions.log, maxSizeMB: 1}\n"), &fakeDataplane{}, nil, nil)
	w, c, err := telemetry.OpenSink(d.cfg.LogSink(), os.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 1023) + "\n")
	const total = 30 << 20 // 30 MB: 30 rotations
	for i := 0; i < total/len(line); i++ {
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	limit := int64(telemetry.DefaultMaxBackups+1) << 20
	var size int64
	var files int
	deadline := time.Now().Add(5 * time.Second) // lumberjack removes old backups on a goroutine
	for {
		size, files = 0, 0
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "decisions") {
				fi, err := e.Info()
				if err != nil { // removed by lumberjack since ReadDir
					continue
				}
				size += fi.Size()
				files++
			}
		}
		if size <= limit || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("wrote %d MB; on disk %d files, %d bytes", total>>20, files, size)
	if size > limit || files > telemetry.DefaultMaxBackups+1 {
		t.Fatalf("%d files, %d bytes on disk; want at most %d files, %d bytes", files, size, telemetry.DefaultMaxBackups+1, limit)
	}
}

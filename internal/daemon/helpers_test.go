package daemon

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// syncBuffer is a log sink safe for the goroutines that write it while the
// test reads it: the daemon's own log (String) or the decision log
// (records).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) records() []telemetry.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []telemetry.Record
	for _, line := range bytes.Split(s.b.Bytes(), []byte("\n")) {
		var r telemetry.Record
		if json.Unmarshal(line, &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// writeDaemonConfig writes testPolicy to dir/policy.yaml and a daemon
// config using it (interfaces in0/out0, public IP 203.0.113.32, then
// extra) to dir/config.yaml, whose path it returns. Anti-spoofing is off:
// these daemons run in the test's own namespace, whose sysctls are not
// theirs to set (test/antispoof_test.go checks it in a lab).
func writeDaemonConfig(t testing.TB, dir, extra string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(testPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "config.yaml")
	data := "policy: policy.yaml\ninterfaces: {inside: in0, outside: out0, antiSpoofing: off}\npublicIPs: [203.0.113.32]\n" + extra
	if err := os.WriteFile(conf, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// loadTestDaemon loads config conf and makes a daemon of it on dp that
// never touches the host's conntrack (log nil: discarded).
func loadTestDaemon(t testing.TB, conf string, dp Dataplane, log *slog.Logger, dlog *telemetry.DecisionLog) *Daemon {
	t.Helper()
	cfg, err := LoadConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := New(cfg, log, dp, dlog, 100)
	d.cut = func(*match.Matcher) (uint, error) { return 0, nil } // never touch the host's conntrack
	return d
}

package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
	"github.com/clusterwall/clusterwall/internal/threatintel"
)

// TestThreatIntelVerdictInLog: the proxy asks the one matcher, whose
// threat-intel stage (a real engine over a feed file) denies a listed name
// before the rule that would allow it; the decision line carries the
// matcher's ThreatDescription, so the daemon never checks the feeds again.
func TestThreatIntelVerdictInLog(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		mode   policy.Action
		status int
		action string
	}{
		{policy.ActionDeny, 403, "Deny"},
		{policy.ActionAlert, 200, "Allow"},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			feed := filepath.Join(t.TempDir(), "feed.txt")
			if err := os.WriteFile(feed, []byte("ok.test # listed for the test\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			e := threatintel.New(threatintel.Options{})
			if err := e.Reload(policy.ThreatIntel{Mode: tc.mode, Feeds: []policy.Feed{{Name: "lab", Path: feed, Format: "plain"}}}); err != nil {
				t.Fatal(err)
			}
			cfg := f.config(t, f.web.addr)
			m, err := match.Compile(cfg.Matcher.Policy(), match.Options{ThreatIntel: e})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Matcher = m
			px := startProxy(t, cfg)
			resp, body, err := rawHTTP(t, px.addr, "GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d (%q)", resp.StatusCode, tc.status, body)
			}
			rec := px.sink.wait(t, "decision", func(r telemetry.Record) bool { return r.Protocol == "HTTP" })
			if rec.Action != tc.action || !strings.Contains(rec.ThreatDescription, "ok.test") {
				t.Errorf("record %+v", rec)
			}
			if tc.mode == policy.ActionDeny && rec.ActionReason != match.ReasonThreatIntel {
				t.Errorf("reason %q", rec.ActionReason)
			}
		})
	}
}

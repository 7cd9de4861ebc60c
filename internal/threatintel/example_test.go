package threatintel

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// TestExamplePolicy loads examples/threatintel/policy.yaml and its feeds
// the way the daemon does, so the example (and docs/threatintel.md, which
// points at it) cannot rot.
func TestExamplePolicy(t *testing.T) {
	p, err := policy.LoadFile("../../examples/threatintel/policy.yaml", policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.ThreatIntel.Mode != policy.ActionDeny || len(p.ThreatIntel.Feeds) != 4 {
		t.Fatalf("threatIntel = %+v", p.ThreatIntel)
	}
	e, _ := newEngine(t, Options{})
	if err := e.Reload(p.ThreatIntel); err != nil {
		t.Fatal(err)
	}
	for _, s := range e.Status() {
		if s.Invalid != 0 || s.Error != "" || s.Addresses+s.Domains == 0 {
			t.Errorf("feed %s: %+v", s.Name, s)
		}
	}
	cluster := netip.MustParseAddr("10.42.1.10")
	tests := []struct {
		dst  string
		name string
		want string // "feed: indicator", "" for nothing
	}{
		{"192.0.2.66", "", "lab-ips: 192.0.2.66"},
		{"2001:db8:192::66", "", "lab-ips: 2001:db8:192::66"},
		{"192.0.2.65", "", "lab-drop: 192.0.2.64/30"},
		{"", "evil.example.net", "lab-domains: evil.example.net"},
		{"", "www.evil.example.net", "lab-domains: evil.example.net"},
		{"", "x.tracker.example", "lab-domains: *.tracker.example"},
		{"", "ads.tracker.example", "lab-hosts: ads.tracker.example"}, // the most specific entry
		{"", "tracker.example", ""},
		{"", "localhost", ""},
		{"192.0.2.14", "example.org", ""},
		{"192.0.2.10", "ghcr.io", ""},
	}
	for _, tt := range tests {
		var dst netip.Addr
		if tt.dst != "" {
			dst = netip.MustParseAddr(tt.dst)
		}
		v := e.Check(cluster, dst, tt.name)
		got := ""
		if v.Action != policy.ActionInvalid {
			got = v.Feed + ": " + v.Indicator
			if v.Action != policy.ActionDeny {
				t.Errorf("%s %s: action %v", tt.dst, tt.name, v.Action)
			}
		}
		if got != tt.want {
			t.Errorf("%s %s: got %q, want %q", tt.dst, tt.name, got, tt.want)
		}
	}
	if st := e.Status(); st[3].Ignored != 7 || st[3].Domains != 3 {
		t.Errorf("hosts feed: %+v", st[3])
	}
}

// TestRunStopsDuringDownload: cancelling Run's context ends a hanging
// download at once.
func TestRunStopsDuringDownload(t *testing.T) {
	srv := newFeedServer(t, "192.0.2.66\n")
	srv.set(func(fs *feedServer) { fs.delay = time.Minute })
	e, _ := newEngine(t, Options{Timeout: time.Minute})
	e.Reload(urlPolicy(srv.URL))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for srv.requests.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop during a download")
	}
	if st := e.Status()[0]; st.Error == "" || st.Addresses != 0 {
		t.Errorf("status after a cancelled download: %+v", st)
	}
}

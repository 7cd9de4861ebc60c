package logquery

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

func rec(i int, at time.Time) telemetry.Record {
	r := telemetry.Record{Time: at, Category: telemetry.CategoryApplicationRule, SourceIp: fmt.Sprintf("10.42.1.%d", 10+i%3),
		SourcePort: 40000 + i%1000, Fqdn: fmt.Sprintf("h%d.example.com", i%5), DestinationPort: 443, Protocol: "HTTPS",
		Action: "Deny", ActionReason: "no rule matched", QueryId: i, ErrorMessage: strings.Repeat("p", 120)}
	if i%4 == 0 {
		r.Action, r.ActionReason, r.Rule, r.RuleCollection, r.RuleCollectionGroup = "Allow", "", "web", "apps", "g"
	}
	return r
}

// writeRotated writes n records through the real sink (lumberjack, 1 MB
// files, gzip) and waits until the backups are compressed.
func writeRotated(t *testing.T, file string, n int, start time.Time) {
	t.Helper()
	w, c, err := telemetry.OpenSink(telemetry.SinkConfig{File: file, MaxSizeMB: 1, Compress: true}, os.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	l := telemetry.NewDecisionLog(w, telemetry.Options{Queue: 1 << 17})
	for i := 0; i < n; i++ {
		l.Log(rec(i, start.Add(time.Duration(i)*time.Millisecond)))
	}
	l.Close()
	c.Close()
	if _, dropped, _ := l.Stats(); dropped != 0 {
		t.Fatalf("%d lines dropped", dropped)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		plain, _ := filepath.Glob(strings.TrimSuffix(file, ".log") + "-*.log")
		gz, _ := filepath.Glob(strings.TrimSuffix(file, ".log") + "-*.log.gz")
		if len(plain) == 0 && len(gz) >= 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backups not compressed: plain %v gz %v", plain, gz)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReadRotatedInTimeOrder(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "decisions.log")
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const n = 14000 // about 3.5 MB: 3 gzipped backups and the current file
	writeRotated(t, file, n, start)
	os.WriteFile(filepath.Join(dir, "decisions-notatime.log"), []byte("ignored\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "other.log"), []byte("ignored\n"), 0o644)

	files, err := Files(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 || files[len(files)-1].Path != file || !files[0].Gzip {
		t.Fatalf("files %+v", files)
	}
	var last time.Time
	count, denied := 0, 0
	st, err := Read(file, &Filter{}, func(r *telemetry.Record) error {
		if r.Time.Before(last) {
			t.Fatalf("record %d at %v after %v: not in time order", r.QueryId, r.Time, last)
		}
		last = r.Time
		count++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if count != n || st.Bad != 0 {
		t.Fatalf("read %d of %d records (%+v)", count, n, st)
	}

	// Filters, and --since skipping whole backups: the oldest backup
	// pretends to have been rotated before the evidence window.
	old := filepath.Join(dir, "decisions-"+start.Add(-time.Hour).Format(backupTimeFormat)+".log.gz")
	if err := os.Rename(files[0].Path, old); err != nil {
		t.Fatal(err)
	}
	since := start.Add(time.Duration(n-1000) * time.Millisecond)
	f := &Filter{Since: since, Actions: []string{"deny"}, Sources: []netip.Prefix{netip.MustParsePrefix("10.42.1.10/32")},
		FQDNs: []policy.FQDNPattern{mustPattern(t, "*.example.com")}}
	st, err = Read(file, f, func(r *telemetry.Record) error {
		if r.Time.Before(since) || r.Action != "Deny" || r.SourceIp != "10.42.1.10" {
			t.Fatalf("filter let %+v through", r)
		}
		denied++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := n - 1000; i < n; i++ {
		if r := rec(i, start); r.Action == "Deny" && r.SourceIp == "10.42.1.10" {
			want++
		}
	}
	if denied != want {
		t.Errorf("filter matched %d, want %d", denied, want)
	}
	if st.Files != len(files)-1 {
		t.Errorf("read %d of %d files; the backup rotated before --since should be skipped", st.Files, len(files))
	}

	// Rule filter and top.
	c, _ := NewCounter("fqdn")
	rules := 0
	Read(file, &Filter{Rules: []string{"g/apps/web"}}, func(r *telemetry.Record) error { rules++; c.Add(r); return nil })
	if rules != n/4 {
		t.Errorf("rule filter: %d, want %d", rules, n/4)
	}
	top := c.Top(2)
	if len(top) != 2 || top[0].Count < top[1].Count {
		t.Errorf("top %+v", top)
	}
}

func mustPattern(t *testing.T, s string) policy.FQDNPattern {
	p, err := policy.ParseFQDNPattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFollowAcrossRotation: Follow sees every line appended, in order,
// while lumberjack rotates the file under it.
func TestFollowAcrossRotation(t *testing.T) {
	t.Run("poll-10ms", func(t *testing.T) { followAcrossRotation(t, 10*time.Millisecond, 20*time.Millisecond) })
	// Several rotations between two polls: the files rotated in between
	// are read from the backups.
	t.Run("poll-2s", func(t *testing.T) { followAcrossRotation(t, 2*time.Second, 0) })
}

func followAcrossRotation(t *testing.T, poll, pause time.Duration) {
	dir := t.TempDir()
	file := filepath.Join(dir, "decisions.log")
	w, c, err := telemetry.OpenSink(telemetry.SinkConfig{File: file, MaxSizeMB: 1}, os.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []int
	done := make(chan error)
	go func() {
		done <- Follow(ctx, file, &Filter{}, poll, func(r *telemetry.Record) error {
			mu.Lock()
			got = append(got, r.QueryId)
			mu.Unlock()
			return nil
		})
	}()
	time.Sleep(100 * time.Millisecond) // Follow starts at the end of the file
	start := time.Now()
	l := telemetry.NewDecisionLog(w, telemetry.Options{Queue: 1 << 16})
	const n = 9000 // over 2 MB: two rotations
	for i := 0; i < n; i++ {
		l.Log(rec(i, time.Now()))
		if i%500 == 0 && pause > 0 {
			time.Sleep(pause) // let Follow see the file grow
		}
	}
	l.Close()
	c.Close()
	deadline := time.Now().Add(5*time.Second + poll)
	for {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		if k >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	backups, _ := filepath.Glob(filepath.Join(dir, "decisions-*.log"))
	if len(backups) < 2 {
		t.Fatalf("only %d rotations happened", len(backups))
	}
	if pause == 0 && time.Since(start) > poll+5*time.Second {
		t.Logf("writing took %v: rotations may not have fallen between two polls", time.Since(start))
	}
	if len(got) != n {
		t.Fatalf("followed %d of %d lines across %d rotations", len(got), n, len(backups))
	}
	for i, id := range got {
		if id != i {
			t.Fatalf("line %d is record %d: out of order or lost", i, id)
		}
	}
}

func TestParseHelpers(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{"1h": now.Add(-time.Hour), "30m": now.Add(-30 * time.Minute),
		"2d": now.Add(-48 * time.Hour), "1w": now.Add(-7 * 24 * time.Hour), "2026-12-01T00:00:00Z": time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)} {
		got, err := ParseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-1h", "1x"} {
		if _, err := ParseSince(bad, now); err == nil {
			t.Errorf("ParseSince(%q) accepted", bad)
		}
	}
	for in, want := range map[string]string{"network": telemetry.CategoryNetworkRule, "azfwdnsquery": telemetry.CategoryDNSQuery, "WAF": telemetry.CategoryWAF, "ti": telemetry.CategoryThreatIntel} {
		if got, err := ParseCategory(in); err != nil || got != want {
			t.Errorf("ParseCategory(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseCategory("firewall"); err == nil {
		t.Error("unknown category accepted")
	}
	if p, err := ParseSource("10.42.1.7"); err != nil || p.String() != "10.42.1.7/32" {
		t.Errorf("ParseSource: %v %v", p, err)
	}
	if _, err := ParseSource("10.42.1.0/33"); err == nil {
		t.Error("bad CIDR accepted")
	}
}

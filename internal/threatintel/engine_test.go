package threatintel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
)

var (
	addrEvil   = netip.MustParseAddr("192.0.2.66")
	addrCloud  = netip.MustParseAddr("10.42.1.10")
	addrOther  = netip.MustParseAddr("203.0.113.5")
	addrBadSrc = netip.MustParseAddr("198.51.100.9")
	noAddr     netip.Addr
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// logBuffer collects an Engine's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newEngine(t *testing.T, o Options) (*Engine, *logBuffer) {
	lb := &logBuffer{}
	o.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("engine log:\n%s", lb)
		}
	})
	return New(o), lb
}

func fileFeeds(t *testing.T) (dir string, ti policy.ThreatIntel) {
	dir = t.TempDir()
	writeFile(t, filepath.Join(dir, "ips.txt"), "192.0.2.66 # the lab's evil host\n198.51.100.0/24\n")
	writeFile(t, filepath.Join(dir, "hosts"), "127.0.0.1 localhost\n0.0.0.0 evil.example.net\n")
	ti = policy.ThreatIntel{Feeds: []policy.Feed{
		{Name: "ips", Path: filepath.Join(dir, "ips.txt"), Format: "plain"},
		{Name: "hosts", Path: filepath.Join(dir, "hosts"), Format: "hosts"},
	}}
	return dir, ti
}

func TestModes(t *testing.T) {
	_, ti := fileFeeds(t)
	e, _ := newEngine(t, Options{})
	tests := []struct {
		mode       policy.Action
		src, dst   netip.Addr
		name       string
		want       policy.Action
		subject    Subject
		indicator  string
		descPrefix string
	}{
		{policy.ActionDeny, addrCloud, addrEvil, "", policy.ActionDeny, SubjectDestination, "192.0.2.66", "ips: 192.0.2.66 (the lab's evil host)"},
		{policy.ActionDeny, addrCloud, addrOther, "www.evil.example.net", policy.ActionDeny, SubjectName, "evil.example.net", "hosts: evil.example.net"},
		{policy.ActionDeny, addrBadSrc, addrOther, "", policy.ActionDeny, SubjectSource, "198.51.100.0/24", "ips: 198.51.100.0/24"},
		{policy.ActionDeny, addrBadSrc, addrEvil, "evil.example.net", policy.ActionDeny, SubjectDestination, "192.0.2.66", "ips:"},
		{policy.ActionDeny, addrCloud, addrOther, "good.example", policy.ActionInvalid, SubjectNone, "", ""},
		{policy.ActionDeny, noAddr, noAddr, "", policy.ActionInvalid, SubjectNone, "", ""},
		{policy.ActionAlert, addrCloud, addrEvil, "", policy.ActionAlert, SubjectDestination, "192.0.2.66", "ips:"},
		{policy.ActionAlert, noAddr, noAddr, "EVIL.example.NET.", policy.ActionAlert, SubjectName, "evil.example.net", "hosts:"},
		{policy.ActionInvalid, addrCloud, addrEvil, "evil.example.net", policy.ActionInvalid, SubjectNone, "", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/%v/%v/%s", tt.mode, tt.src, tt.dst, tt.name), func(t *testing.T) {
			ti.Mode = tt.mode
			if err := e.Reload(ti); err != nil {
				t.Fatal(err)
			}
			if e.Mode() != tt.mode {
				t.Errorf("Mode() = %v", e.Mode())
			}
			v := e.Check(tt.src, tt.dst, tt.name)
			if v.Action != tt.want || v.Subject != tt.subject || v.Indicator != tt.indicator || !strings.HasPrefix(v.Description, tt.descPrefix) {
				t.Errorf("Check = %+v", v)
			}
			if tt.want != policy.ActionInvalid && v.Feed == "" {
				t.Errorf("no feed in %+v", v)
			}
		})
	}
	var nilEngine *Engine
	if v := nilEngine.Check(addrCloud, addrEvil, "evil.example.net"); v.Action != policy.ActionInvalid {
		t.Errorf("nil engine: %+v", v)
	}
}

func TestModeOffReadsNothing(t *testing.T) {
	_, ti := fileFeeds(t)
	ti.Feeds = append(ti.Feeds, policy.Feed{Name: "missing", Path: "/nonexistent/feed.txt", Format: "plain"})
	e, _ := newEngine(t, Options{})
	if err := e.Reload(ti); err != nil { // Off: the missing file is not even looked at
		t.Fatal(err)
	}
	if e.Set() != nil {
		t.Error("mode Off compiled a set")
	}
	for _, s := range e.Status() {
		if !s.Loaded.IsZero() || s.Error != "" {
			t.Errorf("mode Off loaded %+v", s)
		}
	}
	ti.Mode = policy.ActionDeny
	err := e.Reload(ti)
	if err == nil || !strings.Contains(err.Error(), "feed missing") || !strings.Contains(err.Error(), "/nonexistent/feed.txt") {
		t.Fatalf("Reload error = %v", err)
	}
	if v := e.Check(noAddr, addrEvil, ""); v.Action != policy.ActionDeny {
		t.Errorf("the other feeds did not load: %+v", v)
	}
}

func TestAllowlistInEngine(t *testing.T) {
	_, ti := fileFeeds(t)
	ti.Mode = policy.ActionDeny
	al := allowlist(t, []string{"192.0.2.66"}, []string{"*.evil.example.net"})
	ti.AllowAddresses, ti.AllowFQDNs = al.Addrs, al.FQDNs
	e, _ := newEngine(t, Options{})
	if err := e.Reload(ti); err != nil {
		t.Fatal(err)
	}
	if v := e.Check(addrCloud, addrEvil, ""); v.Action != policy.ActionInvalid {
		t.Errorf("allowlisted address reported: %+v", v)
	}
	if v := e.Check(addrCloud, addrOther, "www.evil.example.net"); v.Action != policy.ActionInvalid {
		t.Errorf("allowlisted name reported: %+v", v)
	}
	if v := e.Check(addrCloud, addrOther, "evil.example.net"); v.Action != policy.ActionDeny {
		t.Errorf("evil.example.net itself is not allowlisted: %+v", v)
	}
	// An allowlisted name does not clear a listed destination address.
	ti.AllowAddresses = policy.AddrSet{}
	if err := e.Reload(ti); err != nil {
		t.Fatal(err)
	}
	if v := e.Check(addrCloud, addrEvil, "www.evil.example.net"); v.Action != policy.ActionDeny || v.Subject != SubjectDestination {
		t.Errorf("listed destination with allowlisted name: %+v", v)
	}
}

func TestFileFeedRefresh(t *testing.T) {
	dir, ti := fileFeeds(t)
	ti.Mode = policy.ActionDeny
	e, lb := newEngine(t, Options{})
	if err := e.Reload(ti); err != nil {
		t.Fatal(err)
	}
	ips := filepath.Join(dir, "ips.txt")

	// A changed file is read again; bad lines are counted and logged.
	writeFile(t, ips, "203.0.113.5\nnot/an/entry\n192.0.2.999\n")
	if err := e.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := e.Check(noAddr, addrOther, ""); v.Action != policy.ActionDeny {
		t.Errorf("new entry not loaded: %+v", v)
	}
	if v := e.Check(noAddr, addrEvil, ""); v.Action != policy.ActionInvalid {
		t.Errorf("removed entry still listed: %+v", v)
	}
	st := e.Status()
	if st[0].Addresses != 1 || st[0].Invalid != 2 || st[0].Error != "" || st[1].Domains != 1 || st[1].Ignored != 1 {
		t.Errorf("status = %+v", st)
	}
	if !strings.Contains(lb.String(), ips+`:2:1: feed ips: bad CIDR \"not/an/entry\"`) {
		t.Errorf("parse error not logged with file:line:col")
	}

	// An unreadable feed keeps its previous contents.
	if err := os.Remove(ips); err != nil {
		t.Fatal(err)
	}
	err := e.Refresh(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Refresh error = %v", err)
	}
	if v := e.Check(noAddr, addrOther, ""); v.Action != policy.ActionDeny {
		t.Errorf("previous contents lost: %+v", v)
	}
	if st := e.Status(); !strings.Contains(st[0].Error, "no such file") || st[0].Addresses != 1 {
		t.Errorf("status = %+v", st[0])
	}

	// A file that became garbage is rejected as a whole.
	writeFile(t, ips, "<html><body>Not found</body></html>\n")
	if err := e.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "no valid entry") {
		t.Fatalf("Refresh error = %v", err)
	}
	if v := e.Check(noAddr, addrOther, ""); v.Action != policy.ActionDeny {
		t.Errorf("previous contents lost: %+v", v)
	}

	// An emptied feed (comments only) is a legitimate, empty list.
	writeFile(t, ips, "# nothing listed today\n")
	if err := e.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v := e.Check(noAddr, addrOther, ""); v.Action != policy.ActionInvalid {
		t.Errorf("emptied feed still lists: %+v", v)
	}

	// Feeds too large are rejected.
	small, _ := newEngine(t, Options{MaxBytes: 16})
	err = small.Reload(ti)
	if err == nil || !strings.Contains(err.Error(), "larger than the limit of 16 bytes") {
		t.Fatalf("Reload error = %v", err)
	}
}

// feedServer is a loopback HTTP server for one feed with an ETag.
type feedServer struct {
	*httptest.Server
	mu          sync.Mutex
	body        string
	status      int
	delay       time.Duration
	noLength    bool
	requests    atomic.Int32
	notModified atomic.Int32
	lastINM     atomic.Value // If-None-Match of the last request
	lastIMS     atomic.Value // If-Modified-Since of the last request
}

func newFeedServer(t *testing.T, body string) *feedServer {
	fs := &feedServer{body: body, status: http.StatusOK}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.requests.Add(1)
		fs.lastINM.Store(r.Header.Get("If-None-Match"))
		fs.lastIMS.Store(r.Header.Get("If-Modified-Since"))
		fs.mu.Lock()
		body, status, delay, noLength := fs.body, fs.status, fs.delay, fs.noLength
		fs.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if status != http.StatusOK {
			http.Error(w, "feed unavailable", status)
			return
		}
		etag := fmt.Sprintf(`"%x"`, sha256.Sum256([]byte(body)))
		w.Header().Set("ETag", etag)
		w.Header().Set("Last-Modified", "Mon, 02 Jan 2026 15:04:05 GMT")
		if r.Header.Get("If-None-Match") == etag {
			fs.notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if noLength {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusOK)
			for i := 0; i < len(body); i += 100 {
				w.Write([]byte(body[i:min(i+100, len(body))]))
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write([]byte(body))
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *feedServer) set(f func(fs *feedServer)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f(fs)
}

func urlPolicy(url string) policy.ThreatIntel {
	return policy.ThreatIntel{Mode: policy.ActionDeny, Feeds: []policy.Feed{{Name: "remote", URL: url, Format: "drop"}}}
}

func TestURLFeedRefresh(t *testing.T) {
	srv := newFeedServer(t, "; DROP\n192.0.2.0/24 ; SBL100\n")
	e, _ := newEngine(t, Options{Timeout: 2 * time.Second, MaxBytes: 4096})
	if err := e.Reload(urlPolicy(srv.URL + "/drop.txt")); err != nil {
		t.Fatal(err)
	}
	if v := e.Check(noAddr, addrEvil, ""); v.Action != policy.ActionInvalid {
		t.Fatalf("URL feed listed before any download: %+v", v)
	}
	ctx := context.Background()
	step := func(name string, wantErr string, wantListed bool) {
		t.Helper()
		err := e.Refresh(ctx)
		if (err == nil) != (wantErr == "") || err != nil && !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("%s: Refresh error = %v, want %q", name, err, wantErr)
		}
		v := e.Check(noAddr, addrEvil, "")
		if (v.Action == policy.ActionDeny) != wantListed {
			t.Fatalf("%s: Check = %+v, want listed=%v", name, v, wantListed)
		}
		if wantListed && v.Description != "remote: 192.0.2.0/24 (SBL100)" {
			t.Fatalf("%s: description %q", name, v.Description)
		}
	}

	step("first download", "", true)
	if srv.lastINM.Load() != "" {
		t.Errorf("first download was conditional")
	}
	step("unchanged: 304", "", true)
	if srv.notModified.Load() != 1 || srv.lastINM.Load() == "" || srv.lastIMS.Load() != "Mon, 02 Jan 2026 15:04:05 GMT" {
		t.Errorf("304s = %d, If-None-Match %q, If-Modified-Since %q", srv.notModified.Load(), srv.lastINM.Load(), srv.lastIMS.Load())
	}
	checked := e.Status()[0].Checked
	loaded := e.Status()[0].Loaded

	srv.set(func(fs *feedServer) { fs.status = http.StatusInternalServerError })
	step("server error keeps the old set", "500 Internal Server Error", true)
	if st := e.Status()[0]; st.Checked != checked || st.Loaded != loaded || !strings.Contains(st.Error, "500") {
		t.Errorf("status after failure: %+v", st)
	}

	srv.set(func(fs *feedServer) {
		fs.status, fs.body = http.StatusOK, strings.Repeat("; padding to exceed the limit\n", 200)
	})
	step("oversized (Content-Length)", "body of 6000 bytes is larger than the limit of 4096 bytes", true)
	srv.set(func(fs *feedServer) { fs.noLength = true })
	step("oversized (chunked)", "body is larger than the limit of 4096 bytes", true)

	srv.set(func(fs *feedServer) {
		fs.noLength, fs.body = false, "<!DOCTYPE html>\n<html><body>Maintenance</body></html>\n"
	})
	step("an HTML page is not a feed", "no valid entry", true)

	srv.set(func(fs *feedServer) { fs.body, fs.delay = "192.0.2.0/24\n", time.Minute })
	start := time.Now()
	step("timeout", "no complete answer within 2s", true)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("timeout took %v", d)
	}

	srv.set(func(fs *feedServer) { fs.delay, fs.body = 0, "203.0.113.0/24 ; SBL200\n" })
	step("new contents replace the old", "", false)
	if v := e.Check(noAddr, addrOther, ""); v.Action != policy.ActionDeny || v.Indicator != "203.0.113.0/24" {
		t.Errorf("new contents not used: %+v", v)
	}
	if st := e.Status()[0]; st.Error != "" || st.Addresses != 1 || !st.Loaded.After(loaded) {
		t.Errorf("status after recovery: %+v", st)
	}

	srv.Close()
	step("server gone", "connection refused", false)
	if v := e.Check(noAddr, addrOther, ""); v.Action != policy.ActionDeny {
		t.Errorf("last good copy lost: %+v", v)
	}
}

func TestURLFeedStateDir(t *testing.T) {
	srv := newFeedServer(t, "192.0.2.66 ; SBL1\n")
	dir := t.TempDir()
	ti := urlPolicy(srv.URL)
	e1, _ := newEngine(t, Options{StateDir: dir})
	e1.Reload(ti)
	if err := e1.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A second engine (a restart) has the copy before any download.
	e2, _ := newEngine(t, Options{StateDir: dir})
	if err := e2.Reload(ti); err != nil {
		t.Fatal(err)
	}
	if v := e2.Check(noAddr, addrEvil, ""); v.Action != policy.ActionDeny {
		t.Fatalf("kept copy not used: %+v", v)
	}
	// Its first download is conditional.
	if err := e2.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if srv.notModified.Load() != 1 {
		t.Errorf("304s = %d, want 1", srv.notModified.Load())
	}

	// A copy of another URL or format is not used.
	ti.Feeds[0].Format = "plain"
	e3, _ := newEngine(t, Options{StateDir: dir})
	e3.Reload(ti)
	if v := e3.Check(noAddr, addrEvil, ""); v.Action != policy.ActionInvalid {
		t.Errorf("copy of another format used: %+v", v)
	}
}

func TestRunRefreshesAndStops(t *testing.T) {
	srv := newFeedServer(t, "192.0.2.66\n")
	dir, ti := fileFeeds(t)
	writeFile(t, filepath.Join(dir, "ips.txt"), "# empty\n")
	ti.Mode = policy.ActionDeny
	e, _ := newEngine(t, Options{Interval: 50 * time.Millisecond, FileInterval: 20 * time.Millisecond})
	if err := e.Reload(ti); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// A URL feed added by Reload is downloaded at once.
	ti.Feeds = append(ti.Feeds, policy.Feed{Name: "remote", URL: srv.URL, Format: "plain"})
	if err := e.Reload(ti); err != nil {
		t.Fatal(err)
	}
	waitFor("the new URL feed", func() bool { return e.Check(noAddr, addrEvil, "").Feed == "remote" })
	// URL feeds are checked every Interval...
	srv.set(func(fs *feedServer) { fs.body = "203.0.113.5\n" })
	waitFor("the changed URL feed", func() bool { return e.Check(noAddr, addrOther, "").Feed == "remote" })
	// ... and files every FileInterval.
	writeFile(t, filepath.Join(dir, "ips.txt"), "198.51.100.1\n# a longer file than before\n")
	waitFor("the changed file", func() bool {
		return e.Check(noAddr, addrBadSrc, "").Action == policy.ActionInvalid &&
			e.Check(noAddr, netip.MustParseAddr("198.51.100.1"), "").Feed == "ips"
	})
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestConcurrentSwap(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.txt")
	b := filepath.Join(dir, "b.txt")
	writeFile(t, a, "192.0.2.66\n")
	writeFile(t, b, "evil.example.net\n")
	tiA := policy.ThreatIntel{Mode: policy.ActionDeny, Feeds: []policy.Feed{{Name: "A", Path: a, Format: "plain"}}}
	tiB := policy.ThreatIntel{Mode: policy.ActionAlert, Feeds: []policy.Feed{{Name: "B", Path: b, Format: "plain"}}}
	e, _ := newEngine(t, Options{})
	e.Reload(tiA)

	var stop atomic.Bool
	var wg sync.WaitGroup
	var seenA, seenB atomic.Int64
	errs := make(chan string, 8)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				v := e.Check(addrCloud, addrEvil, "www.evil.example.net")
				switch {
				case v.Action == policy.ActionDeny && v.Feed == "A" && v.Subject == SubjectDestination:
					seenA.Add(1)
				case v.Action == policy.ActionAlert && v.Feed == "B" && v.Subject == SubjectName:
					seenB.Add(1)
				default:
					select {
					case errs <- fmt.Sprintf("%+v", v):
					default:
					}
					return
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		if i%2 == 0 {
			e.Reload(tiB)
		} else {
			e.Reload(tiA)
		}
		e.Refresh(context.Background())
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Errorf("inconsistent verdict: %s", s)
	}
	if seenA.Load() == 0 || seenB.Load() == 0 {
		t.Errorf("saw A %d times, B %d times", seenA.Load(), seenB.Load())
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	_, ti := fileFeeds(t)
	ti.Mode = policy.ActionDeny
	e, _ := newEngine(t, Options{})
	if err := e.Reload(ti); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		src, dst netip.Addr
		fqdn     string
	}{
		{"dst hit", addrCloud, addrEvil, ""},
		{"name hit", addrCloud, addrOther, "a.evil.example.net"},
		{"miss", addrCloud, addrOther, "kubernetes.io"},
	} {
		if n := testing.AllocsPerRun(1000, func() { e.Check(tc.src, tc.dst, tc.fqdn) }); n != 0 {
			t.Errorf("%s: %v allocations", tc.name, n)
		}
	}
}

func TestBlockName(t *testing.T) {
	_, ti := fileFeeds(t)
	e, _ := newEngine(t, Options{})
	ti.Mode = policy.ActionDeny
	e.Reload(ti)
	if bad, why := e.BlockName("cdn.evil.example.net."); !bad || why != "threat intel: hosts: evil.example.net" {
		t.Errorf("BlockName = %v, %q", bad, why)
	}
	if bad, _ := e.BlockName("kubernetes.io"); bad {
		t.Error("kubernetes.io blocked")
	}
	ti.Mode = policy.ActionAlert
	e.Reload(ti)
	if bad, _ := e.BlockName("evil.example.net"); bad {
		t.Error("mode Alert blocked")
	}
}

func TestVerdictRecord(t *testing.T) {
	_, ti := fileFeeds(t)
	ti.Mode = policy.ActionDeny
	e, _ := newEngine(t, Options{})
	e.Reload(ti)
	v := e.Check(addrCloud, netip.MustParseAddr("::ffff:192.0.2.66"), "evil.example.net")
	rec := v.Record(netip.AddrPortFrom(addrCloud, 40000), netip.AddrPortFrom(netip.MustParseAddr("::ffff:192.0.2.66"), 443), "TCP", "evil.example.net")
	rec.Source = "proxy"
	got, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"time":"0001-01-01T00:00:00Z","category":"AZFWThreatIntel","SourceIp":"10.42.1.10","SourcePort":40000,` +
		`"DestinationIp":"192.0.2.66","DestinationPort":443,"Protocol":"TCP","Fqdn":"evil.example.net","Action":"Deny",` +
		`"ThreatDescription":"ips: 192.0.2.66 (the lab's evil host)","source":"proxy"}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// A DNS query: no destination, no ports.
	ti.Mode = policy.ActionAlert
	e.Reload(ti)
	v = e.Check(noAddr, noAddr, "evil.example.net")
	got, _ = json.Marshal(v.Record(netip.AddrPortFrom(addrCloud, 0), netip.AddrPort{}, "UDP", "evil.example.net"))
	want = `{"time":"0001-01-01T00:00:00Z","category":"AZFWThreatIntel","SourceIp":"10.42.1.10","Protocol":"UDP",` +
		`"Fqdn":"evil.example.net","Action":"Alert","ThreatDescription":"hosts: evil.example.net"}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestReloadKeepsURLFeedContents(t *testing.T) {
	srv := newFeedServer(t, "192.0.2.66\n")
	ti := urlPolicy(srv.URL)
	e, _ := newEngine(t, Options{})
	e.Reload(ti)
	if err := e.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := srv.requests.Load()
	// Same feed, new mode and allowlist: contents kept, nothing downloaded.
	ti.Mode = policy.ActionAlert
	if err := e.Reload(ti); err != nil {
		t.Fatal(err)
	}
	if v := e.Check(noAddr, addrEvil, ""); v.Action != policy.ActionAlert {
		t.Errorf("contents lost on reload: %+v", v)
	}
	if srv.requests.Load() != n {
		t.Errorf("reload downloaded again")
	}
	// A feed whose URL changed starts empty.
	ti.Feeds[0].URL = srv.URL + "/other"
	e.Reload(ti)
	if v := e.Check(noAddr, addrEvil, ""); v.Action != policy.ActionInvalid {
		t.Errorf("old URL's contents used for the new URL: %+v", v)
	}
}

// TestCheckThreatAgreesWithCheck: CheckThreat (the matcher's hook, which
// skips the Verdict) reports what Check reports, for hits on each of dst,
// name and src, on several at once (the first in Check's order wins), and
// for misses; in both modes, with an allowlist, and with threat
// intelligence off.
func TestCheckThreatAgreesWithCheck(t *testing.T) {
	_, ti := fileFeeds(t)
	var ab policy.AddrSetBuilder
	if _, err := policy.ParseAddrToken("198.51.100.7", &ab); err != nil {
		t.Fatal(err)
	}
	ti.AllowAddresses = ab.Build()
	addrs := []netip.Addr{noAddr, addrEvil, addrCloud, addrOther, addrBadSrc,
		netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.101.1"), netip.MustParseAddr("2001:db8::1")}
	names := []string{"", "evil.example.net", "A.EVIL.example.net.", "kubernetes.io", "localhost"}
	for _, mode := range []policy.Action{policy.ActionInvalid, policy.ActionAlert, policy.ActionDeny} {
		ti.Mode = mode
		e, _ := newEngine(t, Options{})
		if err := e.Reload(ti); err != nil {
			t.Fatal(err)
		}
		hits := 0
		for _, src := range addrs {
			for _, dst := range addrs {
				for _, name := range names {
					v := e.Check(src, dst, name)
					a, desc := e.CheckThreat(src, dst, name)
					if a != v.Action || desc != v.Description {
						t.Fatalf("%v: CheckThreat(%v, %v, %q) = %v %q, Check says %v %q", mode, src, dst, name, a, desc, v.Action, v.Description)
					}
					if a != policy.ActionInvalid {
						hits++
					}
				}
			}
		}
		if (mode == policy.ActionInvalid) != (hits == 0) {
			t.Errorf("%v: %d hits", mode, hits)
		}
	}
}

// TestRunWatchesFeedFiles: a changed feed file is read at once, not at the
// next FileInterval (an hour here) — written in place, and replaced by a
// rename as editors and config tools do.
func TestRunWatchesFeedFiles(t *testing.T) {
	dir, ti := fileFeeds(t)
	ti.Mode = policy.ActionDeny
	e, _ := newEngine(t, Options{FileInterval: time.Hour})
	if err := e.Reload(ti); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
	}
	waitFor("the first load", func() bool { return e.Check(noAddr, addrEvil, "").Feed == "ips" })

	ips := filepath.Join(dir, "ips.txt")
	writeFile(t, ips, "203.0.113.5\n")
	waitFor("the file written in place", func() bool {
		return e.Check(noAddr, addrOther, "").Feed == "ips" && e.Check(noAddr, addrEvil, "").Action == policy.ActionInvalid
	})

	tmp := filepath.Join(dir, ".ips.txt.new")
	writeFile(t, tmp, "192.0.2.66\n")
	if err := os.Rename(tmp, ips); err != nil {
		t.Fatal(err)
	}
	waitFor("the file replaced by a rename", func() bool {
		return e.Check(noAddr, addrEvil, "").Feed == "ips" && e.Check(noAddr, addrOther, "").Action == policy.ActionInvalid
	})
	writeFile(t, ips, "# emptied\n")
	waitFor("the file written in place again", func() bool { return e.Check(noAddr, addrEvil, "").Action == policy.ActionInvalid })
}

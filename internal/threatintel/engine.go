package threatintel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// Defaults of Options.
const (
	DefaultInterval      = time.Hour
	DefaultRetryInterval = 5 * time.Minute
	DefaultFileInterval  = time.Minute
	DefaultTimeout       = 60 * time.Second
	DefaultMaxBytes      = 64 << 20
)

// Options configure an Engine. The zero value is usable.
type Options struct {
	// Logger receives feed loads, refresh failures and parse errors (the
	// first few of each load). nil discards them.
	Logger *slog.Logger
	// Interval is how often URL feeds are downloaded again (default 1 h).
	Interval time.Duration
	// RetryInterval is how soon a failed download is tried again (default
	// 5 min, at most Interval).
	RetryInterval time.Duration
	// FileInterval is how often file feeds are checked for changes
	// (default 1 min; a check is a stat unless the file changed).
	FileInterval time.Duration
	// Timeout bounds one download, headers and body (default 60 s).
	Timeout time.Duration
	// MaxBytes is the largest feed accepted, file or download (default
	// 64 MiB). A larger feed is rejected and the previous copy kept.
	MaxBytes int64
	// Client downloads URL feeds; nil makes a client with Timeout.
	Client *http.Client
	// StateDir, when set, keeps the last good copy of every URL feed
	// (and its ETag/Last-Modified) across restarts.
	StateDir string
	// UserAgent is sent with downloads (default "clusterwall-threatintel").
	UserAgent string
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Engine holds the feeds, the mode and the allowlist, and answers Check
// from an immutable compiled Set swapped atomically on every change. It is
// safe for concurrent use; Check does not allocate.
type Engine struct {
	opts   Options
	log    *slog.Logger
	client *http.Client
	cur    atomic.Pointer[state]
	kick   chan struct{}

	refreshMu sync.Mutex // one refresh at a time

	mu    sync.Mutex // guards the fields below and every feedState
	mode  policy.Action
	allow Allowlist
	feeds []*feedState
}

// state is what Check reads: one pointer, swapped whole.
type state struct {
	mode policy.Action
	set  *Set
}

// feedState is one configured feed and its last good contents.
type feedState struct {
	cfg    policy.Feed
	format Format
	data   *FeedData // last good contents; nil before the first load

	etag, lastModified string    // URL feeds: validators of data
	modTime            time.Time // file feeds: of the file data came from
	size               int64

	loaded  time.Time // when data was loaded
	checked time.Time // last successful check (a 304 counts)
	next    time.Time // next check is due
	lastErr error     // of the last check; nil after a success
}

func (f *feedState) source() string {
	if f.cfg.URL != "" {
		return f.cfg.URL
	}
	return f.cfg.Path
}

// New returns an Engine in mode Off with no feeds; Reload configures it.
func New(o Options) *Engine {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.RetryInterval > o.Interval {
		o.RetryInterval = o.Interval
	}
	if o.FileInterval <= 0 {
		o.FileInterval = DefaultFileInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.UserAgent == "" {
		o.UserAgent = "clusterwall-threatintel"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	e := &Engine{opts: o, log: o.Logger, client: o.Client, kick: make(chan struct{}, 1)}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = o.Timeout
		e.client = &http.Client{Timeout: o.Timeout, Transport: t}
	}
	e.cur.Store(&state{})
	return e
}

// Reload applies a policy's threat-intel settings. The mode and the
// allowlist take effect at once; file feeds are read now; URL feeds keep
// the contents they had under the same name, URL and format (or the copy
// in StateDir) and new ones are downloaded by Run. In mode Off nothing is
// read or downloaded and Check reports nothing.
//
// Reload always applies ti. The error, if any, lists the feeds that could
// not be loaded; they keep their previous contents (none, if new).
func (e *Engine) Reload(ti policy.ThreatIntel) error {
	e.mu.Lock()
	old := make(map[string]*feedState, len(e.feeds))
	for _, f := range e.feeds {
		old[f.cfg.Name] = f
	}
	var errs []error
	var feeds []*feedState
	for _, f := range ti.Feeds {
		format, ok := ParseFormat(f.Format)
		if !ok {
			errs = append(errs, fmt.Errorf("threat-intel feed %s: unknown format %q", f.Name, f.Format))
			continue
		}
		if (f.Path == "") == (f.URL == "") {
			errs = append(errs, fmt.Errorf("threat-intel feed %s: give exactly one of a file and a URL", f.Name))
			continue
		}
		if o := old[f.Name]; o != nil && o.cfg == f {
			feeds = append(feeds, o)
			continue
		}
		fs := &feedState{cfg: f, format: format}
		if f.URL != "" && e.opts.StateDir != "" && ti.Mode != policy.ActionInvalid {
			e.loadCached(fs)
		}
		feeds = append(feeds, fs)
	}
	e.feeds, e.mode = feeds, ti.Mode
	e.allow = Allowlist{Addrs: ti.AllowAddresses, FQDNs: ti.AllowFQDNs}
	var files []*feedState
	if e.mode != policy.ActionInvalid {
		for _, f := range feeds {
			if f.cfg.Path != "" {
				files = append(files, f)
			}
		}
	}
	e.mu.Unlock()

	for _, f := range files {
		if err := e.check(context.Background(), f); err != nil {
			errs = append(errs, err)
		}
	}
	e.publish()
	select {
	case e.kick <- struct{}{}:
	default:
	}
	return errors.Join(errs...)
}

// Refresh checks every feed now: files are read again if they changed,
// URLs downloaded with If-None-Match/If-Modified-Since. A feed that fails
// keeps its previous contents; the error lists the failures.
func (e *Engine) Refresh(ctx context.Context) error {
	return e.refresh(ctx, func(*feedState, time.Time) bool { return true })
}

// Run refreshes feeds until ctx is done: URL feeds every Interval (and
// RetryInterval after a failure), file feeds every FileInterval, new feeds
// as soon as Reload adds them. It returns ctx's error.
//
// File feeds are also watched (fsnotify, on their directories, so that an
// editor's write-and-rename is seen too): a change is read 100 ms after
// the last event about it, not at the next FileInterval, which remains
// the fallback where watching fails.
func (e *Engine) Run(ctx context.Context) error {
	w := newFileWatch(e.log)
	defer w.close()
	for {
		e.refresh(ctx, func(f *feedState, now time.Time) bool { return !now.Before(f.next) })
		if paths := e.filePaths(); w.watch(paths) {
			// Newly watched: a change just before the watch began would
			// wait for FileInterval; a check (a stat) now covers it.
			due := map[string]bool{}
			for _, p := range paths {
				due[p] = true
			}
			e.due(due)
			e.refresh(ctx, func(f *feedState, now time.Time) bool { return !now.Before(f.next) })
		}
		wait := e.untilNextCheck()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-e.kick:
			t.Stop()
		case paths := <-w.changed:
			t.Stop()
			e.due(paths)
		}
	}
}

// filePaths are the paths of the file feeds.
func (e *Engine) filePaths() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var paths []string
	for _, f := range e.feeds {
		if f.cfg.Path != "" && e.mode != policy.ActionInvalid {
			paths = append(paths, filepath.Clean(f.cfg.Path))
		}
	}
	return paths
}

// due makes the file feeds at paths due for a check now.
func (e *Engine) due(paths map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.opts.Now()
	for _, f := range e.feeds {
		if f.cfg.Path != "" && paths[filepath.Clean(f.cfg.Path)] {
			f.next = now
		}
	}
}

func (e *Engine) untilNextCheck() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	wait := e.opts.Interval
	if e.mode == policy.ActionInvalid {
		return wait
	}
	now := e.opts.Now()
	for _, f := range e.feeds {
		if d := f.next.Sub(now); d < wait {
			wait = d
		}
	}
	if wait < 10*time.Millisecond {
		wait = 10 * time.Millisecond
	}
	return wait
}

func (e *Engine) refresh(ctx context.Context, due func(*feedState, time.Time) bool) error {
	e.refreshMu.Lock()
	defer e.refreshMu.Unlock()
	e.mu.Lock()
	var todo []*feedState
	if e.mode != policy.ActionInvalid {
		now := e.opts.Now()
		for _, f := range e.feeds {
			if due(f, now) {
				todo = append(todo, f)
			}
		}
	}
	e.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	var errs []error
	changed := false
	for _, f := range todo {
		if ctx.Err() != nil {
			break
		}
		e.mu.Lock()
		before := f.data
		e.mu.Unlock()
		if err := e.check(ctx, f); err != nil {
			errs = append(errs, err)
		}
		e.mu.Lock()
		changed = changed || f.data != before
		e.mu.Unlock()
	}
	if changed {
		e.publish()
	}
	return errors.Join(errs...)
}

// check loads one feed if it changed, and records the outcome.
func (e *Engine) check(ctx context.Context, f *feedState) error {
	e.mu.Lock()
	snap := *f
	e.mu.Unlock()

	var res fetchResult
	if snap.cfg.URL != "" {
		res = e.fetchURL(ctx, &snap)
	} else {
		res = e.readFile(&snap)
	}
	if res.err == nil && res.data != nil {
		res.err = sane(res.data)
	}

	now := e.opts.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	interval := e.opts.Interval
	if f.cfg.Path != "" {
		interval = e.opts.FileInterval
	}
	if res.err != nil {
		f.lastErr = res.err
		retry := e.opts.RetryInterval
		if retry > interval {
			retry = interval
		}
		f.next = now.Add(retry)
		addrs, names := 0, 0
		if f.data != nil {
			addrs, names = len(f.data.Addrs), len(f.data.Names)
		}
		e.log.Warn("threat-intel feed not updated; keeping its previous contents",
			"feed", f.cfg.Name, "source", f.source(), "error", res.err, "addresses", addrs, "domains", names)
		return res.err
	}
	f.lastErr, f.checked, f.next = nil, now, now.Add(interval)
	if res.data == nil { // not modified
		e.log.Debug("threat-intel feed unchanged", "feed", f.cfg.Name, "source", f.source())
		return nil
	}
	f.data, f.loaded = res.data, now
	f.etag, f.lastModified = res.etag, res.lastModified
	f.modTime, f.size = res.modTime, res.size
	e.logLoad(res.data)
	if f.cfg.URL != "" && e.opts.StateDir != "" && res.body != nil {
		if err := e.saveCached(f, res.body); err != nil {
			e.log.Warn("threat-intel feed: cannot keep a copy", "feed", f.cfg.Name, "dir", e.opts.StateDir, "error", err)
		}
	}
	return nil
}

// maxLoggedErrors is how many parse errors one load logs.
const maxLoggedErrors = 10

func (e *Engine) logLoad(d *FeedData) {
	e.log.Info("threat-intel feed loaded", "feed", d.Name, "source", d.Source, "format", d.Format.String(),
		"addresses", len(d.Addrs), "domains", len(d.Names), "invalid", d.Invalid, "ignored", d.Ignored, "lines", d.Lines)
	for i, err := range d.Errors {
		if i == maxLoggedErrors {
			e.log.Warn("threat-intel feed: more invalid entries not logged", "feed", d.Name, "count", d.Invalid-maxLoggedErrors)
			break
		}
		e.log.Warn("threat-intel feed: invalid entry skipped", "feed", d.Name, "error", err.Error())
	}
}

// sane rejects a download that parsed to nothing but errors: an HTML error
// page served with status 200, or a feed in another format. Keeping the
// previous copy is better than silently emptying the feed.
func sane(d *FeedData) error {
	if d.Entries() == 0 && d.Invalid > 0 {
		msg := ""
		if len(d.Errors) > 0 {
			msg = "; first: " + d.Errors[0].Error()
		}
		return fmt.Errorf("threat-intel feed %s: no valid entry, %d invalid (wrong format %q?)%s", d.Name, d.Invalid, d.Format, msg)
	}
	return nil
}

// publish compiles the current feeds and swaps the Set in.
func (e *Engine) publish() {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := &state{mode: e.mode}
	if e.mode != policy.ActionInvalid {
		data := make([]*FeedData, 0, len(e.feeds))
		for _, f := range e.feeds {
			data = append(data, f.data)
		}
		st.set = Compile(data, e.allow)
	}
	e.cur.Store(st)
}

// Mode is the current mode: ActionInvalid (Off), ActionAlert or ActionDeny.
func (e *Engine) Mode() policy.Action {
	if e == nil {
		return policy.ActionInvalid
	}
	return e.cur.Load().mode
}

// Set is the current compiled set (nil in mode Off).
func (e *Engine) Set() *Set {
	if e == nil {
		return nil
	}
	return e.cur.Load().set
}

// FeedStatus describes one feed for status pages and metrics.
type FeedStatus struct {
	Name, Source, Format string
	Addresses, Domains   int
	Invalid, Ignored     int
	// Loaded is when the current contents were loaded (zero: never);
	// Checked is the last successful check; Next the next one due.
	Loaded, Checked, Next time.Time
	// Error is the last check's error, if it failed.
	Error string
}

// Status describes every configured feed, in policy order.
func (e *Engine) Status() []FeedStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]FeedStatus, 0, len(e.feeds))
	for _, f := range e.feeds {
		s := FeedStatus{Name: f.cfg.Name, Source: f.source(), Format: f.format.String(), Loaded: f.loaded, Checked: f.checked, Next: f.next}
		if d := f.data; d != nil {
			s.Addresses, s.Domains, s.Invalid, s.Ignored = len(d.Addrs), len(d.Names), d.Invalid, d.Ignored
		}
		if f.lastErr != nil {
			s.Error = f.lastErr.Error()
		}
		out = append(out, s)
	}
	return out
}

// Subject says which checked value was listed.
type Subject uint8

const (
	SubjectNone Subject = iota
	SubjectDestination
	SubjectName
	SubjectSource
)

func (s Subject) String() string {
	switch s {
	case SubjectDestination:
		return "destination"
	case SubjectName:
		return "name"
	case SubjectSource:
		return "source"
	}
	return "none"
}

// Verdict is the outcome of Check. The zero value (ActionInvalid) means no
// listed indicator (or mode Off).
type Verdict struct {
	// Action is ActionDeny (mode Deny), ActionAlert (mode Alert) or
	// ActionInvalid (nothing listed).
	Action policy.Action
	// Description is the ThreatDescription: "FEED: INDICATOR (COMMENT)".
	Description string
	Feed        string
	// Indicator is the listed entry: "198.51.100.0/24", "evil.example".
	Indicator string
	// Subject is which of the checked values was listed.
	Subject Subject
}

// Check asks about one flow: its destination address, its name (SNI, Host,
// DNS query name) and its source address, in that order; the first listed
// one decides. Pass an invalid address or an empty name to skip a check —
// the source only matters for inbound flows, where it is the remote peer.
// Allowlisted addresses and names are never reported. Check does not
// allocate.
func (e *Engine) Check(src, dst netip.Addr, name string) Verdict {
	if e == nil {
		return Verdict{}
	}
	st := e.cur.Load()
	if st.mode == policy.ActionInvalid || st.set == nil {
		return Verdict{}
	}
	if m, ok := st.set.LookupAddr(dst); ok {
		return verdict(st.mode, m, SubjectDestination)
	}
	if name != "" {
		if m, ok := st.set.LookupName(name); ok {
			return verdict(st.mode, m, SubjectName)
		}
	}
	if m, ok := st.set.LookupAddr(src); ok {
		return verdict(st.mode, m, SubjectSource)
	}
	return Verdict{}
}

func verdict(mode policy.Action, m Match, s Subject) Verdict {
	return Verdict{Action: mode, Description: m.Description, Feed: m.Feed, Indicator: m.Indicator, Subject: s}
}

// BlockName adapts Check to the DNS proxy's Block hook: it reports true
// for a listed name in mode Deny, with reason "threat intel: DESCRIPTION".
// In mode Alert it reports false; the caller logs Check's verdict.
func (e *Engine) BlockName(name string) (bool, string) {
	v := e.Check(netip.Addr{}, netip.Addr{}, name)
	if v.Action != policy.ActionDeny {
		return false, ""
	}
	return true, "threat intel: " + v.Description
}

// Record returns the AZFWThreatIntel log line for v and a flow: src and
// dst with their ports (a zero port is omitted), proto ("TCP", "UDP",
// "ICMP") and the flow's name (SNI, Host or query name; may be empty).
// The caller sets Time and Source, or lets DecisionLog.Log set Time.
func (v Verdict) Record(src, dst netip.AddrPort, proto, fqdn string) telemetry.Record {
	r := telemetry.Record{
		Category:          telemetry.CategoryThreatIntel,
		Protocol:          proto,
		Fqdn:              fqdn,
		Action:            v.Action.String(),
		ThreatDescription: v.Description,
	}
	if a := src.Addr(); a.IsValid() {
		r.SourceIp, r.SourcePort = a.Unmap().String(), int(src.Port())
	}
	if a := dst.Addr(); a.IsValid() {
		r.DestinationIp, r.DestinationPort = a.Unmap().String(), int(dst.Port())
	}
	return r
}

// fetchResult is the outcome of reading a file or downloading a URL; data
// is nil when the source did not change.
type fetchResult struct {
	data               *FeedData
	body               []byte // a download's body, for StateDir
	etag, lastModified string
	modTime            time.Time
	size               int64
	err                error
}

var errTooLarge = errors.New("larger than the limit")

// readAll reads r up to max bytes; more is an error.
func readAll(r io.Reader, max int64, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is %w of %s bytes", what, errTooLarge, strconv.FormatInt(max, 10))
	}
	return b, nil
}

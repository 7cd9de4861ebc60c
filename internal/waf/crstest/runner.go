package crstest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	crstests "github.com/corazawaf/coraza-coreruleset/v4/tests"

	"github.com/clusterwall/clusterwall/internal/waf"
)

// Outcome of one test.
type Outcome string

// Outcomes. A test on the expected-failure list counts as skipped.
const (
	Passed  Outcome = "passed"
	Failed  Outcome = "failed"
	Skipped Outcome = "skipped"
)

// Result is one test's outcome.
type Result struct {
	ID       string
	Outcome  Outcome
	Reason   string // why it failed or was skipped
	Duration time.Duration
	// UnexpectedPass: on the expected-failure list, but it passed.
	UnexpectedPass bool
}

// Summary is a run's results.
type Summary struct {
	Results                 []Result
	Passed, Failed, Skipped int
	Elapsed                 time.Duration
}

// Line is the closing line: "N passed, N failed, N skipped".
func (s *Summary) Line() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped", s.Passed, s.Failed, s.Skipped)
}

// UnexpectedPasses lists expected failures that passed.
func (s *Summary) UnexpectedPasses() []string {
	var out []string
	for _, r := range s.Results {
		if r.UnexpectedPass {
			out = append(out, r.ID)
		}
	}
	return out
}

// Options configure a run.
type Options struct {
	// Filter selects tests by ID ("942100-3"); nil runs all.
	Filter *regexp.Regexp
	// Verbose prints every test; otherwise only failures and the summary.
	Verbose bool
	// Out receives the report; nil discards it.
	Out io.Writer
	// Tests is the test tree; nil means the CRS tests embedded by
	// coraza-coreruleset.
	Tests fs.FS
	// ExpectedFailures maps test IDs to why they fail and what happens
	// instead; nil means the package's ExpectedFailures.
	ExpectedFailures map[string]Expected
	// Workers is the number of tests run at once (each on its own
	// listener, so their log lines never mix); 0 means 2.
	Workers int
	// Timeout bounds each request's round trip; 0 means 20s (generous: a
	// paranoia-level-4 inspection of a large test body on a loaded
	// two-core machine can take seconds).
	Timeout time.Duration
}

// markerHeader is the header of the CRS harness's marker rule 999999.
const markerHeader = "X-CRS-Test"

// HarnessPolicy is the WAF policy of a run, as the CRS regression harness
// configures the engine: detection only, paranoia level 4, the tx limits of
// the CRS test setup (rule 900005), logging defaults for the response
// phases (3 and 4 come with every clusterwall policy; 5 is added here),
// response inspection, and the marker rule that writes X-CRS-Test into the log (and,
// removing every other rule for that request, keeps marker requests out of
// the results).
const HarnessPolicy = `
  - name: crs-regression
    mode: Detection
    paranoiaLevel: 4
    responseInspection: true
    customRules: |
      SecDefaultAction "phase:5,log,auditlog,pass"
      SecAction "id:900005,phase:1,nolog,pass,ctl:ruleEngine=DetectionOnly,ctl:ruleRemoveById=910000,setvar:tx.blocking_paranoia_level=4,setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,setvar:tx.total_arg_length=64000,setvar:tx.max_num_args=255,setvar:tx.max_file_size=64100,setvar:tx.combined_file_sizes=65535"
      SecRule REQUEST_HEADERS:X-CRS-Test "@rx ^.*$" "id:999999,phase:1,pass,t:none,log,msg:'X-CRS-Test %{MATCHED_VAR}',ctl:ruleRemoveById=1-999998"
`

// harnessConfig is the WAF configuration of a run: one listener per worker
// on loopback, one route to the backend.
func harnessConfig(workers int, backend string) string {
	var b strings.Builder
	b.WriteString("listeners:\n")
	for i := 0; i < workers; i++ {
		fmt.Fprintf(&b, "  - name: crs%d\n    address: 127.0.0.1:0\n    policy: crs-regression\n    timeouts: {readHeader: 10s, read: 15s}\n", i)
	}
	fmt.Fprintf(&b, "routes:\n  - name: albedo\n    backends: [%q]\n", backend)
	b.WriteString("policies:\n")
	b.WriteString(HarnessPolicy)
	return b.String()
}

// Run starts the backend and the WAF on loopback, runs the selected tests
// and reports. The error is for a run that could not happen, not for
// failing tests.
func Run(ctx context.Context, o Options) (*Summary, error) {
	if o.Tests == nil {
		o.Tests = crstests.FS
	}
	if o.ExpectedFailures == nil {
		o.ExpectedFailures = ExpectedFailures
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Timeout <= 0 {
		o.Timeout = 20 * time.Second
	}
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	files, err := load(o.Tests, o.Filter)
	if err != nil {
		return nil, err
	}
	var tests []*Test
	for _, t := range Tests(files) {
		if o.Filter == nil || o.Filter.MatchString(t.ID) {
			tests = append(tests, t)
		}
	}

	// The backend.
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	bsrv := &http.Server{Handler: Backend(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = bsrv.Serve(bl) }()
	defer bsrv.Close()

	// The WAF, with its event log in memory.
	cfg, err := waf.ParseConfig("crs-regression.yaml", []byte(harnessConfig(o.Workers, bl.Addr().String())))
	if err != nil {
		return nil, fmt.Errorf("harness config: %w", err)
	}
	logs := &eventLines{}
	srv, err := waf.NewServer(cfg, waf.Options{Events: logs})
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	start := time.Now()
	results := make([]Result, len(tests))
	var mu sync.Mutex
	next := 0
	var wg sync.WaitGroup
	for w := 0; w < o.Workers; w++ {
		wk := &worker{
			listener: fmt.Sprintf("crs%d", w),
			addr:     srv.Addr(fmt.Sprintf("crs%d", w)).String(),
			logs:     logs,
			timeout:  o.Timeout,
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(tests) {
					return
				}
				t := tests[i]
				var known *Expected
				if e, ok := o.ExpectedFailures[t.ID]; ok {
					known = &e
				}
				results[i] = wk.run(t, known)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	s := &Summary{Results: results, Elapsed: time.Since(start)}
	for _, r := range results {
		switch r.Outcome {
		case Passed:
			s.Passed++
		case Failed:
			s.Failed++
		default:
			s.Skipped++
		}
		switch {
		case r.Outcome == Failed:
			fmt.Fprintf(out, "FAIL %s: %s\n", r.ID, r.Reason)
		case r.UnexpectedPass:
			fmt.Fprintf(out, "PASS %s: %s\n", r.ID, r.Reason)
		case o.Verbose && r.Outcome == Skipped:
			fmt.Fprintf(out, "SKIP %s: %s\n", r.ID, r.Reason)
		case o.Verbose:
			fmt.Fprintf(out, "ok   %s (%s)\n", r.ID, r.Duration.Round(time.Millisecond))
		}
	}
	fmt.Fprintf(out, "CRS v%s regression tests against clusterwall's WAF: %d tests in %s\n", waf.CRSVersion, len(results), s.Elapsed.Round(time.Millisecond))
	fmt.Fprintln(out, s.Line())
	return s, nil
}

// worker runs tests one after another on its own listener.
type worker struct {
	listener string
	addr     string
	logs     *eventLines
	timeout  time.Duration
	// mark is the log position after the last end marker.
	mark    int
	started bool
}

func (w *worker) run(t *Test, known *Expected) Result {
	start := time.Now()
	res := w.runStages(t, known)
	res.ID = t.ID
	res.Duration = time.Since(start)
	return res
}

func (w *worker) runStages(t *Test, known *Expected) Result {
	for i := range t.Stages {
		st := &t.Stages[i]
		if u := st.Input.unsupported(); u != "" {
			return Result{Outcome: Skipped, Reason: "unsupported input: " + u}
		}
		obs := w.stage(st)
		reason := check(&st.Output, obs)
		if reason != "" && st.Output.RetryOnce != nil && *st.Output.RetryOnce {
			obs = w.stage(st)
			reason = check(&st.Output, obs)
		}
		if reason == "" {
			continue
		}
		if len(t.Stages) > 1 {
			reason = fmt.Sprintf("stage %d: %s", i+1, reason)
		}
		if known == nil {
			return Result{Outcome: Failed, Reason: reason}
		}
		// A known deviation: it must still deviate in the documented way.
		if known.Want != nil {
			if r2 := check(known.Want, obs); r2 != "" {
				return Result{Outcome: Failed, Reason: "on the expected-failure list, but the documented behaviour changed: " + r2 + " (CRS expectation: " + reason + ")"}
			}
		}
		return Result{Outcome: Skipped, Reason: "expected failure: " + known.Reason}
	}
	if known != nil {
		return Result{Outcome: Passed, UnexpectedPass: true,
			Reason: "on the expected-failure list but passed; remove it (" + known.Reason + ")"}
	}
	return Result{Outcome: Passed}
}

// observation is what one stage produced: the response status (or the
// error instead of a response) and the log lines of its request.
type observation struct {
	status int
	err    error
	events []*waf.Event
}

// stage runs one stage between two markers.
func (w *worker) stage(st *Stage) observation {
	if !w.started {
		pos, err := w.marker()
		if err != nil {
			return observation{err: fmt.Errorf("start marker: %w", err)}
		}
		w.mark, w.started = pos, true
	}
	raw, err := BuildRequest(&st.Input)
	if err != nil {
		return observation{err: fmt.Errorf("bad test input: %w", err)}
	}
	status, respErr := w.send(raw, st.Input.method())
	end, err := w.marker()
	if err != nil {
		w.started = false
		return observation{err: fmt.Errorf("end marker: %w", err)}
	}
	obs := observation{status: status, err: respErr, events: w.logs.between(w.listener, w.mark, end)}
	w.mark = end
	return obs
}

// check compares a response and the log lines of its request with what the
// test expects, in go-ftw's order: expected error, status, log.
func check(o *Output, obs observation) string {
	status, respErr, events := obs.status, obs.err, obs.events
	if respErr != nil {
		if o.ExpectError != nil && *o.ExpectError {
			return ""
		}
		return "request failed: " + respErr.Error()
	}
	if o.Status != 0 && status != o.Status {
		return fmt.Sprintf("status %d, expected %d", status, o.Status)
	}
	ids := map[int]bool{}
	var text strings.Builder
	for _, e := range events {
		for _, id := range e.RuleIDs {
			ids[id] = true
		}
		for _, d := range e.Details {
			text.WriteString(d)
			text.WriteByte('\n')
		}
	}
	var missing, unexpected []int
	for _, id := range o.Log.ExpectIDs {
		if !ids[id] {
			missing = append(missing, id)
		}
	}
	for _, id := range o.Log.NoExpectIDs {
		if ids[id] {
			unexpected = append(unexpected, id)
		}
	}
	var problems []string
	if len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("expected rule(s) %v not in the log", missing))
	}
	if len(unexpected) > 0 {
		problems = append(problems, fmt.Sprintf("rule(s) %v in the log, expected absent", unexpected))
	}
	if re := firstNonEmpty(o.Log.MatchRegex, o.LogContains); re != "" {
		if rx, err := regexp.Compile(re); err != nil {
			problems = append(problems, "bad match_regex: "+err.Error())
		} else if !rx.MatchString(text.String()) {
			problems = append(problems, fmt.Sprintf("log does not match %q", re))
		}
	}
	if re := firstNonEmpty(o.Log.NoMatchRegex, o.NoLogContains); re != "" {
		if rx, err := regexp.Compile(re); err != nil {
			problems = append(problems, "bad no_match_regex: "+err.Error())
		} else if rx.MatchString(text.String()) {
			problems = append(problems, fmt.Sprintf("log matches %q, expected not to", re))
		}
	}
	if o.Isolated && len(ids) != 1 {
		problems = append(problems, fmt.Sprintf("isolated test triggered %d rules", len(ids)))
	}
	if len(problems) > 0 {
		got := make([]int, 0, len(ids))
		for id := range ids {
			got = append(got, id)
		}
		slices.Sort(got)
		return strings.Join(problems, "; ") + fmt.Sprintf(" (status %d, logged %v)", status, got)
	}
	return ""
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// send writes raw to a new connection and reads the response status line
// and body (until the response ends or the connection closes).
func (w *worker) send(raw []byte, method string) (int, error) {
	conn, err := net.DialTimeout("tcp", w.addr, w.timeout)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(w.timeout))
	if _, err := conn.Write(raw); err != nil {
		return 0, err
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, &http.Request{Method: strings.ToUpper(method)})
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<20))
	res.Body.Close()
	return res.StatusCode, nil
}

// marker sends a marker request and waits for its log line; it returns the
// log position just after it.
func (w *worker) marker() (int, error) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	m := hex.EncodeToString(id[:])
	req := "GET /status/200 HTTP/1.1\r\nAccept: */*\r\nConnection: close\r\nHost: localhost\r\nUser-Agent: go-ftw test agent\r\n" + markerHeader + ": " + m + "\r\n\r\n"
	for attempt := 0; attempt < 3; attempt++ {
		if _, err := w.send([]byte(req), "GET"); err != nil {
			continue
		}
		if pos, ok := w.logs.waitMarker(w.listener, "X-CRS-Test "+m, 5*time.Second); ok {
			return pos, nil
		}
	}
	return 0, errors.New("marker line not found in the WAF log")
}

// eventLines is the WAF's event log kept in memory: the Events writer of
// the server under test. Lines are decoded as they arrive.
type eventLines struct {
	mu      sync.Mutex
	cond    *sync.Cond
	partial []byte
	events  []*waf.Event
}

func (l *eventLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cond == nil {
		l.cond = sync.NewCond(&l.mu)
	}
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		var e waf.Event
		if err := json.Unmarshal(l.partial[:i], &e); err == nil {
			l.events = append(l.events, &e)
		}
		l.partial = l.partial[i+1:]
	}
	l.cond.Broadcast()
	return len(p), nil
}

// waitMarker waits until the marker's line is logged on listener and
// returns the position after it.
func (l *eventLines) waitMarker(listener, msg string, timeout time.Duration) (int, bool) {
	deadline := time.Now().Add(timeout)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cond == nil {
		l.cond = sync.NewCond(&l.mu)
	}
	// Wake the waiter at the deadline.
	t := time.AfterFunc(timeout, func() {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer t.Stop()
	for {
		for i := len(l.events) - 1; i >= 0; i-- {
			e := l.events[i]
			if e.Listener == listener && slices.Contains(e.Messages, msg) {
				return i + 1, true
			}
		}
		if time.Now().After(deadline) {
			return 0, false
		}
		l.cond.Wait()
	}
}

// between returns the events of listener logged in [from, to), leaving out
// marker lines.
func (l *eventLines) between(listener string, from, to int) []*waf.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*waf.Event
	for i := from; i < to-1 && i < len(l.events); i++ {
		e := l.events[i]
		if e.Listener != listener {
			continue
		}
		out = append(out, e)
	}
	return out
}

// Package demo runs the seed's scenario end to end: it brings up the lab
// (internal/lab) with the firewall daemon and the seed's policy, sends real
// flows with real clients (curl with the lab CA, dig, `clusterwall probe`,
// an NTP client, ping) from the cluster and from the internet, and prints
// one row per flow — expected and observed outcome, and the rule that
// decided it, read from the daemon's decision log — then tears the lab
// down. It is a check, not a slideshow: Run reports every row whose
// observed outcome (or deciding rule) differs from the expected one.
//
// `clusterwall lab demo` (and `make demo`) call Run; docs/lab.md
// describes it.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// Config says how to run the demo.
type Config struct {
	// Name is the lab's name (default lab.DefaultName, "cw").
	Name string
	// Policy is the policy file the daemon enforces; the checks are the
	// seed's (SeedChecks), so this is examples/aks-egress.yaml.
	Policy string
	// Exe is the clusterwall binary: the lab's servers and daemon, and the
	// probe client (default: this executable).
	Exe string
	// Reuse runs the demo in a lab that is already up (restarting its
	// daemon with Policy) and leaves the lab up afterwards. Without it, a
	// lab that exists is an error: the demo never removes a lab it did not
	// make.
	Reuse bool
	// Keep leaves the lab up after the demo.
	Keep bool
	// Timeout is how long a client waits before it calls a flow denied
	// (default 1 s; denied flows are dropped, so each costs this long).
	Timeout time.Duration
	// Only, when set, runs only the checks whose flow matches it.
	Only *regexp.Regexp
	// Checks replaces SeedChecks (tests).
	Checks []Check
	// NoHA skips the high-availability section (ha.go): a second lab with
	// two firewalls in which fw crashes and comes back.
	NoHA bool
	// Out receives the table (default os.Stdout).
	Out io.Writer
	// Log receives the lab's progress messages (default: discarded).
	Log *slog.Logger
}

// Status is a row's verdict.
type Status uint8

const (
	_ Status = iota
	Pass
	Fail
	Pending
)

func (s Status) String() string {
	switch s {
	case Pass:
		return "PASS"
	case Fail:
		return "FAIL"
	case Pending:
		return "PENDING"
	}
	return "?"
}

// Result is one row of the table.
type Result struct {
	Check
	Observed Outcome
	Detail   string
	Decision *telemetry.Record // the decision log line for the flow, if any
	Status   Status
	Why      string // for Fail: what differed
	Took     time.Duration
}

// Report is the demo's outcome.
type Report struct {
	Results []Result
	Took    time.Duration
}

// Count returns the number of rows with status s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, x := range r.Results {
		if x.Status == s {
			n++
		}
	}
	return n
}

// ErrChecksFailed is returned (wrapped) when any row failed.
var ErrChecksFailed = errors.New("demo: observed outcomes differ from the expected ones")

// Run brings the lab up, runs the checks, prints the table and tears the
// lab down (also when a check cannot run or ctx is cancelled, e.g. on
// Ctrl-C). It returns the report and ErrChecksFailed when a row failed.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	start := time.Now()
	if cfg.Name == "" {
		cfg.Name = lab.DefaultName
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	seed := cfg.Checks == nil
	if seed {
		cfg.Checks = SeedChecks()
	}
	if cfg.Exe == "" {
		if cfg.Exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if err := preflight(cfg); err != nil {
		return nil, err
	}
	checks := cfg.Checks
	// The HA section belongs to the seed's scenario (tests that replace
	// the checks do not get it).
	haOn := seed && !cfg.NoHA && (cfg.Only == nil || cfg.Only.MatchString(sectionHA))
	if cfg.Only != nil {
		checks = nil
		for _, c := range cfg.Checks {
			if cfg.Only.MatchString(c.Flow) {
				checks = append(checks, c)
			}
		}
		if len(checks) == 0 && !haOn {
			return nil, fmt.Errorf("demo: no check matches %q", cfg.Only)
		}
	}

	if lab.Exists(cfg.Name) && !cfg.Reuse {
		return nil, fmt.Errorf("demo: lab %s is already up (%s); the demo does not touch a lab it did not make: "+
			"remove it with `clusterwall lab down --name %s`, run the demo in it with --reuse (its daemon is restarted "+
			"with the demo's policy and the lab stays up), or use another lab with --name",
			cfg.Name, lab.StateDir(cfg.Name), cfg.Name)
	}
	out := cfg.Out
	fmt.Fprintf(out, "clusterwall demo: lab %s, policy %s\n", cfg.Name, cfg.Policy)

	if !cfg.Reuse && !cfg.Keep {
		defer func() {
			t := time.Now()
			if derr := lab.Remove(cfg.Name); derr != nil {
				err = errors.Join(err, fmt.Errorf("demo: lab down: %w", derr))
				return
			}
			fmt.Fprintf(out, "lab %s down in %s\n", cfg.Name, time.Since(t).Round(time.Millisecond))
		}()
	}
	upStart := time.Now()
	l, err := lab.Up(ctx, lab.Config{Name: cfg.Name, Exe: cfg.Exe, Log: cfg.Log,
		Daemon: &lab.DaemonOptions{Policy: cfg.Policy, WAF: true}})
	if err != nil {
		return nil, err
	}
	status := daemonStatus(ctx, l)
	fmt.Fprintf(out, "lab %s up in %s; daemon in fw: %s\n\n", cfg.Name, time.Since(upStart).Round(time.Millisecond), status)

	e := &env{lab: l, exe: cfg.Exe, timeout: cfg.Timeout}
	dl := &decisionLog{path: l.DecisionLog()}
	rep = &Report{}
	tw := newTable(out, checks)
	section := ""
	for _, c := range checks {
		if c.Section != section {
			section = c.Section
			tw.section(section)
		}
		r, err := runCheck(ctx, e, dl, c)
		if err != nil {
			return rep, fmt.Errorf("demo: %s: %w", c.Flow, err)
		}
		rep.Results = append(rep.Results, r)
		tw.row(r)
	}
	if haOn {
		hr, err := runHA(ctx, cfg, out) // ha.go
		rep.Results = append(rep.Results, hr...)
		if err != nil {
			return rep, fmt.Errorf("demo: %s: %w", sectionHA, err)
		}
	}
	rep.Took = time.Since(start)
	fmt.Fprintf(out, "\n%d flows: %d PASS, %d FAIL, %d PENDING (%s) in %s\n", len(rep.Results),
		rep.Count(Pass), rep.Count(Fail), rep.Count(Pending), pendingNote(rep), rep.Took.Round(100*time.Millisecond))
	if fails := rep.Count(Fail); fails > 0 {
		fmt.Fprintln(out, "\nFAILED:")
		for _, r := range rep.Results {
			if r.Status == Fail {
				fmt.Fprintf(out, "  %s: %s\n", r.Flow, r.Why)
			}
		}
		fmt.Fprintf(out, "logs: %s (daemon.log, %s)\n", l.Dir(), lab.DecisionLogFile)
		return rep, fmt.Errorf("%w: %d of %d", ErrChecksFailed, fails, len(rep.Results))
	}
	return rep, nil
}

func pendingNote(rep *Report) string {
	var whys []string
	for _, r := range rep.Results {
		if r.Status == Pending && !containsString(whys, r.Pending) {
			whys = append(whys, r.Pending)
		}
	}
	if len(whys) == 0 {
		return "none pending"
	}
	return "pending: " + strings.Join(whys, ", ")
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// preflight checks what the demo needs before it makes anything.
func preflight(cfg Config) error {
	if os.Geteuid() != 0 {
		return errors.New("demo: needs root (the lab uses network namespaces)")
	}
	var missing []string
	for _, tool := range []string{"ip", "curl", "dig", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("demo: missing %s (scripts/deps.sh installs them: iproute2 curl dnsutils iputils-ping)", strings.Join(missing, ", "))
	}
	if cfg.Policy == "" {
		return errors.New("demo: no policy file")
	}
	if _, err := os.Stat(cfg.Policy); err != nil {
		return fmt.Errorf("demo: policy: %w", err)
	}
	if _, err := os.Stat(cfg.Exe); err != nil {
		return fmt.Errorf("demo: clusterwall binary: %w", err)
	}
	return nil
}

// daemonStatus summarizes GET /v1/status of the lab's daemon.
func daemonStatus(ctx context.Context, l *lab.Lab) string {
	code, body, err := l.Admin(ctx, http.MethodGet, "/v1/status")
	if err != nil || code != http.StatusOK {
		return fmt.Sprintf("status unavailable (%v %d)", err, code)
	}
	var st struct {
		Generation uint64 `json:"generation"`
		PolicyName string `json:"policyName"`
		Rules      int    `json:"rules"`
		LastReload string `json:"lastReload"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return "status unreadable: " + err.Error()
	}
	return fmt.Sprintf("policy %s applied (generation %d, %d rules), decision log %s",
		st.PolicyName, st.Generation, st.Rules, filepath.Join(l.Dir(), lab.DecisionLogFile))
}

// logWait bounds how long a row waits for its decision log line. The
// kernel hands NFLOG messages to the daemon in batches, flushed at the
// latest after nfnetlink_log's default timeout of 1 s.
const logWait = 1500 * time.Millisecond

// runCheck runs one check and judges it.
func runCheck(ctx context.Context, e *env, dl *decisionLog, c Check) (Result, error) {
	start := time.Now()
	dl.mark()
	obs, err := c.run(ctx, e)
	if err != nil {
		return Result{}, err
	}
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	r := Result{Check: c, Observed: obs.outcome, Detail: obs.detail}
	if !c.log.zero() {
		r.Decision = dl.find(ctx, c.log, logWait)
	}
	r.Took = time.Since(start)
	var why []string
	if obs.bad {
		why = append(why, "wrong answer: "+obs.detail)
	} else if obs.outcome != c.Expect {
		why = append(why, fmt.Sprintf("expected %s, observed %s (%s)", c.Expect, obs.outcome, obs.detail))
	}
	if c.Rule != "" {
		switch got := ruleName(r.Decision); {
		case r.Decision == nil:
			why = append(why, "no decision log line for the flow (want "+c.Rule+")")
		case got != c.Rule:
			why = append(why, fmt.Sprintf("decided by %s, expected %s", got, c.Rule))
		}
	}
	if c.Reason != "" && r.Decision != nil && !strings.Contains(r.Decision.ActionReason, c.Reason) {
		why = append(why, fmt.Sprintf("log reason %q, expected it to name %q", r.Decision.ActionReason, c.Reason))
	}
	switch {
	case c.Pending != "":
		r.Status = Pending
	case len(why) > 0:
		r.Status = Fail
		r.Why = strings.Join(why, "; ")
	default:
		r.Status = Pass
	}
	return r, nil
}

// table prints rows as they complete, in fixed columns.
type table struct {
	w     io.Writer
	flowW int
}

func newTable(w io.Writer, checks []Check) *table {
	t := &table{w: w, flowW: len("FLOW")}
	for _, c := range checks {
		t.flowW = max(t.flowW, runeLen(c.Flow))
	}
	fmt.Fprintf(w, "%-8s %s  %-6s  %-7s  %-46s  %s\n", "RESULT", pad("FLOW", t.flowW), "EXPECT", "OBSERVED", "DECIDING RULE (decision log)", "DETAIL")
	return t
}

func (t *table) section(s string) { fmt.Fprintf(t.w, "\n%s\n", s) }

func (t *table) row(r Result) {
	var rule string
	switch {
	case !r.log.zero():
		rule = describe(r.Decision)
	case r.Expect == Allowed:
		rule = "(to the firewall itself: no decision line)"
	default:
		rule = "(no decision line checked)"
	}
	status := r.Status.String()
	detail := r.Detail
	if r.Status == Pending {
		detail += " [needs " + r.Pending + "]"
	}
	fmt.Fprintf(t.w, "%-8s %s  %-6s  %-8s  %-46s  %s\n", status, pad(r.Flow, t.flowW), r.Expect, r.Observed, rule, detail)
}

func runeLen(s string) int { return len([]rune(s)) }

func pad(s string, w int) string {
	if n := runeLen(s); n < w {
		return s + strings.Repeat(" ", w-n)
	}
	return s
}

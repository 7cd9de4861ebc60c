package daemon

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/clusterwall/clusterwall/internal/atomicfile"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/recovery"
)

// reasonFileChanged is the reload reason of the policy file watcher.
const reasonFileChanged = "policy file changed"

// AdminHandler serves the admin API (docs/api.md, docs/openapi.yaml):
//
//	GET  /healthz       open; 200 once a policy is applied (the daemon enforces one)
//	GET  /readyz        open; 200 when policy, data plane and listeners are all up
//	GET  /metrics       Prometheus metrics
//	GET  /v1/status     the daemon's Status
//	GET  /v1/policy     the running policy: YAML as applied, or ?format=json
//	GET  /v1/rules      every rule with its hit count (kernel counters)
//	POST /v1/validate   validate the policy YAML in the body; 200, or 422 with the errors
//	POST /v1/apply      validate, apply and persist the policy YAML in the body; 200 or 422
//	POST /v1/reload     re-read the policy file; 200, or 422 with the errors
//	GET  /v1/waf/kubernetes, PUT /v1/waf/kubernetes   the Kubernetes controller's WAF routes (wafkubernetes.go)
//
// With admin.tokenFile every /v1/* and /metrics request needs a bearer
// token; /healthz and /readyz stay open. Applies and reloads are audited
// in the daemon's log (who, what, result).
func (d *Daemon) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if p, _ := d.Current(); p == nil {
			http.Error(w, "no policy applied", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if problems := d.notReady(); len(problems) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "problems": problems})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ready": true, "problems": []string{}})
	})
	mux.Handle("GET /metrics", d.metrics.handler())
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.statusReport())
	})
	mux.HandleFunc("GET /v1/policy", d.servePolicy)
	mux.HandleFunc("GET /v1/rules", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.RuleHits())
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := d.reloadAll("admin API"); err != nil {
			d.audit(r, "reload", err)
			writeErrors(w, err)
			return
		}
		d.audit(r, "reload", nil)
		writeJSON(w, http.StatusOK, d.statusReport())
	})
	mux.HandleFunc("POST /v1/validate", func(w http.ResponseWriter, r *http.Request) {
		data, done, ok := d.readBody(w, r) // admin_limits.go
		if !ok {
			return
		}
		defer done()
		if _, err := d.loadPolicy(data); err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"errors": apiErrors(err), "policyFile": d.cfg.Policy})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"valid": true})
	})
	mux.HandleFunc("POST /v1/apply", d.serveApply)
	mux.HandleFunc("GET /v1/waf/kubernetes", d.serveWAFKubernetes) // wafkubernetes.go
	mux.HandleFunc("PUT /v1/waf/kubernetes", d.serveWAFKubernetes)
	d.registerUI(mux)
	tokens, err := loadTokens(d.cfg.Admin.TokenFile)
	if d.cfg.Admin.TokenFile != "" && err != nil {
		// LoadConfig checked the file; if it broke since, refuse everything
		// rather than serve without authentication.
		d.log.Error("admin API: token file unreadable; every authenticated request is refused", "err", err)
		tokens = []token{{name: "unusable"}}
	}
	auth := authenticate(tokens, mux)
	return recovery.HTTP(d.log, recovery.Admin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if needsAuth(r.URL.Path) {
			auth.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}))
}

// needsAuth: the API and the metrics; the health probes and the dashboard's
// static assets stay open (the dashboard's data comes from /v1/*).
func needsAuth(path string) bool {
	return strings.HasPrefix(path, "/v1/") || path == "/v1" || path == "/metrics"
}

// StatusReport is GET /v1/status: Status plus readiness and the health of
// every component.
type StatusReport struct {
	Status
	Ready      bool              `json:"ready"`
	Problems   []string          `json:"problems"`
	Components []ComponentHealth `json:"components"`
}

func (d *Daemon) statusReport() StatusReport {
	p := d.notReady()
	if p == nil {
		p = []string{}
	}
	return StatusReport{Status: d.Status(), Ready: len(p) == 0, Problems: p, Components: d.components()}
}

// notReady lists why the daemon is not ready: no policy applied (so the
// data plane is not programmed), a configured DNS or L7 proxy listener
// not up, or a component that stopped serving after it started.
func (d *Daemon) notReady() []string {
	var out []string
	if p, _ := d.Current(); p == nil {
		out = append(out, "no policy applied: the data plane is not programmed")
	}
	if d.cfg.DNS.Listen != "" && !d.dnsUp.Load() {
		out = append(out, "DNS proxy not listening on "+d.cfg.DNS.Listen)
	}
	if d.cfg.Proxy.Listen != "" && d.proxyUp.Load() == nil {
		out = append(out, "L7 proxy not listening on "+d.cfg.Proxy.Listen)
	}
	d.failedMu.Lock()
	for _, c := range slices.Sorted(maps.Keys(d.failed)) {
		out = append(out, c+" stopped serving: "+d.failed[c])
	}
	d.failedMu.Unlock()
	if p := d.antiSpoofingProblem(); p != "" { // antispoof.go
		out = append(out, p)
	}
	return out
}

// appliedSource is the text of the running policy (as the file or the
// request body had it, comments included).
type appliedSource struct {
	sum  [sha256.Size]byte
	data []byte
	gen  uint64
}

// noteApplied records data, whose sum is sum, as the running policy's
// text (ApplyBytes).
func (d *Daemon) noteApplied(data []byte, sum [sha256.Size]byte) {
	var gen uint64
	if st := d.cur.Load(); st != nil {
		gen = st.gen
	}
	d.applied.Store(&appliedSource{sum: sum, data: data, gen: gen})
}

// sumLater returns data's SHA-256 sum (noteApplied) as it is made in the
// background: ApplyBytes starts it before the kernel stage, whose first
// transaction leaves the second processor idle (a 100,000-rule policy's
// 19 MB text is some 12 ms of hashing, which was on the apply's path).
func sumLater(data []byte) func() [sha256.Size]byte {
	c := make(chan [sha256.Size]byte, 1)
	go func() { c <- sha256.Sum256(data) }()
	return sync.OnceValue(func() [sha256.Size]byte { return <-c })
}

// isApplied reports whether data is the running policy's text.
func (d *Daemon) isApplied(data []byte) bool {
	a := d.applied.Load()
	return a != nil && a.sum == sha256.Sum256(data)
}

// servePolicy answers GET /v1/policy: the running policy as applied (YAML,
// comments kept), or as JSON with ?format=json or Accept: application/json.
func (d *Daemon) servePolicy(w http.ResponseWriter, r *http.Request) {
	a := d.applied.Load()
	if a == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"errors": []APIError{{Message: "no policy applied"}}})
		return
	}
	w.Header().Set("X-Clusterwall-Generation", strconv.FormatUint(a.gen, 10))
	format := r.URL.Query().Get("format")
	if format == "" && strings.Contains(r.Header.Get("Accept"), "application/json") {
		format = "json"
	}
	switch format {
	case "", "yaml":
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(a.data)
	case "json":
		var v any
		if err := yaml.Unmarshal(a.data, &v); err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]any{"errors": []APIError{{Message: err.Error()}}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"generation": a.gen, "policy": v})
	default:
		writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []APIError{{Field: "format", Message: "format must be yaml or json, not " + strconv.Quote(format)}}})
	}
}

// applyMu serialises POST /v1/apply (temp file, apply, rename).
var applyMu sync.Mutex

// serveApply answers POST /v1/apply: the body is a policy (YAML). It is
// validated, compiled and applied exactly as a reload of the policy file
// would (ApplyBytes), then persisted to the policy file atomically (write
// a temporary file in the same directory, then rename over the policy
// file), so that a restart keeps it. The file watcher's event for the
// rename finds the bytes already running and does nothing.
func (d *Daemon) serveApply(w http.ResponseWriter, r *http.Request) {
	data, done, ok := d.readBody(w, r) // admin_limits.go
	if !ok {
		return
	}
	defer done()
	applyMu.Lock()
	defer applyMu.Unlock()
	// Write the new text first: if the disk is full or read-only, nothing
	// is applied.
	pending, err := atomicfile.Prepare(d.cfg.Policy, data)
	if err != nil {
		err = fmt.Errorf("persisting the policy: %w (nothing applied)", err)
		d.audit(r, "apply", err)
		writeJSON(w, http.StatusInternalServerError, map[string]any{"errors": apiErrors(err)})
		return
	}
	if err := d.ApplyBytes("admin API apply", data); err != nil {
		pending.Discard()
		d.audit(r, "apply", err)
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"errors": apiErrors(err), "policyFile": d.cfg.Policy})
		return
	}
	st := d.Status()
	gen := st.Generation
	if err := pending.Commit(); err != nil {
		err = fmt.Errorf("applied as generation %d but not persisted to %s: %w (a restart would load the old file)", gen, d.cfg.Policy, err)
		d.audit(r, "apply", err)
		writeJSON(w, http.StatusInternalServerError, map[string]any{"generation": gen, "errors": apiErrors(err)})
		return
	}
	d.audit(r, "apply", nil)
	writeJSON(w, http.StatusOK, map[string]any{"generation": gen, "apply": st.LastApply})
}

// audit logs one change made through the admin API: who (token name,
// client certificate CN, remote address), what, and the result.
func (d *Daemon) audit(r *http.Request, action string, err error) {
	attrs := []any{"audit", true, "who", who(r), "action", action}
	if err != nil {
		attrs = append(attrs, "result", "rejected", "err", err.Error())
		d.log.Warn("admin API change", attrs...)
		return
	}
	st := d.Status()
	attrs = append(attrs, "result", "ok", "generation", st.Generation, "policy", st.PolicyName)
	d.log.Info("admin API change", attrs...)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// APIError is one error of a 4xx/5xx answer: where in the policy (file,
// line, column — 0 when unknown — and field path) and what. Text is the
// whole error as one line ("FILE:LINE:COL: message"), the string the API
// returned before errors became objects.
type APIError struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
	Text    string `json:"text"`
}

// apiErrors turns an error (a policy.ErrorList, a *policy.Error, a join of
// them, or anything else) into API errors.
func apiErrors(err error) []APIError {
	var out []APIError
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var list policy.ErrorList
		var one *policy.Error
		switch {
		case errors.As(err, &list):
			for _, e := range list {
				out = append(out, apiError(e))
			}
		case errors.As(err, &one):
			out = append(out, apiError(one))
		default:
			out = append(out, APIError{Message: err.Error(), Text: err.Error()})
		}
	}
	walk(err)
	return out
}

func apiError(e *policy.Error) APIError {
	return APIError{File: e.Pos.File, Line: e.Pos.Line, Column: e.Pos.Column, Field: e.Path, Message: e.Msg, Text: e.Error()}
}

func writeErrors(w http.ResponseWriter, err error) {
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"errors": apiErrors(err)})
}

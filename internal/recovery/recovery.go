// Package recovery keeps a panic in one request from taking the firewall
// down: the DNS proxy's queries, the L7 proxy's connections, the admin
// API's and the WAF's requests, the kernel log reader and the decision log
// writer each recover a panic of the one thing they were handling, log it
// with its stack and count it (clusterwall_panics_recovered_total{where}),
// and go on serving everyone else.
//
// Except where state shared beyond that one request may be corrupt: code
// that changes such state (the DNS proxy's cache and learned-address
// table, the L7 proxy's connection accounting, a policy half programmed
// into the kernel) defers Critical, which turns a panic into a Corrupt
// one. Report re-raises it on a goroutine of its own so that the process
// stops even under net/http's own recovery — failing closed: the kernel's
// rules stay in force and keep denying, and a restart starts clean.
package recovery

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync/atomic"
)

// Where a panic was recovered (the metric's label).
const (
	DNS         = "dns"          // a DNS query
	Proxy       = "proxy"        // an L7 proxy connection
	Admin       = "admin"        // an admin API request
	WAF         = "waf"          // a WAF request
	NFLOG       = "nflog"        // a batch of kernel log messages
	DecisionLog = "decision_log" // a decision log line
	ThreatIntel = "threat_intel" // a threat-intelligence feed refresh
	Reload      = "reload"       // a policy apply, before the kernel was touched
)

// Wheres lists every label, for the metric's series.
var Wheres = []string{DNS, Proxy, Admin, WAF, NFLOG, DecisionLog, ThreatIntel, Reload}

var counts [8]atomic.Uint64

func index(where string) int {
	for i, w := range Wheres {
		if w == where {
			return i
		}
	}
	return -1
}

// Count returns the panics recovered at where since the process started.
func Count(where string) uint64 {
	if i := index(where); i >= 0 {
		return counts[i].Load()
	}
	return 0
}

// Corrupt is a panic raised while changing state shared beyond one
// request: the process must not go on with it.
type Corrupt struct {
	What  string // the state, e.g. "dns cache"
	Value any    // the original panic value
	Stack []byte // where it happened
}

func (c Corrupt) String() string {
	return fmt.Sprintf("panic while changing %s (state may be corrupt): %v", c.What, c.Value)
}

// Critical is deferred by code that changes shared state:
//
//	defer recovery.Critical("dns cache")
//
// It turns a panic into a Corrupt one (and lets any other unwind on).
func Critical(what string) {
	if v := recover(); v != nil {
		if c, ok := v.(Corrupt); ok {
			panic(c)
		}
		panic(Corrupt{What: what, Value: v, Stack: debug.Stack()})
	}
}

// Report handles a recovered panic value v of one request at where: it
// logs it with its stack and counts it; a Corrupt value is logged and
// re-raised on a new goroutine, which stops the process (fail closed).
// http.ErrAbortHandler is re-raised as it is (net/http's way to abort a
// response). attrs describe the request (client, name).
func Report(log *slog.Logger, where string, v any, attrs ...any) {
	if v == http.ErrAbortHandler {
		panic(v)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c, ok := v.(Corrupt); ok {
		log.Error("panic while changing shared state: stopping the daemon so that a restart starts clean; "+
			"the kernel rules stay in force (fail closed)", append(attrs, "where", where, "state", c.What,
			"panic", fmt.Sprint(c.Value), "stack", string(c.Stack))...)
		Fatal(c)
		return
	}
	if i := index(where); i >= 0 {
		counts[i].Add(1)
	}
	log.Error("panic recovered; the request was dropped and serving goes on", append(attrs, "where", where,
		"panic", fmt.Sprint(v), "stack", string(debug.Stack()))...)
}

// Fatal stops the process with v: a panic on a goroutine of its own, so
// that no recover (net/http's included) can catch it. Tests replace it.
var Fatal = func(v any) {
	go panic(v)
	// Never return: the panicking goroutine ends the process. (A channel
	// closed by a deferred call would let the caller run on, and exit
	// first, while the panic unwinds.)
	select {}
}

// HTTP wraps h so that a panic in one request is reported (Report) and
// answered 500 when nothing was written yet; net/http would otherwise log
// it to standard error, uncounted, and drop the connection.
func HTTP(log *slog.Logger, where string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &wroteWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				Report(log, where, v, "method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr)
				if !rw.wrote {
					http.Error(w, "internal error (logged)", http.StatusInternalServerError)
				}
			}
		}()
		h.ServeHTTP(rw, r)
	})
}

// wroteWriter remembers whether the handler started its answer.
type wroteWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *wroteWriter) WriteHeader(code int) { w.wrote = true; w.ResponseWriter.WriteHeader(code) }
func (w *wroteWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes,
// deadlines).
func (w *wroteWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

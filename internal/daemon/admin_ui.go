package daemon

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/clusterwall/clusterwall/internal/dashboard"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// uiState is the dashboard's part of the daemon: the hub of recent
// decisions, made on first use and fed by the decision log's observer.
type uiState struct {
	once sync.Once
	hub  *telemetry.Hub
}

// Hub returns the daemon's hub of recent decisions (recent records, time
// series, tops, live subscribers). It sees every decision the decision log
// sees, before rate limiting.
func (d *Daemon) Hub() *telemetry.Hub {
	d.ui.once.Do(func() {
		d.ui.hub = telemetry.NewHub(telemetry.HubOptions{})
		if d.dlog != nil {
			d.dlog.Observe(d.ui.hub.Observe)
		}
	})
	return d.ui.hub
}

// registerUI adds the dashboard and the endpoints it reads:
//
//	GET /                       redirect to /ui/
//	GET /ui/                    the dashboard (embedded assets)
//	GET /v1/decisions           recent decisions, newest first: ?limit=N&action=&category=&q=
//	GET /v1/decisions/stream    live decisions as Server-Sent Events (same filters)
//	GET /v1/overview            allowed/denied per 10 s for the last hour, top denied destinations, top talkers
//	GET /v1/dns/upstreams       the DNS proxy's upstreams and their health
func (d *Daemon) registerUI(mux *http.ServeMux) {
	hub := d.Hub()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	mux.Handle("GET /ui/", http.StripPrefix("/ui", dashboard.Handler()))
	mux.HandleFunc("GET /v1/decisions", func(w http.ResponseWriter, r *http.Request) {
		f, limit, err := decisionFilter(r)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []string{err.Error()}})
			return
		}
		recs := hub.Recent(limit, f)
		writeJSON(w, http.StatusOK, map[string]any{"decisions": recs, "count": len(recs)})
	})
	mux.HandleFunc("GET /v1/decisions/stream", func(w http.ResponseWriter, r *http.Request) {
		f, _, err := decisionFilter(r)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []string{err.Error()}})
			return
		}
		streamDecisions(w, r, hub, f)
	})
	mux.HandleFunc("GET /v1/overview", func(w http.ResponseWriter, r *http.Request) {
		n := 10
		if s := r.URL.Query().Get("top"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 1 || v > 100 {
				writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []string{"top: want a number from 1 to 100"}})
				return
			}
			n = v
		}
		writeJSON(w, http.StatusOK, hub.Overview(n))
	})
	mux.HandleFunc("GET /v1/dns/upstreams", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.dnsUpstreams())
	})
}

// DNSUpstream is one upstream resolver in GET /v1/dns/upstreams.
type DNSUpstream struct {
	Addr                string `json:"addr"`
	Healthy             bool   `json:"healthy"`
	ConsecutiveFailures int    `json:"consecutiveFailures"`
	Queries             uint64 `json:"queries"`
	Failures            uint64 `json:"failures"`
}

// DNSUpstreams is GET /v1/dns/upstreams.
type DNSUpstreams struct {
	Enabled   bool          `json:"enabled"` // the DNS proxy runs
	Listen    string        `json:"listen,omitempty"`
	Upstreams []DNSUpstream `json:"upstreams"`
}

func (d *Daemon) dnsUpstreams() DNSUpstreams {
	out := DNSUpstreams{Upstreams: []DNSUpstream{}}
	// startDNS sets d.dns before dnsUp: the atomic orders the read.
	if !d.dnsUp.Load() {
		return out
	}
	px := d.dns
	if px == nil {
		return out
	}
	out.Enabled, out.Listen = true, d.cfg.DNS.Listen
	for _, u := range px.Upstreams() {
		out.Upstreams = append(out.Upstreams, DNSUpstream{Addr: u.Addr.String(), Healthy: u.Healthy,
			ConsecutiveFailures: u.Fails, Queries: u.Queries, Failures: u.Failures})
	}
	return out
}

// decisionFilter reads ?limit=&action=&category=&q=.
func decisionFilter(r *http.Request) (telemetry.Filter, int, error) {
	q := r.URL.Query()
	f := telemetry.Filter{Action: q.Get("action"), Category: q.Get("category"), Q: q.Get("q")}
	limit := 100
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 10000 {
			return f, 0, fmt.Errorf("limit: want a number from 1 to 10000, got %q", s)
		}
		limit = v
	}
	return f, limit, nil
}

// streamDecisions writes matching decisions as Server-Sent Events until
// the client goes away: one "data: {record}" event per decision, an
// "event: dropped" event when this stream fell behind and lost records,
// and a comment line every 15 s to keep proxies from closing it.
func streamDecisions(w http.ResponseWriter, r *http.Request, hub *telemetry.Hub, f telemetry.Filter) {
	rc := http.NewResponseController(w)
	f.Prepare()
	sub := hub.Subscribe(1024)
	defer sub.Close()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The admin server may have a write timeout; a stream has none.
	rc.SetWriteDeadline(time.Time{})
	if _, err := fmt.Fprint(w, ": clusterwall decisions\nretry: 2000\n\n"); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	var reported uint64
	var buf []byte
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
		case rec := <-sub.C():
			buf = buf[:0]
			for i := 0; ; i++ {
				if f.Match(&rec) {
					data, err := json.Marshal(&rec)
					if err == nil {
						buf = append(buf, "data: "...)
						buf = append(buf, data...)
						buf = append(buf, "\n\n"...)
					}
				}
				// Drain what is queued (up to a batch) before flushing once.
				if i < 256 {
					select {
					case rec = <-sub.C():
						continue
					default:
					}
				}
				break
			}
			if n := sub.Dropped(); n != reported {
				buf = fmt.Appendf(buf, "event: dropped\ndata: {\"dropped\":%d}\n\n", n)
				reported = n
			}
			if len(buf) == 0 {
				continue
			}
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}

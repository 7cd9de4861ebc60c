package daemon

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// AdminHandler serves the admin API (issue 6 extends it):
//
//	GET  /healthz       200 once a policy is applied
//	GET  /v1/status     the daemon's Status
//	POST /v1/reload     re-read the policy file; 200, or 422 with the errors
//	POST /v1/validate   validate the policy YAML in the body; 200, or 422 with the errors
func (d *Daemon) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if p, _ := d.Current(); p == nil {
			http.Error(w, "no policy applied", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.Status())
	})
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := d.Reload("admin API"); err != nil {
			writeErrors(w, err)
			return
		}
		writeJSON(w, http.StatusOK, d.Status())
	})
	mux.HandleFunc("POST /v1/validate", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<20))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"errors": []string{err.Error()}})
			return
		}
		if _, err := policy.Load("request", data, d.cfg.PolicyOptions()); err != nil {
			writeErrors(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"valid": true})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErrors(w http.ResponseWriter, err error) {
	var list policy.ErrorList
	msgs := []string{err.Error()}
	if errors.As(err, &list) {
		msgs = msgs[:0]
		for _, e := range list {
			msgs = append(msgs, e.Error())
		}
	}
	writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"errors": msgs})
}

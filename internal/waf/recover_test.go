package waf

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/clusterwall/clusterwall/internal/recovery"
)

// TestRequestPanicRecovered: a panic while serving one WAF request (here:
// a server without state) is answered 500 and counted, not net/http's
// silent connection drop; the listener's server goes on.
func TestRequestPanicRecovered(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	srv := s.httpServer(&Listener{Name: "x"})
	before := recovery.Count(recovery.WAF)
	for range 2 {
		rec := httptest.NewRecorder()
		srv.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Code != http.StatusInternalServerError {
			t.Errorf("answer %d, want 500", rec.Code)
		}
	}
	if got := recovery.Count(recovery.WAF) - before; got != 2 {
		t.Errorf("counted %d panics, want 2", got)
	}
}

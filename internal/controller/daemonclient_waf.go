package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/clusterwall/clusterwall/internal/waf"
)

// WAFInfo is a daemon's GET /v1/waf/kubernetes (docs/api.md): what the
// controller pushed last (its hash), the WAF's listeners and the keys of
// the WAF config file's own routes.
type WAFInfo struct {
	Generation int64                     `json:"generation"`
	Hash       string                    `json:"hash"`
	Listeners  []WAFListener             `json:"listeners"`
	FileRoutes map[string][]waf.RouteKey `json:"fileRoutes"`
}

// WAFListener is one of the daemon's WAF listeners.
type WAFListener struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	TLS     bool   `json:"tls"`
}

// ErrNoWAF is a daemon's 404 on /v1/waf/kubernetes: it runs no WAF.
type ErrNoWAF struct{ Daemon string }

func (e *ErrNoWAF) Error() string {
	return fmt.Sprintf("daemon %s runs no WAF (waf.config in its config)", e.Daemon)
}

// WAF asks the daemon for its WAF listeners and what runs there.
func (d *DaemonClient) WAF(ctx context.Context) (*WAFInfo, error) {
	code, data, err := d.do(ctx, http.MethodGet, "/v1/waf/kubernetes", nil)
	if err != nil {
		return nil, fmt.Errorf("daemon %s: %w", d.URL, err)
	}
	switch code {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, &ErrNoWAF{Daemon: d.URL}
	default:
		return nil, fmt.Errorf("daemon %s: GET /v1/waf/kubernetes: HTTP %d: %s", d.URL, code, strings.TrimSpace(string(data)))
	}
	var info WAFInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("daemon %s: bad WAF info: %v", d.URL, err)
	}
	return &info, nil
}

// PutWAF sends the WAF routes document; it returns the daemon's push
// generation, a *RejectedError for a 422, *ErrNoWAF for a daemon without
// a WAF, or another error.
func (d *DaemonClient) PutWAF(ctx context.Context, doc []byte) (int64, error) {
	gen, code, err := d.push(ctx, http.MethodPut, "/v1/waf/kubernetes", doc)
	if code == http.StatusNotFound {
		return 0, &ErrNoWAF{Daemon: d.URL}
	}
	return gen, err
}

package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/clusterwall/clusterwall/internal/atomicfile"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/waf"
)

// The Kubernetes controller's part of the WAF (docs/api.md, "WAF routes
// from Kubernetes"): the routes, WAF policies and certificates it derives
// from Ingress and Gateway API objects arrive as one document,
//
//	PUT /v1/waf/kubernetes   waf.Kubernetes (YAML or JSON) → 200 {generation, hash} | 422 {errors}
//	GET /v1/waf/kubernetes   what runs: hash, generation, counts, and the WAF's listeners
//
// which is merged with the WAF config file (waf.Config.WithKubernetes),
// validated as a whole and swapped in atomically (waf.Server.Reload), as a
// policy push is: requests in flight finish with the configuration they
// started with, and a document with any error is refused while the
// running configuration stays. It is then kept in waf.kubernetesState
// (written to a temporary file first, renamed after the swap), so that a
// restarted daemon serves the same routes before the controller pushes
// again.

// kubeState is the document the controller pushed last.
type kubeState struct {
	doc  *waf.Kubernetes
	hash string // SHA-256 of the document as received (hex)
	gen  uint64 // pushes applied since the daemon started
	at   time.Time
}

// WAFKubernetesStatus is the Kubernetes part of WAFStatus and the answer
// of GET /v1/waf/kubernetes.
type WAFKubernetesStatus struct {
	Generation   uint64    `json:"generation"`
	Hash         string    `json:"hash"`
	AppliedAt    time.Time `json:"appliedAt"`
	Routes       int       `json:"routes"`
	Policies     int       `json:"policies"`
	Certificates int       `json:"certificates"`
}

// WAFListener is one of the WAF's listeners, as the controller needs to
// know them to place routes: name, bound address, port and HTTPS or not.
type WAFListener struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	TLS     bool   `json:"tls"`
}

// WAFKubernetesInfo is the answer of GET /v1/waf/kubernetes: what the
// controller pushed last, the WAF's listeners, and the conflict keys of
// the file's own routes (the controller reports its routes that collide
// with them instead of sending them).
type WAFKubernetesInfo struct {
	*WAFKubernetesStatus
	Listeners  []WAFListener             `json:"listeners"`
	FileRoutes map[string][]waf.RouteKey `json:"fileRoutes"`
}

// loadKubernetesState reads the document kept at path and merges it into
// static. No file: nil, nil.
func loadKubernetesState(path string, static *waf.Config) (*kubeState, *waf.Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	doc, err := waf.ParseKubernetes(path, data)
	if err != nil {
		return nil, nil, err
	}
	merged, err := static.WithKubernetes(doc)
	if err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(data)
	st, _ := os.Stat(path)
	ks := &kubeState{doc: doc, hash: hex.EncodeToString(sum[:])}
	if st != nil {
		ks.at = st.ModTime()
	}
	return ks, merged, nil
}

// ApplyWAFKubernetes merges the controller's document data into the WAF
// and keeps it in the state file. It returns the push's generation and
// the document's hash.
func (d *Daemon) ApplyWAFKubernetes(data []byte) (uint64, string, error) {
	w := d.wafRunning()
	if w == nil {
		return 0, "", errNoWAF
	}
	start := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	doc, err := waf.ParseKubernetes("kubernetes", data)
	if err != nil {
		return 0, "", err
	}
	merged, err := w.static.WithKubernetes(doc)
	if err != nil {
		return 0, "", err
	}
	// It holds private keys: 0600.
	pend, err := atomicfile.PrepareMode(w.stateFile, data, 0o600)
	if err != nil {
		return 0, "", fmt.Errorf("keeping the routes in %s: %w (nothing applied)", w.stateFile, err)
	}
	validated := time.Since(start)
	if err := w.srv.Reload(merged); err != nil {
		pend.Discard()
		return 0, "", err
	}
	swapped := time.Since(start)
	sum := sha256.Sum256(data)
	prev := uint64(0)
	if w.kube != nil {
		prev = w.kube.gen
	}
	w.kube = &kubeState{doc: doc, hash: hex.EncodeToString(sum[:]), gen: prev + 1, at: time.Now()}
	w.gen++
	w.last, w.lastAt = "ok", w.kube.at
	if err := pend.Commit(); err != nil {
		return w.kube.gen, w.kube.hash, fmt.Errorf("applied but not kept in %s: %w (a restart would serve the previous routes)", w.stateFile, err)
	}
	d.log.Info("WAF routes from Kubernetes applied", "generation", w.kube.gen, "routes", len(doc.Routes),
		"policies", len(doc.Policies), "certificates", len(doc.Certificates), "hash", w.kube.hash[:12],
		"validate_ms", validated.Milliseconds(), "swap_ms", (swapped - validated).Milliseconds(), "total_ms", time.Since(start).Milliseconds())
	return w.kube.gen, w.kube.hash, nil
}

var errNoWAF = errors.New("this daemon runs no WAF (set waf.config in its config)")

// kubeStatus is the Kubernetes part of the status (w.mu held).
func (w *wafRunner) kubeStatus() *WAFKubernetesStatus {
	k := w.kube
	if k == nil {
		return nil
	}
	return &WAFKubernetesStatus{Generation: k.gen, Hash: k.hash, AppliedAt: k.at, Routes: len(k.doc.Routes),
		Policies: len(k.doc.Policies), Certificates: len(k.doc.Certificates)}
}

// wafListeners lists the WAF's listeners with their bound addresses.
func (w *wafRunner) wafListeners() []WAFListener {
	var out []WAFListener
	for _, l := range w.srv.Config().Listeners {
		addr := l.Address
		if a := w.srv.Addr(l.Name); a != nil {
			addr = a.String()
		}
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		out = append(out, WAFListener{Name: l.Name, Address: addr, Port: port, TLS: l.TLS != nil})
	}
	return out
}

// serveWAFKubernetes answers GET and PUT /v1/waf/kubernetes.
func (d *Daemon) serveWAFKubernetes(w http.ResponseWriter, r *http.Request) {
	wr := d.wafRunning()
	if wr == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"errors": apiErrors(errNoWAF)})
		return
	}
	if r.Method == http.MethodGet {
		wr.mu.Lock()
		st := wr.kubeStatus()
		fileRoutes := wr.static.FileRouteKeys()
		wr.mu.Unlock()
		if st == nil {
			st = &WAFKubernetesStatus{}
		}
		writeJSON(w, http.StatusOK, WAFKubernetesInfo{st, wr.wafListeners(), fileRoutes})
		return
	}
	data, done, ok := d.readBody(w, r) // admin_limits.go
	if !ok {
		return
	}
	defer done()
	gen, hash, err := d.ApplyWAFKubernetes(data)
	d.audit(r, "waf kubernetes apply", err)
	var list policy.ErrorList
	var one *policy.Error
	switch {
	case err != nil && (errors.As(err, &list) || errors.As(err, &one)):
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"errors": apiErrors(err)})
	case err != nil && hash != "":
		writeJSON(w, http.StatusInternalServerError, map[string]any{"generation": gen, "hash": hash, "errors": apiErrors(err)})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, map[string]any{"errors": apiErrors(err)})
	default:
		writeJSON(w, http.StatusOK, map[string]any{"generation": gen, "hash": hash})
	}
}

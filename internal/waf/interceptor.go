package waf

import (
	"io"
	"net/http"

	"github.com/corazawaf/coraza/v3/types"
)

// responseInspector sits between the reverse proxy and the client. It
// feeds the response headers (phase 3) and, when the policy inspects
// response bodies of that type, the body (phase 4) to the transaction,
// holding the response back until Coraza has seen it, so that a response
// rule can still replace it with the block page.
type responseInspector struct {
	w     http.ResponseWriter
	tx    types.Transaction
	proto string
	block func(it *types.Interruption) // writes the block page

	status        int
	wroteHeader   bool // WriteHeader was called (by the proxy)
	headerFlushed bool // the status line went to the client
	buffering     bool // the body goes to Coraza first
	blocked       bool
	passthrough   bool // the body limit was reached: the rest streams
}

func newResponseInspector(w http.ResponseWriter, r *http.Request, tx types.Transaction, block func(*types.Interruption)) *responseInspector {
	return &responseInspector{w: w, tx: tx, proto: r.Proto, block: block, status: http.StatusOK}
}

func (ri *responseInspector) Header() http.Header { return ri.w.Header() }

// Unwrap lets http.ResponseController reach the connection (protocol
// upgrades).
func (ri *responseInspector) Unwrap() http.ResponseWriter { return ri.w }

func (ri *responseInspector) WriteHeader(code int) {
	if ri.blocked || ri.wroteHeader {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// Informational responses (103 Early Hints) pass straight on.
		ri.w.WriteHeader(code)
		return
	}
	ri.wroteHeader = true
	ri.status = code
	for k, vv := range ri.w.Header() {
		for _, v := range vv {
			ri.tx.AddResponseHeader(k, v)
		}
	}
	if it := ri.tx.ProcessResponseHeaders(code, ri.proto); it != nil {
		ri.doBlock(it)
		return
	}
	if code != http.StatusSwitchingProtocols && ri.tx.IsResponseBodyAccessible() && ri.tx.IsResponseBodyProcessable() {
		ri.buffering = true
		return
	}
	ri.flushHeader()
}

func (ri *responseInspector) flushHeader() {
	if !ri.headerFlushed {
		ri.headerFlushed = true
		ri.w.WriteHeader(ri.status)
	}
}

func (ri *responseInspector) doBlock(it *types.Interruption) {
	ri.blocked = true
	if ri.headerFlushed {
		// Too late for a page: the status line is out. Cut the response.
		panic(http.ErrAbortHandler)
	}
	h := ri.w.Header()
	for k := range h {
		delete(h, k)
	}
	ri.headerFlushed = true
	ri.block(it)
}

func (ri *responseInspector) Write(b []byte) (int, error) {
	if ri.blocked {
		return len(b), nil
	}
	if !ri.wroteHeader {
		ri.WriteHeader(http.StatusOK)
		if ri.blocked {
			return len(b), nil
		}
	}
	if !ri.buffering || ri.passthrough {
		ri.flushHeader()
		return ri.w.Write(b)
	}
	it, n, err := ri.tx.WriteResponseBody(b)
	if it != nil {
		ri.doBlock(it)
		return len(b), nil
	}
	if err != nil {
		return n, err
	}
	if n == len(b) {
		return n, nil
	}
	// The response body limit is reached (ProcessPartial): inspect what
	// was buffered, then stream the rest uninspected.
	if blocked := ri.inspectBody(); blocked {
		return len(b), nil
	}
	ri.passthrough = true
	n2, err := ri.w.Write(b[n:])
	return n + n2, err
}

// inspectBody runs phase 4 on the buffered body and sends it on unless a
// rule blocks. It reports whether the response was blocked.
func (ri *responseInspector) inspectBody() bool {
	it, err := ri.tx.ProcessResponseBody()
	if it != nil {
		ri.doBlock(it)
		return true
	}
	ri.flushHeader()
	if err != nil {
		return false
	}
	if rd, err := ri.tx.ResponseBodyReader(); err == nil {
		_, _ = io.Copy(ri.w, rd)
	}
	return false
}

func (ri *responseInspector) Flush() {
	if ri.blocked || (ri.buffering && !ri.passthrough) {
		return
	}
	if !ri.wroteHeader {
		ri.WriteHeader(http.StatusOK)
		if ri.blocked || ri.buffering {
			return
		}
	}
	ri.flushHeader()
	if f, ok := ri.w.(http.Flusher); ok {
		f.Flush()
	}
}

// finish completes the response after the proxy returned.
func (ri *responseInspector) finish() {
	if ri.blocked {
		return
	}
	if !ri.wroteHeader {
		// The proxy wrote nothing (an error page is written by the error
		// handler directly); nothing to inspect.
		return
	}
	if ri.buffering && !ri.passthrough {
		ri.inspectBody()
		return
	}
	ri.flushHeader()
}

package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// DaemonClient talks to one daemon's admin API (docs/daemon.md):
//
//	POST /v1/apply   policy YAML -> 200 {"generation":N} | 422 {"errors":[...]}
//	GET  /v1/status  -> {"generation":N, ...}
type DaemonClient struct {
	// URL is the admin API's base URL, e.g. http://10.42.2.4:9180.
	URL string
	// Token is sent as "Authorization: Bearer TOKEN" when set.
	Token string
	// HTTP is the client (default http.DefaultClient).
	HTTP *http.Client
}

// RejectedError is a daemon's 422: its validator refused the policy.
type RejectedError struct {
	Daemon string
	Errors []DaemonError
}

// DaemonError is one error of a daemon's 422 (docs/api.md's APIError).
type DaemonError struct {
	Field   string `json:"field,omitempty"` // path in the policy sent
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Message string `json:"message"`
	Text    string `json:"text,omitempty"` // FILE:LINE:COL: message
}

func (e *RejectedError) Error() string {
	msgs := make([]string, len(e.Errors))
	for i, d := range e.Errors {
		msgs[i] = d.Message
		if d.Field != "" {
			msgs[i] = d.Field + ": " + d.Message
		}
	}
	return fmt.Sprintf("daemon %s rejected the policy: %s", e.Daemon, strings.Join(msgs, "; "))
}

func (d *DaemonClient) client() *http.Client {
	if d.HTTP != nil {
		return d.HTTP
	}
	return http.DefaultClient
}

func (d *DaemonClient) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(d.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/yaml")
	}
	if d.Token != "" {
		req.Header.Set("Authorization", "Bearer "+d.Token)
	}
	resp, err := d.client().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, data, err
}

// Apply sends a policy; it returns the daemon's generation, a
// *RejectedError for a 422, or another error (unreachable, 5xx, ...).
func (d *DaemonClient) Apply(ctx context.Context, policyYAML []byte) (int64, error) {
	gen, _, err := d.push(ctx, http.MethodPost, "/v1/apply", policyYAML)
	return gen, err
}

// push sends a document the daemon validates and applies as a whole (a
// policy, the WAF's Kubernetes routes): 200 gives its generation, 422 a
// *RejectedError with the daemon's errors; any other status is returned
// with an error naming it, for the caller to interpret first.
func (d *DaemonClient) push(ctx context.Context, method, path string, doc []byte) (gen int64, code int, err error) {
	code, data, err := d.do(ctx, method, path, doc)
	if err != nil {
		return 0, 0, fmt.Errorf("daemon %s: %w", d.URL, err)
	}
	switch code {
	case http.StatusOK:
		var r struct {
			Generation int64 `json:"generation"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			return 0, code, fmt.Errorf("daemon %s: bad %s response: %v", d.URL, path, err)
		}
		return r.Generation, code, nil
	case http.StatusUnprocessableEntity:
		var r struct {
			Errors []json.RawMessage `json:"errors"`
		}
		rej := &RejectedError{Daemon: d.URL}
		if err := json.Unmarshal(data, &r); err != nil || len(r.Errors) == 0 {
			rej.Errors = []DaemonError{{Message: strings.TrimSpace(string(data))}}
			return 0, code, rej
		}
		for _, raw := range r.Errors {
			rej.Errors = append(rej.Errors, daemonError(raw))
		}
		return 0, code, rej
	}
	return 0, code, fmt.Errorf("daemon %s: %s %s: HTTP %d: %s", d.URL, method, path, code, strings.TrimSpace(string(data)))
}

// daemonError accepts an error as an object (docs/api.md) or a string.
func daemonError(raw json.RawMessage) DaemonError {
	var e DaemonError
	if json.Unmarshal(raw, &e) == nil && (e.Message != "" || e.Text != "") {
		if e.Message == "" {
			e.Message = e.Text
		}
		return e
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return DaemonError{Message: s, Text: s}
	}
	return DaemonError{Message: string(raw)}
}

// Locate returns the path in doc (the policy sent) that e is about.
func (e DaemonError) Locate(doc []byte) (path string, ok bool) {
	switch {
	case e.Field != "":
		return e.Field, true
	case e.Line > 0:
		return yamlPathAt(doc, e.Line, e.Column)
	}
	p, _, ok := PathOfError(doc, e.Text)
	return p, ok
}

// Generation returns the generation the daemon runs (GET /v1/status).
func (d *DaemonClient) Generation(ctx context.Context) (int64, error) {
	code, data, err := d.do(ctx, http.MethodGet, "/v1/status", nil)
	if err != nil {
		return 0, fmt.Errorf("daemon %s: %w", d.URL, err)
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("daemon %s: GET /v1/status: HTTP %d", d.URL, code)
	}
	var r struct {
		Generation int64 `json:"generation"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return 0, fmt.Errorf("daemon %s: bad status: %v", d.URL, err)
	}
	return r.Generation, nil
}

var posPrefix = regexp.MustCompile(`^(?:.*?):(\d+):(\d+): (.*)$`)

// PathOfError finds the field path of a daemon's error message about a
// policy YAML document: "FILE:LINE:COL: msg" is located in doc, "PATH: msg"
// is taken as it is. ok is false when the message names no position.
func PathOfError(doc []byte, msg string) (path, text string, ok bool) {
	if m := posPrefix.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		col, _ := strconv.Atoi(m[2])
		if p, found := yamlPathAt(doc, line, col); found {
			return p, m[3], true
		}
		return "", m[3], false
	}
	if m := groupPath.FindStringSubmatch(strings.SplitN(msg, ": ", 2)[0]); m != nil {
		head, rest, _ := strings.Cut(msg, ": ")
		return head, rest, true
	}
	return "", msg, false
}

// yamlPathAt returns the path (ruleCollectionGroups[1].priority) of the
// node at line:col of doc, or of the deepest node starting on that line.
func yamlPathAt(doc []byte, line, col int) (string, bool) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil || len(root.Content) == 0 {
		return "", false
	}
	// The deepest node at exactly line:col wins (a mapping and its first
	// key start at the same place; the validator means the key), else the
	// deepest node starting on the line.
	exact, exactDepth, onLine, lineDepth := "", -1, "", -1
	note := func(l, c int, path string, depth int) {
		if l != line {
			return
		}
		if c == col && depth > exactDepth {
			exact, exactDepth = path, depth
		}
		if depth > lineDepth {
			onLine, lineDepth = path, depth
		}
	}
	var walk func(n *yaml.Node, path string, depth int)
	walk = func(n *yaml.Node, path string, depth int) {
		note(n.Line, n.Column, path, depth)
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				note(k.Line, k.Column, p, depth+1)
				walk(v, p, depth+1)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i), depth+1)
			}
		}
	}
	walk(root.Content[0], "", 0)
	if exact != "" || exactDepth >= 0 {
		return exact, true
	}
	return onLine, lineDepth >= 0
}

// IsRejected reports whether err is a daemon's 422.
func IsRejected(err error) (*RejectedError, bool) {
	var r *RejectedError
	ok := errors.As(err, &r)
	return r, ok
}

package threatintel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// readFile reads a file feed unless it is unchanged since the last load
// (same modification time and size).
func (e *Engine) readFile(f *feedState) fetchResult {
	path := f.cfg.Path
	fi, err := os.Stat(path)
	if err != nil {
		return fetchResult{err: fmt.Errorf("threat-intel feed %s: %w", f.cfg.Name, err)}
	}
	if !fi.Mode().IsRegular() {
		return fetchResult{err: fmt.Errorf("threat-intel feed %s: %s is not a regular file", f.cfg.Name, path)}
	}
	if f.data != nil && fi.ModTime().Equal(f.modTime) && fi.Size() == f.size {
		return fetchResult{}
	}
	if fi.Size() > e.opts.MaxBytes {
		return fetchResult{err: fmt.Errorf("threat-intel feed %s: %s is larger than the limit of %d bytes", f.cfg.Name, path, e.opts.MaxBytes)}
	}
	fh, err := os.Open(path)
	if err != nil {
		return fetchResult{err: fmt.Errorf("threat-intel feed %s: %w", f.cfg.Name, err)}
	}
	defer fh.Close()
	body, err := readAll(fh, e.opts.MaxBytes, path)
	if err != nil {
		return fetchResult{err: fmt.Errorf("threat-intel feed %s: %w", f.cfg.Name, err)}
	}
	d, err := Parse(f.cfg.Name, path, f.format, bytes.NewReader(body))
	if err != nil {
		return fetchResult{err: err}
	}
	return fetchResult{data: d, modTime: fi.ModTime(), size: fi.Size()}
}

// fetchURL downloads a URL feed, conditionally when a copy is held.
func (e *Engine) fetchURL(ctx context.Context, f *feedState) fetchResult {
	fail := func(format string, args ...any) fetchResult {
		return fetchResult{err: fmt.Errorf("threat-intel feed %s: %s: %s", f.cfg.Name, f.cfg.URL, fmt.Sprintf(format, args...))}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, e.opts.Timeout)
	defer cancel()
	netErr := func(err error) fetchResult {
		var ne net.Error
		switch {
		case parent.Err() != nil:
			return fail("%v", parent.Err())
		case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
			return fail("no complete answer within %v", e.opts.Timeout)
		}
		return fail("%v", trimURLErr(err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.cfg.URL, nil)
	if err != nil {
		return fail("%v", err)
	}
	req.Header.Set("User-Agent", e.opts.UserAgent)
	if f.data != nil {
		if f.etag != "" {
			req.Header.Set("If-None-Match", f.etag)
		}
		if f.lastModified != "" {
			req.Header.Set("If-Modified-Since", f.lastModified)
		}
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return netErr(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified:
		if f.data == nil {
			return fail("304 Not Modified, but no copy is held")
		}
		return fetchResult{}
	case resp.StatusCode != http.StatusOK:
		return fail("HTTP status %s", resp.Status)
	case resp.ContentLength > e.opts.MaxBytes:
		return fail("body of %d bytes is larger than the limit of %d bytes", resp.ContentLength, e.opts.MaxBytes)
	}
	body, err := readAll(resp.Body, e.opts.MaxBytes, "body")
	if errors.Is(err, errTooLarge) {
		return fail("%v", err)
	} else if err != nil {
		return netErr(err)
	}
	d, err := Parse(f.cfg.Name, f.cfg.URL, f.format, bytes.NewReader(body))
	if err != nil {
		return fetchResult{err: err}
	}
	return fetchResult{data: d, body: body, etag: resp.Header.Get("ETag"), lastModified: resp.Header.Get("Last-Modified")}
}

// trimURLErr drops the "Get "URL": " prefix that *url.Error adds; the
// message already names the URL.
func trimURLErr(err error) string {
	s := err.Error()
	if i := strings.Index(s, `": `); i >= 0 && strings.HasPrefix(s, "Get ") {
		return s[i+3:]
	}
	return s
}

// cacheMeta is what StateDir keeps next to a feed's body.
type cacheMeta struct {
	URL          string    `json:"url"`
	Format       string    `json:"format"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"lastModified,omitempty"`
	Fetched      time.Time `json:"fetched"`
}

// cachePaths names a feed's files in StateDir: the feed name made safe
// for a file name plus a hash of the name (so "a/b" and "a_b" differ).
func (e *Engine) cachePaths(name string) (body, meta string) {
	safe := []byte(name)
	for i, c := range safe {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			safe[i] = '_'
		}
	}
	if len(safe) > 64 {
		safe = safe[:64]
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	base := filepath.Join(e.opts.StateDir, fmt.Sprintf("%s-%08x", safe, h.Sum32()))
	return base + ".feed", base + ".json"
}

// loadCached fills f from StateDir if it holds a copy of the same URL and
// format. Problems are logged; the feed is then downloaded as new.
func (e *Engine) loadCached(f *feedState) {
	bodyPath, metaPath := e.cachePaths(f.cfg.Name)
	mb, err := os.ReadFile(metaPath)
	if err != nil {
		return
	}
	var m cacheMeta
	if json.Unmarshal(mb, &m) != nil || m.URL != f.cfg.URL || m.Format != f.format.String() {
		return
	}
	fh, err := os.Open(bodyPath)
	if err != nil {
		return
	}
	defer fh.Close()
	body, err := readAll(fh, e.opts.MaxBytes, bodyPath)
	if err != nil {
		e.log.Warn("threat-intel feed: ignoring the kept copy", "feed", f.cfg.Name, "error", err)
		return
	}
	d, err := Parse(f.cfg.Name, f.cfg.URL, f.format, bytes.NewReader(body))
	if err != nil {
		return
	}
	f.data, f.etag, f.lastModified, f.loaded = d, m.ETag, m.LastModified, m.Fetched
	e.log.Info("threat-intel feed: using the copy kept from a previous run", "feed", f.cfg.Name, "fetched", m.Fetched,
		"addresses", len(d.Addrs), "domains", len(d.Names))
}

// saveCached writes f's body and validators to StateDir atomically.
func (e *Engine) saveCached(f *feedState, body []byte) error {
	if err := os.MkdirAll(e.opts.StateDir, 0o750); err != nil {
		return err
	}
	bodyPath, metaPath := e.cachePaths(f.cfg.Name)
	mb, err := json.Marshal(cacheMeta{URL: f.cfg.URL, Format: f.format.String(), ETag: f.etag, LastModified: f.lastModified, Fetched: f.loaded.UTC()})
	if err != nil {
		return err
	}
	// Without meta the copy is ignored: remove it first, so that a crash
	// between the two writes never pairs a body with another's validators.
	if err := os.Remove(metaPath); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := writeAtomic(bodyPath, body); err != nil {
		return err
	}
	return writeAtomic(metaPath, mb)
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		os.Remove(tmp.Name())
	}
	return werr
}

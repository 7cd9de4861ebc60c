package waf

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// Coraza's multipart body processor parses every part of a body before any
// rule sees the result, and keeps a few hundred bytes of bookkeeping per
// part: a body of 60,000 one-byte fields (3.3 MiB) cost about 55 MiB of
// heap before rule 200007 could refuse it (bomb_test.go). So the parts are counted on the way
// in, while Coraza buffers the body: a body with more parts than the
// argument limit is refused (400) before it is parsed. Coraza would refuse
// it anyway (rule 200007, more than argumentsLimit fields); only the cost
// changes.

// errTooManyParts ends the reading of a multipart body with too many parts.
type errTooManyParts struct{ limit int }

func (e errTooManyParts) Error() string {
	return fmt.Sprintf("multipart body with more than %d parts", e.limit)
}

// limitMultipartParts wraps the body of a multipart request in a reader
// that fails once it has seen more than limit part delimiters.
func limitMultipartParts(r *http.Request, limit int) {
	ct := r.Header.Get("Content-Type")
	if r.Body == nil || r.Body == http.NoBody || !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "multipart/") {
		return
	}
	_, params, err := mime.ParseMediaType(ct)
	if err != nil || params["boundary"] == "" {
		return // Coraza flags the body (MULTIPART_STRICT_ERROR)
	}
	r.Body = &partCounter{ReadCloser: r.Body, delim: []byte("\n--" + params["boundary"]), limit: limit, atStart: true}
}

// partCounter counts "\n--boundary" in the stream (and "--boundary" at its
// very start), carrying the last len(delim)-1 bytes over between reads so
// that a delimiter split across two reads is counted once.
type partCounter struct {
	io.ReadCloser
	delim   []byte
	limit   int
	n       int
	tail    []byte
	atStart bool
	buf     []byte
}

func (p *partCounter) Read(b []byte) (int, error) {
	n, err := p.ReadCloser.Read(b)
	if n > 0 {
		chunk := b[:n]
		if p.atStart {
			// The first delimiter may open the body without a line end.
			p.tail = append(p.tail[:0], '\n')
			p.atStart = false
		}
		p.buf = append(append(p.buf[:0], p.tail...), chunk...)
		p.n += bytes.Count(p.buf, p.delim)
		keep := min(len(p.delim)-1, len(p.buf))
		p.tail = append(p.tail[:0], p.buf[len(p.buf)-keep:]...)
		// The closing delimiter is one more than the parts.
		if p.n > p.limit+1 {
			return n, errTooManyParts{limit: p.limit}
		}
	}
	return n, err
}

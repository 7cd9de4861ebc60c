package crstest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

// methodsWithBody is go-ftw's pattern (sic: the alternation is not grouped,
// so it matches methods starting with POST, containing PUT or PATCH, or
// ending with DELETE); kept as is so requests are byte-identical.
var methodsWithBody = regexp.MustCompile(`^POST|PUT|PATCH|DELETE$`)

// BuildRequest renders a stage's input as the bytes to send, the way
// go-ftw does: encoded_request (base64) is sent verbatim; otherwise the
// request line, the headers sorted by name, and the data (Go templates
// evaluated; form data URL-encoded unless it already is; multipart bodies
// with CRLF line ends). With autocomplete_headers (the default) it adds
// Content-Type for data, "Connection: close", and Content-Length.
func BuildRequest(in *Input) ([]byte, error) {
	if in.EncodedRequest != "" || in.RawRequest != "" {
		enc := in.EncodedRequest
		if enc == "" {
			enc = in.RawRequest
		}
		raw, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return nil, fmt.Errorf("encoded_request: %w", err)
		}
		return raw, nil
	}
	h := map[string]string{}
	for _, kv := range in.Headers {
		h[kv.Name] = kv.Value
	}
	add := func(k, v string) {
		if h[k] == "" {
			h[k] = v
		}
	}
	data, err := in.data()
	if err != nil {
		return nil, err
	}
	auto := in.autocomplete()
	if len(data) > 0 && auto {
		add("Content-Type", "application/x-www-form-urlencoded")
		if h["Content-Type"] == "application/x-www-form-urlencoded" {
			data = encodeForm(data)
		}
	}
	if strings.HasPrefix(h["Content-Type"], "multipart/form-data;") {
		data = bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))
	}
	if auto {
		add("Connection", "close")
		if len(data) > 0 || methodsWithBody.MatchString(in.method()) {
			add("Content-Length", strconv.Itoa(len(data)))
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %s\r\n", in.method(), in.uri(), in.version())
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		b.WriteString(k + ": " + h[k] + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(data)
	return b.Bytes(), nil
}

// data is the request body: data with its Go templates evaluated (the CRS
// tests use sprig's repeat), or encoded_data decoded.
func (in *Input) data() ([]byte, error) {
	if in.Data != nil {
		if !strings.Contains(*in.Data, "{{") {
			return []byte(*in.Data), nil
		}
		t, err := template.New("data").Funcs(template.FuncMap{
			"repeat": func(n int, s string) string { return strings.Repeat(s, n) },
		}).Parse(*in.Data)
		if err != nil {
			// go-ftw sends nothing when the template does not parse.
			return nil, nil
		}
		var b bytes.Buffer
		if err := t.Execute(&b, nil); err != nil {
			return nil, nil
		}
		return b.Bytes(), nil
	}
	if in.EncodedData != nil {
		d, err := base64.StdEncoding.DecodeString(*in.EncodedData)
		if err != nil {
			return nil, fmt.Errorf("encoded_data: %w", err)
		}
		return d, nil
	}
	return nil, nil
}

// encodeForm URL-encodes key=value pairs unless the data is already
// encoded (decoding changes it), as go-ftw does.
func encodeForm(data []byte) []byte {
	if un, err := url.QueryUnescape(string(data)); err != nil || un != string(data) {
		return data
	}
	var out []string
	for _, tok := range strings.Split(string(data), "&") {
		k, v, ok := strings.Cut(tok, "=")
		if !ok {
			out = append(out, url.QueryEscape(tok))
			continue
		}
		out = append(out, url.QueryEscape(k)+"="+url.QueryEscape(v))
	}
	return []byte(strings.Join(out, "&"))
}

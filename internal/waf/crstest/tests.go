// Package crstest runs the OWASP Core Rule Set's own regression tests (the
// go-ftw YAML format, embedded by coraza-coreruleset) against clusterwall's
// WAF: each test's request goes as raw bytes over a real TCP connection to
// the running WAF proxy, which forwards to an echo backend in the style of
// the CRS "albedo" backend; the WAF's JSON log is read back to check the
// expected rule IDs, statuses and log patterns. Requests are bracketed by
// marker requests (the CRS harness's X-CRS-Test header and rule 999999) so
// that each test sees exactly the log lines its own request produced.
package crstest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// File is one CRS test file (one rule).
type File struct {
	Path   string
	RuleID int    `yaml:"rule_id"`
	Tests  []Test `yaml:"tests"`
}

// Test is one test of a rule; ID is "<rule>-<test>".
type Test struct {
	ID     string  `yaml:"-"`
	File   string  `yaml:"-"`
	TestID int     `yaml:"test_id"`
	Desc   string  `yaml:"desc"`
	Stages []Stage `yaml:"stages"`
}

// Stage is one request and what is expected of it.
type Stage struct {
	Input  Input  `yaml:"input"`
	Output Output `yaml:"output"`
}

// Input describes the request (go-ftw's input).
type Input struct {
	DestAddr            *string  `yaml:"dest_addr"`
	Port                *int     `yaml:"port"`
	Protocol            *string  `yaml:"protocol"`
	Method              *string  `yaml:"method"`
	URI                 *string  `yaml:"uri"`
	Version             *string  `yaml:"version"`
	Headers             Headers  `yaml:"headers"`
	Data                *string  `yaml:"data"`
	EncodedData         *string  `yaml:"encoded_data"`
	EncodedRequest      string   `yaml:"encoded_request"`
	RawRequest          string   `yaml:"raw_request"`
	AutocompleteHeaders *bool    `yaml:"autocomplete_headers"`
	StopMagic           *bool    `yaml:"stop_magic"`
	SaveCookie          *bool    `yaml:"save_cookie"`
	FollowRedirect      *bool    `yaml:"follow_redirect"`
	URIs                []string `yaml:"uris"`
}

// Output is what the test expects.
type Output struct {
	Status           int    `yaml:"status"`
	ResponseContains string `yaml:"response_contains"`
	LogContains      string `yaml:"log_contains"`
	NoLogContains    string `yaml:"no_log_contains"`
	Log              Log    `yaml:"log"`
	ExpectError      *bool  `yaml:"expect_error"`
	RetryOnce        *bool  `yaml:"retry_once"`
	Isolated         bool   `yaml:"isolated"`
}

// Log holds the log expectations.
type Log struct {
	ExpectIDs    []int  `yaml:"expect_ids"`
	NoExpectIDs  []int  `yaml:"no_expect_ids"`
	MatchRegex   string `yaml:"match_regex"`
	NoMatchRegex string `yaml:"no_match_regex"`
}

// Header is one request header.
type Header struct{ Name, Value string }

// Headers keeps the headers as the file lists them.
type Headers []Header

// UnmarshalYAML reads a mapping of header names to values.
func (h *Headers) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: headers must be a mapping", n.Line)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		*h = append(*h, Header{n.Content[i].Value, n.Content[i+1].Value})
	}
	return nil
}

// Load reads every *.yaml test file under fsys, in path order.
func Load(fsys fs.FS) ([]*File, error) { return load(fsys, nil) }

var (
	ruleIDLine = regexp.MustCompile(`(?m)^rule_id:\s*(\d+)\s*$`)
	testIDLine = regexp.MustCompile(`(?m)^\s*-?\s*test_id:\s*(\d+)\s*$`)
)

// load reads the test files; with a filter, files none of whose test IDs
// match are not parsed at all (parsing all 318 files is the slow part of a
// small run under the race detector).
func load(fsys fs.FS, filter *regexp.Regexp) ([]*File, error) {
	var paths []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && path.Ext(p) == ".yaml" {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var files []*File
	for _, p := range paths {
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		if filter != nil && !mayMatch(data, filter) {
			continue
		}
		f, err := parseFile(p, data)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// mayMatch tells whether a file may hold a test whose ID matches filter;
// when the IDs cannot be read without parsing, it says yes.
func mayMatch(data []byte, filter *regexp.Regexp) bool {
	rule := ruleIDLine.FindSubmatch(data)
	tests := testIDLine.FindAllSubmatch(data, -1)
	if rule == nil || len(tests) == 0 {
		return true
	}
	for _, t := range tests {
		if filter.MatchString(string(rule[1]) + "-" + string(t[1])) {
			return true
		}
	}
	return false
}

func parseFile(p string, data []byte) (*File, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			// A file of comments only (920539.yaml is one).
			return &File{Path: p}, nil
		}
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	f.Path = p
	for i := range f.Tests {
		t := &f.Tests[i]
		if t.TestID == 0 {
			t.TestID = i + 1
		}
		t.ID = fmt.Sprintf("%d-%d", f.RuleID, t.TestID)
		t.File = p
		if len(t.Stages) == 0 {
			return nil, fmt.Errorf("%s: test %s has no stages", p, t.ID)
		}
	}
	return &f, nil
}

// Tests flattens files into their tests.
func Tests(files []*File) []*Test {
	var out []*Test
	for _, f := range files {
		for i := range f.Tests {
			out = append(out, &f.Tests[i])
		}
	}
	return out
}

func (in *Input) method() string {
	if in.Method == nil {
		return "GET"
	}
	return *in.Method
}

func (in *Input) uri() string {
	if in.URI == nil {
		return "/"
	}
	return *in.URI
}

func (in *Input) version() string {
	if in.Version == nil {
		return "HTTP/1.1"
	}
	return *in.Version
}

func (in *Input) autocomplete() bool {
	if in.AutocompleteHeaders != nil {
		return *in.AutocompleteHeaders
	}
	if in.StopMagic != nil {
		return !*in.StopMagic
	}
	return true
}

// unsupported names an input feature the runner does not implement.
func (in *Input) unsupported() string {
	switch {
	case in.Protocol != nil && strings.ToLower(*in.Protocol) != "http":
		return "protocol " + *in.Protocol
	case in.FollowRedirect != nil && *in.FollowRedirect:
		return "follow_redirect"
	case len(in.URIs) > 0:
		return "uris"
	}
	return ""
}

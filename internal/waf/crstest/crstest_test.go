package crstest

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/clusterwall/clusterwall/internal/waf"
)

func ptr[T any](v T) *T { return &v }

func TestBuildRequest(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want string
	}{
		{
			name: "defaults",
			in:   Input{Headers: Headers{{"User-Agent", "a"}, {"Host", "localhost"}}},
			want: "GET / HTTP/1.1\r\nConnection: close\r\nHost: localhost\r\nUser-Agent: a\r\n\r\n",
		},
		{
			name: "form data is encoded and gets type and length",
			in:   Input{Method: ptr("POST"), URI: ptr("/post"), Headers: Headers{{"Host", "h"}}, Data: ptr("a=1 2&b=<x>")},
			want: "POST /post HTTP/1.1\r\nConnection: close\r\nContent-Length: 15\r\nContent-Type: application/x-www-form-urlencoded\r\nHost: h\r\n\r\na=1+2&b=%3Cx%3E",
		},
		{
			name: "already encoded form data is left alone",
			in:   Input{Method: ptr("POST"), Headers: Headers{{"Host", "h"}}, Data: ptr("a=%41")},
			want: "POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 5\r\nContent-Type: application/x-www-form-urlencoded\r\nHost: h\r\n\r\na=%41",
		},
		{
			name: "no autocomplete",
			in:   Input{Method: ptr("POST"), Headers: Headers{{"Host", "h"}}, Data: ptr("x"), AutocompleteHeaders: ptr(false)},
			want: "POST / HTTP/1.1\r\nHost: h\r\n\r\nx",
		},
		{
			name: "POST without data has Content-Length 0",
			in:   Input{Method: ptr("POST"), Headers: Headers{{"Host", "h"}}},
			want: "POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\nHost: h\r\n\r\n",
		},
		{
			name: "template data",
			in:   Input{Method: ptr("POST"), Headers: Headers{{"Host", "h"}, {"Content-Type", "text/plain"}}, Data: ptr(`{{ "ab" | repeat 3 }}`)},
			want: "POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 6\r\nContent-Type: text/plain\r\nHost: h\r\n\r\nababab",
		},
		{
			name: "multipart gets CRLF",
			in:   Input{Method: ptr("POST"), Headers: Headers{{"Content-Type", "multipart/form-data; boundary=b"}}, Data: ptr("--b\nx\n--b--\n")},
			want: "POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 15\r\nContent-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\nx\r\n--b--\r\n",
		},
		{
			name: "encoded request is sent verbatim",
			in:   Input{EncodedRequest: "R0VUIC8gSFRUUC8xLjANCg0K", Headers: Headers{{"Host", "ignored"}}},
			want: "GET / HTTP/1.0\r\n\r\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BuildRequest(&tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
	if _, err := BuildRequest(&Input{EncodedRequest: "!!"}); err == nil {
		t.Error("bad base64 was accepted")
	}
}

func TestCheck(t *testing.T) {
	ev := []*waf.Event{{RuleIDs: []int{920100, 949110}, Details: []string{`[id "920100"] [msg "Invalid HTTP Request Line"] [data "found within ARGS:x"]`}}}
	tests := []struct {
		name string
		out  Output
		obs  observation
		ok   bool
	}{
		{"expected id present", Output{Log: Log{ExpectIDs: []int{920100}}}, observation{status: 200, events: ev}, true},
		{"expected id missing", Output{Log: Log{ExpectIDs: []int{942100}}}, observation{status: 200, events: ev}, false},
		{"unexpected id present", Output{Log: Log{NoExpectIDs: []int{949110}}}, observation{status: 200, events: ev}, false},
		{"no log at all", Output{Log: Log{NoExpectIDs: []int{949110}}}, observation{status: 200}, true},
		{"status", Output{Status: 400}, observation{status: 200, events: ev}, false},
		{"regex", Output{Log: Log{MatchRegex: `found within ARGS:x`}}, observation{status: 200, events: ev}, true},
		{"regex on ModSecurity format", Output{Log: Log{MatchRegex: `\[id "920100"\].*\[msg "Invalid`}}, observation{status: 200, events: ev}, true},
		{"no regex", Output{Log: Log{NoMatchRegex: `Invalid HTTP`}}, observation{status: 200, events: ev}, false},
		{"expected error", Output{ExpectError: ptr(true)}, observation{err: errors.New("EOF")}, true},
		{"unexpected error", Output{}, observation{err: errors.New("EOF")}, false},
		{"isolated", Output{Isolated: true, Log: Log{ExpectIDs: []int{920100}}}, observation{status: 200, events: ev}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := check(&tt.out, tt.obs)
			if (got == "") != tt.ok {
				t.Errorf("check = %q, want ok=%v", got, tt.ok)
			}
		})
	}
}

func TestLoadRejectsBrokenFiles(t *testing.T) {
	fsys := fstest.MapFS{"x/1.yaml": {Data: []byte("rule_id: 1\ntests:\n  - test_id: 1\n    stages: []\n")}}
	if _, err := Load(fsys); err == nil || !strings.Contains(err.Error(), "no stages") {
		t.Errorf("err = %v", err)
	}
	fsys = fstest.MapFS{"x/1.yaml": {Data: []byte("rule_id: [\n")}}
	if _, err := Load(fsys); err == nil {
		t.Error("broken YAML was accepted")
	}
}

// TestCRSSubset runs a sample of the suite over real HTTP, small enough for
// the race detector: request and response rules, raw requests, expected
// errors, request lines the version gate answers (920280-3, 920430-*), and
// three expected failures.
func TestCRSSubset(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the WAF")
	}
	ids := []string{"911100-1", "911100-5", "913100-1", "920100-1", "920100-5", "920100-8", "920270-4",
		"920280-3", "920290-1", "920290-4", "920430-3", "920430-5", "920430-8", "920430-9", "920620-1", "921110-1", "922130-1", "930100-1", "931100-1",
		"932230-1", "933100-1", "941100-1", "942100-1", "942100-2", "943100-1", "944100-1", "951110-1",
		"953120-1", "954120-1", "959100-1", "980170-1"}
	filter := regexp.MustCompile("^(" + strings.Join(ids, "|") + ")$")
	var out strings.Builder
	s, err := Run(context.Background(), Options{Filter: filter, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	if s.Failed != 0 || len(s.UnexpectedPasses()) != 0 {
		t.Errorf("%s; unexpected passes %v", s.Line(), s.UnexpectedPasses())
	}
	ran := map[string]bool{}
	for _, r := range s.Results {
		ran[r.ID] = true
	}
	for _, id := range ids {
		if !ran[id] {
			t.Errorf("test %s was not run", id)
		}
	}
	if s.Skipped != 3 {
		t.Errorf("%d skipped, want the 3 expected failures in the sample", s.Skipped)
	}
	if !strings.HasSuffix(strings.TrimSpace(out.String()), s.Line()) {
		t.Errorf("report does not end with %q", s.Line())
	}
}

// TestCRSDetectsFailure makes sure the runner can fail: a test whose
// expectation is inverted must be reported as failed.
func TestCRSDetectsFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the WAF")
	}
	fsys := fstest.MapFS{"X/942100.yaml": {Data: []byte(`
rule_id: 942100
tests:
  - test_id: 1
    stages:
      - input:
          uri: "/get?id=1'%20OR%20'1'='1"
          headers: {Host: localhost, User-Agent: test}
        output:
          log:
            no_expect_ids: [942100]
  - test_id: 2
    stages:
      - input:
          uri: "/get?id=1'%20OR%20'1'='1"
          headers: {Host: localhost, User-Agent: test}
        output:
          log:
            expect_ids: [942100]
`)}}
	s, err := Run(context.Background(), Options{Tests: fsys, ExpectedFailures: map[string]Expected{}, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if s.Line() != "1 passed, 1 failed, 0 skipped" || s.Results[0].Outcome != Failed {
		t.Errorf("%s: %+v", s.Line(), s.Results)
	}
}

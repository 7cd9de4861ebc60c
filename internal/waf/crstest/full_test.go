//go:build !race

package crstest

import (
	"context"
	"os"
	"strings"
	"testing"

	crstests "github.com/corazawaf/coraza-coreruleset/v4/tests"
)

// TestLoadEmbedded parses every test file (slow under the race detector:
// yaml.v3 on 318 files).
func TestLoadEmbedded(t *testing.T) {
	files, err := Load(crstests.FS)
	if err != nil {
		t.Fatal(err)
	}
	tests := Tests(files)
	// CRS v4.25.0 ships 4,674 tests.
	if len(tests) != 4674 {
		t.Errorf("%d tests, want 4674", len(tests))
	}
	for id := range ExpectedFailures {
		found := false
		for _, tt := range tests {
			if tt.ID == id {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("expected failure %s is not a test of this CRS version", id)
		}
	}
}

// TestCRSRegression runs every CRS regression test against the WAF (about a
// minute on two cores; under the race detector it would take over twenty,
// so -race builds run TestCRSSubset only). It fails on any failure and on
// any expected failure that started passing.
func TestCRSRegression(t *testing.T) {
	if testing.Short() {
		t.Skip("the full CRS suite")
	}
	var out strings.Builder
	s, err := Run(context.Background(), Options{Out: &out, Verbose: os.Getenv("CRS_VERBOSE") != ""})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if s.Failed > 0 {
		t.Errorf("%d CRS tests failed", s.Failed)
	}
	if u := s.UnexpectedPasses(); len(u) > 0 {
		t.Errorf("expected failures that pass now (remove them from ExpectedFailures): %v", u)
	}
	if s.Skipped != len(ExpectedFailures) {
		t.Errorf("%d skipped, want %d (the expected failures)", s.Skipped, len(ExpectedFailures))
	}
}

package main

import (
	"strings"
	"testing"
)

// TestMedianCIRank: the ranks of the distribution-free 95 % interval of a
// median are the textbook ones (n = 6: x(1)–x(6); 10: x(2)–x(9); 30:
// x(10)–x(21)); below 6 rounds there is none.
func TestMedianCIRank(t *testing.T) {
	for n, want := range map[int]int{1: 0, 5: 0, 6: 1, 10: 2, 20: 6, 30: 10} {
		if got := medianCIRank(n); got != want {
			t.Errorf("medianCIRank(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestSpread(t *testing.T) {
	got := spread([]float64{1.1, 0.9, 1.0, 1.2, 0.8, 1.05})
	for _, want := range []string{"1.025 [0.800–1.200]", "3 of 6"} {
		if !strings.Contains(got, want) {
			t.Errorf("spread = %q, want it to contain %q", got, want)
		}
	}
	if got := spread(nil); got != "-" {
		t.Errorf("spread(nil) = %q", got)
	}
}

func TestParseCPUs(t *testing.T) {
	if s, err := parseCPUs("0"); err != nil || s.Count() != 1 || !s.IsSet(0) {
		t.Errorf("parseCPUs(0) = %v, %v", s, err)
	}
	for _, bad := range []string{"x", "1-0", "-1", "99999"} {
		if _, err := parseCPUs(bad); err == nil {
			t.Errorf("parseCPUs(%q): no error", bad)
		}
	}
	if s, err := parseCPUs(""); s != nil || err != nil {
		t.Errorf("parseCPUs(\"\") = %v, %v", s, err)
	}
}

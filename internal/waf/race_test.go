//go:build race

package waf

// raceEnabled: the race detector slows RE2 (compiled to Go) and the
// regexp engines by an order of magnitude; the exhaustive tests sample.
const raceEnabled = true

package daemon

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestGCForApply: an apply raises the collector's target under a soft
// memory limit and restores the process's target and limit after; a
// higher target, a collector turned off and a limit the process set are
// left as they are.
func TestGCForApply(t *testing.T) {
	pct0 := debug.SetGCPercent(100)
	lim0 := debug.SetMemoryLimit(math.MaxInt64)
	defer func() { debug.SetGCPercent(pct0); debug.SetMemoryLimit(lim0) }()

	restore := gcForApply()
	if got := debug.SetGCPercent(applyGCPercent); got != applyGCPercent {
		t.Errorf("during an apply GOGC is %d, want %d", got, applyGCPercent)
	}
	if lim := debug.SetMemoryLimit(-1); lim == math.MaxInt64 || lim < 2<<30 {
		t.Errorf("during an apply the memory limit is %d, want at least 2 GiB and not none", lim)
	}
	restore()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("after an apply GOGC is %d, want the process's 100", got)
	}
	if lim := debug.SetMemoryLimit(-1); lim != math.MaxInt64 {
		t.Errorf("after an apply the memory limit is %d, want none again", lim)
	}

	debug.SetMemoryLimit(1 << 30)
	restore = gcForApply()
	if lim := debug.SetMemoryLimit(-1); lim != 1<<30 {
		t.Errorf("the process's memory limit became %d during an apply", lim)
	}
	restore()
	debug.SetMemoryLimit(math.MaxInt64)

	for _, pct := range []int{2000, -1} {
		debug.SetGCPercent(pct)
		restore = gcForApply()
		if got := debug.SetGCPercent(pct); got != pct {
			t.Errorf("GOGC %d became %d during an apply", pct, got)
		}
		restore()
		if got := debug.SetGCPercent(pct); got != pct {
			t.Errorf("GOGC %d became %d after an apply", pct, got)
		}
	}
}

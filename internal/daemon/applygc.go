package daemon

import (
	"math"
	"runtime/debug"
	rtmetrics "runtime/metrics"
)

// applyGCPercent is the garbage collector's target (GOGC) while the daemon
// applies a policy. An apply allocates several times its live data (the
// decoded policy, the matcher, the ruleset, its lowered and encoded
// batches) and most of it is garbage once the kernel has it: at the
// default target the collector ran many cycles in every large apply, each
// marking the whole live heap (the running policy, the compile cache).
// During an apply it runs as if GOGC were this, under applyMemoryLimit;
// the process's own settings are restored after, and the next cycle takes
// the apply's garbage at once. docs/benchmarks.md, "parapply".
const applyGCPercent = 1000

// applyMemoryLimit is the soft memory limit during an apply when the
// process has none (GOMEMLIMIT, or cmd/clusterwall's own): near it the
// collector works as hard as it must, whatever the target. It is at
// least three times the live heap of the last cycle (a limit below the
// live data would make the collector run all the time).
func applyMemoryLimit() int64 {
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(s)
	var live int64
	if s[0].Value.Kind() == rtmetrics.KindUint64 {
		live = int64(min(s[0].Value.Uint64(), math.MaxInt64/4))
	}
	return max(2<<30, 3*live)
}

// gcForApply raises the collector's target for an apply, unless the
// process's target is higher already or the collector is off, and returns
// the function that restores the process's target and memory limit.
// Applies run one at a time (Daemon.reloadMu), each after the last one's
// restore (ApplyBytes runs it once the hit totals are settled).
func gcForApply() (restore func()) {
	pct := debug.SetGCPercent(applyGCPercent)
	if pct < 0 || pct >= applyGCPercent {
		debug.SetGCPercent(pct)
		return func() {}
	}
	limit := debug.SetMemoryLimit(-1) // reads it
	if limit == math.MaxInt64 {
		debug.SetMemoryLimit(applyMemoryLimit())
	}
	return func() {
		debug.SetGCPercent(pct)
		debug.SetMemoryLimit(limit)
	}
}

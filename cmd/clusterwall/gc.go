package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// wafGCPercent is the garbage collector's target (GOGC) in processes that
// run the WAF. Coraza allocates about 300 KB per inspected request against
// a live heap of about 25 MB (the compiled CRS), so with Go's default of
// 100 the collector ran every ~90 requests; at 400 it runs a quarter as
// often, for about 12 % more requests per CPU-second (docs/benchmarks.md,
// "WAF vs nginx + ModSecurity"), and the heap settles at about five times
// the live data instead of twice.
const wafGCPercent = 400

// tuneGCForWAF sets GOGC to wafGCPercent unless the environment sets GOGC
// (or GOMEMLIMIT, which an operator sets together with it), whose values
// then stand. It also sets a soft memory limit (wafMemoryLimit), so that a
// large transient heap — a 100,000-rule policy being parsed takes about
// 900 MB — makes the collector work harder as memory runs short instead of
// growing to five times its live data.
func tuneGCForWAF() {
	if _, ok := os.LookupEnv("GOGC"); ok {
		return
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return
	}
	debug.SetGCPercent(wafGCPercent)
	debug.SetMemoryLimit(wafMemoryLimit(memTotal()))
}

// wafMemoryLimit is the soft limit for a machine with total bytes of
// memory: a quarter of it, at least 512 MiB (when total is unknown: 1 GiB).
func wafMemoryLimit(total int64) int64 {
	if total <= 0 {
		return 1 << 30
	}
	return max(total/4, 512<<20)
}

// memTotal is the machine's memory in bytes from /proc/meminfo; 0 when it
// cannot be read (other systems).
func memTotal() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

package main

import (
	"os"
	"runtime/debug"
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
// then stand.
func tuneGCForWAF() {
	if _, ok := os.LookupEnv("GOGC"); ok {
		return
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return
	}
	debug.SetGCPercent(wafGCPercent)
}

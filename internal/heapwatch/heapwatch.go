// Package heapwatch measures how much heap a piece of code makes the
// process hold: the regression tests of memory budgets (issue 17's
// "measure the heap") use it.
package heapwatch

import (
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// Peak runs f and returns the largest growth of the heap's live objects
// seen while it ran (sampled every millisecond through runtime/metrics,
// which does not stop the world, and once more at the end) and the bytes
// allocated meanwhile in all. Other goroutines' allocations count too.
func Peak(f func()) (peak, total uint64) {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	base := read()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var max atomic.Uint64
	note := func() {
		if v := read(); v > base && v-base > max.Load() {
			max.Store(v - base)
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			note()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	f()
	note()
	close(stop)
	<-done
	runtime.ReadMemStats(&ms1)
	return max.Load(), ms1.TotalAlloc - ms0.TotalAlloc
}

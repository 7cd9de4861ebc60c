package main

import (
	"runtime"
	"testing"
)

func TestWAFMemoryLimit(t *testing.T) {
	for _, tc := range []struct{ total, want int64 }{
		{0, 1 << 30},
		{1 << 30, 512 << 20},
		{24 << 30, 6 << 30},
	} {
		if got := wafMemoryLimit(tc.total); got != tc.want {
			t.Errorf("wafMemoryLimit(%d) = %d, want %d", tc.total, got, tc.want)
		}
	}
	if runtime.GOOS == "linux" && memTotal() < 64<<20 {
		t.Errorf("memTotal() = %d: /proc/meminfo not read", memTotal())
	}
}

package policy

import (
	"fmt"
	"testing"
)

// BenchmarkLoaderFullReturn: how long a full load takes to return to its
// caller (what an apply waits for), the state the Loader keeps for the
// next load built or collected outside the timer.
func BenchmarkLoaderFullReturn(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		body := []byte(bigPolicyYAML(n))
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var ld Loader
			for range b.N {
				b.StopTimer()
				ld.Reset()
				b.StartTimer()
				if _, err := ld.Load("p.yaml", body, Options{}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			ld.Reset()
		})
	}
}

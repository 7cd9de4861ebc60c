package policy

import (
	"runtime"
	"testing"
)

// TestLoaderKeepsNoTree: what a Loader keeps beyond the policy it
// returned (its state for the next load) is small next to the policy: it
// keeps no parsed tree. Before its header was copied out of the parser's
// slabs, one kept node held the whole tree: 10,000 rules kept 32.9 MB
// live where the policy is 6.4 MB (this test fails on main c9bc4b8).
func TestLoaderKeepsNoTree(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	body := []byte(bigPolicyYAML(10_000))
	live := func(load func() any) uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		base := ms.HeapAlloc
		x := load()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		runtime.KeepAlive(x)
		if ms.HeapAlloc < base {
			return 0
		}
		return ms.HeapAlloc - base
	}
	policy := live(func() any {
		p, err := Load("p.yaml", body, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	})
	withState := live(func() any {
		ld := &Loader{}
		p, err := ld.Load("p.yaml", body, Options{})
		if err != nil || ld.lastState() == nil {
			t.Fatal(err, "or no state kept")
		}
		return []any{p, ld}
	})
	t.Logf("policy %.1f MB, policy and Loader %.1f MB", float64(policy)/1e6, float64(withState)/1e6)
	if withState > 2*policy {
		t.Errorf("a Loader keeps %.1f MB beyond its policy's %.1f MB", float64(withState-policy)/1e6, float64(policy)/1e6)
	}
}

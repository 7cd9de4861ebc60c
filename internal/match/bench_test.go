package match

import (
	"fmt"
	"testing"
)

// The benchmark names are referenced by docs/benchmarks.md: keep them.

var benchSizes = []int{100, 10000, 100000}

var sink Decision

func BenchmarkDecide(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			p, flows := benchPolicy(b, n)
			m, err := Compile(p, Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				sink = m.Decide(flows[i&(len(flows)-1)])
			}
		})
	}
}

func BenchmarkDecideLinear(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			p, flows := benchPolicy(b, n)
			m, err := Compile(p, Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				sink = m.DecideLinear(flows[i&(len(flows)-1)])
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	b.Run("rules=100000", func(b *testing.B) {
		p, _ := benchPolicy(b, 100000)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if _, err := Compile(p, Options{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestBenchPolicyHits checks that the benchmark flows hit early rules, late
// rules and no rule, so the benchmark measures all three (at a size that
// keeps the test fast).
func TestBenchPolicyHits(t *testing.T) {
	n := 10000
	p, flows := benchPolicy(t, n)
	m, err := Compile(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var early, late, miss int
	for _, f := range flows {
		d := m.Decide(f)
		if d != m.DecideLinear(f) {
			t.Fatalf("flow %+v: compiled and linear disagree", f)
		}
		if d.Rule == nil {
			miss++
			continue
		}
		rules := m.Rules(d.Kind)
		idx := -1
		for i, r := range rules {
			if r.Policy == d.Rule {
				idx = i
				break
			}
		}
		if idx < len(rules)/2 {
			early++
		} else {
			late++
		}
	}
	t.Logf("%d flows: %d early, %d late, %d no rule", len(flows), early, late, miss)
	for what, c := range map[string]int{"early": early, "late": late, "no rule": miss} {
		if c < len(flows)/5 {
			t.Errorf("only %d of %d flows hit %s", c, len(flows), what)
		}
	}
}

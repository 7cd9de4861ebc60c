package benchkit

import (
	"slices"
	"testing"
)

// TestBalanced: over a full cycle of rounds every element is in every
// position equally often and directly follows every other element equally
// often (first-order carry-over balanced); Rotate fails the second.
func TestBalanced(t *testing.T) {
	for k := 1; k <= 7; k++ {
		xs := make([]int, k)
		for i := range xs {
			xs[i] = i
		}
		rows := k
		if k%2 == 1 {
			rows = 2 * k
		}
		pos := map[[2]int]int{}
		follows := map[[2]int]int{}
		for r := range rows {
			o := Balanced(xs, r)
			s := slices.Clone(o)
			slices.Sort(s)
			if !slices.Equal(s, xs) {
				t.Fatalf("k=%d round %d: %v is not a permutation", k, r, o)
			}
			for i, x := range o {
				pos[[2]int{x, i}]++
				if i > 0 {
					follows[[2]int{o[i-1], x}]++
				}
			}
		}
		for a := range k {
			for i := range k {
				if got, want := pos[[2]int{a, i}], rows/k; got != want {
					t.Errorf("k=%d: element %d in position %d %d times, want %d", k, a, i, got, want)
				}
			}
			for b := range k {
				if a == b {
					continue
				}
				if got, want := follows[[2]int{a, b}], rows/k; got != want {
					t.Errorf("k=%d: %d directly before %d %d times, want %d", k, a, b, got, want)
				}
			}
		}
	}
	if o := Balanced([]string{"a", "b"}, 1); !slices.Equal(o, []string{"b", "a"}) {
		t.Errorf("two elements, round 1: %v", o)
	}
}

package ascii

import (
	"strings"
	"testing"
)

// TestAgainstStrings: on every pair of ASCII bytes the fold agrees with
// the standard library's; on non-ASCII input it changes nothing (where
// strings.EqualFold would fold the Kelvin sign into 'k').
func TestAgainstStrings(t *testing.T) {
	for a := 0; a < 128; a++ {
		for b := 0; b < 128; b++ {
			x, y := string(rune(a)), string(rune(b))
			if got, want := EqualFold(x, y), strings.EqualFold(x, y); got != want {
				t.Fatalf("EqualFold(%q, %q) = %v", x, y, got)
			}
		}
		if got, want := ToLower(string(rune(a))), strings.ToLower(string(rune(a))); got != want {
			t.Fatalf("ToLower(%q) = %q", rune(a), got)
		}
	}
	if EqualFold("\u212Aubernetes.io", "kubernetes.io") || !strings.EqualFold("\u212Aubernetes.io", "kubernetes.io") {
		t.Error("the Kelvin sign must not fold to k")
	}
	if ToLower("ÄB\u212A") != "Äb\u212A" {
		t.Errorf("ToLower touches non-ASCII bytes: %q", ToLower("ÄB\u212A"))
	}
	if !EqualFoldLower("WWW.Example.COM", "www.example.com") || EqualFoldLower("www.example.com", "WWW.EXAMPLE.COM") {
		t.Error("EqualFoldLower")
	}
	s := "already.lower"
	if n := testing.AllocsPerRun(100, func() { s = ToLower(s) }); n != 0 {
		t.Errorf("ToLower of a lower-case string allocates %v times", n)
	}
}

// Package ascii is the project's one ASCII case fold. DNS names, TLS SNI
// and HTTP Host values compare case-insensitively in ASCII only: IDNs
// travel as punycode, and Unicode folding (strings.EqualFold,
// strings.ToLower) would let "\u212Aubernetes.io" (KELVIN SIGN) stand for
// "kubernetes.io". Every enforcement point folds names with this package.
//
// The functions are branch-light and inlinable; none allocates unless it
// returns a new string.
package ascii

// Lower maps 'A'-'Z' to 'a'-'z' and returns every other byte unchanged.
func Lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// HasUpper reports whether s holds a byte 'A'-'Z'.
func HasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// ToLower returns s with 'A'-'Z' mapped to 'a'-'z' and every other byte
// unchanged; s itself (no allocation) when it has no upper-case letter.
func ToLower(s string) string {
	if !HasUpper(s) {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		b[i] = Lower(c)
	}
	return string(b)
}

// EqualFold reports whether a and b are equal when 'A'-'Z' are taken as
// 'a'-'z'.
func EqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if Lower(a[i]) != Lower(b[i]) {
			return false
		}
	}
	return true
}

// EqualFoldLower is EqualFold for a lower that is already lower case (one
// fold per byte: the matcher's and threat intelligence's hot paths).
func EqualFoldLower(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if Lower(s[i]) != lower[i] {
			return false
		}
	}
	return true
}

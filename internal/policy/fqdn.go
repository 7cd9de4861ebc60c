package policy

import (
	"fmt"
	"strings"

	"github.com/clusterwall/clusterwall/internal/ascii"
)

// FQDNKind is the shape of an application rule's FQDN pattern.
type FQDNKind uint8

const (
	FQDNInvalid FQDNKind = iota
	// FQDNExact matches one name.
	FQDNExact
	// FQDNSubdomains is "*.contoso.com": any name below contoso.com, not contoso.com itself.
	FQDNSubdomains
	// FQDNSuffix is "*contoso.com": any name ending in "contoso.com", including itself.
	FQDNSuffix
	// FQDNAny is "*": every name.
	FQDNAny
)

// FQDNPattern is a parsed target FQDN of an application rule.
type FQDNPattern struct {
	Kind FQDNKind
	// Name is the lower-case name without the wildcard and without a
	// trailing dot: "contoso.com" for all of "contoso.com", "*.contoso.com"
	// and "*contoso.com"; empty for "*".
	Name string
	// Tag is the FQDN tag this pattern came from, if any.
	Tag string
}

func (p FQDNPattern) String() string {
	switch p.Kind {
	case FQDNAny:
		return "*"
	case FQDNSubdomains:
		return "*." + p.Name
	case FQDNSuffix:
		return "*" + p.Name
	}
	return p.Name
}

// Match reports whether name (any case, optional trailing dot) matches. It is
// the reference semantics; the compiled matcher must agree with it.
func (p FQDNPattern) Match(name string) bool {
	name = strings.TrimSuffix(name, ".")
	switch p.Kind {
	case FQDNAny:
		return name != ""
	case FQDNExact:
		return ascii.EqualFold(name, p.Name)
	case FQDNSubdomains:
		return len(name) > len(p.Name)+1 && name[len(name)-len(p.Name)-1] == '.' &&
			ascii.EqualFold(name[len(name)-len(p.Name):], p.Name)
	case FQDNSuffix:
		return len(name) >= len(p.Name) && ascii.EqualFold(name[len(name)-len(p.Name):], p.Name)
	}
	return false
}

// ParseFQDNPattern parses an application rule target FQDN.
func ParseFQDNPattern(s string) (FQDNPattern, error) {
	s = strings.TrimSpace(s)
	if s == "*" {
		return FQDNPattern{Kind: FQDNAny}, nil
	}
	kind := FQDNExact
	rest := s
	switch {
	case strings.HasPrefix(s, "*."):
		kind, rest = FQDNSubdomains, s[2:]
	case strings.HasPrefix(s, "*"):
		kind, rest = FQDNSuffix, s[1:]
	}
	if strings.Contains(rest, "*") {
		return FQDNPattern{}, fmt.Errorf("bad FQDN %q: '*' is allowed only alone, as a leading \"*.\" or as a leading \"*\"", s)
	}
	name, err := NormalizeFQDN(rest)
	if err != nil {
		return FQDNPattern{}, fmt.Errorf("bad FQDN %q: %v", s, err)
	}
	if kind == FQDNSuffix && strings.HasPrefix(name, ".") {
		return FQDNPattern{}, fmt.Errorf("bad FQDN %q", s)
	}
	return FQDNPattern{Kind: kind, Name: name}, nil
}

// NormalizeFQDN checks an exact DNS name and returns it in lower case without
// a trailing dot.
func NormalizeFQDN(s string) (string, error) {
	s = strings.TrimSuffix(strings.TrimSpace(s), ".")
	if s == "" {
		return "", fmt.Errorf("empty name")
	}
	if len(s) > 253 {
		return "", fmt.Errorf("name longer than 253 characters")
	}
	if strings.Contains(s, "*") {
		return "", fmt.Errorf("wildcards are not allowed here")
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" {
			return "", fmt.Errorf("empty label")
		}
		if len(label) > 63 {
			return "", fmt.Errorf("label %q longer than 63 characters", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("character %q not allowed in a name", c)
			}
		}
	}
	return strings.ToLower(s), nil
}

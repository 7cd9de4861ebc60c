package nft

import (
	"strings"
	"testing"
)

// TestLogGeneration: with Config.LogGeneration every log prefix carries the
// generation, parses back to the same rule, and rule comments keep the tag
// without it (counters and `dataplane show` do not change per reload).
func TestLogGeneration(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		tag    LogTag
	}{
		{"cw:A:3:g7", LogTag{Kind: LogAllow, Index: 3, Gen: 7}},
		{"cw:D:default:g4294967295", LogTag{Kind: LogDefaultDeny, Gen: 4294967295}},
		{"cw:D:input:g1", LogTag{Kind: LogInputDrop, Gen: 1}},
		{"cw:N:0:g12", LogTag{Kind: LogDNAT, Gen: 12}},
	} {
		got, err := ParseLogTag(tc.prefix)
		if err != nil || got != tc.tag {
			t.Errorf("ParseLogTag(%q) = %+v, %v; want %+v", tc.prefix, got, err, tc.tag)
		}
		if s := tc.tag.String(); s != tc.prefix {
			t.Errorf("String() = %q, want %q", s, tc.prefix)
		}
	}
	for _, bad := range []string{"cw:A:3:g", "cw:A:3:g0", "cw:A:3:g01", "cw:A:3:g4294967296", "cw:A:3:gx", "cw:A::g3", "cw:D:other:g3"} {
		if _, err := ParseLogTag(bad); err == nil {
			t.Errorf("ParseLogTag(%q) accepted", bad)
		}
	}

	p := loadPolicy(t, "testdata/kinds.yaml")
	cfg := labConfig()
	cfg.LogGeneration = 42
	rs, err := compilePolicy(p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, st := range r.Stmts {
				l, ok := st.(Log)
				if !ok {
					continue
				}
				n++
				tag, err := ParseLogTag(l.Prefix)
				if err != nil || tag.Gen != 42 {
					t.Fatalf("prefix %q: %+v, %v; want generation 42", l.Prefix, tag, err)
				}
				tag.Gen = 0
				if !strings.HasPrefix(r.Comment, tag.String()+" ") {
					t.Errorf("log %q in a rule commented %q", l.Prefix, r.Comment)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no log statements")
	}
}

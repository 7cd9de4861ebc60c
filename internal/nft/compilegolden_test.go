package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// TestCompileGoldenSums: the rulesets of the large policies (the
// 10,000-rule enterprise policy, with and without LimitRuleLogs, and the
// flat 100,000-rule one) and of the example are, byte for byte, those the
// compile of main made (c674058; 8deca2a for big10k-limited, whose
// leaves of one rule kobjects fused with their decision):
// testdata/compile_sums.txt holds the
// SHA-256 of each one's text (Ruleset.String: every set with its
// elements, every chain with its rules, in order, names included), its
// Stats and its FQDN sets. The speed-ups of the compile's steps (naming,
// the classifier's keys and partitions) must not change what it makes;
// rewrite the file with -update only for a change meant to change the
// ruleset.
func TestCompileGoldenSums(t *testing.T) {
	type tc struct {
		name string
		p    func() *policy.Policy
		cfg  func(Config) Config
	}
	same := func(c Config) Config { return c }
	cases := []tc{
		{"example", func() *policy.Policy { return loadExample(t) }, same},
		{"big10k", func() *policy.Policy { return bigPolicy(10000, 1) }, same},
		{"big10k-limited", func() *policy.Policy { return bigPolicy(10000, 2) }, func(c Config) Config { c.LimitRuleLogs = true; return c }},
	}
	if !testing.Short() {
		cases = append(cases, tc{"flat100k", func() *policy.Policy { return flatPolicy(100000, 0) }, same})
	}
	var got []string
	for _, c := range cases {
		cfg := c.cfg(labConfig())
		m, err := match.Compile(c.p(), match.Options{Gateway: cfg.Gateway()})
		if err != nil {
			t.Fatal(err)
		}
		rs, err := Compile(m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		h.Write([]byte(rs.String()))
		fmt.Fprintf(h, "%+v\n", rs.Stats)
		for _, n := range rs.FQDNs() {
			fmt.Fprintf(h, "%s %v\n", n, rs.FQDNSets(n))
		}
		got = append(got, c.name+" "+hex.EncodeToString(h.Sum(nil)))
	}
	path := filepath.Join("testdata", "compile_sums.txt")
	if *update {
		if err := os.WriteFile(path, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.TrimSpace(string(data)), "\n")
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("ruleset %s differs from the golden one (want one of %q)", g, want)
		}
	}
}

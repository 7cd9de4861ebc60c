package policy

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The fast paths of loading (fastyaml.go, wiredecode.go) against the
// library's: the same policy (deep-equal) and the same errors, to the
// byte, for every example and testdata policy, for edge cases of the
// subsets and for thousands of generated (mostly invalid) edits of them.

// referenceLoad is Load with every fast path off: yaml.v3 parses and
// decodes.
func referenceLoad(name string, data []byte, opts Options) (*Policy, error) {
	fastPathOff, wireDecodeOff = true, true
	defer func() { fastPathOff, wireDecodeOff = false, false }()
	return Load(name, data, opts)
}

// samePaths fails t unless data loads to the same policy and errors on
// both paths; it returns whether it loaded.
func samePaths(t testing.TB, name string, data []byte, opts Options) bool {
	t.Helper()
	p, err := Load(name, data, opts)
	q, rerr := referenceLoad(name, data, opts)
	if fmt.Sprint(err) != fmt.Sprint(rerr) {
		t.Fatalf("%s: errors differ:\nfast:      %v\nreference: %v\n---\n%.2000s", name, err, rerr, data)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("%s: policies differ\n---\n%.2000s", name, data)
	}
	// The wire forms too (a Loader keeps them).
	f, _, ferr := DecodeYAML(name, data)
	fastPathOff, wireDecodeOff = true, true
	g, _, gerr := DecodeYAML(name, data)
	fastPathOff, wireDecodeOff = false, false
	if fmt.Sprint(ferr) != fmt.Sprint(gerr) || !reflect.DeepEqual(f, g) {
		t.Fatalf("%s: wire forms differ: %v / %v\n---\n%.2000s", name, ferr, gerr, data)
	}
	return err == nil
}

// pathCorpus: the policies of the repository (examples, every package's
// testdata), the tests' policies, and cases at the subsets' edges.
func pathCorpus(t testing.TB) map[string][]byte {
	docs := map[string][]byte{}
	var files []string
	for _, g := range []string{"../../examples/*.yaml", "../../examples/*/*.yaml", "../*/testdata/*.yaml", "../*/*/testdata/*.yaml", "testdata/*.yaml"} {
		m, _ := filepath.Glob(g)
		files = append(files, m...)
	}
	if len(files) < 8 {
		t.Fatalf("only %d policy files found", len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[f] = data
	}
	for i, s := range []string{minimal, incrementalSeed, bigPolicyYAML(60), groupsPolicyYAML(3, 2, 3), edgeGroups} {
		docs[fmt.Sprintf("gen%d.yaml", i)] = []byte(s)
	}
	for i, s := range wireEdges {
		docs[fmt.Sprintf("edge%02d.yaml", i)] = []byte(strings.Replace(minimal, "          - name: r\n", s, 1))
	}
	return docs
}

// edgeGroups has every field of the groups' wire types.
const edgeGroups = `name: every
ipGroups: {web: [10.1.0.0/16]}
ruleCollectionGroups:
  - {name: g, priority: 100, ruleCollections: [{name: n, kind: DNAT, priority: 100, action: DNAT, rules: [
      {name: d, description: x, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [203.0.113.1], destinationPorts: ['22'], translatedAddress: 10.0.0.1, translatedPort: '22'},
      {name: e, protocols: [TCP], sourceIpGroups: [web], destinationAddresses: [203.0.113.1], destinationPorts: ['23'], translatedFqdn: a.example.com, translatedPort: 22}]}]}
  - name: h
    priority: 200
    ruleCollections:
      - name: a
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: a
            protocols: ['Https:443', Http]
            sourceAddresses: [10.0.0.0/8]
            targetFqdns: ['*.example.com']
            fqdnTags: [AzureKubernetesService]
      - name: n
        kind: Network
        priority: 200
        action: Deny
        rules:
          - name: n
            description: 12
            protocols: [Any]
            sourceAddresses: [10.0.0.0/8]
            destinationIpGroups: [web]
            destinationFqdns: [db.example.com]
            destinationPorts: ['*', 1000-2000]
`

// wireEdges replace the minimal policy's rule: values the wire decoder
// leaves to yaml.v3, or takes as yaml.v3 does.
var wireEdges = []string{
	"          - name: ~\n",
	"          - name:\n",
	"          - name: null\n            destinationFqdns: ~\n",
	"          - name: !!str r\n",
	"          - name: !!int 12\n",
	"          - name: !!binary aGVsbG8=\n",
	"          - name: 2001-01-01\n",
	"          - name: true\n            description: yes\n",
	"          - name: 1.5\n            description: .inf\n",
	"          - name: 0x1F\n            description: -0\n",
	"          - &a name: r\n",
	"          - name: &a r\n            description: *a\n",
	"          - <<: {name: r}\n",
	"          - name: r\n            destinationFqdns: [a.example.com, ~, b.example.com]\n",
	"          - name: r\n            destinationFqdns: []\n",
	"          - name: r\n            destinationFqdns: [[a.example.com]]\n",
	"          - name: r\n            destinationFqdns: a.example.com\n",
	"          - name: r\n            unknown: 1\n",
	"          - name: r\n            name: s\n",
	"          - 'name': r\n            \"description\": \"x\"\n",
	"          - name: r\n            description: |\n              two\n              lines\n",
	"          - name: r\n            translatedPort: 0443\n",
	"          - name: r\n            1: x\n",
	"          - ~\n",
	"          - []\n",
	"          - {name: r, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [10.0.0.1], destinationPorts: [443]}\n          - name: q\n",
}

// wireEdgePriorities replace the minimal policy's collection priority.
var wireEdgePriorities = []string{"0100", "0x64", "1_00", "+100", "-100", "'100'", "100.0", "1e2", "~", "!!int 100", "99999999999999999999", "123456789012345678", "1234567890123456789", "0"}

// TestLoadPathsSame: the corpus and its edits load to the same policies
// and errors on both paths.
func TestLoadPathsSame(t *testing.T) {
	docs := pathCorpus(t)
	for _, p := range wireEdgePriorities {
		docs["prio-"+p] = []byte(strings.Replace(minimal, "        priority: 100\n", "        priority: "+p+"\n", 1))
	}
	opts := Options{ServiceTags: ServiceTags{}}
	loaded := 0
	for name, data := range docs {
		// Under their own names: relative paths (service tags, base
		// policies, feeds) resolve.
		if samePaths(t, name, data, Options{}) {
			loaded++
		}
		samePaths(t, name, data, opts)
	}
	if loaded < 10 {
		t.Errorf("only %d of %d documents loaded", loaded, len(docs))
	}
	r := rand.New(rand.NewPCG(15, 2))
	alpha := []byte("- :#'\"[],\n\n  ab1{}&*!|>?0./9~")
	names := make([]string, 0, len(docs))
	for name := range docs {
		names = append(names, name)
	}
	n := 4000
	if testing.Short() {
		n = 800
	}
	ok := 0
	for i := range n {
		name := names[r.IntN(len(names))]
		b := docs[name]
		for range 1 + r.IntN(3) {
			b = mutate(r, b, alpha) // incremental_test.go
		}
		if samePaths(t, fmt.Sprintf("m%d.yaml", i), b, opts) {
			ok++
		}
	}
	t.Logf("%d documents (%d load), %d edits (%d load)", len(docs), loaded, n, ok)
}

// FuzzLoadPaths: any document loads to the same policy and errors on
// both paths (seed corpus: testdata/fuzz/FuzzLoadPaths and the corpus
// above).
func FuzzLoadPaths(f *testing.F) {
	for _, data := range pathCorpus(f) {
		if len(data) < 4096 {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		samePaths(t, "f.yaml", data, Options{ServiceTags: ServiceTags{}})
	})
}

var updateGolden = flag.Bool("update", false, "rewrite testdata/load-errors.golden")

// TestLoadErrorsGolden: the errors of generated invalid policies, to the
// byte, as main (c9bc4b8) reported them before the loader's fast paths
// (testdata/load-errors.golden, written by that version with -update):
// what proves that a change to decoding or validation keeps every
// message, position and path.
func TestLoadErrorsGolden(t *testing.T) {
	var out strings.Builder
	for i, data := range goldenInputs() {
		_, err := Load("g.yaml", data, Options{ServiceTags: ServiceTags{}})
		fmt.Fprintf(&out, "=== %d\n%v\n", i, err)
	}
	const file = "testdata/load-errors.golden"
	if *updateGolden {
		if err := os.WriteFile(file, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != string(want) {
		g, w := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(g), len(w)) {
			if g[i] != w[i] {
				t.Fatalf("line %d of %s differs:\ngot  %s\nwant %s", i+1, file, g[i], w[i])
			}
		}
		t.Fatalf("%s: %d lines, want %d", file, len(g), len(w))
	}
}

// goldenInputs are invalid policies made from the tests' policies by
// edits of their values and structure (a fixed seed: the same inputs
// every run).
func goldenInputs() [][]byte {
	seeds := []string{minimal, incrementalSeed, groupsPolicyYAML(2, 2, 3), edgeGroups}
	var out [][]byte
	for _, s := range seeds {
		for _, e := range wireEdges {
			out = append(out, []byte(strings.Replace(s, "  - name: ", "  - "+strings.TrimSpace(e)+"\n    name: ", 1)))
		}
	}
	// Bad values where the validator checks them.
	bad := []struct{ from, to string }{
		{"'443'", "'70000'"}, {"'443'", "'0'"}, {"'443'", "'9-3'"}, {"'443'", "x"}, {"[TCP]", "[TPC]"}, {"[TCP]", "[]"},
		{"10.0.0.1", "10.0.0.256"}, {"10.0.0.1", "AzureCloud"}, {"10.0.0.1", "10.0.0.9-10.0.0.1"}, {"['*']", "[10.0.0.0/33]"},
		{"kind: Network", "kind: Net"}, {"action: Allow", "action: DNAT"}, {"action: Allow", "action: Maybe"},
		{"priority: 200", "priority: 20"}, {"priority: 100", "priority: 65001"}, {"name: r", "name: ''"}, {"name: c", "name: ''"},
		{"kind: DNAT", "kind: Network"}, {"translatedPort: '22'", "translatedPort: '99999'"}, {"translatedAddress: 10.3.0.4", "translatedAddress: x"},
		{"[web]", "[nosuch]"}, {"[db.example.com]", "['*.example.com']"}, {"'*.example.com'", "'a..b'"}, {"Https:443", "Ftp:21"},
		{"[AzureKubernetesService]", "[NoSuchTag]"}, {"name: r1", "name: r2"}, {"name: g1", "name: g0"}, {"priority: 101", "priority: 100"},
		{"sourceAddresses", "sourceAddress"}, {"destinationPorts", "destinationPort"}, {"rules:", "rule:"}, {"name: inc", "name: inc\nkind: Policy"},
	}
	for _, s := range seeds {
		for _, b := range bad {
			if strings.Contains(s, b.from) {
				out = append(out, []byte(strings.Replace(s, b.from, b.to, 1)))
				out = append(out, []byte(strings.ReplaceAll(s, b.from, b.to)))
			}
		}
	}
	r := rand.New(rand.NewPCG(15, 7))
	alpha := []byte("- :#'\"[],\n\n  ab1{}&*!|>?0./9~")
	for range 600 {
		b := []byte(seeds[r.IntN(len(seeds))])
		for range 1 + r.IntN(3) {
			b = mutate(r, b, alpha)
		}
		out = append(out, b)
	}
	return out
}

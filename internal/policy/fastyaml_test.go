package policy

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// sameTree reports where a and b (yaml.v3's) differ, comments aside.
func sameTree(a, b *yaml.Node, path string) error {
	if a.Kind != b.Kind || a.Tag != b.Tag || a.Value != b.Value || a.Style != b.Style || a.Line != b.Line ||
		a.Column != b.Column || a.Anchor != b.Anchor || (a.Alias == nil) != (b.Alias == nil) || len(a.Content) != len(b.Content) {
		return fmt.Errorf("%s: fast %d %q %q style %d at %d:%d (%d children), yaml.v3 %d %q %q style %d at %d:%d (%d children)", path,
			a.Kind, a.Tag, a.Value, a.Style, a.Line, a.Column, len(a.Content), b.Kind, b.Tag, b.Value, b.Style, b.Line, b.Column, len(b.Content))
	}
	for i := range a.Content {
		if err := sameTree(a.Content[i], b.Content[i], fmt.Sprintf("%s/%d", path, i)); err != nil {
			return err
		}
	}
	return nil
}

// checkFast: when parseFastYAML takes data, yaml.v3 parses it to the same
// tree. It returns whether the fast path took it.
func checkFast(t *testing.T, data []byte) bool {
	t.Helper()
	fast, ok := parseFastYAML(data)
	if !ok {
		return false
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("fast path took what yaml.v3 rejects (%v):\n%s", err, data)
	}
	if err := sameTree(fast, &doc, ""); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	return true
}

// TestFastYAMLSameTree: the fast path builds yaml.v3's tree for the
// documents it takes (the generated large policies, the examples, the
// subset's corner cases) and leaves the rest to yaml.v3.
func TestFastYAMLSameTree(t *testing.T) {
	take := []string{
		bigPolicyYAML(300),
		minimal,
		"a: b\n",
		"\n\n# c\n  a: [x, 'y']   # c\n  b:\n  - 1\n  - k: v\n    j: 2\n  c: 'it''s' # q\n",
		"a:\n  - - 1\n", // "- - x" is left to yaml.v3 (below), this one too? see take/leave check
		"k: -1\nl: x:y\nm: a#b\nn: ~\no: null\np: true\nq: 0x1F\nr: 1e3\ns: .inf\nt: 2001-01-01\nu: [a b, -2, 'c''d', '']\nv: []\nw: [ ]\n",
		"- a\n- b: c\n  d:\n    - e\n-\n  f: g\n",
		"a: {b: c}\n",
		"rules:\n- name: r\n  ports: ['80', '443']\n- name: s\n",
		"a: b   \nc:    d\n",
		"a: [x]#c\n",
		"a: 'x'#c\n",
		"a: [x,]\n",
		"a: [x, [y]]\n",
		"a: [x\n  , y]\n",
		"a: b\n  c\n",
		"- a\n  b\n",
		"a:\nb: c\n",
		"a: &x 1\nb: *x\n",
		"a: !!str 1\n",
		"a: |\n  x\n",
		"---\na: b\n",
		"a: b\n---\nc: d\n",
		"a: \"x\"\n",
		"a: \"x\\ty\"\n",
		"a: [\"2001:db8::/64\", \"b\" ]\n",
		"a: b\r\n",
		"a:\tb\n",
		"a: ü\n",
		"'a': b\n",
		"a: b: c\n",
		"a: b\n c: d\n",
		"  a: b\nc: d\n",
		"a:\n  b: c\n d: e\n",
		"<<: {a: b}\n",
		"? a\n: b\n",
		"a: - b\n",
		"a: b #c\n#d\n  #e\nf: g\n",
		"- a: 1\n   b: 2\n",
		"a: [ 'x' , y ]\n",
		"a: [T?P]\n",
		"a: [?x]\n",
		"a: ?x\n",
		"a: :x\n",
		"a: 'x\n  y'\n",
		"x",
		"",
		"# only\n",
		"a: b\n...\n",
		strings.Repeat("k", 1024) + ": v\n", strings.Repeat("k", 1025) + ": v\n", "- " + strings.Repeat("k", 1023) + " : v\n",
		"- " + strings.Repeat("k", 1024) + " : v\n", "a: [" + strings.Repeat("x", 2000) + "]\n",
	}
	took := 0
	for _, doc := range take {
		if checkFast(t, []byte(doc)) {
			took++
		}
	}
	// The documents the fast path is for.
	seed, err := os.ReadFile("../../examples/aks-egress.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{bigPolicyYAML(300), minimal, string(seed), "a: b\n", "- a\n- b: c\n  d:\n    - e\n-\n  f: g\n"} {
		if _, ok := parseFastYAML([]byte(doc)); !ok {
			t.Errorf("fast path left to yaml.v3:\n%.300s", doc)
		}
	}
	files, _ := filepath.Glob("../../examples/*.yaml")
	more, _ := filepath.Glob("../*/testdata/*.yaml")
	more2, _ := filepath.Glob("../*/*/testdata/*.yaml")
	for _, f := range append(append(files, more...), more2...) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if checkFast(t, data) {
			took++
		}
	}
	t.Logf("fast path took %d documents", took)
	if took < 10 {
		t.Errorf("fast path took only %d documents", took)
	}
}

// TestFastYAMLLoadErrorsSame: a policy with an error loads to the same
// errors and positions through the fast path and through yaml.v3.
func TestFastYAMLLoadErrorsSame(t *testing.T) {
	// A policy with validation errors at known places, in the subset.
	bad := strings.Replace(minimal, "'443'", "'70000'", 1)
	if bad == minimal {
		t.Fatal("the minimal policy has no '443'")
	}
	if _, ok := parseFastYAML([]byte(bad)); !ok {
		t.Fatal("fast path left the policy to yaml.v3")
	}
	_, errFast := Load("p.yaml", []byte(bad), Options{ServiceTags: ServiceTags{}})
	fastPathOff = true
	_, errSlow := Load("p.yaml", []byte(bad), Options{ServiceTags: ServiceTags{}})
	fastPathOff = false
	if errFast == nil || errSlow == nil || errFast.Error() != errSlow.Error() {
		t.Fatalf("fast path: %v\nyaml.v3: %v", errFast, errSlow)
	}
}

// TestPlainTag: the shortcuts of plainTag resolve as yaml.v3 does.
func TestPlainTag(t *testing.T) {
	for _, v := range []string{"10.0.0.0/24", "443", "0", "7", "0443", "123456789012345678", "1234567890123456789",
		"99999999999999999999", "1.2.3.4", "1.2", "1..", "..", "...", ".5", "1.", "2001-01-01", "2001:db8::/32", "/",
		"a/b", "1e3", "0x1F", "1_000", "-1", "+1", ".inf", "null", "~", "true", "yes", "x1.2.3", "1.2.3x", "1.2.3.4/33",
		"TCP", "Network", "name", "no", "on", "off", "Null", "NULL", "nULL", "True", "tRUE", "y", "n", "N", "FALSE", "False", "false", "o", "Any", "Z", "z9", "TRUE"} {
		n := &yaml.Node{Kind: yaml.ScalarNode, Value: v}
		if got, want := plainTag([]byte(v), n), n.ShortTag(); got != want {
			t.Errorf("plainTag(%q) = %s, yaml.v3 %s", v, got, want)
		}
	}
}

// TestFastYAMLMutations: random edits of policies in the subset (what
// found that yaml.v3 ends a flow plain scalar at '?').
func TestFastYAMLMutations(t *testing.T) {
	alpha := []byte("- :#'\"[],\n\n  ab1{}&*!|>?\t0./")
	seeds := [][]byte{[]byte(minimal), []byte(bigPolicyYAML(3)), []byte("- a\n- b: c\n  d:\n    - e\n-\n  f: g\n")}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	for range 20000 {
		b := append([]byte(nil), seeds[r.IntN(len(seeds))]...)
		checkFast(t, mutateBytes(r, b, alpha, 1+r.IntN(4)))
	}
}

// mutateBytes makes n random edits of b: a byte replaced, deleted or
// inserted (from alpha).
func mutateBytes(r *rand.Rand, b, alpha []byte, n int) []byte {
	for ; n > 0 && len(b) > 0; n-- {
		i := r.IntN(len(b))
		switch r.IntN(3) {
		case 0:
			b[i] = alpha[r.IntN(len(alpha))]
		case 1:
			b = append(b[:i], b[i+1:]...)
		case 2:
			b = append(b[:i], append([]byte{alpha[r.IntN(len(alpha))]}, b[i:]...)...)
		}
	}
	return b
}

// FuzzFastYAML: whatever the fast path takes, yaml.v3 parses to the same
// tree.
func FuzzFastYAML(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(bigPolicyYAML(30)))
	f.Add([]byte("- a\n- b: c\n  d:\n    - e\n-\n  f: g\n"))
	f.Add([]byte("k: -1\nl: x:y\nm: a#b\nn: ~\nu: [a b, -2, 'c''d', '']\nv: []\n"))
	if data, err := os.ReadFile("../../examples/aks-egress.yaml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFast(t, data)
	})
}

// TestFastYAMLLoadSame: the seed's policy and a generated one load to the
// same policy through the fast path and through yaml.v3.
func TestFastYAMLLoadSame(t *testing.T) {
	seed, err := os.ReadFile("../../examples/aks-egress.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range [][]byte{seed, []byte(bigPolicyYAML(300))} {
		fast, errFast := Load("../../examples/aks-egress.yaml", doc, Options{})
		fastPathOff = true
		slow, errSlow := Load("../../examples/aks-egress.yaml", doc, Options{})
		fastPathOff = false
		if errFast != nil || errSlow != nil {
			t.Fatalf("fast path: %v, yaml.v3: %v", errFast, errSlow)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Errorf("the policies differ:\n%.300s", doc)
		}
	}
}

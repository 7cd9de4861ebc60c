package policy

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// forceParallel makes every load take the parallel path (parallel.go)
// with parts parts, whatever its size and the cores, until the test ends.
func forceParallel(t *testing.T, parts int) {
	minBytes, minRules, p, cb, cr := parallelMinBytes, parallelMinRules, parallelParts, chunkMinBytes, chunkMinRules
	parallelMinBytes, parallelMinRules, parallelParts, chunkMinBytes, chunkMinRules = 0, 0, parts, 0, 0
	t.Cleanup(func() {
		parallelMinBytes, parallelMinRules, parallelParts, chunkMinBytes, chunkMinRules = minBytes, minRules, p, cb, cr
	})
}

// sameParallel fails t unless loading data on several cores gives what
// the sequential path gives: the same policy (positions included), the
// same errors in the same order (positions, paths, messages), the same
// tree. It returns whether the decoding and the validation took the
// parallel path.
func sameParallel(t *testing.T, data []byte, opts Options) (decoded, validated bool) {
	t.Helper()
	d0, v0 := parallelDecodes.Load(), parallelValidations.Load()
	got, gerr := Load("p.yaml", data, opts)
	gf, gpos, _, _ := decodeYAMLTree("p.yaml", data, opts.Limits)
	decoded, validated = parallelDecodes.Load() > d0, parallelValidations.Load() > v0
	parallelOff = true
	want, werr := Load("p.yaml", data, opts)
	wf, wpos, _, _ := decodeYAMLTree("p.yaml", data, opts.Limits)
	parallelOff = false
	if !reflect.DeepEqual(gerr, werr) {
		t.Fatalf("errors differ\nparallel:   %v\nsequential: %v\n%s", gerr, werr, data)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the policies differ (parallel decode %v, validation %v)\n%s", decoded, validated, data)
	}
	if !reflect.DeepEqual(gf, wf) {
		t.Fatalf("the wire policies differ\n%s", data)
	}
	if (gpos.root == nil) != (wpos.root == nil) {
		t.Fatalf("one tree is missing\n%s", data)
	}
	if gpos.root != nil {
		if err := sameTree(gpos.root, wpos.root, ""); err != nil {
			t.Fatalf("the trees differ: %v\n%s", err, data)
		}
	}
	return decoded, validated
}

// mixedPolicyYAML is a policy of g groups of every kind (incrementalSeed's
// four, renamed), its list at the key's indentation, with IP groups
// before it and dns after it; the application group has a network
// collection of the same priority before its application one (the
// validated collections keep their order in the group). warn keeps the
// DNAT rule's IPv6 source, a warning.
func mixedPolicyYAML(g int, warn bool) string {
	seed := strings.Replace(incrementalSeed, `  ruleCollections:
    - name: web
`, `  ruleCollections:
    - name: web0
      kind: Network
      priority: 100
      action: Deny
      rules:
        - name: n1
          protocols: [UDP]
          sourceAddresses: [10.7.0.0/16]
          destinationAddresses: [10.8.0.1]
          destinationPorts: ['53']
    - name: web
`, 1)
	if !warn {
		seed = strings.Replace(seed, "['2001:db8::/64', 10.0.0.0/8]", "[10.0.0.0/8]", 1)
	}
	head, rest, _ := strings.Cut(seed, "ruleCollectionGroups:\n")
	list, tail, _ := strings.Cut(rest, "dns:\n")
	var b strings.Builder
	b.WriteString(head + "ruleCollectionGroups:\n")
	for i := range g {
		l := list
		for k, name := range []string{"dnat", "net", "app", "net2"} {
			l = strings.Replace(l, "- name: "+name+"\n  priority: "+fmt.Sprint(100*(k+1)), fmt.Sprintf("- name: %s%d\n  priority: %d", name, i, 100+4*i+k), 1)
		}
		b.WriteString(l)
	}
	b.WriteString("dns:\n" + tail)
	return b.String()
}

// TestParallelLoadSame: big generated policies (groups of one kind at two
// indentations, of every kind with a warning) load on several cores to
// exactly what the sequential path loads, and they did take the parallel
// path; so do texts with errors in the header, in the first, middle and
// last parts, after the list, in several parts at once (the first errors
// kept under a small cap), a node budget passed, and random edits.
func TestParallelLoadSame(t *testing.T) {
	big := groupsPolicyYAML(12, 3, 5)
	texts := map[string]string{
		"big":   bigPolicyYAML(3000),
		"12x3":  big,
		"mixed": mixedPolicyYAML(6, false),
		"warns": mixedPolicyYAML(6, true),
	}
	opts := Options{ServiceTags: ServiceTags{}}
	for _, parts := range []int{2, 3, 4} {
		forceParallel(t, parts)
		for name, text := range texts {
			dec, val := sameParallel(t, []byte(text), opts)
			if !dec {
				t.Errorf("%s, %d parts: not decoded in parallel", name, parts)
			}
			if !val && name != "warns" { // its DNAT rules warn: validated sequentially
				t.Errorf("%s, %d parts: not validated in parallel", name, parts)
			}
		}
	}

	// Edits of the 12-group text at group gi's rule: a bad port (a
	// validation error), an unknown field (the walker's), a tab (outside
	// the fast path), the first group's name (a duplicate across parts).
	groupAt := func(gi int) int { return strings.Index(big, fmt.Sprintf("  - name: g%d\n", gi)) }
	edit := func(gi int, old, new string) string {
		at := groupAt(gi)
		k := at + strings.Index(big[at:], old)
		return big[:k] + new + big[k+len(old):]
	}
	cases := map[string]string{
		"header":     strings.Replace(big, "name: groups\n", "name: groups\nipGroups: {'bad name': [10.0.0.0/8]}\n", 1),
		"after list": big + "dns:\n  servers: [x]\n",
		"trailer":    big + "kind: Other\n",
	}
	for _, gi := range []int{0, 1, 5, 6, 11} {
		cases[fmt.Sprintf("port g%d", gi)] = edit(gi, "'401'", "'0'")
		cases[fmt.Sprintf("field g%d", gi)] = edit(gi, "            protocols:", "            bogus: 1\n            protocols:")
		cases[fmt.Sprintf("tab g%d", gi)] = edit(gi, "protocols: [TCP]", "protocols:\t[TCP]")
		cases[fmt.Sprintf("dup g%d", gi)] = edit(gi, fmt.Sprintf("name: g%d\n", gi), "name: g0\n")
		cases[fmt.Sprintf("shape g%d", gi)] = edit(gi, "sourceAddresses: [", "sourceAddresses: {a: [")
		cases[fmt.Sprintf("indent g%d", gi)] = edit(gi, "    ruleCollections:", "   ruleCollections:")
	}
	two := edit(1, "'402'", "'70000'")
	at := groupAt(10)
	k := at + strings.Index(big[at:], "'403'")
	cases["two parts"] = two[:k] + "'0'" + two[k+5:]
	cases["every group"] = strings.ReplaceAll(big, "'404'", "'0'")
	for _, parts := range []int{2, 3, 4} {
		forceParallel(t, parts)
		for name, text := range cases {
			sameParallel(t, []byte(text), opts)
			capped := opts
			capped.Limits.MaxErrors = 3
			sameParallel(t, []byte(text), capped)
			_ = name
		}
		// The node budget: the sequential path's error, wherever the
		// count passes it.
		for _, max := range []int{50, 1000, 2500} {
			o := opts
			o.Limits.MaxNodes = max
			sameParallel(t, []byte(big), o)
		}
	}

	// A Loader keeps what a parallel load decoded: the next edit is
	// loaded incrementally, to what Load gives.
	for _, parts := range []int{2, 3} {
		forceParallel(t, parts)
		ld := &Loader{}
		sameLoad(t, ld, []byte(big), opts)
		for _, gi := range []int{0, 6, 11} {
			if inc, ok := sameLoad(t, ld, []byte(edit(gi, "'401'", "'4001'")), opts); !inc || !ok || ld.Reused < 11 {
				t.Errorf("%d parts, edit in g%d: incremental %v, loaded %v, %d groups reused", parts, gi, inc, ok, ld.Reused)
			}
			sameLoad(t, ld, []byte(big), opts)
		}
	}

	// Random edits of the three texts.
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 15))
	alpha := []byte("- :#'\"[],\n\n  ab1{}&*!|>?0./9")
	n := 600
	if testing.Short() {
		n = 150
	}
	seeds := [][]byte{[]byte(big), []byte(mixedPolicyYAML(3, false)), []byte(groupsPolicyYAML(5, 1, 2))}
	loaded := 0
	for i := range n {
		forceParallel(t, 2+i%3)
		b := mutate(r, seeds[r.IntN(len(seeds))], alpha)
		if dec, _ := sameParallel(t, b, opts); dec {
			loaded++
		}
	}
	t.Logf("%d of %d random edits decoded in parallel", loaded, n)
}

// TestParallelThresholds: with the defaults, a small policy takes the
// sequential path and a 10,000-rule one the parallel path when there are
// two cores.
func TestParallelThresholds(t *testing.T) {
	if loadParts() < 2 {
		t.Skip("one core")
	}
	d0, v0 := parallelDecodes.Load(), parallelValidations.Load()
	if _, err := Load("p.yaml", []byte(groupsPolicyYAML(4, 2, 5)), Options{}); err != nil {
		t.Fatal(err)
	}
	if parallelDecodes.Load() != d0 || parallelValidations.Load() != v0 {
		t.Error("a 40-rule policy took the parallel path")
	}
	if _, err := Load("p.yaml", []byte(bigPolicyYAML(10_000)), Options{}); err != nil {
		t.Fatal(err)
	}
	if parallelDecodes.Load() != d0+1 || parallelValidations.Load() != v0+1 {
		t.Error("a 10,000-rule policy did not take the parallel path")
	}
}

// FuzzParallelLoad: whatever the text, the parallel path (forced, in two
// or three parts) loads it to what the sequential path loads.
func FuzzParallelLoad(f *testing.F) {
	f.Add([]byte(groupsPolicyYAML(3, 2, 2)))
	f.Add([]byte(mixedPolicyYAML(2, true)))
	f.Add([]byte(incrementalSeed))
	f.Add([]byte("ruleCollectionGroups:\n- a\n- b\nx: 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		forceParallel(t, 2+len(data)%2)
		sameParallel(t, data, Options{ServiceTags: ServiceTags{}})
	})
}

// TestDecodedGroupsWalkClean: whatever group the wire decoder takes, the
// walker finds nothing wrong in it (what lets decodeYAMLTree and the
// parallel path walk only the rest of the document): the load-path corpus,
// its edge cases (a duplicate field, unknown ones, tags, aliases, nulls,
// every priority the decoder leaves to yaml.v3) and random edits, parsed
// by yaml.v3 and by the fast path.
func TestDecodedGroupsWalkClean(t *testing.T) {
	docs := pathCorpus(t)
	for _, p := range wireEdgePriorities {
		docs["prio-"+p] = []byte(strings.Replace(minimal, "        priority: 100\n", "        priority: "+p+"\n", 1))
	}
	docs["dup"] = []byte(strings.Replace(minimal, "          - name: r\n", "          - name: r\n            name: s\n", 1))
	var list [][]byte
	for _, d := range docs {
		list = append(list, d)
	}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 16))
	alpha := []byte("- :#'\"[],\n\n  ab1{}&*!|>?0./9~")
	n := 4000
	if testing.Short() {
		n = 800
	}
	for range n {
		b := list[r.IntN(len(docs))]
		for range r.IntN(3) {
			b = mutate(r, b, alpha)
		}
		list = append(list, b)
	}
	took, refused := 0, 0
	for _, data := range list {
		var trees []*yaml.Node
		var doc yaml.Node
		if yaml.Unmarshal(data, &doc) == nil && len(doc.Content) > 0 {
			trees = append(trees, doc.Content[0])
		}
		if fast, ok := parseFastYAML(data); ok {
			trees = append(trees, fast.Content[0])
		}
		for _, root := range trees {
			if root.Kind != yaml.MappingNode {
				continue
			}
			for i := 1; i < len(root.Content); i += 2 {
				if root.Content[i-1].Value != "ruleCollectionGroups" || root.Content[i].Kind != yaml.SequenceNode {
					continue
				}
				for gi, g := range root.Content[i].Content {
					var d wireDecoder
					var wg WireGroup
					var errs ErrorList
					w := walker{file: "p.yaml", errs: &errs, segs: []seg{{name: "ruleCollectionGroups"}, {idx: gi}}}
					w.walk(g, wireGroupType)
					switch ok := d.group(g, &wg); {
					case ok && (len(errs) > 0 || w.shapeErrors):
						t.Fatalf("the decoder took a group the walker reports: %v\n%s", errs, data)
					case ok:
						took++
					case len(errs) > 0:
						refused++
					}
				}
			}
		}
	}
	t.Logf("%d groups decoded, %d the walker reports refused", took, refused)
	if took < 100 || refused < 20 {
		t.Errorf("%d groups decoded, %d refused: the corpus does not cover both", took, refused)
	}
}

// TestBudgetParallelSame: the node estimate cut into parts adds up to the
// whole text's, and over the limit the error is CheckBudget's.
func TestBudgetParallelSame(t *testing.T) {
	texts := [][]byte{[]byte(groupsPolicyYAML(12, 3, 5)), []byte(mixedPolicyYAML(4, true)), []byte("a: [b, c]\n- d\n? e\n"), []byte("x"), []byte("\n\n\n")}
	for _, text := range texts {
		whole, _, _ := estimateNodes(text, 1<<40)
		for _, parts := range []int{2, 3, 4, 7} {
			for _, max := range []int{whole/2 - 1, whole / 2, whole/2 + 1, whole, 1 << 30} {
				lim := Limits{MaxNodes: max}
				got, want := checkBudgetParallel("p.yaml", text, lim, parts), CheckBudget("p.yaml", text, lim)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("%d parts, max %d: %v, want %v\n%s", parts, max, got, want, text)
				}
			}
		}
	}
}

// TestParallelIncrementalSame: a Loader whose next text changes many
// groups decodes them on several cores and validates the collections it
// does not reuse there too, to exactly what Load gives — every group
// changed in part (one port per collection) or in whole (a group renamed),
// half of them, a replaced policy of the same header, errors in one or
// several changed groups (the full path's errors), warnings (validated on
// one core); a one-rule change of a big policy stays on one core.
func TestParallelIncrementalSame(t *testing.T) {
	opts := Options{ServiceTags: ServiceTags{}}
	// load is sameLoad, and whether the Loader's own load decoded and
	// validated on several cores.
	load := func(t *testing.T, ld *Loader, text string) (inc, dec, val bool) {
		t.Helper()
		d0, v0 := parallelIncrementals.Load(), parallelValidations.Load()
		got, gerr := ld.Load("p.yaml", []byte(text), opts)
		dec, val = parallelIncrementals.Load() > d0, parallelValidations.Load() > v0
		want, werr := Load("p.yaml", []byte(text), opts)
		if (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
			t.Fatalf("loader: %v\nload: %v\n%s", gerr, werr, text)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("the loader's policy differs from Load's (%d groups reused)\n%s", ld.Reused, text)
		}
		return ld.Reused >= 0, dec, val
	}
	base := groupsPolicyYAML(12, 3, 5)
	every := strings.ReplaceAll(base, "'401'", "'4001'")
	renamed := base
	for gi := range 12 {
		renamed = strings.Replace(renamed, fmt.Sprintf("  - name: g%d\n", gi), fmt.Sprintf("  - name: h%d\n", gi), 1)
	}
	half := base
	for gi := 0; gi < 12; gi += 2 {
		at := strings.Index(half, fmt.Sprintf("  - name: g%d\n", gi))
		k := at + strings.Index(half[at:], "'402'")
		half = half[:k] + "'4002'" + half[k+5:]
	}
	replaced := strings.ReplaceAll(strings.ReplaceAll(base, "10.", "172."), "192.0.", "198.51.")
	cases := []struct {
		name, from, to          string
		inc, decoded, validated bool // loaded incrementally; on several cores
	}{
		{"every group in part", base, every, true, true, true},
		{"every group renamed", base, renamed, true, true, true},
		{"half", base, half, true, true, true},
		{"replaced", base, replaced, true, true, true},
		// An error fails the incremental load: the full path finds it.
		{"one error", base, strings.Replace(every, "'4001'", "'0'", 1), false, true, false},
		{"errors everywhere", base, strings.ReplaceAll(every, "'4001'", "'70000'"), false, true, false},
		{"warnings", mixedPolicyYAML(6, false), mixedPolicyYAML(6, true), true, true, false},
	}
	for _, parts := range []int{2, 3} {
		t.Run(fmt.Sprint(parts), func(t *testing.T) {
			forceParallel(t, parts)
			for _, c := range cases {
				ld := &Loader{}
				load(t, ld, c.from)
				inc, dec, val := load(t, ld, c.to)
				if inc != c.inc || dec != c.decoded || val != c.validated {
					t.Errorf("%s: incremental %v, decoded on several cores %v, validated %v", c.name, inc, dec, val)
				}
				// And back: the loader's state after such a load is good.
				load(t, ld, c.from)
				load(t, ld, c.to)
			}
			// Random edits of every group at once.
			r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 16))
			alpha := []byte("- :#'\"[],\n\n  ab1{}&*!|>?0./9")
			for range 100 {
				ld := &Loader{}
				load(t, ld, base)
				b := []byte(every)
				for range 1 + r.IntN(4) {
					b = mutate(r, b, alpha)
				}
				load(t, ld, string(b))
			}
		})
	}
	// The thresholds: one changed rule of a big policy stays on one
	// core; a replaced one does not.
	if loadParts() >= 2 {
		big := groupsPolicyYAML(40, 10, 25)
		ld := &Loader{}
		load(t, ld, big)
		if inc, dec, val := load(t, ld, strings.Replace(big, "'401'", "'4001'", 1)); !inc || dec || val {
			t.Errorf("one rule changed: incremental %v, decoded on several cores %v, validated %v", inc, dec, val)
		}
		if inc, dec, val := load(t, ld, strings.ReplaceAll(big, "10.", "172.")); !inc || !dec || !val {
			t.Errorf("every rule changed: incremental %v, decoded on several cores %v, validated %v", inc, dec, val)
		}
	}
}

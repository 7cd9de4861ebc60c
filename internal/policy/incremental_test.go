package policy

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// incrementalSeed is a policy in the fast path's subset with several
// groups of every kind, IP groups, comments, a DNAT rule with a warning
// and a compact list (entries at the key's indentation).
const incrementalSeed = `name: inc
ipGroups:
  web: [10.1.0.0/16, 10.2.0.1]
# the groups
ruleCollectionGroups:
- name: dnat
  priority: 100
  ruleCollections:
    - name: in
      kind: DNAT
      priority: 100
      action: DNAT
      rules:
        - name: ssh
          protocols: [TCP]
          sourceAddresses: ['2001:db8::/64', 10.0.0.0/8]
          destinationAddresses: [203.0.113.1]
          destinationPorts: ['22']
          translatedAddress: 10.3.0.4
          translatedPort: '22'
- name: net
  priority: 200
  ruleCollections:
    - name: a
      kind: Network
      priority: 100
      action: Allow
      rules:
        - name: r1
          protocols: [TCP, UDP]
          sourceIpGroups: [web]
          destinationAddresses: [10.9.0.1, 10.9.0.2]
          destinationPorts: ['443', 8000-8010]
        - name: r2   # a comment
          protocols: [Any]
          sourceAddresses: ['*']
          destinationFqdns: [db.example.com]
          destinationPorts: ['5432']
    - name: b
      kind: Network
      priority: 200
      action: Deny
      rules:
        - name: r1
          protocols: [ICMP]
          sourceAddresses: [10.0.0.0/8]
          destinationAddresses: ['*']
          destinationPorts: ['*']

- name: app
  priority: 300
  ruleCollections:
    - name: web
      kind: Application
      priority: 100
      action: Allow
      rules:
        - name: w1
          protocols: ['Https:443', 'Http:80']
          sourceAddresses: [10.1.0.0/16]
          targetFqdns: ['*.example.com', example.org]
- name: net2
  priority: 400
  ruleCollections:
    - name: a
      kind: Network
      priority: 100
      action: Allow
      rules:
        - name: r1
          protocols: [TCP]
          sourceAddresses: [10.4.0.0/24]
          destinationAddresses: [10.5.0.1]
          destinationPorts: ['80']
dns:
  enableProxy: true
`

// swapGroups swaps the text from a to b with the text from b to end.
func swapGroups(text, a, b, end string) string {
	i, j, k := strings.Index(text, a), strings.Index(text, b), strings.Index(text, end)+1
	return text[:i] + text[j:k] + text[i:j] + text[k:]
}

// sameLoad fails t unless the Loader's result equals Load's.
func sameLoad(t *testing.T, ld *Loader, data []byte, opts Options) (incremental, loaded bool) {
	t.Helper()
	got, gerr := ld.Load("p.yaml", data, opts)
	want, werr := Load("p.yaml", data, opts)
	if (gerr == nil) != (werr == nil) || (gerr != nil && gerr.Error() != werr.Error()) {
		t.Fatalf("loader: %v\nload: %v\n%s", gerr, werr, data)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the loader's policy differs from Load's (%d groups reused)\n%s", ld.Reused, data)
	}
	return ld.Reused >= 0, gerr == nil
}

// TestLoaderEqualsLoad: a Loader's loads, incremental or not, equal Load's
// for a sequence of edits: a port changed, a group's priority taking
// another's, a rule added (lines move), a header field changed, errors,
// and back.
func TestLoaderEqualsLoad(t *testing.T) {
	opts := Options{ServiceTags: ServiceTags{}}
	seed := incrementalSeed
	edits := []struct {
		name      string
		text      string
		reuse     bool // groups must be reused (not the DNAT group: it has a warning)
		reusedMin int
	}{
		{"seed", seed, false, 0},
		{"same", seed, true, 3},
		{"port", strings.Replace(seed, "'5432'", "'5433'", 1), true, 2},
		{"back", seed, true, 2},
		{"bad port", strings.Replace(seed, "'5432'", "'99999'", 1), false, 0},
		{"after error", seed, true, 3},
		{"dup priority", strings.Replace(seed, "priority: 400", "priority: 300", 1), false, 0},
		{"dup name", strings.Replace(seed, "- name: net2", "- name: NET", 1), false, 0},
		{"rule added", strings.Replace(seed, "        - name: r2   # a comment", "        - name: r0\n          protocols: [TCP]\n          sourceAddresses: ['*']\n          destinationAddresses: [10.9.0.9]\n          destinationPorts: ['1']\n        - name: r2   # a comment", 1), true, 2},
		{"header", strings.Replace(seed, "10.2.0.1]", "10.2.0.2]", 1), false, 0},
		{"last group removed", seed[:strings.Index(seed, "- name: net2")] + "dns:\n  enableProxy: true\n", false, 0},
		{"seed again", seed, false, 0},
		{"group inserted first", strings.Replace(seed, "- name: dnat\n", "- name: first\n  priority: 150\n  ruleCollections:\n    - name: x\n      kind: Network\n      priority: 100\n      action: Deny\n      rules:\n        - name: x\n          protocols: [UDP]\n          sourceAddresses: ['*']\n          destinationAddresses: ['*']\n          destinationPorts: ['9']\n- name: dnat\n", 1), true, 3},
		{"groups swapped", swapGroups(seed, "- name: app\n", "- name: net2\n", "\ndns:"), true, 3},
		{"seed after the insert", seed, true, 3},
		{"warning group changed", strings.Replace(seed, "'22']", "'2222']", 1), true, 3},
		{"group appended", seed[:strings.Index(seed, "\ndns:")+1] + "- name: extra\n  priority: 500\n" + seed[strings.Index(seed, "\ndns:")+1:], true, 3},
		{"unknown field", strings.Replace(seed, "          destinationPorts: ['80']", "          destinationPort: ['80']", 1), false, 0},
		{"shape", strings.Replace(seed, "  priority: 300", "  priority: [300]", 1), false, 0},
	}
	ld := &Loader{}
	for _, e := range edits {
		sameLoad(t, ld, []byte(e.text), opts)
		if e.reuse && ld.Reused < e.reusedMin {
			t.Errorf("%s: %d groups reused, want at least %d", e.name, ld.Reused, e.reusedMin)
		}
		t.Logf("%s: %d groups reused", e.name, ld.Reused)
	}
}

// TestLoaderOwnsText: a caller reusing its buffer after a load does not
// change what the next load is compared with.
func TestLoaderOwnsText(t *testing.T) {
	opts := Options{ServiceTags: ServiceTags{}}
	ld := &Loader{}
	buf := []byte(incrementalSeed)
	sameLoad(t, ld, buf, opts)
	edited := strings.Replace(incrementalSeed, "'5432'", "'5433'", 1)
	copy(buf, edited) // the caller's buffer now holds the edit
	sameLoad(t, ld, []byte(edited), opts)
	if ld.Reused != 2 {
		t.Fatalf("%d groups reused, want 2", ld.Reused)
	}
}

// TestLoaderReusesCollections: in a group whose text changed, the
// collections whose text did not are reused, moved or not.
func TestLoaderReusesCollections(t *testing.T) {
	opts := Options{ServiceTags: ServiceTags{}}
	text := groupsPolicyYAML(2, 4, 3)
	port := strings.Replace(text, "'402'", "'4020'", 1) // g0/c0/r2
	at := strings.Index(text, "      - name: c2\n")
	added := text[:at] + strings.Replace(text[at:], "          - name: r1\n", "          - name: rx\n            protocols: [UDP]\n            sourceAddresses: [10.9.9.0/24]\n            destinationAddresses: [192.0.9.9]\n            destinationPorts: ['53']\n          - name: r1\n", 1) // in g0/c2
	ld := &Loader{}
	for _, tc := range []struct {
		name          string
		text          string
		groups, colls int
	}{
		{"first", text, -1, 0},
		{"port", port, 1, 3},
		{"back", text, 1, 3},
		{"rule added", added, 1, 3}, // g0: c0, c1 and c3 (moved); g1 moved
		{"back again", text, 1, 3},
	} {
		sameLoad(t, ld, []byte(tc.text), opts)
		if ld.Reused != tc.groups || ld.ReusedCollections != tc.colls {
			t.Errorf("%s: %d groups and %d collections reused, want %d and %d", tc.name, ld.Reused, ld.ReusedCollections, tc.groups, tc.colls)
		}
	}
}

// TestLoaderServiceTagsChange: the same text with other service tags
// validates every group again.
func TestLoaderServiceTagsChange(t *testing.T) {
	text := []byte(strings.Replace(incrementalSeed, "sourceAddresses: [10.4.0.0/24]", "sourceAddresses: [Corp]", 1))
	ld := &Loader{}
	a := ServiceTags{"corp": {Ranges: []AddrRange{{From: netip.MustParseAddr("10.7.0.0"), To: netip.MustParseAddr("10.7.255.255")}}}}
	b := ServiceTags{"corp": {Ranges: []AddrRange{{From: netip.MustParseAddr("10.8.0.0"), To: netip.MustParseAddr("10.8.255.255")}}}}
	sameLoad(t, ld, text, Options{ServiceTags: a})
	sameLoad(t, ld, text, Options{ServiceTags: a})
	sameLoad(t, ld, text, Options{ServiceTags: b})
	sameLoad(t, ld, text, Options{ServiceTags: ServiceTags{}})
}

// TestLoaderMutations: random edits of policies (bytes replaced, deleted
// or inserted; lines duplicated or deleted), each loaded by a Loader that
// loaded the text before it: the policy and errors equal Load's.
func TestLoaderMutations(t *testing.T) {
	seeds := [][]byte{[]byte(incrementalSeed), []byte(groupsPolicyYAML(8, 3, 4))}
	if data, err := os.ReadFile("../../examples/aks-egress.yaml"); err == nil {
		seeds = append(seeds, data)
	}
	alpha := []byte("- :#'\"[],\n\n  ab1{}&*!|>?0./9")
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	opts := Options{ServiceTags: ServiceTags{}}
	n := 3000
	if testing.Short() {
		n = 600
	}
	incremental, loaded := 0, 0
	for range n / 10 {
		ld := &Loader{}
		cur := append([]byte(nil), seeds[r.IntN(len(seeds))]...)
		sameLoad(t, ld, cur, opts)
		for range 10 {
			b := mutate(r, cur, alpha)
			inc, ok := sameLoad(t, ld, b, opts)
			if inc {
				incremental++
			}
			if ok {
				loaded++
			}
			// Go on from the edit (mostly when it loaded), or from the
			// text before it.
			if (ok && r.IntN(3) > 0) || r.IntN(6) == 0 {
				cur = b
			}
		}
	}
	t.Logf("%d of %d edits loaded, %d of them incrementally", loaded, n, incremental)
	if incremental < loaded/2 {
		t.Errorf("only %d of %d edits that loaded were loaded incrementally", incremental, loaded)
	}
}

// groupsPolicyYAML is a policy of g groups of c collections of r rules
// (bigPolicyYAML has groups of 1,000 rules).
func groupsPolicyYAML(g, c, r int) string {
	var b strings.Builder
	b.WriteString("name: groups\nruleCollectionGroups:\n")
	for gi := range g {
		fmt.Fprintf(&b, "  - name: g%d\n    priority: %d\n    ruleCollections:\n", gi, 100+gi)
		for ci := range c {
			fmt.Fprintf(&b, "      - name: c%d\n        kind: Network\n        priority: %d\n        action: Allow\n        rules:\n", ci, 100+ci)
			for ri := range r {
				fmt.Fprintf(&b, "          - name: r%d\n            protocols: [TCP]\n            sourceAddresses: [10.%d.%d.0/24]\n            destinationAddresses: [192.0.%d.%d]\n            destinationPorts: ['%d']\n",
					ri, gi, ci, ci, ri, 400+ri)
			}
		}
	}
	return b.String()
}

func mutate(r *rand.Rand, src, alpha []byte) []byte {
	b := append([]byte(nil), src...)
	switch r.IntN(7) {
	case 6: // a comment or blank line inserted, or a line deleted if blank: the lines after it move
		lines := strings.SplitAfter(string(b), "\n")
		i := r.IntN(len(lines))
		switch {
		case strings.TrimSpace(lines[i]) == "":
			lines = append(lines[:i], lines[i+1:]...)
		case r.IntN(2) == 0:
			lines = append(lines[:i], append([]string{"\n"}, lines[i:]...)...)
		default:
			lines = append(lines[:i], append([]string{strings.Repeat(" ", r.IntN(12)) + "# c\n"}, lines[i:]...)...)
		}
		return []byte(strings.Join(lines, ""))
	case 4, 5: // a port changed (the valid edit)
		const key = "destinationPorts: ['"
		if k := strings.Count(string(b), key); k > 0 {
			at := 0
			for j := r.IntN(k); j >= 0; j-- {
				at += strings.Index(string(b[at:]), key) + len(key)
			}
			end := at + strings.IndexByte(string(b[at:]), '\'')
			return []byte(string(b[:at]) + fmt.Sprint(1+r.IntN(65535)) + string(b[end:]))
		}
	case 0: // a value changed: a digit or a letter
		for range 10 {
			i := r.IntN(len(b))
			if c := b[i]; c >= '0' && c <= '9' {
				b[i] = '0' + byte(r.IntN(10))
				return b
			}
		}
	case 1: // a line duplicated or deleted
		lines := strings.SplitAfter(string(b), "\n")
		i := r.IntN(len(lines))
		if r.IntN(2) == 0 {
			lines = append(lines[:i], append([]string{lines[i]}, lines[i:]...)...)
		} else {
			lines = append(lines[:i], lines[i+1:]...)
		}
		return []byte(strings.Join(lines, ""))
	}
	return mutateBytes(r, b, alpha, 1+r.IntN(3)) // fastyaml_test.go
}

func TestScanEntries(t *testing.T) {
	for _, tc := range []struct {
		text   string
		indent int
		starts []int
		end    int
		ok     bool
	}{
		{"- a\n- b\nc: d\n", 0, []int{1, 2}, 3, true},
		{"  - a\n  # c\n\n  - b: c\n    d: e\nf:\n", 2, []int{1, 4}, 6, true},
		{"  - a\n  -\n    b: c\n", 2, []int{1, 2}, 4, true},
		{"   x\n  - a\n", 2, nil, 0, false},
		{"  - a\n  b: c\n", 2, []int{1}, 2, true},
	} {
		entries, _, endLine, ok := scanEntries([]byte(tc.text), 0, 1, tc.indent)
		var starts []int
		for _, e := range entries {
			starts = append(starts, e.line)
		}
		if ok != tc.ok || fmt.Sprint(starts) != fmt.Sprint(tc.starts) || (ok && endLine != tc.end) {
			t.Errorf("%q: entries at %v, end %d, %v; want %v, %d, %v", tc.text, starts, endLine, ok, tc.starts, tc.end, tc.ok)
		}
	}
}

// FuzzLoader: a Loader that loaded a then b gives for b what Load does.
func FuzzLoader(f *testing.F) {
	seed := []byte(incrementalSeed)
	f.Add(seed, []byte(strings.Replace(incrementalSeed, "'5432'", "'5433'", 1)))
	f.Add(seed, []byte(strings.Replace(incrementalSeed, "  priority: 400", "  priority: 300", 1)))
	g := groupsPolicyYAML(3, 2, 2)
	f.Add([]byte(g), []byte(strings.Replace(g, "'401'", "'402'", 1)))
	g2 := groupsPolicyYAML(4, 2, 2)
	f.Add([]byte(g2), []byte(strings.ReplaceAll(g2, "'401'", "'402'")))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		// Odd lengths: the incremental load's parallel paths forced
		// (parallel.go), in two or three parts.
		if len(b)%2 == 1 {
			forceParallel(t, 2+len(a)%2)
		}
		ld := &Loader{}
		opts := Options{ServiceTags: ServiceTags{}}
		ld.Load("p.yaml", a, opts)
		sameLoad(t, ld, b, opts)
	})
}

// TestLoadStateCounts: the node counts a Loader keeps (treeSize, one
// pass) are walkTree's, as checkTree counts them.
func TestLoadStateCounts(t *testing.T) {
	for _, doc := range []string{incrementalSeed, groupsPolicyYAML(4, 3, 2), bigPolicyYAML(60)} {
		var ld Loader
		if _, err := ld.Load("p.yaml", []byte(doc), Options{ServiceTags: ServiceTags{}}); err != nil {
			t.Fatal(err)
		}
		st := ld.lastState()
		tree, ok := parseFastYAML([]byte(doc))
		if st == nil || !ok {
			t.Fatal("no state, or not on the fast path")
		}
		total := 0
		countNodes(tree, 0, 1<<30, &total)
		sum := st.header
		seq := tree.Content[0].Content[st.seqKey]
		for i, n := range seq.Content {
			want := 0
			countNodes(n, 2, 1<<30, &want)
			if st.counts[i] != want {
				t.Errorf("group %d: %d nodes, walkTree %d", i, st.counts[i], want)
			}
			sum += st.counts[i]
			if cs := st.colls[i]; cs != nil {
				csum := cs.header
				for _, c := range cs.counts {
					csum += c
				}
				if csum != want {
					t.Errorf("group %d: collections and header %d nodes, walkTree %d", i, csum, want)
				}
			}
		}
		if sum != total {
			t.Errorf("%d nodes in all, walkTree %d", sum, total)
		}
	}
}

// TestLoaderHashCollisions: with every text of the same hash, a Loader
// still finds the unchanged groups and collections (moved ones too) and
// loads what Load loads.
func TestLoaderHashCollisions(t *testing.T) {
	textHash = func(maphash.Seed, []byte) uint64 { return 1 }
	defer func() { textHash = maphash.Bytes }()
	TestLoaderEqualsLoad(t)
	TestLoaderReusesCollections(t)
}

// lastState is the state the Loader keeps of its last load, once built
// (Load builds it in the background).
func (l *Loader) lastState() *loadState {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.collect()
	return l.prev
}

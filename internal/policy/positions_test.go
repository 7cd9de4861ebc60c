package policy

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestPositionsResolve: positions finds, for every value and key of a
// document, the line and column an index of every path built while walking
// the tree would hold (what positions was before it walked the tree on
// demand) — with aliases, map keys holding dots, list items, and the
// nearest ancestor for a path that goes further than the document.
func TestPositionsResolve(t *testing.T) {
	docs := map[string][]byte{"inline": []byte(`name: p
serviceTagDefinitions:
  AzureCloud: [198.51.100.0/24]
  AzureCloud.eastus: [192.0.2.0/24]
ipGroups:
  a.b.c: &g [10.0.0.0/8, 10.1.0.0/16]
  d: *g
ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - {name: c, kind: Network, priority: 100, action: Allow, rules: [{name: r, protocols: [TCP], sourceAddresses: ['*'], destinationAddresses: [AzureCloud.eastus], destinationPorts: ['443', '80']}]}
`)}
	for _, f := range []string{"../../examples/aks-egress.yaml", "../../examples/inheritance/cluster-a.yaml", "../../examples/inheritance/org-base.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[filepath.Base(f)] = data
	}
	for name, data := range docs {
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		p := &Positions{file: name, root: doc.Content[0]}
		vals, keys := map[string]Pos{}, map[string]Pos{}
		var index func(n *yaml.Node, path string)
		index = func(n *yaml.Node, path string) {
			n = unalias(n)
			vals[path] = Pos{File: name, Line: n.Line, Column: n.Column}
			switch n.Kind {
			case yaml.MappingNode:
				for i := 0; i+1 < len(n.Content); i += 2 {
					sub := n.Content[i].Value
					if path != "" {
						sub = path + "." + sub
					}
					if _, dup := keys[sub]; dup {
						continue
					}
					keys[sub] = Pos{File: name, Line: n.Content[i].Line, Column: n.Content[i].Column}
					index(n.Content[i+1], sub)
				}
			case yaml.SequenceNode:
				for i, c := range n.Content {
					index(c, path+"["+strconv.Itoa(i)+"]")
				}
			}
		}
		index(p.root, "")
		for path, want := range vals {
			if path == "" {
				want = Pos{File: name}
			}
			if got := p.Lookup(path); got != want {
				t.Errorf("%s: lookup(%q) = %v, want %v", name, path, got, want)
			}
			if got := p.Lookup(path + ".nosuchfield"); path != "" && got != want {
				t.Errorf("%s: lookup(%q) = %v, want the ancestor's %v", name, path+".nosuchfield", got, want)
			}
		}
		for path, want := range keys {
			if got := p.Key(path); got != want {
				t.Errorf("%s: key(%q) = %v, want %v", name, path, got, want)
			}
		}
		if len(vals) < 20 {
			t.Errorf("%s: only %d values", name, len(vals))
		}
	}
}

// TestCursorSameAsLookup: a cursor's look-ups are Positions.Lookup's, on
// every policy of the corpus and on documents whose keys hold dots and
// brackets (where a longer path may take another key: the cursor then
// walks from the root).
func TestCursorSameAsLookup(t *testing.T) {
	docs := pathCorpus(t)
	docs["weird1"] = []byte("ruleCollectionGroups:\n  - name: g\n    ruleCollections:\n      - name: c\n        rules: [{name: a}, {name: b}]\n        rules[1]: {name: x}\n")
	docs["weird2"] = []byte("ruleCollectionGroups[0].ruleCollections[0].rules: [{name: x}]\nruleCollectionGroups:\n  - ruleCollections:\n      - rules: [{name: a}]\n")
	docs["weird3"] = []byte("ruleCollectionGroups:\n  - ruleCollections[0].rules: [{name: x}, {name: y}]\n    ruleCollections:\n      - rules: [{name: a}, {name: b}]\n")
	docs["weird4"] = []byte("ruleCollectionGroups: &g\n  - ruleCollections:\n      - rules: [{name: a}]\nipGroups: {a.b: [x]}\n")
	checked, differ := 0, 0
	for name, data := range docs {
		_, pos, _ := DecodeYAML(name, data)
		if pos == nil || pos.root == nil {
			continue
		}
		for g := range 3 {
			gp := item("ruleCollectionGroups", g)
			for c := range 3 {
				cp := item(gp+".ruleCollections", c)
				at := pos.cursor(cp)
				rules := pos.cursor(cp + ".rules")
				for r := range 4 {
					if got, want := rules.Item(r, item(cp+".rules", r)), pos.Lookup(item(cp+".rules", r)); got != want {
						t.Fatalf("%s: %s: Item %v, Lookup %v", name, item(cp+".rules", r), got, want)
					}
					for _, path := range []string{item(cp+".rules", r), item(cp+".rules", r) + ".name", cp + ".name", cp + "x", cp + "[0]"} {
						got, want := at.Lookup(path), pos.Lookup(path)
						if got != want {
							t.Fatalf("%s: %s: cursor %v, Lookup %v", name, path, got, want)
						}
						if !at.ok {
							differ++
						}
						checked++
					}
				}
			}
		}
	}
	t.Logf("%d look-ups, %d of them from the root", checked, differ)
}

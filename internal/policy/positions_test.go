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

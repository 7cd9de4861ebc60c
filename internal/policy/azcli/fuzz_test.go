package azcli

import (
	"reflect"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// FuzzParseArgs feeds newline-separated argument lists to ParseArgs with
// the flags of network-rule create. It must never panic; a successful
// parse must hold only known flags with the right number of values, and
// rendering the result back as arguments must parse to the same values.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"--policy\np.yaml\n-c\naksfwnr\n-n\napiudp\n--protocols\nUDP\n--source-addresses\n*\n--destination-addresses\nAzureCloud.eastus\n--destination-ports\n1194\n--action\nallow\n--priority\n100",
		"--policy=p\n-n=x\n--protocols=TCP",
		"-g\n$RG\n-f\n$FWNAME\n--policy\np\n--destination-ports\n-1\n-\n80-90",
		"--\n-",
		"-h",
	} {
		f.Add(s)
	}
	specs := createFlags(policy.KindNetwork)
	known := map[string]FlagSpec{}
	for _, s := range specs {
		known[s.Name] = s
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\n")
		a, err := ParseArgs(args, specs)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		for name, vals := range a.values {
			spec, ok := known[name]
			if !ok {
				t.Fatalf("parsed unknown flag %q", name)
			}
			switch {
			case spec.Bool && len(vals) != 0:
				t.Fatalf("bool flag %q has values %q", name, vals)
			case !spec.Bool && len(vals) == 0:
				t.Fatalf("flag %q has no value", name)
			case !spec.Multi && len(vals) > 1:
				t.Fatalf("single flag %q has values %q", name, vals)
			}
		}
		if a.Has("help") {
			return
		}
		// Render back: one value as --name=value, several space-separated.
		var again []string
		for _, name := range a.Names() {
			vals := a.List(name)
			if len(vals) == 1 {
				again = append(again, "--"+name+"="+vals[0])
				continue
			}
			again = append(again, "--"+name)
			again = append(again, vals...)
		}
		b, err := ParseArgs(again, specs)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", again, err)
		}
		if !reflect.DeepEqual(a.values, b.values) {
			t.Fatalf("re-parse changed values: %q -> %q", a.values, b.values)
		}
	})
}

// FuzzEdit feeds arbitrary YAML to the node-tree editor: ParseDoc, AddRule,
// DeleteRule and Bytes must never panic, and a successful edit of a file
// that validated must leave text that parses again.
func FuzzEdit(f *testing.F) {
	f.Add([]byte(twoGroups))
	f.Add([]byte(basePolicy))
	f.Add([]byte("ruleCollectionGroups: []\n"))
	f.Add([]byte("ruleCollectionGroups:\n  - name: A\n    priority: 100\n    ruleCollections: &x []\n  - *x\n"))
	f.Add([]byte("a: |\n  x\n\n  y\n# c\n\nb: [1,\n\n 2]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseDoc(data)
		if err != nil {
			return
		}
		if _, err := d.AddRule(RuleSpec{Kind: policy.KindNetwork, Collection: "shared", Priority: 100, Action: "Allow", Rule: netRule("fz")}); err == nil {
			out, err := d.Bytes()
			if err != nil {
				return // yaml.v3 refuses some trees it parsed (e.g. odd anchors)
			}
			if _, err := ParseDoc(out); err != nil {
				t.Fatalf("edited text does not parse: %v\n%s", err, out)
			}
		}
		d.DeleteRule(policy.KindNetwork, "", "shared", "r1")
		d.DeleteCollection(policy.KindApplication, "", "web")
		d.Bytes()
	})
}

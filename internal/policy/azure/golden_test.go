package azure

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// TestGolden renders imports as the import command writes them, comments
// included, and compares them with testdata/NAME.golden.
func TestGolden(t *testing.T) {
	tests := []struct {
		golden string
		files  []string
		valid  bool
	}{
		{"aks-template.golden", []string{"aks-template.json"}, true},
		{"aks-cli.golden", []string{"aks-cli-policy.json", "aks-cli-rcgs.json"}, true},
		{"aks-classic.golden", []string{"aks-classic.json"}, true},
		{"unsupported.golden", []string{"unsupported.json"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			var srcs []Source
			for _, name := range tt.files {
				srcs = append(srcs, Source{Name: name, Data: readFile(t, name)})
			}
			f, warns, err := ImportAll(srcs...)
			if err != nil {
				t.Fatal(err)
			}
			_, verr := policy.Validate(f, "", policy.Options{ServiceTagsFile: serviceTags})
			var errs policy.ErrorList
			if verr != nil && !errors.As(verr, &errs) {
				t.Fatal(verr)
			}
			if tt.valid != (len(errs) == 0) {
				t.Errorf("validation errors: %v", verr)
			}
			got, err := Render(f, strings.Join(tt.files, " "), warns, errs)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run go test -update and review the diff):\n%s", path, got)
			}
			// Comments never change what the file says.
			back, _, err := policy.DecodeYAML(path, got)
			if err != nil {
				t.Fatalf("rendered YAML does not decode: %v", err)
			}
			if !sameFile(t, back, f) {
				t.Errorf("rendered YAML decodes to a different policy")
			}
		})
	}
}

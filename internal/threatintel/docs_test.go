package threatintel

import (
	"os"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// TestDocsExamples parses the feed examples of docs/threatintel.md in their
// formats and validates its policy snippet, so the document cannot rot.
func TestDocsExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/threatintel.md")
	if err != nil {
		t.Fatal(err)
	}
	// The first fenced block under each heading.
	type block struct{ heading, lang, body string }
	var blocks []block
	heading, inBlock, taken := "", false, false
	for _, line := range strings.Split(string(doc), "\n") {
		switch {
		case inBlock && strings.HasPrefix(line, "```"):
			inBlock = false
		case inBlock:
			if !taken {
				blocks[len(blocks)-1].body += line + "\n"
			}
		case strings.HasPrefix(line, "```"):
			inBlock = true
			taken = len(blocks) > 0 && blocks[len(blocks)-1].heading == heading
			if !taken {
				blocks = append(blocks, block{heading: heading, lang: strings.TrimPrefix(line, "```")})
			}
		case strings.HasPrefix(line, "#"):
			heading = strings.TrimSpace(strings.TrimLeft(line, "#"))
		}
	}
	seen := map[string]bool{}
	for _, bl := range blocks {
		switch {
		case bl.heading == "In the policy" && bl.lang == "yaml":
			if _, err := policy.Load("docs/threatintel.md", []byte("name: doc\n"+bl.body), policy.Options{}); err != nil {
				t.Errorf("policy snippet: %v", err)
			}
			seen[bl.heading] = true
		case bl.heading == "plain" || bl.heading == "drop" || bl.heading == "hosts":
			f, _ := ParseFormat(bl.heading)
			d, err := Parse("doc", "docs/threatintel.md", f, strings.NewReader(bl.body))
			if err != nil || d.Invalid != 0 || d.Entries() == 0 {
				t.Errorf("%s example: %v %v", bl.heading, err, d.Errors)
			}
			seen[bl.heading] = true
		}
	}
	for _, h := range []string{"In the policy", "plain", "drop", "hosts"} {
		if !seen[h] {
			t.Errorf("no example under %q", h)
		}
	}
}

package policy

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// yamlNodes counts the nodes gopkg.in/yaml.v3 builds for every document
// of data it parses (aliases counted once, not expanded), up to the first
// error.
func yamlNodes(data []byte) int {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	total := 0
	for range 1000 {
		var doc yaml.Node
		if err := dec.Decode(&doc); err != nil {
			break
		}
		total += countTree(&doc)
	}
	return total
}

// FuzzEstimateNodes checks the pre-parse bound: estimateNodes never counts
// fewer nodes than yaml.v3 builds, whatever the bytes (quotes, comments,
// flow and block styles, anchors, tags, several documents).
func FuzzEstimateNodes(f *testing.F) {
	for _, s := range []string{
		"a: b\n", "- a\n- b\n", "[a, b, c]", "{a, b: c, ? d}", "[a: b, ? c : d, e]", "? a\n: b\n",
		"a: &x [1,2]\nb: *x\n", "--- a\n--- b\n...\n", "a:\n  b:\n    - c: d\n      e: f\n",
		"- - - a\n", "k: |\n  text [ { \" '\n  more\nx: [1]\n", "\"a\":b", "{\"a\":\"b\",\"c\":[1,2,{\"d\":null}]}",
		"a: 'it''s' # [\nb: [x, \"y # ]\"]\n", "[[[[]]]]", "{{}: {}}", "!!map {? !!str a : !!null}", "- !t &a\n- *a\n",
		"a: b\r\nc: d\r\n", "key: word\n  \"continued [\nnext: {a: 1}\n", "- [a,\n   b]\n- {c: d,\n   e}\n",
	} {
		f.Add([]byte(s))
	}
	if data, err := os.ReadFile("../../examples/aks-egress.yaml"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		est, _, _ := estimateNodes(data, 1<<40)
		if real := yamlNodes(data); real > est {
			t.Fatalf("estimate %d < %d nodes yaml.v3 built for %q", est, real, data)
		}
	})
}

// TestCheckBudgetExamples: every example policy and config passes the
// default limits with room to spare.
func TestCheckBudgetExamples(t *testing.T) {
	for _, f := range []string{"../../examples/aks-egress.yaml", "../../deploy/clusterwall.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckBudget(f, data, Limits{}); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		est, _, _ := estimateNodes(data, 1<<40)
		if real := yamlNodes(data); est < real || est > 4*real {
			t.Errorf("%s: estimate %d for %d nodes", f, est, real)
		}
	}
}

// TestDecodeStrictLimits: config files (the daemon's, the WAF's) get the
// same limits.
func TestDecodeStrictLimits(t *testing.T) {
	var out struct {
		A []string `yaml:"a"`
	}
	err := DecodeStrict("c.yaml", []byte("a: ["+strings.Repeat("x,", 3_000_000)+"x]\n"), &out)
	var list ErrorList
	if !errors.As(err, &list) || !strings.Contains(err.Error(), "c.yaml:1:") || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("err = %.200v", err)
	}
}

// estimateNodesRef is estimateNodes as it was before its byte table
// (main c9bc4b8), for FuzzEstimateNodesSame.
func estimateNodesRef(data []byte, max int) (n, line, col int) {
	n, line = 3, 1
	lineStart := 0
	ws := func(i int) bool {
		if i >= len(data) {
			return true
		}
		switch data[i] {
		case ' ', '\t', '\n', '\r', ',', '[', ']', '{', '}':
			return true
		}
		return false
	}
	for i, c := range data {
		switch c {
		case '\n':
			n += 2
			if n > max {
				return n, line, i - lineStart + 1
			}
			line++
			lineStart = i + 1
			continue
		case ',', '[':
			n += 2
		case '{':
			n += 3
		case '-', '?':
			if ws(i + 1) {
				n += 2
			}
		case ':':
			if ws(i+1) || (i > 0 && (data[i-1] == '"' || data[i-1] == '\'' || data[i-1] == ']' || data[i-1] == '}')) {
				n += 2
			}
		default:
			continue
		}
		if n > max {
			return n, line, i - lineStart + 1
		}
	}
	return n, line, 0
}

// FuzzEstimateNodesSame: the byte table changes nothing estimateNodes
// returns, at any limit.
func FuzzEstimateNodesSame(f *testing.F) {
	f.Add([]byte(minimal), 40)
	f.Add([]byte("a: [x, {y: z}]\n- ? k\n"), 7)
	f.Add([]byte(bigPolicyYAML(20)), 1<<30)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		n, l, c := estimateNodes(data, max)
		rn, rl, rc := estimateNodesRef(data, max)
		if n != rn || l != rl || c != rc {
			t.Fatalf("estimateNodes = %d %d:%d, before %d %d:%d", n, l, c, rn, rl, rc)
		}
	})
}

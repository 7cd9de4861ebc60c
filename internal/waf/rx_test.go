package waf

import (
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode"

	crstests "github.com/corazawaf/coraza-coreruleset/v4/tests"
	"github.com/corazawaf/coraza/v3/experimental/plugins"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"gopkg.in/yaml.v3"
)

// crsRX compiles a policy with a recording @rx and returns every distinct
// pattern the CRS (and the engine settings) hand to it, compiled.
var crsRX = sync.OnceValues(func() ([]*rxCompiled, error) {
	registerOperators()
	seen := map[string]*rxCompiled{}
	plugins.RegisterOperator("rx", func(o plugintypes.OperatorOptions) (plugintypes.Operator, error) {
		op, err := newRXOperator(o)
		if rx, ok := op.(*rxOperator); ok {
			seen[rx.c.pattern] = rx.c
		}
		return op, err
	})
	defer plugins.RegisterOperator("rx", newRXOperator)
	p := &Policy{Name: "all", Mode: ModePrevention, ParanoiaLevel: 4, InboundAnomalyThreshold: 5, OutboundAnomalyThreshold: 4,
		RequestBodyLimit: DefaultRequestBodyLimit, RequestBodyInMemoryLimit: DefaultInMemoryBodyLimit}
	if _, err := compilePolicy(p, nil); err != nil {
		return nil, err
	}
	var out []*rxCompiled
	for _, c := range seen {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *rxCompiled) int { return strings.Compare(a.pattern, b.pattern) })
	return out, nil
})

func crsPatterns(t testing.TB) []*rxCompiled {
	t.Helper()
	ps, err := crsRX()
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) < 200 {
		t.Fatalf("only %d @rx patterns recorded: is rxOperator Coraza's @rx?", len(ps))
	}
	return ps
}

// crsPayloads returns the strings of the CRS regression tests (URIs,
// bodies, header values), with their URL-decoded parameters and values,
// also in lower case: inputs written to match CRS patterns.
func crsPayloads(t testing.TB) []string {
	t.Helper()
	set := map[string]bool{}
	add := func(s string) {
		for _, v := range []string{s, strings.ToLower(s)} {
			if len(v) <= maxPrefilterLen {
				set[v] = true
			}
		}
	}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
			s := n.Value
			add(s)
			if d, err := url.PathUnescape(s); err == nil {
				add(d)
			}
			if d, err := url.QueryUnescape(s); err == nil {
				add(d)
			}
			for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == '&' || r == '?' || r == ';' }) {
				for _, kv := range strings.SplitN(part, "=", 2) {
					if d, err := url.QueryUnescape(kv); err == nil {
						add(d)
					}
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	err := fs.WalkDir(crstests.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		data, err := fs.ReadFile(crstests.FS, path)
		if err != nil {
			return err
		}
		var n yaml.Node
		if err := yaml.Unmarshal(data, &n); err != nil {
			return err
		}
		walk(&n)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// genMatch appends a random string that tries to match re (anchors and
// word boundaries are ignored: callers keep only real matches). It picks
// ASCII where the expression allows it, and now and then a non-ASCII
// member of a case-fold orbit.
func genMatch(b *strings.Builder, re *syntax.Regexp, r *rand.Rand, depth int) {
	reps := func(lo int) int {
		n := lo + r.IntN(3)
		if depth > 20 {
			n = lo
		}
		return n
	}
	switch re.Op {
	case syntax.OpLiteral:
		for _, c := range re.Rune {
			if re.Flags&syntax.FoldCase != 0 {
				orbit := []rune{c}
				for f := unicode.SimpleFold(c); f != c; f = unicode.SimpleFold(f) {
					orbit = append(orbit, f)
				}
				c = orbit[r.IntN(len(orbit))]
			}
			b.WriteRune(c)
		}
	case syntax.OpCharClass:
		var ascii, all []rune
		for i := 0; i+1 < len(re.Rune); i += 2 {
			lo, hi := re.Rune[i], re.Rune[i+1]
			for c := lo; c <= hi && c < 0x80; c++ {
				ascii = append(ascii, c)
			}
			all = append(all, lo+rune(r.IntN(int(min(hi-lo, 1000))+1)))
		}
		if len(ascii) > 0 && r.IntN(10) > 0 {
			b.WriteRune(ascii[r.IntN(len(ascii))])
		} else if len(all) > 0 {
			b.WriteRune(all[r.IntN(len(all))])
		}
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		b.WriteByte(byte(' ' + r.IntN(95)))
	case syntax.OpCapture:
		genMatch(b, re.Sub[0], r, depth+1)
	case syntax.OpConcat:
		for _, s := range re.Sub {
			genMatch(b, s, r, depth+1)
		}
	case syntax.OpAlternate:
		genMatch(b, re.Sub[r.IntN(len(re.Sub))], r, depth+1)
	case syntax.OpStar, syntax.OpQuest, syntax.OpPlus, syntax.OpRepeat:
		lo := 0
		switch re.Op {
		case syntax.OpPlus:
			lo = 1
		case syntax.OpRepeat:
			lo = re.Min
		}
		n := reps(lo)
		if re.Op == syntax.OpQuest || (re.Op == syntax.OpRepeat && re.Max >= 0 && n > re.Max) {
			n = min(n, max(re.Max, 1))
			if re.Op == syntax.OpQuest {
				n = r.IntN(2)
			}
		}
		for range n {
			genMatch(b, re.Sub[0], r, depth+1)
		}
	}
}

// randomASCII is filler around generated matches.
func randomASCII(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(' ' + r.IntN(95))
	}
	return string(b)
}

// TestPrefilterSound: for every CRS @rx pattern, every input Go's regexp
// matches passes the prefilter — for random matches generated from the
// pattern (in random ASCII context) and for every CRS test payload. A
// prefilter that rejected one of them would let an attack through.
func TestPrefilterSound(t *testing.T) {
	patterns := crsPatterns(t)
	// Every payload against every pattern is about 7 million RE2 calls
	// (a minute here): set CW_PREFILTER_FULL=1 for that; by default a
	// sample of them.
	// (Under the race detector, yaml.v3 on the 318 test files alone takes
	// half a minute: the payloads are left to the other runs.)
	var payloads []string
	gens := 60 // random matches per pattern
	switch {
	case os.Getenv("CW_PREFILTER_FULL") != "":
		payloads = crsPayloads(t)
	case testing.Short() || raceEnabled:
		gens = 6
	default:
		payloads = sample(crsPayloads(t), 2500)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	withPF, generated, payloadMatches := 0, 0, 0
	for _, c := range patterns {
		if c.pf == nil {
			continue
		}
		withPF++
		std := c.goRegexp()
		parsed, err := syntax.Parse(c.pattern, syntax.Perl)
		if err != nil {
			t.Fatal(err)
		}
		parsed = parsed.Simplify()
		for range gens {
			var b strings.Builder
			genMatch(&b, parsed, rnd, 0)
			s := b.String()
			if rnd.IntN(2) == 0 {
				s = randomASCII(rnd, rnd.IntN(8)) + s + randomASCII(rnd, rnd.IntN(8))
			}
			if len(s) > maxPrefilterLen || !std.MatchString(s) {
				continue
			}
			generated++
			if !c.pf.mayMatch(s) {
				t.Errorf("prefilter rejects a match of %q: %q", c.pattern, s)
			}
		}
		for _, s := range payloads {
			if c.pf.mayMatch(s) {
				continue
			}
			// Rejected (so ASCII): RE2 agrees with Go's regexp there
			// (TestRXAgreesWithGoRegexp) and is faster.
			var m bool
			if c.re != nil {
				m = c.re.MatchString(s)
			} else {
				m = std.MatchString(s)
			}
			if m {
				payloadMatches++
				t.Errorf("prefilter rejects a match of %q: %q", c.pattern, s)
			}
		}
	}
	t.Logf("%d patterns, %d with a prefilter; %d generated matches; %d payloads", len(patterns), withPF, generated, len(payloads))
	if withPF < len(patterns)/2 || generated < withPF*gens/6 {
		t.Errorf("the test exercises too little: %d prefilters, %d generated matches", withPF, generated)
	}
}

func sample(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	out := make([]string, 0, n)
	step := len(s) / n
	for i := 0; i < len(s); i += step {
		out = append(out, s[i])
	}
	return out
}

// captureTx is the part of a transaction @rx uses.
type captureTx struct {
	plugintypes.TransactionState
	capturing bool
	captured  [10]string
	n         int
}

func (c *captureTx) Capturing() bool { return c.capturing }
func (c *captureTx) CaptureField(i int, v string) {
	c.captured[i] = v
	c.n = max(c.n, i+1)
}

// referenceRX is Coraza's own @rx (Go's regexp, (?sm), up to nine
// captures): what rxOperator must agree with.
func referenceRX(re *regexp.Regexp, tx *captureTx, v string) bool {
	if !tx.capturing {
		return re.MatchString(v)
	}
	m := re.FindStringSubmatchIndex(v)
	if m == nil {
		return false
	}
	for i := 0; i < len(m)/2 && i < 9; i++ {
		if m[2*i] >= 0 {
			tx.CaptureField(i, v[m[2*i]:m[2*i+1]])
		} else {
			tx.CaptureField(i, "")
		}
	}
	return true
}

// TestRXAgreesWithGoRegexp: the operator (prefilter, RE2, the fallback to
// Go's regexp) answers and captures exactly as Coraza's @rx would, for every
// CRS pattern, on CRS payloads, generated matches, non-ASCII and invalid
// UTF-8 inputs.
func TestRXAgreesWithGoRegexp(t *testing.T) {
	patterns := crsPatterns(t)
	var payloads []string
	if testing.Short() || raceEnabled {
		patterns = patterns[:len(patterns)/8]
	} else {
		payloads = sample(crsPayloads(t), 400)
	}
	extra := []string{"", "\xff", "a\xffb", "<script>\xc0alert(1)", "ſelect 1", "\u212aey", "é' or 1=1 --",
		"SELECT\x00 *", "/etc/passwd\xfe", "union\u00a0select", "%c0%af../", "\xe2\x80\xa8javascript:"}
	rnd := rand.New(rand.NewPCG(3, 4))
	for _, c := range patterns {
		op := &rxOperator{c: c}
		std := regexp.MustCompile(c.pattern)
		parsed, _ := syntax.Parse(c.pattern, syntax.Perl)
		inputs := slices.Clone(payloads)
		inputs = append(inputs, extra...)
		for range 10 {
			var b strings.Builder
			genMatch(&b, parsed.Simplify(), rnd, 0)
			inputs = append(inputs, b.String(), "\xff"+b.String())
		}
		for _, v := range inputs {
			for _, capturing := range []bool{false, true} {
				got, want := &captureTx{capturing: capturing}, &captureTx{capturing: capturing}
				g, w := op.Evaluate(got, v), referenceRX(std, want, v)
				if g != w || got.captured != want.captured || got.n != want.n {
					t.Errorf("%q on %q (capturing %v): got %v %q, want %v %q", c.pattern, v, capturing, g, got.captured[:got.n], w, want.captured[:want.n])
				}
			}
		}
	}
}

// FuzzPrefilter: for a CRS pattern and any input, an input Go's regexp
// matches passes the prefilter, and the operator agrees with Coraza's @rx.
func FuzzPrefilter(f *testing.F) {
	patterns := crsPatterns(f)
	for i, s := range []string{"<script>alert(1)</script>", "1' OR '1'='1", "../../etc/passwd", "${jndi:ldap://x}", "ſcript", "a\xffb"} {
		f.Add(uint16(i*37), s)
	}
	f.Fuzz(func(t *testing.T, idx uint16, v string) {
		c := patterns[int(idx)%len(patterns)]
		std := c.goRegexp()
		if c.pf != nil && len(v) <= maxPrefilterLen && std.MatchString(v) && !c.pf.mayMatch(v) {
			t.Fatalf("prefilter rejects a match of %q: %q", c.pattern, v)
		}
		got, want := &captureTx{capturing: true}, &captureTx{capturing: true}
		if g, w := (&rxOperator{c: c}).Evaluate(got, v), referenceRX(std, want, v); g != w || got.captured != want.captured {
			t.Fatalf("%q on %q: got %v %q, want %v %q", c.pattern, v, g, got.captured, w, want.captured)
		}
	})
}

// TestPrefilterUnits: conditions of small patterns, each a case the
// analysis must get right.
func TestPrefilterUnits(t *testing.T) {
	tests := []struct {
		pattern string
		yes, no []string
	}{
		{`(?i)<script`, []string{"x<SCRIPT", "<ScRiPt>"}, []string{"script", "<scrip"}},
		{`(?i)select`, []string{"SELECT", "xselectx"}, []string{"selec t"}},
		{`ab|cd`, []string{"xxab", "cdx"}, []string{"ac", "a b"}},
		{`a(?:b|c)d`, []string{"abd", "acd"}, []string{"ad", "abcd"}},
		{`x+y`, []string{"xy", "xxxy", "yx"}, []string{"x", "y"}},
		{`(?:foo)?bar`, []string{"bar", "foobar"}, []string{"ba"}},
		{`[\n\r]`, []string{"a\nb", "\r"}, []string{"ab"}},
		{`^\(\s*\)\s+\{`, []string{"() {", "(\t) \t{"}, []string{"(){", "x"}},
		{`[a-z]+\d{3,}`, []string{"ab123"}, []string{"a12"}},
		{`a\s*b`, []string{"ab", "a \tb", "ba"}, []string{"a", "bb"}},
		{`a(?:x|y)?b`, []string{"ab", "axb"}, []string{"a b"}},
		{`é`, nil, []string{"e", "abc"}}, // only non-ASCII input can match (and is not filtered)
		{`(?i)k`, []string{"K", "k"}, []string{"x"}},
		{`\bon\w+=`, []string{"onload=", " onerror="}, []string{"on=", "load"}},
	}
	for _, tt := range tests {
		pf := newPrefilter("(?sm)" + tt.pattern)
		re := regexp.MustCompile("(?sm)" + tt.pattern)
		for _, s := range tt.yes {
			if pf != nil && !pf.mayMatch(s) {
				t.Errorf("%q rejects %q", tt.pattern, s)
			}
		}
		for _, s := range tt.no {
			if re.MatchString(s) {
				t.Fatalf("bad test: %q matches %q", tt.pattern, s)
			}
			if pf == nil || pf.mayMatch(s) {
				t.Errorf("%q lets %q through (prefilter %+v)", tt.pattern, s, pf)
			}
		}
		// Non-ASCII input always goes to the regexp.
		if pf != nil && !pf.mayMatch("\u212a\xff") {
			t.Errorf("%q filters non-ASCII input", tt.pattern)
		}
	}
}

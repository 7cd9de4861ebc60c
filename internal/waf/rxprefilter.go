package waf

import (
	"regexp/syntax"
	"slices"
	"strings"
	"unicode"
)

// A prefilter is a necessary condition for a pattern to match an ASCII
// input, derived from the pattern's syntax tree: the input is at least
// minLen bytes long, and for each clause it contains at least one of the
// clause's atoms. It is checked in Go before the (much more expensive) call
// into RE2; most CRS patterns against most benign values fail it.
//
// Why only ASCII inputs: there every rune is one byte, an invalid UTF-8
// byte (which Go's regexp reads as U+FFFD) cannot occur, and a
// case-insensitive literal can only meet the ASCII members of its Unicode
// fold orbit (Go's (?i)s also matches U+017F 'ſ', which a plain ASCII
// comparison would miss). Inputs with any byte >= 0x80 go to the regexp
// unfiltered.
//
// Soundness rests on each construction rule below giving a condition that
// every match satisfies (TestPrefilterSound checks it for every CRS pattern
// against the CRS test payloads and random inputs, FuzzPrefilter beyond).
type prefilter struct {
	minLen  int
	clauses []clause
}

// A clause holds when the input contains one of its atoms.
type clause struct {
	atoms []atom // all of them
	long  []atom // those of two bytes or more
	// at says, per input byte, whether a one-byte atom is that byte
	// (atHit: the clause holds), whether a longer atom starts with it
	// (atLong), or whether it is not ASCII (atHit: the input may match,
	// see mayMatch).
	at [256]uint8
}

const (
	atHit  = 1
	atLong = 2
)

// An atom is a literal string; fold: compared ignoring ASCII case (s is
// then lower case).
type atom struct {
	s    string
	fold bool
}

// Limits that keep the analysis and the check cheap.
const (
	maxExact      = 16 // strings in an exact set
	maxClauseSize = 64 // atoms in a clause
)

// info is what a subexpression contributes: either the exact set of the
// ASCII strings it can match (exact != nil; empty: it cannot match ASCII
// input at all), or a CNF every match satisfies.
type info struct {
	exact    []atom
	isExact  bool
	clauses  []clause
	minLen   int
	possible bool // false: cannot match any ASCII input
}

// newPrefilter analyses a pattern as Go's regexp parses it. It returns nil
// when the pattern gives no useful condition.
func newPrefilter(pattern string) *prefilter {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil
	}
	in := analyse(re.Simplify())
	if !in.possible {
		// The pattern can only match non-ASCII input; keep the
		// condition (an ASCII input never passes).
		return &prefilter{minLen: 1, clauses: []clause{newClause(nil)}}
	}
	cs := in.cnf()
	if len(cs) == 0 && in.minLen < 2 {
		return nil
	}
	// The clause likeliest to fail first: the fewest bytes that can
	// satisfy or start it, then the longest shortest atom.
	slices.SortStableFunc(cs, func(a, b clause) int {
		if d := a.width() - b.width(); d != 0 {
			return d
		}
		return b.shortest() - a.shortest()
	})
	return &prefilter{minLen: in.minLen, clauses: cs}
}

// mayMatch reports whether an input can match. Inputs that are not pure
// ASCII always may: every clause holds at a byte >= 0x80.
func (p *prefilter) mayMatch(s string) bool {
	if len(s) < p.minLen {
		return !isASCII(s)
	}
	for i := range p.clauses {
		if !p.clauses[i].holds(s) {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func (c *clause) holds(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c.at[s[i]] {
		case 0:
			continue
		case atLong:
		default:
			return true
		}
		rest := s[i:]
		for _, a := range c.long {
			if len(a.s) > len(rest) {
				continue
			}
			if a.fold {
				if equalFoldASCII(rest[:len(a.s)], a.s) {
					return true
				}
			} else if rest[:len(a.s)] == a.s {
				return true
			}
		}
	}
	return false
}

// equalFoldASCII compares ASCII s with lower-case ASCII lower.
func equalFoldASCII(s, lower string) bool {
	for i := 0; i < len(lower); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// width is the number of ASCII bytes at which the clause can hold or an
// atom can start.
func (c *clause) width() int {
	n := 0
	for b := 0; b < 0x80; b++ {
		if c.at[b] != 0 {
			n++
		}
	}
	return n
}

func (c *clause) shortest() int {
	m := 0
	for i, a := range c.atoms {
		if i == 0 || len(a.s) < m {
			m = len(a.s)
		}
	}
	return m
}

func newClause(atoms []atom) clause {
	c := clause{atoms: atoms}
	for b := 0x80; b < 0x100; b++ {
		c.at[b] = atHit
	}
	for _, a := range atoms {
		bit := uint8(atHit)
		if len(a.s) > 1 {
			bit = atLong
			c.long = append(c.long, a)
		}
		b := a.s[0]
		c.at[b] |= bit
		if a.fold && 'a' <= b && b <= 'z' {
			c.at[b-'a'+'A'] |= bit
		}
	}
	return c
}

func anything(minLen int) info { return info{minLen: minLen, possible: true} }

func exactly(atoms ...atom) info {
	in := info{isExact: true, exact: atoms, possible: len(atoms) > 0}
	if len(atoms) > 0 {
		in.minLen = len(atoms[0].s)
		for _, a := range atoms[1:] {
			in.minLen = min(in.minLen, len(a.s))
		}
	}
	return in
}

// cnf turns an exact set into a one-clause CNF (no clause when it holds the
// empty string, which every input contains).
func (in info) cnf() []clause {
	if !in.isExact {
		return in.clauses
	}
	for _, a := range in.exact {
		if a.s == "" {
			return nil
		}
	}
	if len(in.exact) == 0 || len(in.exact) > maxClauseSize {
		return nil
	}
	return []clause{newClause(slices.Clone(in.exact))}
}

func analyse(re *syntax.Regexp) info {
	fold := re.Flags&syntax.FoldCase != 0
	switch re.Op {
	case syntax.OpNoMatch:
		return info{possible: false}
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return exactly(atom{})
	case syntax.OpLiteral:
		var b strings.Builder
		for _, r := range re.Rune {
			if !fold {
				if r >= 0x80 {
					return info{possible: false}
				}
				b.WriteByte(byte(r))
				continue
			}
			lc, ok := asciiFold(r)
			if !ok {
				return info{possible: false}
			}
			b.WriteByte(lc)
		}
		return exactly(atom{s: b.String(), fold: fold})
	case syntax.OpCharClass:
		return classInfo(re.Rune)
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return anything(1)
	case syntax.OpCapture:
		return analyse(re.Sub[0])
	case syntax.OpStar:
		return anything(0) // any number of repetitions, none included: no condition
	case syntax.OpQuest:
		return alternate([]info{exactly(atom{}), analyse(re.Sub[0])})
	case syntax.OpPlus:
		return analyse(re.Sub[0]).asCNF()
	case syntax.OpRepeat:
		if re.Min == 0 {
			return anything(0)
		}
		sub := analyse(re.Sub[0]).asCNF()
		sub.minLen *= re.Min
		return sub
	case syntax.OpConcat:
		acc := exactly(atom{})
		for _, sub := range re.Sub {
			acc = concat(acc, analyse(sub))
			if !acc.possible {
				return acc
			}
		}
		return acc
	case syntax.OpAlternate:
		var subs []info
		for _, sub := range re.Sub {
			if in := analyse(sub); in.possible {
				subs = append(subs, in)
			}
		}
		return alternate(subs)
	}
	return anything(0)
}

// asCNF keeps the condition and the minimum length but forgets the exact
// strings (for repetitions: x+ contains x somewhere, not exactly x).
func (in info) asCNF() info {
	if !in.possible || !in.isExact {
		return in
	}
	return info{clauses: in.cnf(), minLen: in.minLen, possible: true}
}

func concat(a, b info) info {
	if !a.possible || !b.possible {
		return info{possible: false}
	}
	if a.isExact && b.isExact && len(a.exact)*len(b.exact) <= maxExact {
		var out []atom
		for _, x := range a.exact {
			for _, y := range b.exact {
				out = appendAtom(out, joinAtoms(x, y))
			}
		}
		return exactly(out...)
	}
	return info{clauses: append(slices.Clone(a.cnf()), b.cnf()...), minLen: a.minLen + b.minLen, possible: true}
}

func joinAtoms(x, y atom) atom {
	if x.fold == y.fold {
		return atom{s: x.s + y.s, fold: x.fold}
	}
	// One side ignores case: the whole atom does (a weaker condition).
	return atom{s: strings.ToLower(x.s) + strings.ToLower(y.s), fold: true}
}

func appendAtom(list []atom, a atom) []atom {
	for _, x := range list {
		if x == a {
			return list
		}
	}
	return append(list, a)
}

// alternate: a match of x|y matches x or y. Exact sets unite; otherwise
// each branch contributes its most selective clause and the alternation
// needs one of them.
func alternate(subs []info) info {
	if len(subs) == 0 {
		return info{possible: false}
	}
	minLen := subs[0].minLen
	allExact := true
	n := 0
	for _, s := range subs {
		minLen = min(minLen, s.minLen)
		allExact = allExact && s.isExact
		n += len(s.exact)
	}
	if allExact && n <= maxExact {
		var out []atom
		for _, s := range subs {
			for _, a := range s.exact {
				out = appendAtom(out, a)
			}
		}
		return exactly(out...)
	}
	var atoms []atom
	for _, s := range subs {
		cs := s.cnf()
		if len(cs) == 0 {
			return anything(minLen)
		}
		best := cs[0].atoms
		for _, c := range cs[1:] {
			if weaker(best, c.atoms) {
				best = c.atoms
			}
		}
		for _, a := range best {
			atoms = appendAtom(atoms, a)
		}
	}
	if len(atoms) > maxClauseSize {
		return anything(minLen)
	}
	return info{clauses: []clause{newClause(atoms)}, minLen: minLen, possible: true}
}

// weaker reports whether clause a is likelier to hold than clause b
// (shorter atoms, then more of them).
func weaker(a, b []atom) bool {
	short := func(as []atom) int {
		m := len(as[0].s)
		for _, x := range as[1:] {
			m = min(m, len(x.s))
		}
		return m
	}
	if sa, sb := short(a), short(b); sa != sb {
		return sa < sb
	}
	return len(a) > len(b)
}

// classInfo: a character class matches one of its ASCII members.
func classInfo(ranges []rune) info {
	var set [128]bool
	n := 0
	for i := 0; i+1 < len(ranges); i += 2 {
		for r := ranges[i]; r <= ranges[i+1] && r < 0x80; r++ {
			if !set[r] {
				set[r] = true
				n++
			}
		}
	}
	if n == 0 {
		return info{possible: false}
	}
	if n > 2*maxExact/2 {
		return anything(1)
	}
	var atoms []atom
	for c := 0; c < 128; c++ {
		if !set[c] {
			continue
		}
		b := byte(c)
		if 'A' <= b && b <= 'Z' && set[b-'A'+'a'] {
			continue // folded with its lower case below
		}
		if 'a' <= b && b <= 'z' && set[b-'a'+'A'] {
			atoms = append(atoms, atom{s: string(b), fold: true})
			continue
		}
		atoms = append(atoms, atom{s: string(b)})
	}
	if len(atoms) > maxExact/2 {
		return anything(1)
	}
	return exactly(atoms...)
}

// asciiFold returns the lower-case ASCII member of r's case-fold orbit.
func asciiFold(r rune) (byte, bool) {
	for f := r; ; {
		if f < 0x80 {
			b := byte(f)
			if 'A' <= b && b <= 'Z' {
				b += 'a' - 'A'
			}
			return b, true
		}
		f = unicode.SimpleFold(f)
		if f == r {
			return 0, false
		}
	}
}

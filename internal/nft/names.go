package nft

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Names by content.
//
// Every chain but the base chains, and every set and map, is named after
// what it holds: a readable part (what the compiler called it: "rule_17",
// "tcp4_leaf", "a4", "fqdn_5_v4", ...) and 16 hex digits of the SHA-256 of
// its content — its rules, or its key type, comment and elements — in
// which the chains and sets it refers to appear under their own content
// names. So two applies that compile the same chain give it the same
// name, and a chain changes name exactly when something it leads to
// changes. That is what lets NetlinkRunner.Apply keep what the running
// ruleset already has and send the kernel only the difference: a kernel
// object of that name holds that content (the runner creates a chain with
// all its rules in one transaction and never changes a named object
// afterwards), and a policy that changes one rule changes the chains and
// maps on the path from the classifier's root to that rule's leaves, and
// nothing else.
//
// Named counters (Counter.Name) and the limit object (LimitSpec.Name) are
// named after their content already: a decision's log tag, a rate and a
// burst.
//
// contentVersion is part of every hash: change it when the same statement
// text starts to lower to other expressions, so that a new version of
// clusterwall does not keep the old version's chains.
const contentVersion = "cw-content-2\n"

// hashLen is how many hex digits of the hash a name carries: 64 bits, so
// that two different chains of the largest rulesets collide with a
// probability of about 10^-9.
const hashLen = 16

// nameByContent renames rs's chains (but the base chains) and sets after
// their content, and the references to them. The prefix of a provisional
// name the compiler numbered (compiler.name: prefix, provisionalSep and a
// number) replaces the number. Chains or sets of the same content become
// one.
func nameByContent(rs *Ruleset) error {
	_, err := nameRuleset(rs, nil)
	return err
}

// provisionalSep separates the prefix of a provisional name from its
// number; no other name has it.
const provisionalSep = "#"

// hashSize is the size of a content hash.
const hashSize = sha256.Size

// nameRuleset is nameByContent, where the chains and sets named in final
// already have their final names (their sums are final's values: a
// classifier tree of the previous compile, treecache.go); it returns the
// namer, whose chains, sets and sums hold every name.
func nameRuleset(rs *Ruleset, final map[string][hashSize]byte) (*namer, error) {
	// The objects already named (final) stay out of the namer's maps:
	// a lookup in final finds them (at 10,000 rules a one-rule change
	// reuses nearly every chain and set).
	fresh := max(0, len(rs.Chains)+len(rs.Sets)-len(final))
	n := &namer{
		rs:    rs,
		named: final,
		sums:  make(map[string][sha256.Size]byte, fresh),
	}
	// One record per object, in one block: a chain's record holds what
	// the maps chainTo and visiting held (one lookup where there were
	// three; naming was a tenth of a large compile). A provisional name's
	// record is found by its number (byNum), not by a map of 10^5 names.
	// A chain or set this function named in an earlier compile (named)
	// and reused by this one has its final name: with final (a cached
	// compile, the reused objects' names in final) it is not looked up.
	// Without final nothing is taken as named (nameByContent renames
	// whatever it is given).
	trust := final != nil
	maxNum := 0
	for _, c := range rs.Chains {
		if !(trust && c.named) {
			maxNum = max(maxNum, provisionalNum(c.Name))
		}
	}
	for _, s := range rs.Sets {
		if !(trust && s.named) {
			maxNum = max(maxNum, provisionalNum(s.Name))
		}
	}
	if maxNum <= 4*(len(rs.Chains)+len(rs.Sets))+1024 {
		n.byNum = make([]*nameRec, maxNum+1)
	}
	recs := make([]nameRec, 0, fresh)
	for _, c := range rs.Chains {
		if trust && c.named {
			continue
		}
		if !n.isFinal(c.Name) {
			if r := n.chainRec(c.Name); r != nil {
				r.chain = c
				continue
			}
			if len(recs) == cap(recs) {
				recs = make([]nameRec, 0, 64)
			}
			recs = append(recs, nameRec{chain: c, name: c.Name})
			n.add(&recs[len(recs)-1], &n.chains)
		}
	}
	for _, s := range rs.Sets {
		if trust && s.named {
			continue
		}
		if !n.isFinal(s.Name) {
			if r := n.setRec(s.Name); r != nil {
				r.set = s
				continue
			}
			if len(recs) == cap(recs) {
				recs = make([]nameRec, 0, 64)
			}
			recs = append(recs, nameRec{set: s, name: s.Name})
			n.add(&recs[len(recs)-1], &n.sets)
		}
	}
	for _, c := range rs.Chains {
		if c.Hook != HookNone {
			if err := n.rewriteRules(c); err != nil {
				return nil, err
			}
			continue
		}
		if trust && c.named {
			continue
		}
		if _, err := n.chain(c.Name); err != nil {
			return nil, err
		}
	}
	for _, s := range rs.Sets {
		if trust && s.named {
			continue
		}
		if _, err := n.set(s.Name); err != nil {
			return nil, err
		}
	}
	// Keep one of each name, in the compiled order.
	seen := make(map[string]struct{}, len(rs.Chains))
	chains := rs.Chains[:0]
	for _, c := range rs.Chains {
		if !(trust && c.named) {
			// Only an object this compile named is written: a reused
			// one may be read by another compile of the same Cache.
			if c.Hook == HookNone {
				c.Name = n.chainName(c.Name)
			}
			c.named = true
		}
		if _, ok := seen[c.Name]; !ok {
			seen[c.Name] = struct{}{}
			chains = append(chains, c)
		}
	}
	rs.Chains = chains
	seen = make(map[string]struct{}, len(rs.Sets))
	sets := rs.Sets[:0]
	for _, s := range rs.Sets {
		if !(trust && s.named) {
			s.Name = n.setName(s.Name)
			s.named = true
		}
		if _, ok := seen[s.Name]; !ok {
			seen[s.Name] = struct{}{}
			sets = append(sets, s)
		}
	}
	rs.Sets = sets
	for _, m := range []map[string][]string{rs.fqdnSets, rs.dnatMaps} {
		for k, l := range m {
			out := make([]string, 0, len(l))
			for _, name := range l {
				to := n.setName(name)
				if !contains(out, to) {
					out = append(out, to)
				}
			}
			m[k] = sortedStrings(out)
		}
	}
	if t := rs.threat; t != nil {
		t.chain = n.chainName(t.chain)
		for i := range t.sets {
			t.sets[i] = n.setName(t.sets[i])
		}
	}
	rs.counters = rs.findCounters()
	return n, nil
}

type namer struct {
	rs     *Ruleset
	byNum  []*nameRec                   // provisional name's number -> its chain or set and final name
	chains map[string]*nameRec          // the chains not in byNum (no number, or another's)
	sets   map[string]*nameRec          // the same for sets
	sums   map[string][sha256.Size]byte // kind and final name -> full hash (collision check)
	named  map[string][hashSize]byte    // the names already final (reused) -> their sums
	buf    []byte
}

// nameRec is a chain or set to name: the object, its final name once
// named, and whether it is being named (a chain that leads back to itself).
type nameRec struct {
	chain    *Chain
	set      *Set
	name     string // the provisional name
	to       string
	visiting bool
}

// provisionalNum is the number of a provisional name (compiler.name), 0
// if name has none.
func provisionalNum(name string) int {
	i := strings.LastIndexByte(name, provisionalSep[0])
	if i < 0 || len(name)-i-1 > 9 || i == len(name)-1 {
		return 0
	}
	num := 0
	for _, c := range []byte(name[i+1:]) {
		if c < '0' || c > '9' {
			return 0
		}
		num = num*10 + int(c-'0')
	}
	return num
}

// add files r under its number, or else in m.
func (n *namer) add(r *nameRec, m *map[string]*nameRec) {
	if num := provisionalNum(r.name); num > 0 && num < len(n.byNum) && n.byNum[num] == nil {
		n.byNum[num] = r
		return
	}
	if *m == nil {
		*m = map[string]*nameRec{}
	}
	(*m)[r.name] = r
}

// chainRec is the record of the chain of provisional name old (nil if
// none).
func (n *namer) chainRec(old string) *nameRec {
	if num := provisionalNum(old); num > 0 && num < len(n.byNum) {
		if r := n.byNum[num]; r != nil && r.chain != nil && r.name == old {
			return r
		}
	}
	return n.chains[old]
}

// setRec is the record of the set of provisional name old (nil if none).
func (n *namer) setRec(old string) *nameRec {
	if num := provisionalNum(old); num > 0 && num < len(n.byNum) {
		if r := n.byNum[num]; r != nil && r.set != nil && r.name == old {
			return r
		}
	}
	return n.sets[old]
}

func (n *namer) final(kind, old string, content []byte) (string, error) {
	var prefix string
	if i := strings.LastIndex(old, provisionalSep); i >= 0 {
		prefix = old[:i]
	} else {
		prefix = stripHash(old)
	}
	sum := sha256.Sum256(content)
	name := hashedName(prefix, &sum)
	// Chains and sets have names of their own: a set's sum is kept
	// complemented.
	if kind == "set" {
		for i := range sum {
			sum[i] = ^sum[i]
		}
	}
	prev, ok := n.sums[name]
	if !ok {
		prev, ok = n.named[name]
	}
	if ok && prev != sum {
		return "", fmt.Errorf("ruleset: two %ss are named %s (hash collision)", kind, name)
	}
	n.sums[name] = sum
	return name, nil
}

// chain returns the final name of the regular chain named old.
func (n *namer) chain(old string) (string, error) {
	rec := n.chainRec(old)
	if rec == nil {
		if n.isFinal(old) {
			return old, nil
		}
		return "", fmt.Errorf("ruleset: unknown chain %q", old)
	}
	if rec.to != "" {
		return rec.to, nil
	}
	c := rec.chain
	if c.Hook != HookNone {
		return old, nil
	}
	if rec.visiting {
		return "", fmt.Errorf("ruleset: chain %s leads back to itself", old)
	}
	rec.visiting = true
	if err := n.rewriteRules(c); err != nil {
		return "", err
	}
	b := appendChainContent(n.buf[:0], c.Rules)
	n.buf = b
	to, err := n.final("chain", old, b)
	if err != nil {
		return "", err
	}
	rec.to = to
	return to, nil
}

// appendChainContent appends what a regular chain's name is the hash of:
// its rules, whose references have their final names.
func appendChainContent(b []byte, rules []*Rule) []byte {
	b = append(b, contentVersion...)
	b = append(b, "chain\n"...)
	for _, r := range rules {
		b = appendStr(b, r.Comment)
		b = binary.AppendUvarint(b, uint64(len(r.Stmts)))
		for _, st := range r.Stmts {
			b = appendStmtKey(b, st)
		}
	}
	return b
}

// hashedName is the final name of an object of that prefix whose content
// has the hash sum.
func hashedName(prefix string, sum *[sha256.Size]byte) string {
	return prefix + "_" + hex.EncodeToString(sum[:hashLen/2])
}

// chainNameOf is the final name of a chain of that prefix (the
// compiler's, compiler.name) holding rules that refer to no chain or set
// (a decision chain): the name the namer gives it.
func chainNameOf(prefix string, rules []*Rule) string {
	sum := sha256.Sum256(appendChainContent(nil, rules))
	return hashedName(prefix, &sum)
}

// set returns the final name of the set named old.
func (n *namer) set(old string) (string, error) {
	rec := n.setRec(old)
	if rec == nil {
		if n.isFinal(old) {
			return old, nil
		}
		return "", fmt.Errorf("ruleset: unknown set %q", old)
	}
	if rec.to != "" {
		return rec.to, nil
	}
	s := rec.set
	if rec.visiting {
		return "", fmt.Errorf("ruleset: set %s leads back to itself", old)
	}
	rec.visiting = true
	for i, e := range s.Elems {
		if e.Chain != "" {
			to, err := n.chain(e.Chain)
			if err != nil {
				return "", fmt.Errorf("ruleset: map %s: %w", old, err)
			}
			s.Elems[i].Chain = to
		}
	}
	b := append(n.buf[:0], contentVersion...)
	// A map's elements, grown once (a dispatch map of 100,000 elements
	// grew this buffer, megabytes, by doubling).
	b = slices.Grow(b, 64+len(s.Comment)+len(s.FQDN)+len(s.Elems)*(4*8+1+len(old)+hashLen))
	b = append(b, "set\n"...)
	b = append(b, byte(s.Kind), byte(s.Family), byte(s.Field))
	b = appendCat(b, s.Cat)
	b = appendStr(b, s.Comment)
	b = appendStr(b, s.FQDN)
	b = binary.AppendUvarint(b, uint64(len(s.Elems)))
	for _, e := range s.Elems {
		b = appendIvl(b, e.iv)
		for i := range int(s.Cat.n) {
			b = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(b, e.cat[i].hi), e.cat[i].lo)
		}
		b = appendStr(b, e.Chain)
	}
	n.buf = b
	to, err := n.final("set", old, b)
	if err != nil {
		return "", err
	}
	rec.to = to
	return to, nil
}

// isFinal reports whether name is a final name already (final).
func (n *namer) isFinal(name string) bool {
	_, ok := n.named[name]
	return ok
}

// chainName is the final name of a named chain (its own when final).
func (n *namer) chainName(name string) string {
	if r := n.chainRec(name); r != nil && r.to != "" {
		return r.to
	}
	return name
}

// setName is the final name of a named set (its own when final).
func (n *namer) setName(name string) string {
	if r := n.setRec(name); r != nil && r.to != "" {
		return r.to
	}
	return name
}

// stripHash returns a final name without its hash (renaming a renamed
// ruleset gives the same names).
func stripHash(name string) string {
	i := len(name) - hashLen - 1
	if i <= 0 || name[i] != '_' {
		return name
	}
	for _, c := range name[i+1:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return name
		}
	}
	return name[:i]
}

// rewriteRules renames what c's rules refer to.
func (n *namer) rewriteRules(c *Chain) error {
	for _, r := range c.Rules {
		if !slices.ContainsFunc(r.Stmts, refers) {
			continue
		}
		r.Stmts = append([]Stmt(nil), r.Stmts...) // compiled rules may share arrays
		for i, st := range r.Stmts {
			var err error
			switch x := st.(type) {
			case Verdict:
				if x.Kind == VerdictJump || x.Kind == VerdictGoto {
					x.Chain, err = n.chain(x.Chain)
					st = x
				}
			case MatchSet:
				x.Set, err = n.set(x.Set)
				st = x
			case VMap:
				x.Map, err = n.set(x.Map)
				st = x
			case DNATMap:
				x.Map, err = n.set(x.Map)
				st = x
			}
			if err != nil {
				return fmt.Errorf("ruleset: chain %s: %w", c.Name, err)
			}
			r.Stmts[i] = st
		}
	}
	return nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func sortedStrings(l []string) []string {
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && l[j] < l[j-1]; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
	return l
}

// appendStmtKey appends an encoding of st that two statements share only
// when they lower to the same expressions (a statement type's tag, then
// its fields).
func appendStmtKey(b []byte, st Stmt) []byte {
	bit := func(v bool) byte {
		if v {
			return 1
		}
		return 0
	}
	switch x := st.(type) {
	case MatchNFProto:
		return append(b, 1, byte(x.Family))
	case MatchL4Proto:
		return append(b, 2, x.Proto)
	case MatchIfName:
		return appendStr(append(b, 3, bit(x.Out)), x.Name)
	case MatchCtState:
		return binary.BigEndian.AppendUint32(append(b, 4), x.States)
	case MatchCtDNAT:
		return append(b, 5, bit(x.Negate))
	case MatchRange:
		return appendIvl(append(b, 6, byte(x.Family), byte(x.Field)), x.iv)
	case MatchSet:
		return appendStr(append(b, 7, byte(x.Family), byte(x.Field)), x.Set)
	case VMap:
		return appendCat(appendStr(append(b, 8, byte(x.Family), byte(x.Field)), x.Map), x.Cat)
	case Counter:
		return appendStr(append(b, 9), x.Name)
	case Log:
		b = appendStr(append(b, 10), x.Prefix)
		b = binary.BigEndian.AppendUint16(b, x.Group)
		return appendStr(b, x.Limit)
	case Verdict:
		return appendStr(append(b, 11, byte(x.Kind)), x.Chain)
	case RejectTCPReset:
		return append(b, 12)
	case DNAT:
		return binary.BigEndian.AppendUint16(appendAddr(append(b, 13), x.Addr), x.Port)
	case DNATMap:
		return binary.BigEndian.AppendUint16(appendStr(append(b, 14, byte(x.Family)), x.Map), x.Port)
	case SNAT:
		return appendAddr(append(b, 15), x.Addr)
	case Masquerade:
		return append(b, 16)
	case Redirect:
		return binary.BigEndian.AppendUint16(append(b, 17), x.Port)
	}
	// A fused leaf's match and the statements of ha.go and snatpool.go:
	// their text says all.
	if m, ok := st.(MatchNotAll); ok {
		return appendText(append(b, 0xff), m.appendText)
	}
	return appendStr(append(b, 0xff), st.String())
}

// appendText appends what appendStr appends for the text that text
// appends, without the text as a string of its own.
func appendText(b []byte, text func([]byte) []byte) []byte {
	start := len(b)
	b = text(b)
	n := len(b) - start
	var l [binary.MaxVarintLen64]byte
	k := binary.PutUvarint(l[:], uint64(n))
	b = append(b, l[:k]...)
	copy(b[start+k:], b[start:start+n])
	copy(b[start:], l[:k])
	return b
}

// appendCat appends a concatenated key's fields (nothing without).
func appendCat(b []byte, k catKey) []byte {
	if k.n == 0 {
		return b
	}
	b = append(b, 0xca, k.n)
	for i := range int(k.n) {
		b = append(b, byte(k.f[i]), k.bits[i])
	}
	return b
}

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendIvl(b []byte, iv ivl) []byte {
	for _, v := range []uint64{iv.lo.hi, iv.lo.lo, iv.hi.hi, iv.hi.lo} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func appendAddr(b []byte, a netip.Addr) []byte {
	a16 := a.Unmap().As16()
	return append(append(b, byte(famOf(a))), a16[:]...)
}

// refers reports whether st names a chain or set.
func refers(st Stmt) bool {
	switch x := st.(type) {
	case Verdict:
		return x.Kind == VerdictJump || x.Kind == VerdictGoto
	case MatchSet, VMap, DNATMap:
		return true
	}
	return false
}

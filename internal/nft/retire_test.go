package nft

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// The deletion of the old ruleset after the switch (retire.go), on the
// real kernel.

// retireLab is a lab runner with the seed policy applied at log
// generation 5, its third counter left at 7 packets by an earlier
// process, and the same policy compiled at generation 6 (every counter
// new, so the apply deletes every counter of the first).
type retireLab struct {
	l         *lab
	r         *NetlinkRunner
	a, b      *Ruleset
	left      string // the counter of a with 7 packets
	leftTag   LogTag // its tag, without generation
	freshNS   string // a namespace for fresh applies
	freshFD   int
	freshDone func()
}

func newRetireLab(t *testing.T) *retireLab {
	t.Helper()
	l := newLab(t)
	cfg := labConfig()
	cfg.LogGeneration = 5
	a, err := compilePolicy(loadExample(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.LogGeneration = 6
	b, err := compilePolicy(loadExample(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	x := &retireLab{l: l, r: l.runner(), a: a, b: b, left: a.Counters()[2]}
	applyOverLeftCounter(t, x.r, a, x.left)
	if x.leftTag, err = ParseLogTag(x.left); err != nil {
		t.Fatal(err)
	}
	x.leftTag.Gen = 0
	x.freshNS = newNS(t, "rfresh")
	x.freshFD = nsFD(t, x.freshNS)
	return x
}

// fresh is the table a fresh apply of rs makes (dumpTable).
func (x *retireLab) fresh(t *testing.T, rs *Ruleset) string {
	t.Helper()
	r := NewNetlinkRunner(NetlinkOptions{NetNSFd: x.freshFD})
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	return dumpTable(t, x.freshFD)
}

// baseChains is the part of a dumpTable text that holds the base chains
// and their rules.
func baseChains(dump string) string {
	var b strings.Builder
	in := false
	for _, l := range strings.Split(dump, "\n") {
		switch {
		case strings.HasPrefix(l, "chain "):
			in = strings.Contains(l, " hook ")
		case !strings.HasPrefix(l, "\t"):
			in = false
		}
		if in {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// hasCounter reports whether the table of the lab's firewall has the
// named counter, read with a connection of its own (not the runner).
func (x *retireLab) hasCounter(t *testing.T, name string) bool {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(x.l.fwFD))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := counterObjects(c, &nftables.Table{Name: x.a.Table, Family: nftables.TableFamilyINet})
	if err != nil {
		t.Fatal(err)
	}
	return objs[name] != nil
}

func (x *retireLab) packetsOf(cs []RuleCounter) (uint64, bool) {
	for _, c := range cs {
		if c.Tag == x.leftTag.String() {
			return c.Packets, true
		}
	}
	return 0, false
}

// TestRetireAfterSwitch: a replacing apply returns once the base chains
// are the new ruleset's, with the old objects still in the table (the
// deletion held back here); a counter read meanwhile waits for the
// deletion, so that the deleted counter (7 packets) is not summed with
// its successor (0); once the runner is idle the table is exactly a
// fresh apply's.
func TestRetireAfterSwitch(t *testing.T) {
	x := newRetireLab(t)
	release := make(chan struct{})
	x.r.beforeRetire = func() error {
		select {
		case <-release:
		case <-time.After(5 * time.Second): // an apply that waits for its deletion
		}
		return nil
	}
	if err := x.r.Apply(x.b); err != nil {
		t.Fatal(err)
	}
	if st := x.r.LastApply(); st.OldChains == 0 || st.OldObjects == 0 {
		t.Fatalf("the apply deletes %d chains and %d objects, want some", st.OldChains, st.OldObjects)
	}
	want := x.fresh(t, x.b)
	got := dumpTable(t, x.l.fwFD)
	if g, w := baseChains(got), baseChains(want); g != w {
		t.Fatalf("the base chains after the apply returned are not the new ruleset's:\n%s", firstDiff(g, w))
	}
	if !x.hasCounter(t, x.left) || got == want {
		t.Fatalf("the old ruleset (counter %s) deleted before the apply returned: no deferred deletion to test", x.left)
	}
	// Another process's show (clusterwall dataplane show) meanwhile: the
	// old chains are there but unreachable, and their counters not
	// counted.
	conn, err := nftables.New(nftables.WithNetNSFd(x.l.fwFD))
	if err != nil {
		t.Fatal(err)
	}
	other, err := readState(conn, x.b.Table)
	if err != nil {
		t.Fatal(err)
	}
	reached := 0
	for _, ch := range other.Chains {
		if !ch.Unreachable {
			reached++
		}
	}
	if reached != len(x.b.Chains) || len(other.Chains) == reached {
		t.Errorf("show while the deletion is held: %d chains, %d reachable; want %d reachable and the old ones not", len(other.Chains), reached, len(x.b.Chains))
	}
	if n, ok := x.packetsOf(other.Counters()); !ok || n != 0 {
		t.Errorf("show while the deletion is held: %s %d packets (found %v), want 0", x.leftTag, n, ok)
	}
	type read struct {
		cs  []RuleCounter
		err error
	}
	counted := make(chan read, 1)
	go func() {
		cs, err := x.r.Counters()
		counted <- read{cs, err}
	}()
	select {
	case c := <-counted:
		close(release)
		t.Fatalf("Counters returned before the deletion (%v, %v)", c.cs, c.err)
	case <-time.After(150 * time.Millisecond):
	}
	close(release)
	c := <-counted
	if c.err != nil {
		t.Fatal(c.err)
	}
	if n, ok := x.packetsOf(c.cs); !ok || n != 0 {
		t.Fatalf("%s after the apply: %d packets (found %v), want the new counter's 0 — not the deleted one's 7 beside it", x.leftTag, n, ok)
	}
	if err := x.r.Settle(); err != nil {
		t.Fatal(err)
	}
	if x.hasCounter(t, x.left) {
		t.Errorf("counter %s still there once the runner is idle", x.left)
	}
	if got := dumpTable(t, x.l.fwFD); got != want {
		t.Fatalf("once the runner is idle the table differs from a fresh apply:\n%s", firstDiff(got, want))
	}
	// The counters by name and Show read after the deletion too.
	x.r.beforeRetire = func() error { time.Sleep(100 * time.Millisecond); return nil }
	if err := x.r.Apply(x.a); err != nil {
		t.Fatal(err)
	}
	bt := x.leftTag
	bt.Gen = 6
	if cs, err := x.r.CountersOf([]LogTag{bt}); err != nil || len(cs) != 0 {
		t.Errorf("CountersOf the deleted %s right after the apply: %v, %v; want none", bt, cs, err)
	}
	if err := x.r.Apply(x.b); err != nil {
		t.Fatal(err)
	}
	st, err := x.r.Show()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Chains) != len(x.b.Chains) {
		t.Errorf("show right after an apply: %d chains, the ruleset has %d", len(st.Chains), len(x.b.Chains))
	}
}

// TestRetireNextApplyWaits: an apply right after a replace waits for its
// deletion before it reads the table, here one that brings the deleted
// ruleset back; the table is then exactly a fresh apply's, and the
// runner's memory of it right (the same again sends nothing).
func TestRetireNextApplyWaits(t *testing.T) {
	x := newRetireLab(t)
	const hold = 300 * time.Millisecond
	x.r.beforeRetire = func() error { time.Sleep(hold); return nil }
	if err := x.r.Apply(x.b); err != nil {
		t.Fatal(err)
	}
	if err := x.r.Apply(x.a); err != nil {
		t.Fatal(err)
	}
	st := x.r.LastApply()
	if st.Settle < hold/2 || st.Retire < hold {
		t.Fatalf("the apply waited %v for a deletion of %v, want about %v", st.Settle, st.Retire, hold)
	}
	if st.NewChains == 0 || st.Listed {
		t.Fatalf("the apply added %d chains (listed %v): want the deleted ruleset's chains back, from the runner's memory", st.NewChains, st.Listed)
	}
	if err := x.r.Settle(); err != nil {
		t.Fatal(err)
	}
	want := x.fresh(t, x.a)
	if got := dumpTable(t, x.l.fwFD); got != want {
		t.Fatalf("the table differs from a fresh apply:\n%s", firstDiff(got, want))
	}
	if err := x.r.Apply(x.a); err != nil {
		t.Fatal(err)
	}
	if st := x.r.LastApply(); st.Listed || st.NewChains != 0 || st.OldChains != 0 || st.BaseChains != 0 {
		t.Errorf("the same again: %+v, want nothing sent", st)
	}
}

// TestRetireFailed: a deletion the kernel refuses (a chain added behind
// the runner's back jumps to an old chain) is reported by Settle and
// leaves the runner without memory of the table: the next apply lists
// it and deletes what is left (that chain too), and the table is then
// exactly a fresh apply's.
func TestRetireFailed(t *testing.T) {
	x := newRetireLab(t)
	var oldChain string
	for _, c := range x.a.Chains {
		if c.Hook == HookNone && x.b.Chain(c.Name) == nil {
			oldChain = c.Name
			break
		}
	}
	if oldChain == "" {
		t.Fatal("no chain of the first ruleset goes")
	}
	x.r.beforeRetire = func() error {
		c, err := nftables.New(nftables.WithNetNSFd(x.l.fwFD))
		if err != nil {
			return err
		}
		tb := &nftables.Table{Name: x.a.Table, Family: nftables.TableFamilyINet}
		ch := c.AddChain(&nftables.Chain{Name: "xref", Table: tb})
		c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: oldChain}}})
		return c.Flush()
	}
	if err := x.r.Apply(x.b); err != nil {
		t.Fatal(err)
	}
	err := x.r.Settle()
	if err == nil {
		t.Fatal("the deletion succeeded with a chain jumping to an old chain")
	}
	t.Logf("deletion refused: %v", err)
	if !x.hasCounter(t, x.left) {
		t.Fatal("a refused deletion deleted")
	}
	x.r.beforeRetire = nil
	if err := x.r.Apply(x.b); err != nil {
		t.Fatal(err)
	}
	if st := x.r.LastApply(); !st.Listed || st.OldChains == 0 {
		t.Errorf("the next apply listed %v, deletes %d chains: want the table listed and what is left deleted", st.Listed, st.OldChains)
	}
	if err := x.r.Settle(); err != nil {
		t.Fatal(err)
	}
	if got, want := dumpTable(t, x.l.fwFD), x.fresh(t, x.b); got != want {
		t.Fatalf("the table differs from a fresh apply:\n%s", firstDiff(got, want))
	}
	cs, err := x.r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := x.packetsOf(cs); n != 0 {
		t.Errorf("%s: %d packets, want 0", x.leftTag, n)
	}
}

// TestRetireLeftByDeadProcess: a process that dies between the switch
// and the deletion leaves the old ruleset in the table, unreachable; the
// next process's first apply finds it and deletes it.
func TestRetireLeftByDeadProcess(t *testing.T) {
	x := newRetireLab(t)
	died := errors.New("the process died")
	x.r.beforeRetire = func() error { return died }
	if err := x.r.Apply(x.b); err != nil {
		t.Fatal(err)
	}
	if err := x.r.Settle(); !errors.Is(err, died) {
		t.Fatalf("Settle: %v", err)
	}
	if !x.hasCounter(t, x.left) {
		t.Fatal("the old ruleset deleted")
	}
	next := NewNetlinkRunner(NetlinkOptions{NetNSFd: x.l.fwFD})
	if err := next.Apply(x.b); err != nil {
		t.Fatal(err)
	}
	if st := next.LastApply(); st.OldChains == 0 || st.OldObjects == 0 {
		t.Errorf("the new process's apply deletes %d chains, %d objects: want the old ruleset's", st.OldChains, st.OldObjects)
	}
	cs, err := next.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := x.packetsOf(cs); n != 0 {
		t.Errorf("%s: %d packets, want 0", x.leftTag, n)
	}
	if got, want := dumpTable(t, x.l.fwFD), x.fresh(t, x.b); got != want {
		t.Fatalf("the table differs from a fresh apply:\n%s", firstDiff(got, want))
	}
}

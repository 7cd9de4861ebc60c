package nft

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// dumpTable reads clusterwall's table back from the kernel in full and
// renders it canonically: every chain (sorted by name, base chains with
// their hook) with its rules (expressions and comments, in order), every
// set with its flags and elements (keys, interval ends, verdicts and
// data, sorted), and every named object with its parameters.
func dumpTable(t testing.TB, fd int) string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	table, chains, err := tableAndChains(c, DefaultTable)
	if err != nil {
		t.Fatal(err)
	}
	if table == nil {
		return "no table\n"
	}
	var b strings.Builder
	sort.Slice(chains, func(i, j int) bool { return chains[i].Name < chains[j].Name })
	for _, ch := range chains {
		fmt.Fprintf(&b, "chain %s", ch.Name)
		if ch.Hooknum != nil {
			fmt.Fprintf(&b, " hook %s type %s prio %d policy %d", hookName(*ch.Hooknum), ch.Type, *ch.Priority, *ch.Policy)
		}
		b.WriteByte('\n')
		rules, err := c.GetRules(table, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			text, _ := exprText(r.Exprs)
			cm, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			fmt.Fprintf(&b, "\t%s # %s\n", text, cm)
		}
	}
	sets, err := c.GetSets(table)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(sets, func(i, j int) bool { return sets[i].Name < sets[j].Name })
	for _, s := range sets {
		fmt.Fprintf(&b, "set %s key %s map %v data %s interval %v timeout %v comment %q\n", s.Name, s.KeyType.Name, s.IsMap,
			s.DataType.Name, s.Interval, s.HasTimeout, s.Comment)
		els, err := c.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, e := range els {
			l := fmt.Sprintf("\t%x end %v val %x", e.Key, e.IntervalEnd, e.Val)
			if e.VerdictData != nil {
				l += fmt.Sprintf(" verdict %d %s", e.VerdictData.Kind, e.VerdictData.Chain)
			}
			lines = append(lines, l)
		}
		sort.Strings(lines)
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
	objs, err := c.GetNamedObjects(table)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, o := range objs {
		no := o.(*nftables.NamedObj)
		l := fmt.Sprintf("object %s type %d", no.Name, no.Type)
		if lim, ok := no.Obj.(*expr.Limit); ok {
			l += fmt.Sprintf(" rate %d burst %d", lim.Rate, lim.Burst)
		}
		lines = append(lines, l)
	}
	sort.Strings(lines)
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// TestKernelIncrementalEqualsFull: the table an apply leaves when it only
// sends the difference to the running ruleset is exactly the table a
// fresh apply of the same ruleset makes (chains, rules, sets and their
// elements, objects, read back from the kernel), through a sequence of
// applies: a policy, one rule changed, the same again, another policy of
// another size and config, threat intelligence on and its feed refreshed,
// and back; also when the runner does not remember the table (a
// restarted daemon lists it). The table is read once the runner is idle
// (Settle: the old ruleset deleted).
func TestKernelIncrementalEqualsFull(t *testing.T) {
	requireRoot(t)
	inc, fresh := newNS(t, "inc"), newNS(t, "full")
	incF, err := OpenNetNS(inc)
	if err != nil {
		t.Fatal(err)
	}
	defer incF.Close()
	freshF, err := OpenNetNS(fresh)
	if err != nil {
		t.Fatal(err)
	}
	defer freshF.Close()
	r := NewNetlinkRunner(NetlinkOptions{NetNSFd: int(incF.Fd())})

	oneRule := func(n int) *policy.Policy {
		p := bigPolicy(n, 1)
		p.Groups[1].Collections[3].Rules[4].DestinationPorts = []policy.PortRange{{Lo: 7000, Hi: 7010}}
		return p
	}
	ti := func(deny bool, addrs ...string) *ThreatIntel {
		t := &ThreatIntel{Deny: deny}
		for _, a := range addrs {
			ip := netip.MustParseAddr(a)
			t.V4 = append(t.V4, policy.AddrRange{From: ip, To: ip})
		}
		return t
	}
	cfg := labConfig()
	cfgTI := labConfig()
	cfgTI.ThreatIntel = ti(true, "198.18.10.5", "198.18.10.9")
	cfgOther := labConfig()
	cfgOther.LogRate, cfgOther.LogBurst, cfgOther.LogGeneration = 1000, 50, 7
	cfgLimited := labConfig()
	cfgLimited.LimitRuleLogs = true
	steps := []struct {
		name string
		p    *policy.Policy
		cfg  Config
		// threat, when set, refreshes the running ruleset's feed instead.
		threat *ThreatIntel
	}{
		{"first", bigPolicy(3000, 1), cfg, nil},
		{"one rule changed", oneRule(3000), cfg, nil},
		{"same again", oneRule(3000), cfg, nil},
		{"back", bigPolicy(3000, 1), cfg, nil},
		{"another policy and limit", bigPolicy(1500, 2), cfgOther, nil},
		{"threat intel on", bigPolicy(1500, 2), cfgTI, nil},
		{"feed refreshed", nil, Config{}, ti(true, "198.18.10.5", "198.18.20.1", "198.18.20.2")},
		{"seed policy", loadExample(t), cfg, nil},
		{"kinds", loadPolicy(t, "testdata/kinds.yaml"), cfg, nil},
		{"rule logs limited", bigPolicy(3000, 1), cfgLimited, nil},
		{"limited, one rule changed", oneRule(3000), cfgLimited, nil},
		{"limited, same again", oneRule(3000), cfgLimited, nil},
		{"first again", bigPolicy(3000, 1), cfg, nil},
	}
	var cur *Ruleset
	for i, st := range steps {
		var rs *Ruleset
		start := time.Now()
		if st.threat != nil {
			if _, err := r.UpdateThreatIntel(st.threat); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			r.mu.Lock()
			rs = r.current
			r.mu.Unlock()
		} else {
			rs, err = compilePolicy(st.p, st.cfg)
			if err != nil {
				t.Fatal(err)
			}
			start = time.Now()
			if i == 4 {
				// A restarted daemon: a runner that lists the table.
				r = NewNetlinkRunner(NetlinkOptions{NetNSFd: int(incF.Fd())})
			}
			if err := r.Apply(rs); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
		took := time.Since(start)
		stats := r.LastApply()
		// The old ruleset is deleted after the apply returns (retire.go).
		if err := r.Settle(); err != nil {
			t.Fatalf("%s: deleting the old ruleset: %v", st.name, err)
		}
		got := dumpTable(t, int(incF.Fd()))
		// The same ruleset applied to an empty table.
		full := NewNetlinkRunner(NetlinkOptions{NetNSFd: int(freshF.Fd())})
		if err := full.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := full.Apply(rs); err != nil {
			t.Fatalf("%s: fresh apply: %v", st.name, err)
		}
		want := dumpTable(t, int(freshF.Fd()))
		if got != want {
			os.WriteFile(t.TempDir()+"/got", []byte(got), 0o644)
			t.Fatalf("%s: the table after an incremental apply differs from a fresh apply:\n%s", st.name, firstDiff(got, want))
		}
		t.Logf("%s: %v, %d new chains, %d new sets, %d old chains, %d old sets, listed %v; %d bytes of table", st.name,
			took.Round(time.Millisecond), stats.NewChains, stats.NewSets, stats.OldChains, stats.OldSets, stats.Listed, len(got))
		if strings.HasSuffix(st.name, "same again") && (stats.NewChains != 0 || stats.NewSets != 0 || stats.OldChains != 0 || stats.BaseChains != 0) {
			t.Errorf("same again: sent %+v, want nothing", stats)
		}
		cur = rs
	}
	_ = cur
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\nincremental: %s\nfresh:       %s", i+1, x, y)
		}
	}
	return ""
}

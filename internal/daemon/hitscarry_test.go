package daemon

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// counterRunner is nft.Recorder with named counters as the kernel keeps
// them: an apply keeps the counters of the names the table has, creates
// the others at zero and deletes those the new ruleset does not name.
type counterRunner struct {
	nft.Recorder
	mu               sync.Mutex
	counts           map[string]uint64 // counter name (tag with generation) -> packets
	kept             []string
	dumps, readNamed int
}

func (r *counterRunner) Apply(rs *nft.Ruleset) error {
	if err := r.Recorder.Apply(rs); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	next := map[string]uint64{}
	r.kept = nil
	for _, n := range rs.Counters() {
		if v, ok := r.counts[n]; ok {
			r.kept = append(r.kept, n)
			next[n] = v
		} else {
			next[n] = 0
		}
	}
	r.counts = next
	return nil
}

func (r *counterRunner) Flush() error {
	r.mu.Lock()
	r.counts = nil
	r.mu.Unlock()
	return r.Recorder.Flush()
}

// hit counts n flows on the counter of tag (without generation).
func (r *counterRunner) hit(t *testing.T, tag string, n uint64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range r.counts {
		if x, err := nft.ParseLogTag(name); err == nil {
			x.Gen = 0
			if x.String() == tag {
				r.counts[name] += n
				return
			}
		}
	}
	t.Fatalf("no counter %s in %v", tag, r.counts)
}

func (r *counterRunner) counter(name string) nft.RuleCounter {
	t, _ := nft.ParseLogTag(name)
	t.Gen = 0
	return nft.RuleCounter{Tag: t.String(), Packets: r.counts[name]}
}

func (r *counterRunner) Counters() ([]nft.RuleCounter, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dumps++
	var out []nft.RuleCounter
	for n := range r.counts {
		out = append(out, r.counter(n))
	}
	return out, nil
}

func (r *counterRunner) CountersOf(tags []nft.LogTag) ([]nft.RuleCounter, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []nft.RuleCounter
	for _, t := range tags {
		r.readNamed++
		if _, ok := r.counts[t.String()]; ok {
			out = append(out, r.counter(t.String()))
		}
	}
	return out, nil
}

func (r *counterRunner) KeptCounters() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.kept...)
}

// readingDataplane is NFTDataplane without ApplyFolding: the daemon reads
// the counters before the apply as it does for other data planes.
type readingDataplane struct{ dp *NFTDataplane }

func (r readingDataplane) Apply(p *policy.Policy, m *match.Matcher) (LogIndex, error) {
	return r.dp.Apply(p, m)
}
func (r readingDataplane) AddFQDNAddrs(string, []netip.Addr, time.Duration) error { return nil }
func (r readingDataplane) Counters() ([]nft.RuleCounter, error)                   { return r.dp.Counters() }
func (r readingDataplane) CountersOf(tags []nft.LogTag) ([]nft.RuleCounter, error) {
	return r.dp.CountersOf(tags)
}
func (r readingDataplane) CountersAfterApply() ([]nft.RuleCounter, error) {
	return r.dp.CountersAfterApply()
}
func (r readingDataplane) KeptCounter(t nft.LogTag) bool { return r.dp.KeptCounter(t) }
func (r readingDataplane) Gateway() *match.Gateway       { return r.dp.Gateway() }

// TestRuleHitsCarryEqualsRead: an apply through NFTDataplane.ApplyFolding
// reads only the counters it deletes (none when one rule's ports change),
// carries the others' base over, and the hits after each step of a
// sequence of applies (ports changed, an action changed — a new counter —,
// a rule renamed, the table flushed under the daemon, a rule added before
// the others so that every index moves) are those of a daemon that reads
// every counter before each apply. It runs twice: with the few gone
// counters read as they are, and with those of rules the next policy does
// not have left out (stillRuled, as for many gone counters).
func TestRuleHitsCarryEqualsRead(t *testing.T) {
	t.Run("gone read", testRuleHitsCarryEqualsRead)
	t.Run("gone of next's rules read", func(t *testing.T) {
		defer func(n int) { stillRuledMin = n }(stillRuledMin)
		stillRuledMin = 0
		testRuleHitsCarryEqualsRead(t)
	})
}

func testRuleHitsCarryEqualsRead(t *testing.T) {
	two := testPolicy + `          - name: db
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.11]
            destinationPorts: ['5432']
`
	type side struct {
		d  *Daemon
		cr *counterRunner
	}
	var sides [2]side
	for i := range sides {
		d, _, _ := newTestDaemon(t)
		cr := &counterRunner{}
		dp := &NFTDataplane{Runner: cr, Config: nft.Config{Inside: "in0", Outside: "out0"}}
		d.dp = dp
		if i == 1 {
			d.dp = readingDataplane{dp}
		}
		sides[i] = side{d, cr}
	}
	apply := func(text string) {
		t.Helper()
		for _, s := range sides {
			if err := s.d.ApplyBytes("test", []byte(text)); err != nil {
				t.Fatal(err)
			}
		}
	}
	hit := func(tag string, n uint64) {
		t.Helper()
		for _, s := range sides {
			s.cr.hit(t, tag, n)
		}
	}
	// want: the flows counted (what a daemon that read the counters just
	// before each apply has, but after a flush: wantRead).
	check := func(step string, want, wantRead map[string]uint64) {
		t.Helper()
		var got [2]map[string]uint64
		for i, s := range sides {
			h := s.d.RuleHits()
			got[i] = map[string]uint64{"default": h.DefaultDenyHits}
			for _, r := range h.Rules {
				got[i][r.Rule] = r.Hits
			}
		}
		if wantRead == nil {
			wantRead = want
		}
		for k, v := range want {
			if got[0][k] != v || got[1][k] != wantRead[k] {
				t.Errorf("%s: %s hits %d (carried) and %d (read), want %d and %d", step, k, got[0][k], got[1][k], v, wantRead[k])
			}
		}
	}
	apply(two)
	hit("cw:A:0", 5)
	hit("cw:A:1", 3)
	hit("cw:D:default", 2)
	check("start", map[string]uint64{"web": 5, "db": 3, "default": 2}, nil)

	// One rule's ports: the apply keeps every counter and reads none.
	c := sides[0].cr
	dumps, named := c.dumps, c.readNamed
	ports := strings.Replace(two, "'5432'", "'5433'", 1)
	apply(ports)
	if c.dumps != dumps || c.readNamed != named {
		t.Errorf("ports changed: the apply read %d dumps and %d counters by name, want none", c.dumps-dumps, c.readNamed-named)
	}
	hit("cw:A:0", 1)
	hit("cw:A:1", 1)
	check("ports changed", map[string]uint64{"web": 6, "db": 4, "default": 2}, nil)

	// db's action: its decision line changes, so does its counter; the old
	// one's hits since the last read are read before the apply.
	hit("cw:A:1", 2)
	deny := strings.Replace(ports, "'5433']\n", "'5433']\n      - name: c2\n        kind: Network\n        priority: 300\n        action: Deny\n        rules:\n          - name: db2\n            protocols: [TCP]\n            sourceAddresses: ['*']\n            destinationAddresses: [192.0.2.12]\n            destinationPorts: ['22']\n", 1)
	apply(deny)
	hit("cw:D:2", 4)
	hit("cw:A:1", 1)
	check("rule added", map[string]uint64{"web": 6, "db": 7, "db2": 4}, nil)
	renamed := strings.Replace(deny, "name: db2", "name: ssh", 1)
	hit("cw:D:2", 1)
	apply(renamed)
	hit("cw:D:2", 2)
	check("renamed", map[string]uint64{"web": 6, "db": 7, "ssh": 2, "db2": 0}, nil)

	// The table flushed under the daemon: the apply creates every counter
	// again, at zero.
	hit("cw:A:0", 3)
	check("before flush", map[string]uint64{"web": 9}, nil)
	for _, s := range sides {
		s.cr.Flush()
	}
	apply(renamed)
	hit("cw:A:0", 1)
	// The read just before the flush (RuleHits) saw web 9, db 7, ssh 2: what
	// they count from now on adds to that. A daemon that read the counters
	// only before each apply lost what they counted since the last apply.
	check("after flush", map[string]uint64{"web": 10, "db": 7, "ssh": 2}, map[string]uint64{"web": 7, "db": 7, "ssh": 0})

	// A rule inserted first: every index (and counter) moves.
	first := strings.Replace(renamed, "        rules:\n          - name: web", "        rules:\n          - name: dns\n            protocols: [UDP]\n            sourceAddresses: ['*']\n            destinationAddresses: [192.0.2.53]\n            destinationPorts: ['53']\n          - name: web", 1)
	hit("cw:A:1", 2)
	apply(first)
	hit("cw:A:1", 1) // web, now rule 1
	hit("cw:A:0", 1) // dns
	check("inserted first", map[string]uint64{"dns": 1, "web": 11, "db": 9, "ssh": 2}, map[string]uint64{"dns": 1, "web": 8, "db": 9, "ssh": 0})
}

// TestRulesGone: prune runs when the new policy lacks a rule of the
// running one (renamed, moved to another collection, its group renamed or
// removed), not when rules only changed what they match.
func TestRulesGone(t *testing.T) {
	load := func(text string) *policy.Policy {
		t.Helper()
		p, err := policy.Load("p.yaml", []byte(text), policy.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	cur := load(testPolicy)
	for _, tc := range []struct {
		name, text string
		gone       bool
	}{
		{"same", testPolicy, false},
		{"ports", strings.Replace(testPolicy, "'443'", "'8443'", 1), false},
		{"rule renamed", strings.Replace(testPolicy, "name: web", "name: www", 1), true},
		{"collection renamed", strings.Replace(testPolicy, "name: c\n", "name: c2\n", 1), true},
		{"group renamed", strings.Replace(testPolicy, "name: g\n", "name: g2\n", 1), true},
	} {
		if got := rulesGone(cur, load(tc.text)); got != tc.gone {
			t.Errorf("%s: rulesGone %v, want %v", tc.name, got, tc.gone)
		}
	}
	if rulesGone(cur, cur) {
		t.Errorf("the same policy: a rule gone")
	}
}

// TestRuleHitsSettleAfterApply: the hit totals move to the new
// generation after ApplyBytes returns (settleRuleHits), and a reader of
// the hits — GET /v1/rules and /metrics read them through ruleHits — never
// sees the new generation's counters against the old generation's base:
// readers running in a loop throughout an apply, and one started after it
// returned while the bookkeeping is held back (settleHook), all see each
// generation's true count, and no count is lost or counted twice across
// the apply. Cases: one rule's ports changed on a data plane that reads
// every counter before an apply (the kept counter's hits would count
// twice), and the table flushed under a data plane that carries the base
// over (the hits read before the flush would be lost; until the apply
// the flushed table's counters count from zero, as before this change).
func TestRuleHitsSettleAfterApply(t *testing.T) {
	two := testPolicy + `          - name: db
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.11]
            destinationPorts: ['5432']
`
	ports := strings.Replace(two, "'5432'", "'5433'", 1)
	for _, tc := range []struct {
		name   string
		read   bool // the data plane reads every counter before an apply
		before func(cr *counterRunner)
		next   string
		old    uint64 // web's hits in generation 1 after before
	}{
		{"ports changed, counters read", true, nil, ports, 5},
		{"ports changed, base carried", false, nil, ports, 5},
		{"table flushed, base carried", false, func(cr *counterRunner) { cr.Flush() }, two, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _, _ := newTestDaemon(t)
			cr := &counterRunner{}
			dp := &NFTDataplane{Runner: cr, Config: nft.Config{Inside: "in0", Outside: "out0"}}
			d.dp = dp
			if tc.read {
				d.dp = readingDataplane{dp}
			}
			if err := d.ApplyBytes("test", []byte(two)); err != nil {
				t.Fatal(err)
			}
			web := func(h RuleHits) uint64 {
				for _, r := range h.Rules {
					if r.Rule == "web" {
						return r.Hits
					}
				}
				t.Errorf("generation %d has no rule web", h.Generation)
				return 0
			}
			cr.hit(t, "cw:A:0", 5)
			h := d.RuleHits()
			if web(h) != 5 || h.Generation != 1 {
				t.Fatalf("before the apply: generation %d, web %d hits, want 1 and 5", h.Generation, web(h))
			}
			if tc.before != nil {
				tc.before(cr)
			}

			entered, release := make(chan struct{}), make(chan struct{})
			enter := sync.OnceFunc(func() { close(entered) })
			settleHook = func() { enter(); <-release }
			defer func() { settleHook = nil }()
			var (
				mu    sync.Mutex
				snaps []RuleHits
				stop  = make(chan struct{})
				wg    sync.WaitGroup
			)
			wg.Add(1)
			go func() { // a reader throughout the apply
				defer wg.Done()
				for {
					h := d.RuleHits()
					mu.Lock()
					snaps = append(snaps, h)
					mu.Unlock()
					select {
					case <-stop:
						return
					default:
					}
				}
			}()
			if err := d.ApplyBytes("test", []byte(tc.next)); err != nil {
				t.Fatal(err)
			}
			<-entered // the apply returned, its bookkeeping held back
			after := make(chan RuleHits, 1)
			go func() { after <- d.RuleHits() }()
			select {
			case h := <-after: // (it should wait: checked below either way)
				after <- h
			case <-time.After(50 * time.Millisecond):
			}
			close(release)
			h = <-after
			close(stop)
			wg.Wait()
			if h.Generation != 2 || web(h) != 5 {
				t.Errorf("read after the apply returned: generation %d, web %d hits, want 2 and 5", h.Generation, web(h))
			}
			var gens [3]int
			for _, s := range snaps {
				if s.Generation < 1 || s.Generation > 2 {
					t.Fatalf("a reader saw generation %d", s.Generation)
				}
				gens[s.Generation]++
				if want := []uint64{0, tc.old, 5}[s.Generation]; web(s) != want {
					t.Errorf("a reader during the apply saw generation %d with web %d hits, want %d", s.Generation, web(s), want)
				}
			}
			if gens[2] == 0 {
				t.Errorf("no reader ran after the apply (%d reads of generation 1)", gens[1])
			}
			cr.hit(t, "cw:A:0", 2)
			if h := d.RuleHits(); web(h) != 7 {
				t.Errorf("after 2 more flows: web %d hits, want 7", web(h))
			}
		})
	}
}

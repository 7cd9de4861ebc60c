package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nflog"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// referenceLine is the decision line of a logged packet as the daemon
// wrote it before the flow log was made fast (logPacket up to commit
// cc9d190): the schema the new code must keep, field for field.
func referenceLine(st *state, p *nflog.Packet) (telemetry.Record, bool) {
	ld, ok := st.index.Lookup(p.Prefix)
	if !ok {
		return telemetry.Record{}, false
	}
	pol := st.policy
	if ld.Policy != nil {
		pol = ld.Policy
	}
	rec := telemetry.Record{
		Time:          p.Time.UTC(),
		Category:      telemetry.CategoryNetworkRule,
		SourceIp:      p.Src.String(),
		SourcePort:    int(p.SrcPort),
		DestinationIp: p.Dst.String(),
		Protocol:      protoName(p.Proto),
		Action:        ld.Action.String(),
		Policy:        pol.Name,
		Source:        "kernel",
	}
	if p.Proto == 6 || p.Proto == 17 {
		rec.DestinationPort = int(p.DstPort)
	}
	switch {
	case ld.UnknownRuleset:
		rec.Policy = ""
		rec.ActionReason = ReasonUnknownRuleset
	case ld.Input:
		rec.ActionReason = ReasonInputDrop
	case ld.Rule == nil:
		rec.ActionReason = "Default Action: " + match.ReasonNoRuleMatched
	default:
		rec.RuleCollectionGroup = ld.Rule.Collection.Group.Name
		rec.RuleCollection = ld.Rule.Collection.Name
		rec.Rule = ld.Rule.Name
	}
	if ld.Kind == policy.KindDNAT && (ld.Rule != nil || ld.UnknownRuleset) {
		rec.Category = telemetry.CategoryNatRule
		rec.Action = "DNAT"
		if r := ld.Rule; r != nil {
			if r.TranslatedAddress.IsValid() {
				rec.TranslatedIp = r.TranslatedAddress.String()
			} else {
				rec.TranslatedIp = r.TranslatedFQDN
			}
			rec.TranslatedPort = int(r.TranslatedPort)
		}
	}
	return rec, true
}

// TestFlowLogLinesUnchanged: for every log prefix of a policy with DNAT,
// network allow and deny rules, default deny and input drops — and of
// rulesets the daemon did not apply — and packets of every protocol and
// both families, the flow logger writes byte for byte the line the
// daemon wrote before (docs/logs.md's schema), through its caches, also
// after a reload (the caches follow the ruleset).
func TestFlowLogLinesUnchanged(t *testing.T) {
	dir := t.TempDir()
	abs, _ := filepath.Abs("../../examples/aks-egress.yaml")
	tags, _ := filepath.Abs("../../examples/service-tags.json")
	data, err := os.ReadFile(abs)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(conf, []byte("policy: policy.yaml\nserviceTags: "+tags+"\ninterfaces: {inside: in0, outside: out0}\npublicIPs: [203.0.113.32]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []telemetry.Record
	var written syncBuffer
	dlog := telemetry.NewDecisionLog(&written, telemetry.Options{})
	dlog.Observe(func(r *telemetry.Record) { got = append(got, *r) })
	var wantWritten []byte // every line the reference writes, in order
	rec := &nft.Recorder{}
	d := loadTestDaemon(t, conf, &NFTDataplane{Runner: rec, Config: nft.Config{Inside: "in0", Outside: "out0", PublicIPs: []netip.Addr{netip.MustParseAddr("203.0.113.32")}}}, nil, dlog)
	fl := newFlowLogger(d)

	packets := func(prefix string) []nflog.Packet {
		at := time.Date(2026, 12, 6, 5, 0, 0, 123456789, time.FixedZone("x", 3600))
		return []nflog.Packet{
			{Prefix: prefix, Family: 2, Src: netip.MustParseAddr("10.42.1.10"), Dst: netip.MustParseAddr("192.0.2.10"), Proto: 6, SrcPort: 40000, DstPort: 443, Time: at},
			{Prefix: prefix, Family: 2, Src: netip.MustParseAddr("10.42.1.11"), Dst: netip.MustParseAddr("192.0.2.13"), Proto: 17, SrcPort: 5353, DstPort: 123, Time: at},
			{Prefix: prefix, Family: 2, Src: netip.MustParseAddr("10.42.1.10"), Dst: netip.MustParseAddr("192.0.2.10"), Proto: 1, DstPort: 8 << 8, Time: at},
			{Prefix: prefix, Family: 10, Src: netip.MustParseAddr("2001:db8:42:1::10"), Dst: netip.MustParseAddr("2001:db8:192::10"), Proto: 6, SrcPort: 1, DstPort: 80, Time: at},
			{Prefix: prefix, Family: 10, Src: netip.MustParseAddr("2001:db8:42:1::10"), Dst: netip.MustParseAddr("2001:db8:192::10"), Proto: 58, DstPort: 128 << 8, Time: at},
			{Prefix: prefix, Family: 2, Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr("203.0.113.32"), Proto: 132, SrcPort: 9, DstPort: 9, Time: at},
		}
	}
	kinds := map[string]bool{}
	unwritable := 0
	var next string // a prefix of the generation the reload will make
	check := func(round string) {
		t.Helper()
		st := d.cur.Load()
		gen := logGeneration(t, rec.Current)
		if next == "" {
			next = "cw:A:0:g" + strconv.FormatUint(uint64(gen)+1, 10)
		}
		prefixes := []string{"cw:A:0:g999", "cw:D:0:g999", "cw:N:0:g999", "cw:D:default:g999", "cw:D:input:g999", "not-ours",
			"cw:A:99999:g" + strconv.FormatUint(uint64(gen), 10), next}
		for p := range logPrefixes(rec.Current) {
			if !strings.Contains(p, ":threat") { // logThreatPacket's, unchanged (threatintel_test.go)
				prefixes = append(prefixes, p)
			}
		}
		for _, prefix := range prefixes {
			for i, p := range packets(prefix) {
				// Times the line writes otherwise: a whole second, a
				// fraction with trailing zeros, the second after (each
				// through the time cache of the second before), and a
				// year RFC 3339 cannot write (no line written: AppendJSON
				// fails).
				switch i % 4 {
				case 1:
					p.Time = p.Time.Truncate(time.Second)
				case 2:
					p.Time = p.Time.Truncate(10 * time.Millisecond).Add(time.Second)
				case 3:
					p.Time = p.Time.Add(time.Duration(i) * time.Second)
				}
				if i == 5 && prefix == next {
					p.Time = time.Date(10000, 1, 1, 0, 0, 0, 5, time.UTC)
				}
				got = got[:0]
				for range 2 { // the second through the caches
					fl.log(st, &p)
				}
				fl.flush()
				want, ok := referenceLine(st, &p)
				if !ok {
					if len(got) != 0 {
						t.Errorf("%s %s: a line for a prefix that is not the ruleset's: %+v", round, prefix, got[0])
					}
					continue
				}
				wj, err := telemetry.AppendJSON(nil, &want)
				if err == nil {
					wantWritten = append(append(wantWritten, wj...), wj...)
				} else {
					unwritable++
				}
				if len(got) != 2 {
					t.Fatalf("%s %s: %d lines, want 2", round, prefix, len(got))
				}
				for _, g := range got {
					gj, _ := telemetry.AppendJSON(nil, &g)
					if string(gj) != string(wj) {
						t.Errorf("%s %s:\n got %s\nwant %s", round, prefix, gj, wj)
					}
				}
				kinds[want.Category+"/"+want.Action+"/"+strings.SplitN(want.ActionReason, ":", 2)[0]] = true
			}
		}
	}
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	check("first apply")
	// A reload that changes the first network rule (its name, so its
	// decision line): it gets the reload's generation (next), the other
	// rules keep theirs, and the old prefix resolves through the previous
	// generation.
	p, _ := policy.Load("policy.yaml", data, policy.Options{ServiceTagsFile: tags})
	reordered := strings.Replace(string(data), "name: apiudp", "name: apiudp-renamed", 1)
	if p == nil || reordered == string(data) {
		t.Fatal("cannot build the reordered policy")
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(reordered), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload("test"); err != nil {
		t.Fatal(err)
	}
	// The reordered rules get the reload's generation (the others keep
	// theirs): the first network rule is one of them.
	if _, ok := logPrefixes(rec.Current)[next]; !ok {
		t.Fatalf("the reload's ruleset does not log %s: %v", next, logPrefixes(rec.Current))
	}
	check("after a reload") // next now names a rule: no line from a stale cache
	// What the writer wrote: byte for byte the reference's lines, in order
	// (every field of docs/logs.md's schema, with FlowLine's encoding and
	// the time cache), and the lines that cannot be written counted as
	// dropped.
	dlog.Close()
	if w := written.String(); w != string(wantWritten) {
		gl, wl := strings.Split(w, "\n"), strings.Split(string(wantWritten), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("written line %d of %d (want %d):\n got %s\nwant %s", i+1, len(gl), len(wl), gl[i], wl[i])
			}
		}
		t.Fatalf("written %d lines, want %d", len(gl), len(wl))
	}
	if written, dropped, _ := dlog.Stats(); dropped != uint64(2*unwritable) || unwritable == 0 || written != uint64(strings.Count(string(wantWritten), "\n")) {
		t.Errorf("written %d, dropped %d; want %d written, %d dropped (the year 10000)", written, dropped, strings.Count(string(wantWritten), "\n"), 2*unwritable)
	}
	for _, k := range []string{"AZFWNatRule/DNAT/", "AZFWNetworkRule/Allow/", "AZFWNetworkRule/Deny/Default Action",
		"AZFWNetworkRule/Deny/" + ReasonInputDrop[:strings.Index(ReasonInputDrop, ":")], "AZFWNetworkRule/Allow/logged by a ruleset this daemon did not apply (before its first apply); rule unknown"} {
		if !kinds[k] {
			t.Errorf("no line of kind %q was compared (have %v)", k, kinds)
		}
	}
}

// logGeneration is the generation the ruleset's log prefixes carry.
func logGeneration(t *testing.T, rs *nft.Ruleset) uint32 {
	t.Helper()
	for p := range logPrefixes(rs) {
		if tag, err := nft.ParseLogTag(p); err == nil && tag.Gen != 0 {
			return tag.Gen
		}
	}
	t.Fatal("no log prefix with a generation")
	return 0
}

// TestLogRateConfig: log.ratePerSecond defaults to 1,000, and the kernel
// limits all its log messages to it (the rules' too); 0 means no limit on
// lines while the kernel keeps its flood guard on default-deny and
// input-drop messages (the rules' are not limited); a negative rate is an
// error naming the field.
func TestLogRateConfig(t *testing.T) {
	for _, tt := range []struct {
		extra      string
		rate       int
		kernelRate uint64
		err        string
	}{
		{"", 1000, 1000, ""},
		{"log:\n  ratePerSecond: 0\n", 0, DefaultLogRate, ""},
		{"log:\n  ratePerSecond: 50\n", 50, 50, ""},
		{"log:\n  ratePerSecond: -1\n", 0, 0, "log.ratePerSecond"},
	} {
		dir := t.TempDir()
		cfg, err := LoadConfig(writeDaemonConfig(t, dir, tt.extra))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err = %v, want one naming %s", tt.extra, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if cfg.LogRate() != tt.rate || cfg.DataplaneConfig().LogRate != tt.kernelRate {
			t.Errorf("%q: rate %d, kernel %d; want %d, %d", tt.extra, cfg.LogRate(), cfg.DataplaneConfig().LogRate, tt.rate, tt.kernelRate)
		}
		if got := cfg.DataplaneConfig().LimitRuleLogs; got != (tt.rate > 0) {
			t.Errorf("%q: the kernel limits the rules' log messages: %v", tt.extra, got)
		}
	}
}

// TestFlowLogAllocs: a logged flow over the rate limit allocates nothing
// once its prefix and addresses are known.
func TestFlowLogAllocs(t *testing.T) {
	d, dlog, prefix := flowLogDaemon(t, 1)
	defer dlog.Close()
	st := d.cur.Load()
	fl := newFlowLogger(d)
	p := nflog.Packet{Prefix: prefix, Family: 2, Src: netip.MustParseAddr("10.42.1.10"), Dst: netip.MustParseAddr("192.0.2.10"), Proto: 6, SrcPort: 1, DstPort: 443, Time: time.Now()}
	var n atomic.Int64
	dlog.Observe(func(*telemetry.Record) { n.Add(1) })
	fl.log(st, &p)
	if a := testing.AllocsPerRun(1000, func() { p.SrcPort++; fl.log(st, &p) }); a != 0 {
		t.Errorf("%.1f allocations per logged flow", a)
	}
	if n.Load() < 1000 {
		t.Errorf("observers saw %d flows", n.Load())
	}
}

// TestFlowLogLastHit: a rule's lastHit is the second of its newest flow
// line, though the flow log notes a hit once a second per rule; a flow
// logged with an older time does not move it back.
func TestFlowLogLastHit(t *testing.T) {
	d, dlog, prefix := flowLogDaemon(t, 0)
	defer dlog.Close()
	st := d.cur.Load()
	fl := newFlowLogger(d)
	lastHit := func() string {
		t.Helper()
		for _, r := range d.RuleHits().Rules {
			if r.Rule == "web" {
				return r.LastHit
			}
		}
		t.Fatal("no rule web in the rule hits")
		return ""
	}
	if got := lastHit(); got != "" {
		t.Fatalf("lastHit %q before any flow", got)
	}
	s := time.Date(2026, 12, 6, 16, 0, 0, 0, time.UTC)
	p := nflog.Packet{Prefix: prefix, Family: 2, Src: netip.MustParseAddr("10.42.1.10"), Dst: netip.MustParseAddr("192.0.2.10"), Proto: 6, SrcPort: 1, DstPort: 443}
	for _, tc := range []struct {
		at   []time.Duration
		want time.Time
	}{
		{[]time.Duration{200 * time.Millisecond, 900 * time.Millisecond}, s},
		{[]time.Duration{5*time.Second + 100*time.Millisecond, 5*time.Second + 999*time.Millisecond}, s.Add(5 * time.Second)},
		{[]time.Duration{2 * time.Second}, s.Add(5 * time.Second)}, // older: kept
		{[]time.Duration{5*time.Second + 500*time.Millisecond, 7 * time.Second}, s.Add(7 * time.Second)},
	} {
		for _, at := range tc.at {
			p.Time = s.Add(at)
			fl.log(st, &p)
		}
		fl.flush()
		if got, want := lastHit(), tc.want.Format(time.RFC3339); got != want {
			t.Errorf("after flows at %v: lastHit %q, want %q", tc.at, got, want)
		}
	}
}

package nft

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func loadPolicy(t testing.TB, path string) *policy.Policy {
	t.Helper()
	p, err := policy.LoadFile(path, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// describe renders a ruleset for a golden file: the nft text, then the
// warnings, FQDN sets and statistics.
func describe(rs *Ruleset) string {
	var b strings.Builder
	b.WriteString(rs.String())
	for _, w := range rs.Warnings {
		fmt.Fprintf(&b, "# warning: %s\n", w)
	}
	for _, n := range rs.FQDNs() {
		fmt.Fprintf(&b, "# fqdn %s -> %s\n", n, strings.Join(rs.FQDNSets(n), ", "))
	}
	fmt.Fprintf(&b, "# stats: %+v\n", rs.Stats)
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s differs at line %d:\ngot:  %s\nwant: %s\n(run go test -update to accept)", path, i+1, g, w)
			}
		}
	}
}

// seedConfig is the seed lab's firewall: private IP 10.42.2.4, public IP
// 203.0.113.32.
func seedConfig() Config {
	return Config{
		Inside: "inside", Outside: "outside",
		PublicIPs:  []netip.Addr{netip.MustParseAddr("203.0.113.32")},
		PrivateIPs: []netip.Addr{netip.MustParseAddr("10.42.2.4")},
	}
}

func TestCompileGolden(t *testing.T) {
	fixed := labConfig()
	fixed.SNAT = SNATFixed
	fixed.InsideTCPPorts = []uint16{3128, 22, 23}
	for _, tc := range []struct {
		name, policy, golden string
		cfg                  Config
	}{
		{"seed policy", "../../examples/aks-egress.yaml", "aks-egress.nft", seedConfig()},
		{"every kind, fixed SNAT", "testdata/kinds.yaml", "kinds.nft", fixed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := compilePolicy(loadPolicy(t, tc.policy), tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, describe(rs))
			// The recording runner accepts it: it lowers and encodes
			// every statement as the netlink runner would.
			var rec Recorder
			if err := rec.Apply(rs); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCompileDeterministic: the same input gives the same ruleset, so a
// re-apply of an unchanged policy programs identical names.
func TestCompileDeterministic(t *testing.T) {
	p := bigPolicy(2000, 7)
	a, err := compilePolicy(p, labConfig())
	if err != nil {
		t.Fatal(err)
	}
	b, err := compilePolicy(p, labConfig())
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Fatal("two compilations of one policy differ")
	}
}

func TestCompileErrors(t *testing.T) {
	p := loadPolicy(t, "../../examples/aks-egress.yaml")
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
		want string
	}{
		{"no inside", func(c *Config) { c.Inside = "" }, "inside interface name is empty"},
		{"no outside", func(c *Config) { c.Outside = "" }, "outside interface name is empty"},
		{"same interface", func(c *Config) { c.Outside = c.Inside }, "the same interface"},
		{"long name", func(c *Config) { c.Inside = "averyveryverylongname" }, "longer than 15"},
		{"bad snat mode", func(c *Config) { c.SNAT = 9 }, "unknown SNAT mode"},
		{"bad address", func(c *Config) { c.PublicIPs = []netip.Addr{{}} }, "bad address"},
		{"port 0", func(c *Config) { c.InsideTCPPorts = []uint16{0} }, "inside TCP port 0"},
		{"DNAT to an address that is not ours", func(c *Config) { c.PublicIPs = []netip.Addr{netip.MustParseAddr("192.0.2.1")} },
			`aks-egress\.yaml:\d+:\d+: DNAT rule DefaultDnatRuleCollectionGroup/exampleset/inboundrule: destination 203\.0\.113\.32 is not a public IP of the firewall \(192\.0\.2\.1\)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := seedConfig()
			tc.cfg(&cfg)
			_, err := compilePolicy(p, cfg)
			if err == nil || !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Fatalf("got error %v, want one matching %q", err, tc.want)
			}
		})
	}
	if _, err := compilePolicy(nil, seedConfig()); err == nil {
		t.Fatal("nil policy compiled")
	}
}

// TestCompileTranslatedFQDN: a DNAT rule with translatedFqdn is installed
// with a map from its public IP to the name's address (filled at run time)
// and matches only while the map has the key.
func TestCompileTranslatedFQDN(t *testing.T) {
	p, err := policy.Load("fqdn.yaml", []byte(`
name: t
ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - name: c
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - name: byname
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [203.0.113.32]
            destinationPorts: ['80']
            translatedFqdn: Web.Internal.Example
            translatedPort: '8080'
`), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := compilePolicy(p, seedConfig())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Warnings) != 0 {
		t.Fatalf("warnings = %q", rs.Warnings)
	}
	if got := rs.DNATMaps("web.internal.example."); len(got) != 1 || stripHash(got[0]) != "dnat_fqdn_0_v4" {
		t.Fatalf("DNATMaps = %q", got)
	}
	m := setNamed(rs, "dnat_fqdn_0_v4")
	if m == nil || m.Kind != SetDNATFQDN || len(m.Elems) != 1 || m.FQDN != "web.internal.example" {
		t.Fatalf("map: %+v", m)
	}
	pre := rs.Chain("prerouting").Rules
	if len(pre) != 1 || !strings.HasSuffix(pre[0].Stmts[len(pre[0].Stmts)-2].String(), "@"+m.Name) {
		t.Fatalf("prerouting: %v", pre)
	}
	if got := chainNamed(rs, "dnat_0").Rules[1].String(); !strings.Contains(got, "dnat ip to ip daddr map @"+m.Name+" port 8080") {
		t.Fatalf("dnat_0: %s", got)
	}
	// The elements: the lowest unexpired IPv4 address of the name.
	now := time.Now()
	el := dnatMapElems(m, []FQDNAddr{
		{netip.MustParseAddr("10.42.1.9"), now.Add(time.Minute)},
		{netip.MustParseAddr("10.42.1.7"), now.Add(time.Millisecond)}, // about to expire
		{netip.MustParseAddr("2001:db8::1"), now.Add(time.Minute)},
		{netip.MustParseAddr("10.42.1.8"), now.Add(2 * time.Minute)},
	}, now)
	if len(el) != 1 || netip.AddrFrom4([4]byte(el[0].Val)) != netip.MustParseAddr("10.42.1.8") || el[0].Timeout != 2*time.Minute {
		t.Fatalf("elements: %+v", el)
	}
	if el := dnatMapElems(m, nil, now); el != nil {
		t.Fatalf("no address: %+v", el)
	}
}

func TestSNATModes(t *testing.T) {
	p := loadPolicy(t, "testdata/kinds.yaml")
	for _, tc := range []struct {
		mode SNATMode
		pub  []string
		want []string // postrouting rules
	}{
		{SNATMasquerade, nil, []string{
			`oifname "outside" ct status dnat accept`,
			`oifname "outside" meta nfproto ipv4 masquerade`,
			`oifname "outside" meta nfproto ipv6 masquerade`}},
		{SNATFixed, []string{"203.0.113.32"}, []string{
			`oifname "outside" ct status dnat accept`,
			`oifname "outside" meta nfproto ipv4 snat ip to 203.0.113.32`,
			`oifname "outside" meta nfproto ipv6 masquerade`}},
		{SNATOff, nil, nil},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			cfg := labConfig()
			cfg.SNAT = tc.mode
			if tc.pub != nil {
				// Only an IPv4 public IP: IPv6 falls back to masquerade.
				cfg.PublicIPs = []netip.Addr{netip.MustParseAddr(tc.pub[0])}
				p := loadPolicy(t, "../../examples/aks-egress.yaml")
				rs, err := compilePolicy(p, cfg)
				if err != nil {
					t.Fatal(err)
				}
				checkPost(t, rs, tc.want)
				return
			}
			rs, err := compilePolicy(p, cfg)
			if err != nil {
				t.Fatal(err)
			}
			checkPost(t, rs, tc.want)
		})
	}
	if m, err := ParseSNATMode("fixed"); err != nil || m != SNATFixed {
		t.Fatal(m, err)
	}
	if _, err := ParseSNATMode("nat"); err == nil {
		t.Fatal("ParseSNATMode accepted nat")
	}
}

func checkPost(t *testing.T, rs *Ruleset, want []string) {
	t.Helper()
	post := rs.Chain("postrouting")
	if want == nil {
		if post != nil {
			t.Fatal("postrouting chain with SNAT off")
		}
		return
	}
	var got []string
	for _, r := range post.Rules {
		got = append(got, strings.SplitN(r.String(), " comment ", 2)[0])
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("postrouting:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLogTags(t *testing.T) {
	p := loadPolicy(t, "testdata/kinds.yaml")
	for _, tc := range []struct {
		prefix string
		tag    LogTag
		rule   string
	}{
		{"cw:A:3", LogTag{Kind: LogAllow, Index: 3}, "net/allow/ping"},
		{"cw:D:0", LogTag{Kind: LogDeny, Index: 0}, "net/block/no-telnet"},
		{"cw:N:2", LogTag{Kind: LogDNAT, Index: 2}, "dnat/web/api"},
		{"cw:D:default", LogTag{Kind: LogDefaultDeny}, ""},
		{"cw:D:input", LogTag{Kind: LogInputDrop}, ""},
		{"cw:A:99", LogTag{Kind: LogAllow, Index: 99}, ""},
		{"cw:A:3:g7", LogTag{Kind: LogAllow, Index: 3, Gen: 7}, "net/allow/ping"},
		{"cw:N:2:g4294967295", LogTag{Kind: LogDNAT, Index: 2, Gen: 1<<32 - 1}, "dnat/web/api"},
		{"cw:D:123456789:g1", LogTag{Kind: LogDeny, Index: 123456789, Gen: 1}, ""},
		{"cw:D:default:g12", LogTag{Kind: LogDefaultDeny, Gen: 12}, ""},
	} {
		got, err := ParseLogTag(tc.prefix)
		if err != nil || got != tc.tag {
			t.Errorf("ParseLogTag(%q) = %+v, %v; want %+v", tc.prefix, got, err, tc.tag)
		}
		if s := tc.tag.String(); s != tc.prefix {
			t.Errorf("%+v.String() = %q, want %q", tc.tag, s, tc.prefix)
		}
		path := ""
		if r := tc.tag.Rule(p); r != nil {
			path = r.Path()
		}
		if path != tc.rule {
			t.Errorf("%s names rule %q, want %q", tc.prefix, path, tc.rule)
		}
	}
	for _, bad := range []string{"", "cw:", "cw:A", "cw:A:", "cw:A:-1", "cw:A:01", "cw:X:1", "xx:A:1", "cw:A:1x", "cw:D:other"} {
		if _, err := ParseLogTag(bad); err == nil {
			t.Errorf("ParseLogTag(%q) accepted", bad)
		}
	}
}

// TestLogPrefixesMatchRules: every log statement's prefix parses and names
// the rule that its rule comment names.
func TestLogPrefixesMatchRules(t *testing.T) {
	p := loadPolicy(t, "testdata/kinds.yaml")
	rs, err := compilePolicy(p, labConfig())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, st := range r.Stmts {
				l, ok := st.(Log)
				if !ok {
					continue
				}
				n++
				tag, err := ParseLogTag(l.Prefix)
				if err != nil {
					t.Fatal(err)
				}
				if len(l.Prefix) > 127 {
					t.Errorf("prefix %q longer than the kernel's 127 bytes", l.Prefix)
				}
				if !strings.HasPrefix(r.Comment, l.Prefix+" ") {
					t.Errorf("chain %s: log %q in a rule commented %q", c.Name, l.Prefix, r.Comment)
				}
				if rule := tag.Rule(p); rule != nil && !strings.HasSuffix(r.Comment, " "+rule.Path()) {
					t.Errorf("chain %s: comment %q does not name %s", c.Name, r.Comment, rule.Path())
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no log statements")
	}
}

func TestFQDNSets(t *testing.T) {
	p := loadPolicy(t, "testdata/kinds.yaml")
	rs, err := compilePolicy(p, labConfig())
	if err != nil {
		t.Fatal(err)
	}
	// ntp is network rule 5 (block: 0, 1; allow: 2..5).
	want := []string{"fqdn_5_v4", "fqdn_5_v6"}
	for _, name := range []string{"ntp.example.org", "NTP.Example.Org.", "time.example.org"} {
		if got := rs.FQDNSets(name); baseNames(got) != strings.Join(want, ",") {
			t.Errorf("FQDNSets(%q) = %v, want %v", name, got, want)
		}
	}
	if got := rs.FQDNSets("other.example.org"); got != nil {
		t.Errorf("FQDNSets(other) = %v", got)
	}
	if FQDNSetName(5, false) != "fqdn_5_v4" || FQDNSetName(5, true) != "fqdn_5_v6" {
		t.Fatal("FQDNSetName")
	}
	for _, name := range want {
		if s := setNamed(rs, name); s == nil || s.Kind != SetFQDN {
			t.Fatalf("set %s missing", name)
		}
	}
}

func TestRecorder(t *testing.T) {
	rs, err := compilePolicy(loadPolicy(t, "testdata/kinds.yaml"), labConfig())
	if err != nil {
		t.Fatal(err)
	}
	var rec Recorder
	if st, _ := rec.Show(); st.Present {
		t.Fatal("empty recorder shows a table")
	}
	if err := rec.Apply(rs); err != nil {
		t.Fatal(err)
	}
	addrs := []netip.Addr{netip.MustParseAddr("198.18.10.123")}
	if err := rec.AddFQDNAddrs("ntp.example.org", addrs, time.Second); err != nil {
		t.Fatal(err)
	}
	call := rec.FQDNCalls[0]
	if call.TTL != MinFQDNTTL || baseNames(call.Sets) != "fqdn_5_v4,fqdn_5_v6" {
		t.Fatalf("recorded %+v", call)
	}
	st, _ := rec.Show()
	if !st.Present || st.Chain("forward") == nil || len(st.Counters()) == 0 {
		t.Fatalf("show: %+v", st)
	}
	rec.FailApply = fmt.Errorf("kernel said no")
	if err := rec.Apply(&Ruleset{}); err == nil || rec.Current != rs {
		t.Fatal("a failed apply replaced the ruleset")
	}
	if err := rec.Flush(); err != nil || rec.Current != nil || rec.Flushes != 1 {
		t.Fatal("flush")
	}
	// A ruleset that names a chain it does not have cannot be applied.
	bad := &Ruleset{Table: "t", Chains: []*Chain{{Name: "a", Rules: []*Rule{{Stmts: []Stmt{Verdict{Kind: VerdictJump, Chain: "nowhere"}}}}}}}
	rec.FailApply = nil
	if err := rec.Apply(bad); err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Fatalf("bad ruleset: %v", err)
	}
}

// TestShowRendersCompiled: what Show would print for each rule read back
// from the kernel (the lowered expressions rendered by exprText) is the
// compiled rule's text, for every statement kind the compiler emits.
func TestShowRendersCompiled(t *testing.T) {
	for _, path := range []string{"testdata/kinds.yaml", "../../examples/aks-egress.yaml", "flat", "fused", "folded", "big"} {
		cfg := labConfig()
		cfg.SNAT = SNATFixed
		var p *policy.Policy
		switch path {
		case "flat", "fused", "folded", "big":
			// Leaves with their decision (compiler.fusedLeaf): negated
			// concatenations (fused, big) and single matches (big);
			// dispatches with concatenated keys (flat, folded).
			cfg.LimitRuleLogs = true
			var err error
			switch path {
			case "flat":
				p = flatPolicy(40, 0)
			case "fused":
				p, err = loadPolicyBytes("fused.yaml", []byte(fusedLeafPolicy("10.99.0.0/16")))
			case "folded":
				p, err = loadPolicyBytes("folded.yaml", []byte(fusedLeafPolicy("10.99.0.0/24")))
			default:
				p = bigPolicy(2000, 1)
			}
			if err != nil {
				t.Fatal(err)
			}
		default:
			p = loadPolicy(t, path)
		}
		rs, err := compilePolicy(p, cfg)
		if err != nil {
			t.Fatal(err)
		}
		pl, err := lower(rs, nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range rs.Chains {
			for _, r := range c.Rules {
				var exprs []Stmt
				text := make([]string, 0, len(r.Stmts))
				for _, st := range r.Stmts {
					exprs = append(exprs, st)
					text = append(text, st.String())
				}
				var all []any
				_ = all
				lowered := []string{}
				for _, st := range exprs {
					ex, err := lowerStmt(st, pl.setMap, pl.chMap)
					if err != nil {
						t.Fatal(err)
					}
					s, _ := exprText(ex)
					lowered = append(lowered, s)
				}
				if got, want := strings.Join(lowered, " "), strings.Join(text, " "); got != want {
					t.Errorf("chain %s:\nrendered: %s\ncompiled: %s", c.Name, got, want)
				}
			}
		}
	}
}

func TestCompileSteersApplicationPortsToProxy(t *testing.T) {
	p := loadExample(t)
	rs, err := compilePolicy(p, Config{Inside: "cw-in", Outside: "cw-out", ProxyPort: 15001})
	if err != nil {
		t.Fatal(err)
	}
	text := rs.String()
	var steer string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "redirect to :15001") {
			steer = line
		}
	}
	if steer == "" || !strings.Contains(steer, `iifname "cw-in"`) || !strings.Contains(steer, "meta l4proto tcp") {
		t.Fatalf("no steering rule for the proxy in:\n%s", text)
	}
	// The seed's application rules name ports 80 and 443: a set of both.
	set := rs.Set(strings.TrimPrefix(steer[strings.Index(steer, "@"):strings.Index(steer, " redirect")], "@"))
	if set == nil || len(set.Elems) != 2 {
		t.Fatalf("port set of %q: %+v", steer, set)
	}
	if !strings.Contains(text, `iifname "cw-in" meta l4proto tcp th dport 15001 accept comment "service of the firewall: L7 proxy"`) {
		t.Errorf("input chain does not accept the proxy port:\n%s", text)
	}
	// Without a proxy port nothing is steered.
	rs, _ = compilePolicy(p, Config{Inside: "cw-in", Outside: "cw-out"})
	if strings.Contains(rs.String(), "redirect") {
		t.Error("steering without a proxy port")
	}
}

// compilePolicy compiles p with the matcher, for cfg's gateway, then the
// ruleset from the matcher: what the daemon does.
func compilePolicy(p *policy.Policy, cfg Config) (*Ruleset, error) {
	if p == nil {
		return Compile(nil, cfg)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := match.Compile(p, match.Options{Gateway: cfg.Gateway()})
	if err != nil {
		return nil, err
	}
	return Compile(m, cfg)
}

package logquery

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

const origPolicy = `# the running policy
name: orig
ipGroups:
  cluster: [10.42.1.0/24]
ruleCollectionGroups:
  - name: base # keep this comment
    priority: 200
    ruleCollections:
      - name: deny
        kind: Network
        priority: 100
        action: Deny
        rules:
          - name: no-telnet
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: ['*']
            destinationPorts: ['23']
      - name: web
        kind: Application
        priority: 200
        action: Allow
        rules:
          - name: registries
            protocols: ['Https:443']
            sourceIpGroups: [cluster]
            targetFqdns: [ghcr.io]
`

// flow is one evidence flow; app flows have a name and scheme.
type flow struct {
	src, dst string
	proto    policy.Proto
	port     uint16
	name     string
	scheme   policy.Scheme
}

func (f flow) match() match.Flow {
	mf := match.Flow{Src: netip.MustParseAddr(f.src), Proto: f.proto, Port: f.port, Name: f.name, Scheme: f.scheme}
	if f.dst != "" {
		mf.Dst = netip.MustParseAddr(f.dst)
	}
	return mf
}

// record is the line an enforcement point writes for f decided by m (the
// proxy for application flows, the kernel for the others), as in
// internal/proxy and internal/daemon.
func record(m *match.Matcher, f flow, at time.Time) (telemetry.Record, match.Decision) {
	d := m.Decide(f.match())
	r := telemetry.Record{Time: at, SourceIp: f.src, SourcePort: 40000, Action: d.Action.String()}
	if f.name != "" {
		r.Category = telemetry.CategoryApplicationRule
		r.Fqdn = f.name
		r.DestinationPort = int(f.port)
		r.Protocol = map[policy.Scheme]string{policy.SchemeHTTP: "HTTP", policy.SchemeHTTPS: "HTTPS"}[f.scheme]
		r.OriginalDestinationIp = f.dst
		r.ActionReason = d.Reason
	} else {
		r.Category = telemetry.CategoryNetworkRule
		r.DestinationIp = f.dst
		r.Protocol = map[policy.Proto]string{policy.ProtoTCP: "TCP", policy.ProtoUDP: "UDP", policy.ProtoICMP: "ICMP"}[f.proto]
		if f.proto != policy.ProtoICMP {
			r.DestinationPort = int(f.port)
		}
		if d.Rule == nil {
			r.ActionReason = "Default Action: " + match.ReasonNoRuleMatched
		}
	}
	if d.Rule != nil {
		r.Rule, r.RuleCollection, r.RuleCollectionGroup = d.Rule.Name, d.Rule.Collection.Name, d.Rule.Collection.Group.Name
		if d.Kind == policy.KindNetwork {
			r.Category = telemetry.CategoryNetworkRule
		}
	}
	return r, d
}

func https(src, name string) flow {
	return flow{src: src, dst: "198.51.100.80", proto: policy.ProtoTCP, port: 443, name: name, scheme: policy.SchemeHTTPS}
}

func http(src, name string) flow {
	return flow{src: src, dst: "198.51.100.80", proto: policy.ProtoTCP, port: 80, name: name, scheme: policy.SchemeHTTP}
}

func network(src, dst string, proto policy.Proto, port uint16) flow {
	return flow{src: src, dst: dst, proto: proto, port: port}
}

var evidenceFlows = []flow{
	https("10.42.1.10", "a.cdn.example.com"),
	https("10.42.1.11", "b.cdn.example.com"),
	https("10.42.1.10", "api.example.com"),
	https("10.42.1.10", "api.example.com"),
	http("10.42.1.12", "plain.example.org"),
	https("10.42.1.12", "plain.example.org"),
	// Public suffixes: never *.blob.core.windows.net (private section of
	// the list) nor *.co.uk; *.example.co.uk is fine.
	https("10.42.1.10", "acct1.blob.core.windows.net"),
	https("10.42.1.10", "acct2.blob.core.windows.net"),
	https("10.42.1.10", "first.co.uk"),
	https("10.42.1.10", "second.co.uk"),
	https("10.42.1.10", "x.example.co.uk"),
	https("10.42.1.10", "y.example.co.uk"),
	// Threat intel flagged evil.example.net: good and other stay exact.
	https("10.42.1.10", "good.example.net"),
	https("10.42.1.10", "other.example.net"),
	https("2001:db8:42:1::10", "v6only.example.com"),
	https("10.42.1.10", "ghcr.io"), // allowed already: not evidence
	network("10.42.1.10", "192.0.2.50", policy.ProtoTCP, 5432),
	network("10.42.1.11", "192.0.2.51", policy.ProtoTCP, 5432),
	network("10.42.1.10", "192.0.2.60", policy.ProtoUDP, 514),
	network("10.42.1.10", "192.0.2.60", policy.ProtoTCP, 514),
	network("10.42.1.10", "192.0.2.70", policy.ProtoICMP, 0),
	network("10.42.1.10", "192.0.2.80", policy.ProtoTCP, 8000),
	network("10.42.1.10", "192.0.2.80", policy.ProtoTCP, 8001),
	network("10.42.1.10", "192.0.2.80", policy.ProtoTCP, 8002),
	network("10.42.1.10", "192.0.2.23", policy.ProtoTCP, 23), // explicit deny
}

var threatFlows = []flow{
	https("10.42.1.10", "evil.example.net"),
	network("10.42.1.10", "203.0.113.66", policy.ProtoTCP, 443),
}

func loadOrig(t *testing.T) (*policy.Policy, *match.Matcher) {
	t.Helper()
	p, err := policy.Load("orig.yaml", []byte(origPolicy), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := match.Compile(p, match.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p, m
}

// TestSuggestAllowsEveryDeniedFlow is the contract of suggest: the
// suggestion is valid policy YAML on its own, merged into the original
// policy it still validates, and the real matcher then allows every flow
// the evidence shows denied by default — and nothing threat intelligence
// flagged or an explicit Deny rule denied.
func TestSuggestAllowsEveryDeniedFlow(t *testing.T) {
	p, m := loadOrig(t)
	c := NewCollector()
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var denied []flow
	for i, f := range evidenceFlows {
		r, d := record(m, f, at.Add(time.Duration(i)*time.Second))
		c.Add(&r)
		if d.Action == policy.ActionDeny && d.Rule == nil {
			denied = append(denied, f)
		}
	}
	if len(denied) < 20 {
		t.Fatalf("only %d default-denied flows in the evidence", len(denied))
	}
	for _, f := range threatFlows {
		r := telemetry.Record{Time: at, Category: telemetry.CategoryThreatIntel, SourceIp: f.src, Fqdn: f.name,
			Action: "Deny", ThreatDescription: "test feed", Protocol: "TCP", DestinationPort: int(f.port)}
		if f.name == "" {
			r.DestinationIp = f.dst
		}
		c.Add(&r)
		// The same destinations were also denied by default elsewhere.
		r2, _ := record(m, f, at)
		c.Add(&r2)
	}

	s, err := c.Suggest(SuggestOptions{Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	out := s.YAML()
	t.Logf("suggestion:\n%s", out)
	if _, err := policy.Load("suggested.yaml", out, policy.Options{}); err != nil {
		t.Fatalf("suggestion does not validate: %v\n%s", err, out)
	}
	merged, err := Merge([]byte(origPolicy), s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(merged), "keep this comment") {
		t.Errorf("merge lost the policy's comments:\n%s", merged)
	}
	mp, err := policy.Load("merged.yaml", merged, policy.Options{})
	if err != nil {
		t.Fatalf("merged policy does not validate: %v\n%s", err, merged)
	}
	mm, err := match.Compile(mp, match.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range denied {
		if d := mm.Decide(f.match()); d.Action != policy.ActionAllow {
			t.Errorf("after the suggestion %+v is still %s (%s)", f, d.Action, d.Reason)
		}
	}
	for _, f := range append(threatFlows, network("10.42.1.10", "192.0.2.23", policy.ProtoTCP, 23)) {
		if d := mm.Decide(f.match()); d.Action == policy.ActionAllow {
			t.Errorf("the suggestion allows %+v (threat intel or explicit deny)", f)
		}
	}

	text := string(out)
	for _, want := range []string{
		"'*.example.com'", "'*.example.co.uk'", "'acct1.blob.core.windows.net'", "'first.co.uk'",
		"'good.example.net'", "'plain.example.org'", "['Http:80', 'Https:443']",
		"sourceIpGroups: ['cluster']", "'2001:db8:42:1::10'", "'192.0.2.50/31'", "['TCP', 'UDP']",
		"['8000-8002']", "evil.example.net", "threat intelligence", "base/deny/no-telnet (1)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("suggestion lacks %s", want)
		}
	}
	for _, bad := range []string{"'*.blob.core.windows.net'", "'*.co.uk'", "'*.example.net'", "'203.0.113.66'", "ghcr.io", "'*.cdn.example.com'"} {
		if strings.Contains(text, bad) {
			t.Errorf("suggestion has %s", bad)
		}
	}
	// Smallest set: application rules differ only where sources or
	// protocols differ.
	if len(s.App) > 4 || len(s.Network) > 4 {
		t.Errorf("%d application and %d network rules; want at most 4 and 4", len(s.App), len(s.Network))
	}
}

func TestSuggestMinCountAndExactSources(t *testing.T) {
	p, m := loadOrig(t)
	c := NewCollector()
	at := time.Now()
	for _, f := range []flow{https("10.42.1.10", "once.example.com"), https("10.42.1.10", "twice.example.org"), https("10.42.1.11", "twice.example.org")} {
		r, _ := record(m, f, at)
		c.Add(&r)
	}
	s, err := c.Suggest(SuggestOptions{Policy: p, MinCount: 2, ExactSources: true})
	if err != nil {
		t.Fatal(err)
	}
	text := string(s.YAML())
	if strings.Contains(text, "once.example.com") || !strings.Contains(text, "'twice.example.org'") {
		t.Errorf("min-count 2:\n%s", text)
	}
	if !strings.Contains(text, "'10.42.1.10/31'") || !strings.Contains(text, "--min-count") {
		t.Errorf("exact sources 10.42.1.10 and .11 should aggregate to 10.42.1.10/31:\n%s", text)
	}
	if _, err := policy.Load("s.yaml", s.YAML(), policy.Options{}); err != nil {
		t.Fatal(err)
	}
	// Nothing denied: a valid, empty document.
	empty, err := NewCollector().Suggest(SuggestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Load("e.yaml", empty.YAML(), policy.Options{}); err != nil || !strings.Contains(string(empty.YAML()), "nothing to suggest") {
		t.Errorf("empty suggestion: %v\n%s", err, empty.YAML())
	}
}

// TestSuggestSkipsConnectionsClosedByAReload: the line of an open
// connection the L7 proxy closed because a reload removed its rule says
// "no rule matched" after the policy-change prefix; the operator removed
// that name on purpose, so it is never suggested back.
func TestSuggestSkipsConnectionsClosedByAReload(t *testing.T) {
	p, m := loadOrig(t)
	c := NewCollector()
	for _, name := range []string{"removed.example.com", "denied.example.org"} {
		r, _ := record(m, https("10.42.1.10", name), time.Now())
		if name == "removed.example.com" {
			r.ActionReason = telemetry.ReasonPolicyChanged + ": " + r.ActionReason
		}
		c.Add(&r)
	}
	s, err := c.Suggest(SuggestOptions{Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	text := string(s.YAML())
	if strings.Contains(text, "removed.example.com") || !strings.Contains(text, "denied.example.org") {
		t.Errorf("suggestion:\n%s", text)
	}
}

package match

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// mapResolver is a FQDNResolver backed by a fixed table, like the DNS
// proxy's. It does not allocate.
type mapResolver map[string][]netip.Addr

func (r mapResolver) Resolved(name string, addr netip.Addr) bool {
	for _, a := range r[name] {
		if a == addr {
			return true
		}
	}
	return false
}

var (
	tcp  = policy.ProtoTCP
	udp  = policy.ProtoUDP
	icmp = policy.ProtoICMP
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// want is the expected decision in a table test: the rule is named by its
// path (group/collection/rule), "" for a default deny.
type want struct {
	action policy.Action
	rule   string
	taddr  string
	tport  uint16
}

func (w want) check(t *testing.T, d Decision) {
	t.Helper()
	if d.Action != w.action {
		t.Errorf("action = %v, want %v (decision %+v)", d.Action, w.action, d)
	}
	switch {
	case w.rule == "":
		if d.Rule != nil || d.Kind != policy.KindInvalid || d.Reason != ReasonNoRuleMatched {
			t.Errorf("got rule %v kind %v reason %q, want default deny", path(d.Rule), d.Kind, d.Reason)
		}
	case d.Rule == nil:
		t.Errorf("got default deny, want rule %s", w.rule)
	default:
		if path(d.Rule) != w.rule {
			t.Errorf("rule = %s, want %s", path(d.Rule), w.rule)
		}
		if d.Kind != d.Rule.Kind() || d.Reason != ReasonRuleMatched {
			t.Errorf("kind %v reason %q for a %v rule", d.Kind, d.Reason, d.Rule.Kind())
		}
	}
	var wantAddr netip.Addr
	if w.taddr != "" {
		wantAddr = ip(w.taddr)
	}
	if d.TranslatedAddr != wantAddr || d.TranslatedPort != w.tport {
		t.Errorf("translated to %v:%d, want %v:%d", d.TranslatedAddr, d.TranslatedPort, wantAddr, w.tport)
	}
}

func path(r *policy.Rule) string {
	if r == nil {
		return "<nil>"
	}
	return r.Path()
}

type flowCase struct {
	name string
	flow Flow
	want want
}

// runCases checks each flow against the compiled matcher and, as a cross
// check, against the linear reference.
func runCases(t *testing.T, p *policy.Policy, res FQDNResolver, cases []flowCase) {
	t.Helper()
	opts := Options{}
	if res != nil {
		opts.Resolver = res
	}
	m, err := Compile(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			d := m.Decide(tt.flow)
			tt.want.check(t, d)
			if lin := m.DecideLinear(tt.flow); lin != d {
				t.Errorf("linear reference disagrees: %+v vs compiled %+v", lin, d)
			}
		})
	}
}

func loadSeed(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policy.LoadFile("../../examples/aks-egress.yaml", policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSeedPolicy(t *testing.T) {
	p := loadSeed(t)
	res := mapResolver{"ntp.ubuntu.com": {ip("185.125.190.56"), ip("2620:2d:4000:1::41")}}
	const (
		web   = "DefaultApplicationRuleCollectionGroup/aksfwarweb/website"
		store = "DefaultApplicationRuleCollectionGroup/aksfwarweb/storage"
		aks   = "DefaultApplicationRuleCollectionGroup/aksfwar/fqdn"
		nr    = "DefaultNetworkRuleCollectionGroup/aksfwnr/"
		dnat  = "DefaultDnatRuleCollectionGroup/"
	)
	pod, otherPod := ip("10.42.1.10"), ip("10.42.2.10")
	anyDst := ip("192.0.2.50")
	https := func(src netip.Addr, name string) Flow {
		return Flow{Src: src, Dst: anyDst, Proto: tcp, Port: 443, Name: name, Scheme: policy.SchemeHTTPS}
	}
	http := func(src netip.Addr, name string) Flow {
		return Flow{Src: src, Dst: anyDst, Proto: tcp, Port: 80, Name: name, Scheme: policy.SchemeHTTP}
	}
	allow := func(rule string) want { return want{action: policy.ActionAllow, rule: rule} }
	deny := want{action: policy.ActionDeny}
	runCases(t, p, res, []flowCase{
		{"ghcr.io https allowed by website", https(pod, "ghcr.io"), allow(web)},
		{"GHCR.IO. https allowed by website", https(pod, "GHCR.IO."), allow(web)},
		{"ghcr.io http not in website's protocols", http(pod, "ghcr.io"), deny},
		{"ghcr.io from another subnet", https(otherPod, "ghcr.io"), deny},
		{"ghcr.io without a scheme is not application traffic", Flow{Src: pod, Dst: anyDst, Proto: tcp, Port: 443, Name: "ghcr.io"}, deny},
		{"registry-1.docker.io via *.docker.io", https(pod, "registry-1.docker.io"), allow(web)},
		{"docker.io itself is not *.docker.io", https(pod, "docker.io"), deny},
		{"blob storage", https(pod, "acct.blob.core.windows.net"), allow(store)},
		{"example.org denied", https(pod, "example.org"), deny},
		{"empty name denied", https(pod, ""), deny},
		{"mcr.microsoft.com via the AKS FQDN tag", https(otherPod, "mcr.microsoft.com"), allow(aks)},
		{"mcr.microsoft.com over http", http(otherPod, "mcr.microsoft.com"), allow(aks)},
		{"x.data.mcr.microsoft.com", https(pod, "x.data.mcr.microsoft.com"), allow(aks)},
		{"foo.hcp.eastus.azmk8s.io", https(pod, "foo.hcp.eastus.azmk8s.io"), allow(aks)},
		{"foo.hcp.westus.azmk8s.io is another region", https(pod, "foo.hcp.westus.azmk8s.io"), deny},

		{"ntp via the resolved address", Flow{Src: pod, Dst: ip("185.125.190.56"), Proto: udp, Port: 123}, allow(nr + "time")},
		{"ntp via the resolved IPv6 address", Flow{Src: ip("fd00::10"), Dst: ip("2620:2d:4000:1::41"), Proto: udp, Port: 123}, allow(nr + "time")},
		{"ntp to an address not resolved", Flow{Src: pod, Dst: ip("185.125.190.57"), Proto: udp, Port: 123}, deny},
		{"ntp over tcp", Flow{Src: pod, Dst: ip("185.125.190.56"), Proto: tcp, Port: 123}, deny},
		{"tcp 9000 to AzureCloud.eastus", Flow{Src: pod, Dst: ip("198.18.10.5"), Proto: tcp, Port: 9000}, allow(nr + "apitcp")},
		{"tcp 9000 to a mapped AzureCloud.eastus address", Flow{Src: pod, Dst: ip("::ffff:198.18.10.5"), Proto: tcp, Port: 9000}, allow(nr + "apitcp")},
		{"tcp 9001 denied", Flow{Src: pod, Dst: ip("198.18.10.5"), Proto: tcp, Port: 9001}, deny},
		{"tcp 9000 to AzureCloud.westeurope denied", Flow{Src: pod, Dst: ip("198.18.20.5"), Proto: tcp, Port: 9000}, deny},
		{"udp 1194 to AzureCloud.eastus IPv6", Flow{Src: ip("fd00::10"), Dst: ip("2001:db8:ac:10::99"), Proto: udp, Port: 1194}, allow(nr + "apiudp")},

		{"DNAT 80 from the internet", Flow{Src: ip("192.0.2.9"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 80},
			want{action: policy.ActionDNAT, rule: dnat + "exampleset/inboundrule", taddr: "10.42.1.100", tport: 80}},
		{"DNAT 80 over udp (protocols Any)", Flow{Src: ip("198.51.100.7"), Dst: ip("203.0.113.32"), Proto: udp, Port: 80},
			want{action: policy.ActionDNAT, rule: dnat + "exampleset/inboundrule", taddr: "10.42.1.100", tport: 80}},
		{"DNAT 443 from the authorized range", Flow{Src: ip("198.51.100.7"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 443},
			want{action: policy.ActionDNAT, rule: dnat + "apiserver/authorized", taddr: "10.42.1.200", tport: 443}},
		{"DNAT 443 from outside the authorized range", Flow{Src: ip("192.0.2.9"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 443}, deny},
		{"DNAT miss goes on to application rules", Flow{Src: ip("192.0.2.9"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 443,
			Name: "mcr.microsoft.com", Scheme: policy.SchemeHTTPS}, allow(aks)},
		{"DNAT 8080 has no rule", Flow{Src: ip("192.0.2.9"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 8080}, deny},
	})
}

func mustLoad(t testing.TB, y string) *policy.Policy {
	t.Helper()
	p, err := policy.Load("test.yaml", []byte(y), policy.Options{})
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	return p
}

// TestNetworkBeforeApplication is Azure's documented example: a network rule
// allowing TCP 443 to any destination is matched before an application rule
// that denies the FQDN, although the application rule's group has the
// better priority.
func TestNetworkBeforeApplication(t *testing.T) {
	p := mustLoad(t, `
ruleCollectionGroups:
  - name: apps
    priority: 100
    ruleCollections:
      - name: deny-sites
        kind: Application
        priority: 100
        action: Deny
        rules:
          - name: no-contoso
            protocols: [Https:443]
            sourceAddresses: ['*']
            targetFqdns: [www.contoso.com]
  - name: nets
    priority: 200
    ruleCollections:
      - name: web-out
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: https-anywhere
            protocols: [TCP]
            sourceAddresses: [10.0.0.0/8]
            destinationAddresses: ['*']
            destinationPorts: ['443']
`)
	f := Flow{Src: ip("10.1.2.3"), Dst: ip("20.1.2.3"), Proto: tcp, Port: 443, Name: "www.contoso.com", Scheme: policy.SchemeHTTPS}
	other := f
	other.Src = ip("172.16.0.1")
	runCases(t, p, nil, []flowCase{
		{"network allow wins", f, want{action: policy.ActionAllow, rule: "nets/web-out/https-anywhere"}},
		{"source outside the network rule reaches the application deny", other, want{action: policy.ActionDeny, rule: "apps/deny-sites/no-contoso"}},
	})
}

// TestNetworkDenyStops: a matching Deny network rule ends evaluation, so an
// Allow application rule for the same flow is never consulted.
func TestNetworkDenyStops(t *testing.T) {
	p := mustLoad(t, `
ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - name: allow-apps
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: contoso
            protocols: [Https]
            sourceAddresses: ['*']
            targetFqdns: ['*.contoso.com']
      - name: deny-net
        kind: Network
        priority: 200
        action: Deny
        rules:
          - name: block-subnet
            protocols: [Any]
            sourceAddresses: [10.9.0.0/16]
            destinationAddresses: ['*']
            destinationPorts: ['*']
`)
	f := Flow{Src: ip("10.9.1.1"), Dst: ip("20.1.2.3"), Proto: tcp, Port: 443, Name: "www.contoso.com", Scheme: policy.SchemeHTTPS}
	other := f
	other.Src = ip("10.8.1.1")
	ping := Flow{Src: ip("10.9.1.1"), Dst: ip("20.1.2.3"), Proto: icmp}
	runCases(t, p, nil, []flowCase{
		{"deny network rule", f, want{action: policy.ActionDeny, rule: "g/deny-net/block-subnet"}},
		{"other subnet uses the application rule", other, want{action: policy.ActionAllow, rule: "g/allow-apps/contoso"}},
		{"icmp ignores ports", ping, want{action: policy.ActionDeny, rule: "g/deny-net/block-subnet"}},
	})
}

// TestPriorities: between overlapping rules of one kind, group priority
// decides first, then collection priority, then rule order; file order
// does not matter. DNAT comes before network rules whatever the priorities.
func TestPriorities(t *testing.T) {
	p := mustLoad(t, `
ruleCollectionGroups:
  - name: late-group
    priority: 500
    ruleCollections:
      - name: first-in-file
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: allow-all
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [10.0.0.0/8]
            destinationPorts: ['1-65535']
      - name: dnat
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - name: publish
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [10.1.1.1]
            destinationPorts: ['8443']
            translatedAddress: 10.2.2.2
            translatedPort: '443'
  - name: early-group
    priority: 200
    ruleCollections:
      - name: coll-300
        kind: Network
        priority: 300
        action: Allow
        rules:
          - name: allow-22
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [10.1.0.0/16]
            destinationPorts: ['22']
      - name: coll-250
        kind: Network
        priority: 250
        action: Deny
        rules:
          - name: deny-22-narrow
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [10.1.1.0/24]
            destinationPorts: ['22']
          - name: deny-wide
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [10.1.0.0/16]
            destinationPorts: ['22', '80']
          - name: allow-after-deny
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [10.1.1.1]
            destinationPorts: ['80']
`)
	src := ip("192.168.1.1")
	flow := func(dst string, port uint16) Flow { return Flow{Src: src, Dst: ip(dst), Proto: tcp, Port: port} }
	runCases(t, p, nil, []flowCase{
		{"collection priority beats file order", flow("10.1.5.5", 22), want{action: policy.ActionDeny, rule: "early-group/coll-250/deny-wide"}},
		{"rule order: narrow rule first", flow("10.1.1.1", 22), want{action: policy.ActionDeny, rule: "early-group/coll-250/deny-22-narrow"}},
		{"rule order: earlier wide deny beats later exact allow", flow("10.1.1.1", 80), want{action: policy.ActionDeny, rule: "early-group/coll-250/deny-wide"}},
		{"group priority beats file order", flow("10.1.5.5", 443), want{action: policy.ActionAllow, rule: "late-group/first-in-file/allow-all"}},
		{"DNAT before network regardless of priority", flow("10.1.1.1", 8443), want{action: policy.ActionDNAT, rule: "late-group/dnat/publish", taddr: "10.2.2.2", tport: 443}},
	})
}

func TestWildcards(t *testing.T) {
	p := mustLoad(t, `
ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - name: c
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: exact
            protocols: [Https]
            sourceAddresses: ['*']
            targetFqdns: [exact.example]
          - name: subdomains
            protocols: [Https]
            sourceAddresses: ['*']
            targetFqdns: ['*.contoso.com']
          - name: suffix
            protocols: [Https]
            sourceAddresses: ['*']
            targetFqdns: ['*contoso.com']
          - name: single-label-suffix
            protocols: [Https]
            sourceAddresses: ['*']
            targetFqdns: ['*net']
          - name: long-label
            protocols: [Https]
            sourceAddresses: ['*']
            targetFqdns: [this-label-is-longer-than-nineteen.example]
          - name: everything-on-8443
            protocols: ['Https:8443']
            sourceAddresses: ['*']
            targetFqdns: ['*']
`)
	f := func(name string) Flow {
		return Flow{Src: ip("10.0.0.1"), Dst: ip("192.0.2.1"), Proto: tcp, Port: 443, Name: name, Scheme: policy.SchemeHTTPS}
	}
	any8443 := f("whatever.example")
	any8443.Port = 8443
	empty8443 := f(".")
	empty8443.Port = 8443
	allow := func(r string) want { return want{action: policy.ActionAllow, rule: "g/c/" + r} }
	deny := want{action: policy.ActionDeny}
	runCases(t, p, nil, []flowCase{
		{"exact", f("exact.example"), allow("exact")},
		{"exact is case-insensitive", f("EXACT.Example"), allow("exact")},
		{"exact ignores a trailing dot", f("exact.example."), allow("exact")},
		{"exact does not match a subdomain", f("a.exact.example"), deny},
		{"exact does not match two trailing dots", f("exact.example.."), deny},
		{"*.contoso.com matches a.contoso.com", f("a.contoso.com"), allow("subdomains")},
		{"*.contoso.com matches a.b.contoso.com", f("a.b.contoso.com"), allow("subdomains")},
		{"contoso.com falls to *contoso.com", f("contoso.com"), allow("suffix")},
		{"xcontoso.com falls to *contoso.com", f("xcontoso.com"), allow("suffix")},
		{"A.XCONTOSO.COM. falls to *contoso.com", f("A.XCONTOSO.COM."), allow("suffix")},
		{"ontoso.com matches nothing", f("ontoso.com"), deny},
		{"contoso.co matches nothing", f("contoso.co"), deny},
		{"*net matches net", f("net"), allow("single-label-suffix")},
		{"*net matches a.b.dotnet", f("a.b.dotnet"), allow("single-label-suffix")},
		{"*net does not match net.org", f("net.org"), deny},
		{"kelvin sign is not k", f("\u212Aontoso.com"), deny},
		{"long label", f("THIS-label-is-longer-than-nineteen.Example"), allow("long-label")},
		{"long label of the same length differs", f("this-label-is-longer-than-nineteen.exampl3"), deny},
		{"another long label", f("this-label-is-longer-than-nineteeN.example"), allow("long-label")},
		{"long label, one character off", f("this-label-is-longer-than-ninetee0.example"), deny},
		{"* on 8443", any8443, allow("everything-on-8443")},
		{"* does not match the empty name", empty8443, deny},
	})
}

func TestIPv6(t *testing.T) {
	p := mustLoad(t, `
ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - name: dnat6
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - name: web6
            protocols: [TCP]
            sourceAddresses: ['2001:db8:ffff::/48']
            destinationAddresses: ['2001:db8:1::32']
            destinationPorts: ['443']
            translatedAddress: 'fd00:42::100'
            translatedPort: '8443'
      - name: net6
        kind: Network
        priority: 200
        action: Allow
        rules:
          - name: dns6
            protocols: [UDP, TCP]
            sourceAddresses: ['fd00:42::/64']
            destinationAddresses: ['2001:db8:53::1-2001:db8:53::ff']
            destinationPorts: ['53']
          - name: v4-only
            protocols: [TCP]
            sourceAddresses: [10.0.0.0/8]
            destinationAddresses: ['*']
            destinationPorts: ['22']
      - name: app6
        kind: Application
        priority: 300
        action: Allow
        rules:
          - name: web
            protocols: [Https]
            sourceAddresses: ['fd00:42::/64']
            targetFqdns: [ipv6.example]
`)
	src := ip("fd00:42::10")
	runCases(t, p, nil, []flowCase{
		{"DNAT to an IPv6 address", Flow{Src: ip("2001:db8:ffff::9"), Dst: ip("2001:db8:1::32"), Proto: tcp, Port: 443},
			want{action: policy.ActionDNAT, rule: "g/dnat6/web6", taddr: "fd00:42::100", tport: 8443}},
		{"IPv6 range start", Flow{Src: src, Dst: ip("2001:db8:53::1"), Proto: udp, Port: 53}, want{action: policy.ActionAllow, rule: "g/net6/dns6"}},
		{"IPv6 range end", Flow{Src: src, Dst: ip("2001:db8:53::ff"), Proto: tcp, Port: 53}, want{action: policy.ActionAllow, rule: "g/net6/dns6"}},
		{"IPv6 just past the range", Flow{Src: src, Dst: ip("2001:db8:53::100"), Proto: udp, Port: 53}, want{action: policy.ActionDeny}},
		{"zone is ignored", Flow{Src: src, Dst: ip("2001:db8:53::ff%eth0"), Proto: udp, Port: 53}, want{action: policy.ActionAllow, rule: "g/net6/dns6"}},
		{"IPv4 source does not match an IPv6 source set", Flow{Src: ip("10.0.0.1"), Dst: ip("2001:db8:53::1"), Proto: udp, Port: 53}, want{action: policy.ActionDeny}},
		{"* destination covers IPv6 too", Flow{Src: ip("10.0.0.1"), Dst: ip("2001:db8::22"), Proto: tcp, Port: 22}, want{action: policy.ActionAllow, rule: "g/net6/v4-only"}},
		{"application rule from IPv6", Flow{Src: src, Dst: ip("2001:db8::443"), Proto: tcp, Port: 443, Name: "ipv6.example", Scheme: policy.SchemeHTTPS},
			want{action: policy.ActionAllow, rule: "g/app6/web"}},
		{"invalid destination with a name", Flow{Src: src, Proto: tcp, Port: 443, Name: "ipv6.example", Scheme: policy.SchemeHTTPS},
			want{action: policy.ActionAllow, rule: "g/app6/web"}},
		{"no protocol", Flow{Src: src, Dst: ip("2001:db8:53::1"), Port: 53}, want{action: policy.ActionDeny}},
	})
}

// TestNilResolver: without a resolver, destinationFqdns never match but the
// rule's addresses still do.
func TestNilResolver(t *testing.T) {
	p := mustLoad(t, `
ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - name: c
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: both
            protocols: [UDP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.1]
            destinationFqdns: [ntp.example]
            destinationPorts: ['123']
`)
	res := mapResolver{"ntp.example": {ip("192.0.2.2")}}
	byName := Flow{Src: ip("10.0.0.1"), Dst: ip("192.0.2.2"), Proto: udp, Port: 123}
	byAddr := Flow{Src: ip("10.0.0.1"), Dst: ip("192.0.2.1"), Proto: udp, Port: 123}
	allowed := want{action: policy.ActionAllow, rule: "g/c/both"}
	t.Run("nil", func(t *testing.T) {
		runCases(t, p, nil, []flowCase{{"by name", byName, want{action: policy.ActionDeny}}, {"by address", byAddr, allowed}})
	})
	t.Run("resolver", func(t *testing.T) {
		runCases(t, p, res, []flowCase{{"by name", byName, allowed}, {"by address", byAddr, allowed}})
	})
}

func TestRulesOrder(t *testing.T) {
	p := loadSeed(t)
	m, err := Compile(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Policy() != p {
		t.Error("Policy() is not the compiled policy")
	}
	for _, k := range []policy.Kind{policy.KindDNAT, policy.KindNetwork, policy.KindApplication} {
		var got []*policy.Rule
		for i, r := range m.Rules(k) {
			if r.Index != i || r.Kind != k {
				t.Errorf("Rules(%v)[%d]: index %d kind %v", k, i, r.Index, r.Kind)
			}
			got = append(got, r.Policy)
		}
		want := p.RulesOf(k)
		if len(want) == 0 || !slices.Equal(got, want) {
			t.Errorf("Rules(%v) = %d rules, want the %d of RulesOf in order", k, len(got), len(want))
		}
	}
	if m.Rules(policy.KindInvalid) != nil {
		t.Error("Rules(KindInvalid) != nil")
	}
}

func TestCompileErrors(t *testing.T) {
	if _, err := Compile(nil, Options{}); err == nil {
		t.Error("Compile(nil): no error")
	}
	mk := func(r *policy.Rule, k policy.Kind) *policy.Policy {
		g := &policy.Group{Name: "g", Priority: 100}
		c := &policy.Collection{Name: "c", Kind: k, Priority: 100, Action: policy.ActionAllow, Group: g, Rules: []*policy.Rule{r}}
		r.Collection = c
		g.Collections = []*policy.Collection{c}
		return &policy.Policy{Groups: []*policy.Group{g}}
	}
	tests := []struct {
		name string
		p    *policy.Policy
		want string
	}{
		{"pattern with empty label", mk(&policy.Rule{Name: "r", TargetFQDNs: []policy.FQDNPattern{{Kind: policy.FQDNExact, Name: "a..b"}}}, policy.KindApplication), "g/c/r: targetFqdns[0]"},
		{"suffix with a leading dot", mk(&policy.Rule{Name: "r", TargetFQDNs: []policy.FQDNPattern{{Kind: policy.FQDNSuffix, Name: ".b"}}}, policy.KindApplication), "not in normal form"},
		{"unknown pattern kind", mk(&policy.Rule{Name: "r", TargetFQDNs: []policy.FQDNPattern{{Name: "a.b"}}}, policy.KindApplication), "invalid FQDN pattern kind"},
		{"reversed range", mk(&policy.Rule{Name: "r", Destination: policy.AddrSet{Ranges: []policy.AddrRange{{From: ip("10.0.0.9"), To: ip("10.0.0.1")}}}}, policy.KindNetwork), "g/c/r: destination: bad address range"},
		{"mixed-family range", mk(&policy.Rule{Name: "r", Destination: policy.AddrSet{Ranges: []policy.AddrRange{{From: ip("10.0.0.1"), To: ip("::1")}}}}, policy.KindDNAT), "bad address range"},
		{"overlapping ranges", mk(&policy.Rule{Name: "r", Destination: policy.AddrSet{Ranges: []policy.AddrRange{{From: ip("10.0.0.1"), To: ip("10.0.0.9")}, {From: ip("10.0.0.5"), To: ip("10.0.0.7")}}}}, policy.KindNetwork), "not sorted and disjoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.p, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestUnsortedPorts: a hand-built rule whose ports are not sorted still
// matches as the linear reference does.
func TestUnsortedPorts(t *testing.T) {
	g := &policy.Group{Name: "g", Priority: 100}
	c := &policy.Collection{Name: "c", Kind: policy.KindNetwork, Priority: 100, Action: policy.ActionAllow, Group: g}
	r := &policy.Rule{Name: "r", Collection: c, Protocols: tcp, Source: policy.AddrSet{Any: true}, Destination: policy.AddrSet{Any: true},
		DestinationPorts: []policy.PortRange{{Lo: 9000, Hi: 9000}, {Lo: 22, Hi: 22}, {Lo: 20, Hi: 25}, {Lo: 80, Hi: 70}}}
	c.Rules = []*policy.Rule{r}
	g.Collections = []*policy.Collection{c}
	p := &policy.Policy{Groups: []*policy.Group{g}}
	var cases []flowCase
	for _, port := range []uint16{19, 20, 22, 25, 26, 75, 9000, 9001} {
		w := want{action: policy.ActionDeny}
		if port >= 20 && port <= 25 || port == 9000 {
			w = want{action: policy.ActionAllow, rule: "g/c/r"}
		}
		cases = append(cases, flowCase{name: "port " + strconv.Itoa(int(port)), flow: Flow{Src: ip("10.0.0.1"), Dst: ip("10.0.0.2"), Proto: tcp, Port: port}, want: w})
	}
	runCases(t, p, nil, cases)
}

// TestDecideAllocs proves that Decide does not allocate, on every path:
// DNAT, network by address and by resolved name, application rules and the
// default deny.
func TestDecideAllocs(t *testing.T) {
	p := loadSeed(t)
	res := mapResolver{"ntp.ubuntu.com": {ip("185.125.190.56")}}
	m, err := Compile(p, Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	flows := []Flow{
		{Src: ip("10.42.1.10"), Dst: ip("192.0.2.50"), Proto: tcp, Port: 443, Name: "Registry-1.Docker.IO.", Scheme: policy.SchemeHTTPS},
		{Src: ip("10.42.1.10"), Dst: ip("192.0.2.50"), Proto: tcp, Port: 443, Name: "foo.hcp.eastus.azmk8s.io", Scheme: policy.SchemeHTTPS},
		{Src: ip("10.42.1.10"), Dst: ip("192.0.2.50"), Proto: tcp, Port: 443, Name: "nothing.example.org", Scheme: policy.SchemeHTTPS},
		{Src: ip("10.42.1.10"), Dst: ip("185.125.190.56"), Proto: udp, Port: 123},
		{Src: ip("::ffff:10.42.1.10"), Dst: ip("::ffff:198.18.10.5"), Proto: tcp, Port: 9000},
		{Src: ip("fd00::1"), Dst: ip("2001:db8:ac:10::99%eth0"), Proto: udp, Port: 1194},
		{Src: ip("192.0.2.9"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 80},
		{Src: ip("192.0.2.9"), Dst: ip("203.0.113.32"), Proto: tcp, Port: 443},
	}
	for _, f := range flows {
		if n := testing.AllocsPerRun(200, func() { m.Decide(f) }); n != 0 {
			t.Errorf("Decide(%+v) allocates %.1f times", f, n)
		}
	}
	// The generated benchmark policy too.
	gp, gflows := benchPolicy(t, 2000)
	gm, err := Compile(gp, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(10, func() {
		for _, f := range gflows {
			gm.Decide(f)
		}
	}); n != 0 {
		t.Errorf("Decide on the generated policy allocates %.1f times per %d flows", n, len(gflows))
	}
}

// TestConcurrentDecide runs Decide from several goroutines (for -race) and
// checks every answer against the linear reference.
func TestConcurrentDecide(t *testing.T) {
	p, flows := benchPolicy(t, 500)
	m, err := Compile(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]Decision, len(flows))
	for i, f := range flows {
		want[i] = m.DecideLinear(f)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, f := range flows {
				if d := m.Decide(f); d != want[i] {
					t.Errorf("flow %d: %+v, want %+v", i, d, want[i])
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestLayout pins the sizes the hot path is designed around: a trie node is
// one cache line, four rule checks share one.
func TestLayout(t *testing.T) {
	for _, tt := range []struct {
		name      string
		got, want uintptr
	}{
		{"trieNode", unsafe.Sizeof(trieNode{}), 64},
		{"ruleHot", unsafe.Sizeof(ruleHot{}), 32},
		{"nameSlot", unsafe.Sizeof(nameSlot{}), 64},
		{"suffixSlot", unsafe.Sizeof(suffixSlot{}), 32},
	} {
		if tt.got != tt.want {
			t.Errorf("sizeof(%s) = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}

// TestManySuffixPatterns: many "*xN.example" patterns share one parent node;
// each name must find exactly its own.
func TestManySuffixPatterns(t *testing.T) {
	var b strings.Builder
	b.WriteString("ruleCollectionGroups:\n  - name: g\n    priority: 100\n    ruleCollections:\n      - name: c\n        kind: Application\n        priority: 100\n        action: Allow\n        rules:\n")
	for i := 0; i < 300; i++ {
		fmt.Fprintf(&b, "          - {name: r%d, protocols: [Https], sourceAddresses: ['*'], targetFqdns: ['*x%d.example', '*y%d.example']}\n", i, i, i%7)
	}
	p := mustLoad(t, b.String())
	f := func(name string) Flow {
		return Flow{Src: ip("10.0.0.1"), Dst: ip("192.0.2.1"), Proto: tcp, Port: 443, Name: name, Scheme: policy.SchemeHTTPS}
	}
	allow := func(r string) want { return want{action: policy.ActionAllow, rule: "g/c/" + r} }
	runCases(t, p, nil, []flowCase{
		{"exact suffix", f("x17.example"), allow("r17")},
		{"longer label", f("abcx17.example"), allow("r17")},
		{"subdomain", f("a.X17.EXAMPLE"), allow("r17")},
		{"x117 is not x17 first", f("x117.example"), allow("r117")},
		{"shared y suffix goes to the first rule", f("zy3.example"), allow("r3")},
		{"no such suffix", f("x300.example"), want{action: policy.ActionDeny}},
		{"suffix of another label position", f("x17.a.example"), want{action: policy.ActionDeny}},
	})
}

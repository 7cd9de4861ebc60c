package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const minimal = `name: t
ruleCollectionGroups:
  - name: g
    priority: 200
    ruleCollections:
      - name: c
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: r
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [10.0.0.1]
            destinationPorts: ['443']
`

func TestLoadSeedExample(t *testing.T) {
	p, err := LoadFile("../../examples/aks-egress.yaml", Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range []Kind{KindDNAT, KindNetwork, KindApplication} {
		for _, r := range p.RulesOf(k) {
			got = append(got, k.String()+" "+r.Path())
		}
	}
	want := []string{
		"DNAT DefaultDnatRuleCollectionGroup/exampleset/inboundrule",
		"DNAT DefaultDnatRuleCollectionGroup/apiserver/authorized",
		"Network DefaultNetworkRuleCollectionGroup/aksfwnr/apiudp",
		"Network DefaultNetworkRuleCollectionGroup/aksfwnr/apitcp",
		"Network DefaultNetworkRuleCollectionGroup/aksfwnr/time",
		"Application DefaultApplicationRuleCollectionGroup/aksfwar/fqdn",
		"Application DefaultApplicationRuleCollectionGroup/aksfwarweb/storage",
		"Application DefaultApplicationRuleCollectionGroup/aksfwarweb/website",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rule order:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	apitcp := p.RulesOf(KindNetwork)[1]
	if !apitcp.Destination.Contains(netip.MustParseAddr("198.18.10.5")) || apitcp.Destination.Contains(netip.MustParseAddr("198.18.20.5")) {
		t.Errorf("AzureCloud.eastus not resolved from service tags: %s", apitcp.Destination.String())
	}
	fqdn := p.RulesOf(KindApplication)[0]
	var pats []string
	for _, pt := range fqdn.TargetFQDNs {
		pats = append(pats, pt.String())
	}
	if !strings.Contains(strings.Join(pats, " "), "*.hcp.eastus.azmk8s.io") {
		t.Errorf("AzureKubernetesService tag not expanded with location: %v", pats)
	}
}

var topLevelGroups = regexp.MustCompile(`(?m)^ruleCollectionGroups:`)

// TestExamplesValidate keeps every example and documented policy loadable
// (docs that cannot rot).
func TestExamplesValidate(t *testing.T) {
	var files []string
	for _, glob := range []string{"../../examples/*.yaml", "../../docs/*.yaml", "../../examples/*/*.yaml"} {
		m, _ := filepath.Glob(glob)
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatal("no example policies found")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !topLevelGroups.Match(data) {
			continue // not a policy (e.g. a daemon config, the OpenAPI file)
		}
		if _, err := LoadFile(f, Options{}); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each a substring of one error line, in order
	}{
		{"unknown field", strings.Replace(minimal, "            protocols: [TCP]\n", "            protocols: [TCP]\n            destinationPort: ['1']\n", 1),
			[]string{`t.yaml:13:13: unknown field "destinationPort" in a rule (did you mean "destinationPorts"?)`}},
		{"bad cidr", strings.Replace(minimal, "[10.0.0.1]", "[10.0.0.0/33]", 1),
			[]string{`t.yaml:14:36: network rule "r": bad CIDR "10.0.0.0/33"`}},
		{"port out of range", strings.Replace(minimal, "['443']", "['65536']", 1),
			[]string{`t.yaml:15:32: network rule "r": port 65536 out of range 1-65535`}},
		{"bad port range", strings.Replace(minimal, "['443']", "['2000-1000']", 1),
			[]string{`t.yaml:15:32: network rule "r": bad port range "2000-1000": start is after end`}},
		{"group priority", strings.Replace(minimal, "priority: 200", "priority: 99", 1),
			[]string{`t.yaml:4:15: rule collection group "g": priority 99 is outside 100-65000`}},
		{"collection priority", strings.Replace(minimal, "priority: 100", "priority: 65001", 1),
			[]string{`t.yaml:8:19: rule collection "c": priority 65001 is outside 100-65000`}},
		{"wildcard network fqdn", strings.Replace(minimal, "destinationAddresses: [10.0.0.1]", "destinationFqdns: ['*.example.com']", 1),
			[]string{`t.yaml:14:32: network rule "r": wildcard FQDN "*.example.com" is not allowed in a network rule`}},
		{"unknown service tag", strings.Replace(minimal, "[10.0.0.1]", "[AzureCloud.mars]", 1),
			[]string{`t.yaml:14:36: network rule "r": unknown service tag "AzureCloud.mars"`}},
		{"bad kind", strings.Replace(minimal, "kind: Network", "kind: Netwrok", 1),
			[]string{`t.yaml:7:15: rule collection "c": kind must be DNAT, Network or Application, not "Netwrok"`}},
		{"bad action", strings.Replace(minimal, "action: Allow", "action: Permit", 1),
			[]string{`t.yaml:9:17: rule collection "c": action must be Allow, Deny or DNAT, not "Permit"`}},
		{"duplicate rule", strings.Replace(minimal, "            destinationPorts: ['443']\n", "            destinationPorts: ['443']\n          - name: R\n            protocols: [UDP]\n            sourceAddresses: ['*']\n            destinationAddresses: ['*']\n            destinationPorts: ['53']\n", 1),
			[]string{`t.yaml:16:19: duplicate rule name "R" in collection "c" (also rules[0])`}},
		{"dnat without translated address", `ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - name: c
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - name: in
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [203.0.113.32]
            destinationPorts: ['80']
            translatedPort: '8080'
`, []string{`t.yaml:10:13: DNAT rule "in": needs translatedAddress or translatedFqdn`}},
		{"app rule bad wildcard", `ruleCollectionGroups:
  - name: g
    priority: 300
    ruleCollections:
      - name: c
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: a
            protocols: ['Https:443', 'Ftp:21']
            sourceAddresses: ['*']
            targetFqdns: ['foo.*.com', 'ok.com']
            fqdnTags: [NoSuchTag]
`, []string{
			`t.yaml:11:38: application rule "a": protocol must be Http, Https or Mssql`,
			`t.yaml:13:27: application rule "a": bad FQDN "foo.*.com"`,
			`t.yaml:14:24: application rule "a": unknown FQDN tag "NoSuchTag"`,
		}},
		{"wrong shape", strings.Replace(minimal, "protocols: [TCP]", "protocols: TCP", 1),
			[]string{`t.yaml:12:24: protocols: expected a list, found "TCP"`}},
		{"syntax error", "ruleCollectionGroups: [\n", []string{`t.yaml:`, `YAML syntax`}},
		{"empty", "", []string{`t.yaml:1:1: empty policy file`}},
		{"field not allowed for kind", strings.Replace(minimal, "            destinationPorts: ['443']\n", "            destinationPorts: ['443']\n            targetFqdns: [a.com]\n", 1),
			[]string{`t.yaml:16:13: field targetFqdns is not allowed in a Network rule`}},
		{"duplicate group priority", minimal + "  - name: g2\n    priority: 200\n",
			[]string{`t.yaml:17:15: rule collection group "g2": priority 200 is already used by "g"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load("t.yaml", []byte(tt.yaml), Options{})
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList", err)
			}
			text := err.Error()
			if len(tt.want) > 1 && tt.name != "syntax error" && len(list) != len(tt.want) {
				t.Errorf("got %d errors, want %d:\n%s", len(list), len(tt.want), text)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("missing %q in:\n%s", w, text)
				}
			}
		})
	}
}

func TestEveryProblemReported(t *testing.T) {
	y := strings.NewReplacer("[10.0.0.1]", "[10.0.0.300]", "['443']", "['0']", "priority: 200", "priority: 7").Replace(minimal)
	y = strings.Replace(y, "            protocols: [TCP]\n", "            protocols: [TCP]\n            bogus: 1\n", 1)
	_, err := Load("t.yaml", []byte(y), Options{})
	if err == nil {
		t.Fatal("no error")
	}
	if n := len(err.(ErrorList)); n != 4 {
		t.Fatalf("got %d errors, want 4 (priority, unknown field, bad IP, bad port):\n%v", n, err)
	}
}

func TestFQDNPatterns(t *testing.T) {
	tests := []struct {
		pat   string
		name  string
		match bool
	}{
		{"*", "anything.example", true},
		{"*", "", false},
		{"*.contoso.com", "a.contoso.com", true},
		{"*.contoso.com", "a.b.contoso.com", true},
		{"*.contoso.com", "contoso.com", false},
		{"*.contoso.com", "xcontoso.com", false},
		{"*contoso.com", "contoso.com", true},
		{"*contoso.com", "xcontoso.com", true},
		{"*contoso.com", "a.contoso.com", true},
		{"*contoso.com", "contoso.co", false},
		{"ghcr.io", "GHCR.IO.", true},
		{"ghcr.io", "ghcr.io", true},
		{"ghcr.io", "x.ghcr.io", false},
		{"*.Docker.IO", "registry-1.docker.io.", true},
	}
	for _, tt := range tests {
		p, err := ParseFQDNPattern(tt.pat)
		if err != nil {
			t.Fatalf("%q: %v", tt.pat, err)
		}
		if got := p.Match(tt.name); got != tt.match {
			t.Errorf("%q matching %q = %v, want %v", tt.pat, tt.name, got, tt.match)
		}
	}
	for _, bad := range []string{"foo.*", "a.*.b", "**.a", "*.", "", "a..b", "x_y!.com"} {
		if _, err := ParseFQDNPattern(bad); err == nil {
			t.Errorf("%q accepted, want error", bad)
		}
	}
}

func TestAddrSet(t *testing.T) {
	var b AddrSetBuilder
	for _, tok := range []string{"10.0.0.1-10.0.0.9", "10.0.0.10", "192.168.0.0/16", "2001:db8::/32", "::ffff:1.2.3.4"} {
		if _, err := ParseAddrToken(tok, &b); err != nil {
			t.Fatal(err)
		}
	}
	s := b.Build()
	if got := s.String(); got != "1.2.3.4,10.0.0.1,10.0.0.2/31,10.0.0.4/30,10.0.0.8/31,10.0.0.10,192.168.0.0/16,2001:db8::/32" {
		t.Errorf("String() = %s", got)
	}
	// 10.0.0.1-9 and .10 are adjacent: merged into one range.
	if len(s.Ranges) != 4 {
		t.Errorf("ranges = %v, want 4 merged ranges", s.Ranges)
	}
	for addr, want := range map[string]bool{
		"10.0.0.1": true, "10.0.0.10": true, "10.0.0.11": false, "10.0.0.0": false,
		"192.168.255.255": true, "2001:db8:ffff::1": true, "2001:db9::": false, "1.2.3.4": true,
		"::ffff:10.0.0.5": true,
	} {
		if got := s.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", addr, got, want)
		}
	}
	var any AddrSetBuilder
	ParseAddrToken("*", &any)
	a := any.Build()
	if !a.Contains(netip.MustParseAddr("::1")) || !a.Contains(netip.MustParseAddr("8.8.8.8")) {
		t.Error("* must contain everything")
	}
	for _, bad := range []string{"10.0.0.300", "10.0.0.9-10.0.0.1", "10.0.0.1-::1", "1.2.3.4/40", "fe80::1%eth0", "a b"} {
		var bb AddrSetBuilder
		if _, err := ParseAddrToken(bad, &bb); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPorts(t *testing.T) {
	for s, want := range map[string]PortRange{"80": {80, 80}, "1000-2000": {1000, 2000}, "*": {1, 65535}, " 443 ": {443, 443}} {
		got, err := ParsePortRange(s)
		if err != nil || got != want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, bad := range []string{"0", "65536", "-1", "a", "10-", "5-4", ""} {
		if _, err := ParsePortRange(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got := MergePorts([]PortRange{{150, 300}, {80, 80}, {81, 90}, {100, 200}, {5, 4}}); len(got) != 2 || got[0] != (PortRange{80, 90}) || got[1] != (PortRange{100, 300}) {
		t.Errorf("MergePorts = %v", got)
	}
}

func TestServiceTagOverride(t *testing.T) {
	y := strings.Replace(minimal, "[10.0.0.1]", "[MyTag, AzureCloud.eastus]", 1) + "serviceTagDefinitions:\n  MyTag: [172.16.0.0/12]\n"
	p, err := Load("t.yaml", []byte(y), Options{ServiceTagsFile: "../../examples/service-tags.json"})
	if err != nil {
		t.Fatal(err)
	}
	d := p.RulesOf(KindNetwork)[0].Destination
	if !d.Contains(netip.MustParseAddr("172.20.0.1")) || !d.Contains(netip.MustParseAddr("198.18.10.1")) {
		t.Errorf("destination = %s", d.String())
	}
}

func TestIPGroupsAndFQDNTagOverride(t *testing.T) {
	y := `ipGroups:
  cluster: [10.42.1.0/24, 10.42.9.1-10.42.9.3]
fqdnTags:
  AzureKubernetesService: [only.example.com]
ruleCollectionGroups:
  - name: g
    priority: 300
    ruleCollections:
      - name: c
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: a
            protocols: [Https]
            sourceIpGroups: [cluster]
            fqdnTags: [azurekubernetesservice]
`
	p, err := Load("t.yaml", []byte(y), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := p.RulesOf(KindApplication)[0]
	if len(r.TargetFQDNs) != 1 || r.TargetFQDNs[0].Name != "only.example.com" {
		t.Errorf("override not applied: %v", r.TargetFQDNs)
	}
	if !r.Source.Contains(netip.MustParseAddr("10.42.9.2")) || r.Source.Contains(netip.MustParseAddr("10.42.9.4")) {
		t.Errorf("IP group not resolved: %s", r.Source.String())
	}
	if len(r.AppProtocols) != 1 || r.AppProtocols[0] != (AppProtocol{SchemeHTTPS, 443}) {
		t.Errorf("default https port: %v", r.AppProtocols)
	}
}

func TestDNATOtherFamilySourceWarns(t *testing.T) {
	src := `name: p
ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - name: c
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - name: r
            protocols: [TCP]
            sourceAddresses: [198.51.100.7/32, "2001:db8::7/128", "2001:db8::8"]
            destinationAddresses: [203.0.113.32]
            destinationPorts: ['443']
            translatedAddress: 10.42.1.200
            translatedPort: '443'
`
	p, err := Load("p.yaml", []byte(src), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 2 {
		t.Fatalf("warnings = %v, want 2", p.Warnings)
	}
	got := p.Warnings[0].Error()
	if !strings.HasPrefix(got, "p.yaml:13:") || !strings.Contains(got, "2001:db8::7/128 can never match") {
		t.Errorf("warning = %q", got)
	}
}

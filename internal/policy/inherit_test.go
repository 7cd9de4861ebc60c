package policy_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

const orgBase = `name: org-base
location: westeurope
ipGroups:
  clusters: [10.42.0.0/16]
threatIntel:
  mode: Alert
  allowlist: {ipAddresses: [198.51.100.1]}
dns:
  enableProxy: true
  servers: [10.0.0.53]
ruleCollectionGroups:
  - name: org-guardrails
    priority: 60000
    ruleCollections:
      - name: no-smtp
        kind: Network
        priority: 100
        action: Deny
        rules:
          - name: smtp
            protocols: [TCP]
            sourceIpGroups: [clusters]
            destinationAddresses: ['*']
            destinationPorts: ['25']
      - name: registries
        kind: Application
        priority: 200
        action: Allow
        rules:
          - name: mcr
            protocols: ['Https:443']
            sourceIpGroups: [clusters]
            targetFqdns: [mcr.microsoft.com]
          - name: no-gambling
            protocols: ['Https:443']
            sourceIpGroups: [clusters]
            targetFqdns: ['*.casino.example']
      - name: org-inbound
        kind: DNAT
        priority: 300
        action: DNAT
        rules:
          - name: ssh
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [203.0.113.1]
            destinationPorts: ['22']
            translatedAddress: 10.42.0.4
            translatedPort: '22'
`

const cluster = `name: cluster-a
basePolicy: base.yaml
threatIntel:
  mode: Deny
dns:
  servers: [10.1.0.53]
ruleCollectionGroups:
  - name: team
    priority: 100
    ruleCollections:
      - name: mail
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: smtp-relay
            protocols: [TCP]
            sourceIpGroups: [clusters]
            destinationAddresses: ['*']
            destinationPorts: ['25']
      - name: web
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: casino
            protocols: ['Https:443']
            sourceAddresses: [10.42.1.0/24]
            targetFqdns: [www.casino.example]
`

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestInheritance checks Azure's documented semantics for a child policy:
// the base's rule collection groups first whatever their priorities, no
// DNAT inherited, threat intelligence only stricter, DNS overridable.
func TestInheritance(t *testing.T) {
	dir := writeFiles(t, map[string]string{"base.yaml": orgBase, "cluster.yaml": cluster})
	p, err := policy.LoadFile(filepath.Join(dir, "cluster.yaml"), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, g := range p.Groups {
		order = append(order, g.Name)
		if g.Inherited != (g.Name == "org-guardrails") {
			t.Errorf("group %s inherited = %v", g.Name, g.Inherited)
		}
	}
	if strings.Join(order, ",") != "org-guardrails,team" {
		t.Errorf("groups = %v, want the base's first although its priority is 60000", order)
	}
	for _, c := range p.Groups[0].Collections {
		if c.Kind == policy.KindDNAT {
			t.Errorf("DNAT collection %s inherited", c.Name)
		}
	}
	if len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0].Msg, "org-guardrails/org-inbound of the base policy \"org-base\" is not inherited") ||
		p.Warnings[0].Pos.File != filepath.Join(dir, "base.yaml") {
		t.Errorf("warnings = %v", p.Warnings)
	}
	if p.Location != "westeurope" || p.Name != "cluster-a" || p.Base == nil || p.Base.Name != "org-base" {
		t.Errorf("location %q name %q base %v", p.Location, p.Name, p.Base)
	}
	if p.ThreatIntel.Mode != policy.ActionDeny || !p.ThreatIntel.AllowAddresses.Contains(netip.MustParseAddr("198.51.100.1")) {
		t.Errorf("threat intel = %+v", p.ThreatIntel)
	}
	if !p.DNS.EnableProxy || len(p.DNS.Servers) != 1 || p.DNS.Servers[0].String() != "10.1.0.53:53" {
		t.Errorf("dns = %+v (want the base's proxy setting and the child's servers)", p.DNS)
	}

	// Decisions, asked of the one matcher.
	m, err := match.Compile(p, match.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		flow   match.Flow
		action policy.Action
		rule   string
	}{
		// The base's Deny (priority 60000) comes before the child's Allow (100).
		{"base deny before child allow", match.Flow{Src: netip.MustParseAddr("10.42.1.5"), Dst: netip.MustParseAddr("192.0.2.25"), Proto: policy.ProtoTCP, Port: 25}, policy.ActionDeny, "smtp"},
		{"base application rule", match.Flow{Src: netip.MustParseAddr("10.42.1.5"), Dst: netip.MustParseAddr("192.0.2.10"), Proto: policy.ProtoTCP, Port: 443, Scheme: policy.SchemeHTTPS, Name: "mcr.microsoft.com"}, policy.ActionAllow, "mcr"},
		{"child allow after the base's rules", match.Flow{Src: netip.MustParseAddr("10.42.1.5"), Dst: netip.MustParseAddr("192.0.2.80"), Proto: policy.ProtoTCP, Port: 443, Scheme: policy.SchemeHTTPS, Name: "www.casino.example"}, policy.ActionAllow, "no-gambling"},
		{"base DNAT is not inherited", match.Flow{Src: netip.MustParseAddr("198.51.100.9"), Dst: netip.MustParseAddr("203.0.113.1"), Proto: policy.ProtoTCP, Port: 22}, policy.ActionDeny, ""},
	}
	for _, tt := range tests {
		d := m.Decide(tt.flow)
		name := ""
		if d.Rule != nil {
			name = d.Rule.Name
		}
		if d.Action != tt.action || name != tt.rule {
			t.Errorf("%s: %s by %q, want %s by %q", tt.name, d.Action, name, tt.action, tt.rule)
		}
	}
}

func TestInheritanceInline(t *testing.T) {
	base := strings.ReplaceAll(orgBase, "\n", "\n  ")
	child := "name: cluster-b\nbasePolicy:\n  " + base + "\nruleCollectionGroups: []\n"
	p, err := policy.Load("inline.yaml", []byte(child), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Groups) != 1 || !p.Groups[0].Inherited || p.Groups[0].Policy != "org-base" {
		t.Fatalf("groups = %+v", p.Groups)
	}
	// An error in the inline base names its line in the child's file and
	// its path under basePolicy.
	bad := strings.Replace(child, "destinationPorts: ['25']", "destinationPorts: ['x25']", 1)
	_, err = policy.Load("inline.yaml", []byte(bad), policy.Options{})
	el, ok := err.(policy.ErrorList)
	if !ok || len(el) != 1 || el[0].Pos.Line != 26 || !strings.HasPrefix(el[0].Path, "basePolicy.ruleCollectionGroups[0].ruleCollections[0].rules[0].destinationPorts[0]") {
		t.Errorf("err = %v (%#v)", err, el)
	}
}

func TestInheritanceErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"weaker threat intelligence", map[string]string{"base.yaml": orgBase, "c.yaml": "name: c\nbasePolicy: base.yaml\nthreatIntel: {mode: 'Off'}\n"},
			[]string{"c.yaml:3:21: threatIntel.mode Off is weaker than the base policy \"org-base\"'s Alert"}},
		{"redefined IP group", map[string]string{"base.yaml": orgBase, "c.yaml": "name: c\nbasePolicy: base.yaml\nipGroups:\n  clusters: [10.0.0.0/8]\n"},
			[]string{"c.yaml:4:3: IP group \"clusters\" is defined by the base policy \"org-base\""}},
		{"redefined FQDN tag", map[string]string{"base.yaml": orgBase, "c.yaml": "name: c\nbasePolicy: base.yaml\nfqdnTags:\n  AzureKubernetesService: ['*']\n"},
			[]string{"c.yaml:4:3: FQDN tag \"AzureKubernetesService\" is already defined for the base policy"}},
		{"same group name", map[string]string{"base.yaml": orgBase, "c.yaml": strings.Replace(strings.Replace(cluster, "basePolicy: base.yaml", "basePolicy: base.yaml", 1), "- name: team", "- name: org-guardrails", 1)},
			[]string{"c.yaml:8:11: rule collection group \"org-guardrails\" is also a group of the base policy \"org-base\""}},
		{"missing base", map[string]string{"c.yaml": "name: c\nbasePolicy: nope.yaml\n"},
			[]string{"c.yaml:2:13: basePolicy: stat nope.yaml: no such file or directory"}},
		{"cycle", map[string]string{"a.yaml": "name: a\nbasePolicy: c.yaml\n", "c.yaml": "name: c\nbasePolicy: a.yaml\n"},
			[]string{"a.yaml:2:13: basePolicy c.yaml: the chain of base policies comes back to", "c.yaml"}},
		{"error in the base file", map[string]string{"base.yaml": strings.Replace(orgBase, "priority: 60000", "priority: 70000", 1), "c.yaml": "name: c\nbasePolicy: base.yaml\n"},
			[]string{"base.yaml:13:15: rule collection group \"org-guardrails\": priority 70000 is outside 100-65000"}},
		{"not a path or a policy", map[string]string{"c.yaml": "name: c\nbasePolicy: [a, b]\n"},
			[]string{"c.yaml:2:13: basePolicy: expected the base policy's file (a path) or the base policy itself (a mapping)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, tt.files)
			_, err := policy.LoadFile(filepath.Join(dir, "c.yaml"), policy.Options{})
			if err == nil {
				t.Fatal("no error")
			}
			got := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "")
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("error:\n%s\nwant it to contain %q", got, w)
				}
			}
		})
	}
}

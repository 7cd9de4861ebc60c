package controller

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

const examplePolicy = "../../examples/aks-egress.yaml"

var exampleOpts = policy.Options{ServiceTagsFile: "../../examples/service-tags.json"}

// labResolver answers destinationFqdns from the lab's name table.
type labResolver struct{}

func (labResolver) Resolved(name string, a netip.Addr) bool {
	for _, n := range lab.Names {
		if strings.EqualFold(n.Name, name) && (n.V4 == a || n.V6 == a) {
			return true
		}
	}
	return false
}

// flows is a grid of flows over the lab's addresses, names and the ports
// the example policy uses, in both directions and all schemes.
func flows() []match.Flow {
	srcs := []string{"10.42.1.10", "10.42.1.100", "10.42.7.7", "198.51.100.7", "198.51.100.8", "2001:db8:42:1::10", "2001:db8:c11e::7", "2001:db8:c11e::8"}
	var dsts []netip.Addr
	var names []string
	for _, n := range lab.Names {
		dsts = append(dsts, n.V4, n.V6)
		names = append(names, n.Name)
	}
	names = append(names, "foo.blob.core.windows.net", "registry.hub.docker.com", "x.hcp.eastus.azmk8s.io", "management.azure.com", "evil.example.com")
	dsts = append(dsts, netip.MustParseAddr("203.0.113.32"), netip.MustParseAddr("2001:db8:cafe::32"), netip.MustParseAddr("10.42.1.200"))
	ports := []uint16{22, 80, 123, 443, 1194, 9000}
	tcp, _ := policy.ParseProto("TCP")
	udp, _ := policy.ParseProto("UDP")
	var out []match.Flow
	for _, s := range srcs {
		src := netip.MustParseAddr(s)
		for _, d := range dsts {
			for _, p := range ports {
				out = append(out, match.Flow{Src: src, Dst: d, Proto: tcp, Port: p}, match.Flow{Src: src, Dst: d, Proto: udp, Port: p})
			}
		}
		for _, n := range names {
			for _, sc := range []struct {
				s policy.Scheme
				p uint16
			}{{policy.SchemeHTTP, 80}, {policy.SchemeHTTPS, 443}, {policy.SchemeHTTPS, 8443}} {
				out = append(out, match.Flow{Src: src, Proto: tcp, Port: sc.p, Name: n, Scheme: sc.s})
			}
		}
	}
	return out
}

// outcome is what must survive the round trip: the decision and which
// collection and rule made it (group names change when groups become
// RuleCollectionGroups).
func outcome(d match.Decision) string {
	s := fmt.Sprintf("%s %s %s %v %d %s", d.Action, d.Kind, d.Reason, d.TranslatedAddr, d.TranslatedPort, d.TranslatedFQDN)
	if d.Rule != nil {
		s += " " + d.Rule.Collection.Name + "/" + d.Rule.Name
	}
	return s
}

func decide(t *testing.T, p *policy.Policy) []string {
	t.Helper()
	m, err := match.Compile(p, match.Options{Resolver: labResolver{}})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range flows() {
		out = append(out, outcome(m.Decide(f)))
	}
	return out
}

// TestExportRoundTrip: a policy exported as objects (through their YAML)
// and composed back by the controller decides every flow of the grid as
// the original does.
func TestExportRoundTrip(t *testing.T) {
	orig, err := policy.LoadFile(examplePolicy, exampleOpts)
	if err != nil {
		t.Fatal(err)
	}
	want := decide(t, orig)
	data, err := os.ReadFile(examplePolicy)
	if err != nil {
		t.Fatal(err)
	}
	wire, _, err := policy.DecodeYAML(examplePolicy, data)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"", "platform"} {
		t.Run("namespace="+ns, func(t *testing.T) {
			ex, err := Export(wire, ExportOptions{GroupsNamespace: ns})
			if err != nil {
				t.Fatal(err)
			}
			stream, err := ex.YAML()
			if err != nil {
				t.Fatal(err)
			}
			fp, groups := decodeStream(t, stream)
			if ns == "" && len(groups) != 0 || ns != "" && len(groups) != len(wire.RuleCollectionGroups) {
				t.Fatalf("export made %d RuleCollectionGroups", len(groups))
			}
			comp := Compose(Inputs{Policy: fp, Groups: groups, Options: exampleOpts})
			if !comp.Policy.Accepted {
				t.Fatalf("composed policy not accepted: %s", comp.Policy.Message())
			}
			for k, v := range comp.Groups {
				if !v.Accepted {
					t.Errorf("group %s not accepted: %s", k, v.Message())
				}
			}
			back, err := policy.Load("composed.yaml", comp.YAML, policy.Options{ServiceTagsFile: exampleOpts.ServiceTagsFile})
			if err != nil {
				t.Fatalf("composed policy does not load: %v\n%s", err, comp.YAML)
			}
			got := decide(t, back)
			diffs := 0
			for i, f := range flows() {
				if got[i] != want[i] {
					diffs++
					if diffs < 10 {
						t.Errorf("flow %+v: original %q, round trip %q", f, want[i], got[i])
					}
				}
			}
			allows := 0
			for _, w := range want {
				if strings.HasPrefix(w, "Allow") || strings.HasPrefix(w, "DNAT") {
					allows++
				}
			}
			if allows == 0 {
				t.Fatal("the flow grid allows nothing: the comparison proves nothing")
			}
			t.Logf("%d flows, %d allowed or translated, %d differences", len(want), allows, diffs)
		})
	}
}

func decodeStream(t *testing.T, stream []byte) (*v1.FirewallPolicy, []v1.RuleCollectionGroup) {
	t.Helper()
	var fp *v1.FirewallPolicy
	var groups []v1.RuleCollectionGroup
	for _, doc := range strings.Split(string(stream), "\n---\n") {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatal(err)
		}
		switch tm.Kind {
		case "FirewallPolicy":
			fp = &v1.FirewallPolicy{}
			if err := yaml.UnmarshalStrict([]byte(doc), fp); err != nil {
				t.Fatal(err)
			}
		case "RuleCollectionGroup":
			var g v1.RuleCollectionGroup
			if err := yaml.UnmarshalStrict([]byte(doc), &g); err != nil {
				t.Fatal(err)
			}
			groups = append(groups, g)
		default:
			t.Fatalf("unexpected kind %q in\n%s", tm.Kind, doc)
		}
	}
	if fp == nil {
		t.Fatal("no FirewallPolicy in the export")
	}
	return fp, groups
}

func i32(v int32) *int32 { return &v }

func appGroup(ns, name string, prio int32, rules ...v1.Rule) v1.RuleCollectionGroup {
	return v1.RuleCollectionGroup{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
		Spec: v1.TeamRuleCollectionGroupSpec{FirewallPolicy: "default", RuleCollectionGroupSpec: v1.RuleCollectionGroupSpec{
			Priority: prio,
			RuleCollections: []v1.RuleCollection{{
				Name: "web", Kind: "Application", Priority: 100, Action: "Allow", Rules: rules,
			}},
		}},
	}
}

func selRule(name, ns string, lbl map[string]string, fqdns ...string) v1.Rule {
	return v1.Rule{Name: name, Protocols: []string{"Https:443"}, TargetFQDNs: fqdns,
		SourceSelector: &v1.SourceSelector{Namespace: ns, PodSelector: &metav1.LabelSelector{MatchLabels: lbl}}}
}

func pod(ns, name, ip string, lbl map[string]string) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func TestGuardrails(t *testing.T) {
	web := map[string]string{"app": "web"}
	tests := []struct {
		name   string
		teams  *v1.TeamGuardrails
		group  v1.RuleCollectionGroup
		fields []string // expected error fields; none: accepted
	}{
		{"ok", nil, appGroup("team-a", "g", 1000, selRule("r", "", web, "ghcr.io")), nil},
		{"own namespace named", nil, appGroup("team-a", "g", 1000, selRule("r", "team-a", web, "ghcr.io")), nil},
		{"below min priority", nil, appGroup("team-a", "g", 999, selRule("r", "", web, "ghcr.io")), []string{"spec.priority"}},
		{"custom range", &v1.TeamGuardrails{MinPriority: i32(2000), MaxPriority: i32(3000)}, appGroup("team-a", "g", 3001, selRule("r", "", web, "ghcr.io")), []string{"spec.priority"}},
		{"foreign namespace", nil, appGroup("team-a", "g", 1000, selRule("r", "team-b", web, "ghcr.io")), []string{"spec.ruleCollections[0].rules[0].sourceSelector.namespace"}},
		{"addresses", nil, appGroup("team-a", "g", 1000, v1.Rule{Name: "r", Protocols: []string{"Https:443"}, TargetFQDNs: []string{"ghcr.io"}, SourceAddresses: []string{"*"}}), []string{"spec.ruleCollections[0].rules[0].sourceAddresses"}},
		{"addresses allowed", &v1.TeamGuardrails{AnySource: true}, appGroup("team-a", "g", 1000, v1.Rule{Name: "r", Protocols: []string{"Https:443"}, TargetFQDNs: []string{"ghcr.io"}, SourceAddresses: []string{"*"}}), nil},
		{"network rule", nil, func() v1.RuleCollectionGroup {
			g := appGroup("team-a", "g", 1000)
			g.Spec.RuleCollections[0] = v1.RuleCollection{Name: "net", Kind: "Network", Priority: 100, Action: "Allow", Rules: []v1.Rule{{
				Name: "r", Protocols: []string{"TCP"}, DestinationAddresses: []string{"*"}, DestinationPorts: []string{"22"},
				SourceSelector: &v1.SourceSelector{PodSelector: &metav1.LabelSelector{MatchLabels: web}}}}}
			return g
		}(), []string{"spec.ruleCollections[0].kind"}},
		{"deny not allowed", &v1.TeamGuardrails{AllowedActions: []v1.CollectionAction{"Allow"}}, func() v1.RuleCollectionGroup {
			g := appGroup("team-a", "g", 1000, selRule("r", "", web, "ghcr.io"))
			g.Spec.RuleCollections[0].Action = "Deny"
			return g
		}(), []string{"spec.ruleCollections[0].action"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1.FirewallPolicySpec{Teams: tt.teams}}
			comp := Compose(Inputs{Policy: fp, Groups: []v1.RuleCollectionGroup{tt.group},
				Pods: []corev1.Pod{pod("team-a", "p", "10.42.1.10", web)}})
			v := comp.Groups[types.NamespacedName{Namespace: "team-a", Name: "g"}]
			var got []string
			for _, e := range v.Errors {
				got = append(got, e.Field)
			}
			if !reflect.DeepEqual(got, tt.fields) {
				t.Fatalf("error fields %q, want %q (%s)", got, tt.fields, v.Message())
			}
			if v.Accepted != (len(tt.fields) == 0) {
				t.Fatalf("accepted=%v with errors %q", v.Accepted, got)
			}
			if len(tt.fields) > 0 && v.Reason != v1.ReasonGuardrail {
				t.Fatalf("reason %q", v.Reason)
			}
		})
	}
}

// TestComposeValidatorErrors: the validator's error in a team group is
// reported at the group's own field path, and the other groups still go in.
func TestComposeValidatorErrors(t *testing.T) {
	web := map[string]string{"app": "web"}
	good := appGroup("team-a", "good", 1000, selRule("r", "", web, "ghcr.io"))
	bad := appGroup("team-b", "bad", 1100, selRule("first", "", web, "ghcr.io"), selRule("second", "", web, "ghcr.io", "exa*mple.org"))
	dup := appGroup("team-c", "dup", 1000, selRule("r", "", web, "ghcr.io"))
	fp := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	comp := Compose(Inputs{Policy: fp, Groups: []v1.RuleCollectionGroup{dup, bad, good},
		Pods: []corev1.Pod{pod("team-a", "p", "10.42.1.10", web), pod("team-b", "q", "10.42.1.11", web)}})
	if v := comp.Groups[types.NamespacedName{Namespace: "team-a", Name: "good"}]; !v.Accepted {
		t.Fatalf("good group: %s", v.Message())
	}
	v := comp.Groups[types.NamespacedName{Namespace: "team-b", Name: "bad"}]
	if v.Accepted || len(v.Errors) != 1 || v.Errors[0].Field != "spec.ruleCollections[0].rules[1].targetFqdns[1]" {
		t.Fatalf("bad group: %+v", v)
	}
	// Same priority as team-a/good, which sorts first: the validator's
	// duplicate-priority error lands on team-c's spec.priority.
	v = comp.Groups[types.NamespacedName{Namespace: "team-c", Name: "dup"}]
	if v.Accepted || len(v.Errors) != 1 || v.Errors[0].Field != "spec.priority" {
		t.Fatalf("dup group: %+v", v)
	}
	if !strings.Contains(string(comp.YAML), "team-a/good") || strings.Contains(string(comp.YAML), "team-b/bad") {
		t.Fatalf("composed policy:\n%s", comp.YAML)
	}
}

func TestComposeInvalidFirewallPolicy(t *testing.T) {
	fp := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1.FirewallPolicySpec{
		IPGroups: map[string][]string{"x": {"10.0.0.300"}},
		RuleCollectionGroups: []v1.RuleCollectionGroupSpecNamed{{Name: "p", RuleCollectionGroupSpec: v1.RuleCollectionGroupSpec{
			Priority: 100, RuleCollections: []v1.RuleCollection{{Name: "n", Kind: "Network", Priority: 100, Action: "Allow", Rules: []v1.Rule{
				{Name: "ok", Protocols: []string{"TCP"}, SourceAddresses: []string{"*"}, DestinationAddresses: []string{"*"}, DestinationPorts: []string{"80"}},
				{Name: "bad", Protocols: []string{"TCP"}, SourceAddresses: []string{"*"}, DestinationAddresses: []string{"*"}, DestinationPorts: []string{"70000"}},
			}}}}}},
	}}
	comp := Compose(Inputs{Policy: fp})
	if comp.Policy.Accepted || comp.File != nil || comp.YAML != nil {
		t.Fatal("an invalid FirewallPolicy was composed")
	}
	var fields []string
	for _, e := range comp.Policy.Errors {
		fields = append(fields, e.Field)
	}
	want := []string{"spec.ipGroups.x[0]", "spec.ruleCollectionGroups[0].ruleCollections[0].rules[1].destinationPorts[0]"}
	for _, w := range want {
		if !strings.Contains(strings.Join(fields, " "), w) {
			t.Errorf("no error at %s in %q (%s)", w, fields, comp.Policy.Message())
		}
	}
}

// TestSourceSelector: pods' addresses (from Pod status and EndpointSlices)
// replace the selector; terminating and finished pods drop out; a rule
// with no pod left is left out of the policy.
func TestSourceSelector(t *testing.T) {
	web := map[string]string{"app": "web"}
	g := appGroup("team-a", "g", 1000, selRule("r", "", web, "ghcr.io"))
	fp := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	term := pod("team-a", "old", "10.42.1.13", web)
	now := metav1.Now()
	term.DeletionTimestamp = &now
	done := pod("team-a", "done", "10.42.1.14", web)
	done.Status.Phase = corev1.PodSucceeded
	noIP := pod("team-a", "fresh", "", web)
	pods := []corev1.Pod{
		pod("team-a", "a", "10.42.1.11", web),
		pod("team-a", "b", "2001:db8:42:1::11", web),
		pod("team-a", "other", "10.42.1.12", map[string]string{"app": "db"}),
		pod("team-b", "c", "10.42.1.20", web),
		term, done, noIP,
	}
	slice := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web-x"},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.42.1.15"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "fresh"}}}}
	comp := Compose(Inputs{Policy: fp, Groups: []v1.RuleCollectionGroup{g}, Pods: pods, Slices: []discoveryv1.EndpointSlice{slice}})
	if !comp.Groups[types.NamespacedName{Namespace: "team-a", Name: "g"}].Accepted {
		t.Fatal(comp.Groups)
	}
	got := comp.File.RuleCollectionGroups[0].RuleCollections[0].Rules[0].SourceAddresses
	want := []string{"10.42.1.11", "10.42.1.15", "2001:db8:42:1::11"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("sources %q, want %q", got, want)
	}
	// Every pod gone: the rule is left out, the group stays accepted.
	comp2 := Compose(Inputs{Policy: fp, Groups: []v1.RuleCollectionGroup{g}})
	if rules := comp2.File.RuleCollectionGroups[0].RuleCollections[0].Rules; len(rules) != 0 {
		t.Fatalf("rules without pods: %+v", rules)
	}
	if comp2.Hash == comp.Hash {
		t.Fatal("hash did not change with the pods")
	}
	// Same inputs, same hash (idempotent applies).
	if again := Compose(Inputs{Policy: fp, Groups: []v1.RuleCollectionGroup{g}, Pods: pods, Slices: []discoveryv1.EndpointSlice{slice}}); again.Hash != comp.Hash {
		t.Fatal("hash not deterministic")
	}
}

func lbService(ns, name, publish, lbIP string, ports ...int32) corev1.Service {
	s := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{v1.AnnotationPublish: publish}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Port: p, Protocol: corev1.ProtocolTCP})
	}
	if lbIP != "" {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: lbIP}}
	}
	return s
}

func TestServiceDNAT(t *testing.T) {
	fp := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1.FirewallPolicySpec{
		ServiceDNAT: &v1.ServiceDNAT{PublicIPs: []string{"203.0.113.32"}}}}
	svcs := []corev1.Service{
		lbService("shop", "front", "80,8443:443", "10.42.1.100", 80, 443),
		lbService("shop", "pending", "81", "", 81),
		lbService("zz", "clash", "80", "10.42.1.101", 80),
		lbService("shop", "bad", "http", "10.42.1.102", 80),
	}
	comp := Compose(Inputs{Policy: fp, Services: svcs})
	if !comp.Policy.Accepted {
		t.Fatal(comp.Policy.Message())
	}
	p, err := policy.Load("composed", comp.YAML, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := match.Compile(p, match.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tcp, _ := policy.ParseProto("TCP")
	pub := netip.MustParseAddr("203.0.113.32")
	client := netip.MustParseAddr("198.51.100.7")
	for _, tc := range []struct {
		port   uint16
		to     string
		toPort uint16
	}{{80, "10.42.1.100", 80}, {8443, "10.42.1.100", 443}, {443, "", 0}, {81, "", 0}} {
		d := m.Decide(match.Flow{Src: client, Dst: pub, Proto: tcp, Port: tc.port})
		if tc.to == "" {
			if d.Action == policy.ActionDNAT {
				t.Errorf("port %d translated to %v", tc.port, d.TranslatedAddr)
			}
			continue
		}
		if d.Action != policy.ActionDNAT || d.TranslatedAddr.String() != tc.to || d.TranslatedPort != tc.toPort {
			t.Errorf("port %d: %+v", tc.port, d)
		}
	}
	for key, want := range map[string]string{
		"shop/front": "published", "shop/pending": "no IPv4 load-balancer IP", "zz/clash": "already published for shop/front",
		"shop/bad": "not a port",
	} {
		ns, name, _ := strings.Cut(key, "/")
		v := comp.Services[types.NamespacedName{Namespace: ns, Name: name}]
		if !strings.Contains(v.Message, want) || v.Published != (want == "published") {
			t.Errorf("%s: %+v, want %q", key, v, want)
		}
	}
}

func TestPathOfError(t *testing.T) {
	doc := []byte("name: x\nruleCollectionGroups:\n  - name: a\n    priority: 99\n    ruleCollections:\n      - name: c\n        rules:\n          - name: r\n            destinationPorts:\n              - \"70000\"\n")
	for _, tc := range []struct{ msg, path string }{
		{"/etc/p.yaml:4:15: priority 99 is outside 100-65000", "ruleCollectionGroups[0].priority"},
		{"p.yaml:10:17: bad port", "ruleCollectionGroups[0].ruleCollections[0].rules[0].destinationPorts[0]"},
		{"p.yaml:8:13: x", "ruleCollectionGroups[0].ruleCollections[0].rules[0].name"},
		{"ruleCollectionGroups[0].priority: direct", "ruleCollectionGroups[0].priority"},
	} {
		p, _, ok := PathOfError(doc, tc.msg)
		if !ok || p != tc.path {
			t.Errorf("%q: path %q (%v), want %q", tc.msg, p, ok, tc.path)
		}
	}
	if _, _, ok := PathOfError(doc, "something else"); ok {
		t.Error("a message without a position was located")
	}
}

// TestCRDsInStep: deploy/crds is what controller-gen makes of the types
// (`make crds` regenerates it); here, every JSON field of the Go types is in
// the schema and the other way round.
func TestCRDsInStep(t *testing.T) {
	for file, typ := range map[string]reflect.Type{
		"clusterwall.io_firewallpolicies.yaml":     reflect.TypeOf(v1.FirewallPolicy{}),
		"clusterwall.io_rulecollectiongroups.yaml": reflect.TypeOf(v1.RuleCollectionGroup{}),
		"clusterwall.io_wafpolicies.yaml":          reflect.TypeOf(v1.WAFPolicy{}),
	} {
		data, err := os.ReadFile(filepath.Join("../../deploy/crds", file))
		if err != nil {
			t.Fatal(err)
		}
		var crd struct {
			Spec struct {
				Versions []struct {
					Schema struct {
						OpenAPIV3Schema schemaNode `json:"openAPIV3Schema"`
					} `json:"schema"`
				} `json:"versions"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(data, &crd); err != nil {
			t.Fatal(err)
		}
		s := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
		for _, part := range []string{"spec", "status"} {
			f, _ := typ.FieldByName(strings.ToUpper(part[:1]) + part[1:])
			compareFields(t, file+": "+part, f.Type, s.Properties[part])
		}
	}
}

type schemaNode struct {
	Type                 string                `json:"type"`
	Properties           map[string]schemaNode `json:"properties"`
	Items                *schemaNode           `json:"items"`
	AdditionalProperties *schemaNode           `json:"additionalProperties"`
}

func compareFields(t *testing.T, where string, typ reflect.Type, s schemaNode) {
	t.Helper()
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
		if typ.Kind() == reflect.Slice && s.Items != nil {
			s = *s.Items
		}
		if typ.Kind() == reflect.Map && s.AdditionalProperties != nil {
			s = *s.AdditionalProperties
		}
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeOf(v1.Rule{}).PkgPath() {
		return
	}
	fields := map[string]reflect.Type{}
	var collect func(reflect.Type)
	collect = func(typ reflect.Type) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			tag := strings.Split(f.Tag.Get("json"), ",")
			if tag[0] == "" && f.Anonymous {
				collect(f.Type)
				continue
			}
			fields[tag[0]] = f.Type
		}
	}
	collect(typ)
	for name, ft := range fields {
		sub, ok := s.Properties[name]
		if !ok {
			t.Errorf("%s: field %s of %s is not in the CRD schema", where, name, typ.Name())
			continue
		}
		compareFields(t, where+"."+name, ft, sub)
	}
	for name := range s.Properties {
		if _, ok := fields[name]; !ok {
			t.Errorf("%s: schema property %s is not a field of %s", where, name, typ.Name())
		}
	}
}

package controller

import (
	"bytes"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/ascii"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// ExportOptions control Export.
type ExportOptions struct {
	// Name of the FirewallPolicy (default: "default").
	Name string
	// GroupsNamespace, when set, exports every rule collection group as a
	// RuleCollectionGroup in this namespace (and sets guardrails that let
	// them do everything the file did) instead of inline in the
	// FirewallPolicy.
	GroupsNamespace string
}

// Exported is a policy file as Kubernetes objects.
type Exported struct {
	// Bases are the policy's base policies (its basePolicy, that one's, ...).
	Bases  []*v1.FirewallPolicy
	Policy *v1.FirewallPolicy
	Groups []*v1.RuleCollectionGroup
	// Warnings are parts of the file the objects cannot hold.
	Warnings []string
}

// Export turns a policy file (YAML or imported from Azure) into a
// FirewallPolicy and, with GroupsNamespace, RuleCollectionGroups; the
// controller composes them back into an equivalent policy.
func Export(f *policy.File, o ExportOptions) (*Exported, error) {
	name := o.Name
	if name == "" {
		name = DefaultFirewallPolicyName
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, fmt.Errorf("FirewallPolicy name %q: %s", name, errs[0])
	}
	if o.GroupsNamespace != "" {
		if errs := validation.IsDNS1123Label(o.GroupsNamespace); len(errs) > 0 {
			return nil, fmt.Errorf("namespace %q: %s", o.GroupsNamespace, errs[0])
		}
	}
	ex := &Exported{}
	fp, err := exportSpec(f, name, ex)
	if err != nil {
		return nil, err
	}
	// Base policies become FirewallPolicies of their own.
	child, used := fp, map[string]bool{name: true}
	for b := f.BasePolicy; b != nil; b = b.Policy.BasePolicy {
		if b.Policy == nil {
			return nil, fmt.Errorf("basePolicy %s is a file: read it into the policy first (policy.InlineBases)", b.Path)
		}
		bn := objectName(b.Policy.Name, used)
		if b.Policy.Name == "" {
			bn = objectName(name+"-base", used)
		}
		bp, err := exportSpec(b.Policy, bn, ex)
		if err != nil {
			return nil, err
		}
		// A base policy's groups stay inline in its FirewallPolicy.
		if err := exportGroups(b.Policy, bn, ExportOptions{}, bp, ex, map[string]bool{}); err != nil {
			return nil, err
		}
		child.Spec.BasePolicy = bn
		ex.Bases = append(ex.Bases, bp)
		child = bp
	}
	used = map[string]bool{}
	if err := exportGroups(f, name, o, fp, ex, used); err != nil {
		return nil, err
	}
	ex.Policy = fp
	return ex, nil
}

// exportSpec turns a policy's settings into a FirewallPolicy, and its rule
// collection groups too when it is a base policy.
func exportSpec(f *policy.File, name string, ex *Exported) (*v1.FirewallPolicy, error) {
	fp := &v1.FirewallPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1.GroupVersion.String(), Kind: "FirewallPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.FirewallPolicySpec{
			Location:              f.Location,
			ServiceTagDefinitions: f.ServiceTagDefinitions,
			IPGroups:              f.IPGroups,
			FQDNTags:              f.FQDNTags,
		},
	}
	if f.Name != "" && f.Name != name {
		fp.Annotations = map[string]string{"clusterwall.io/policy-name": f.Name}
	}
	if f.ServiceTags != "" {
		ex.Warnings = append(ex.Warnings, fmt.Sprintf("serviceTags %q is a file: give it to the controller and the daemons (--service-tags / serviceTags in the daemon config)", f.ServiceTags))
	}
	if t := f.ThreatIntel; t != nil {
		ti := &v1.ThreatIntel{Mode: t.Mode}
		if t.Allowlist != nil {
			ti.Allowlist = &v1.ThreatIntelAllowlist{IPAddresses: t.Allowlist.IPAddresses, FQDNs: t.Allowlist.FQDNs}
		}
		for _, fd := range t.Feeds {
			ti.Feeds = append(ti.Feeds, v1.ThreatIntelFeed{Name: fd.Name, File: fd.File, URL: fd.URL, Format: fd.Format})
		}
		fp.Spec.ThreatIntel = ti
	}
	if d := f.DNS; d != nil {
		fp.Spec.DNS = &v1.DNS{EnableProxy: d.EnableProxy, Servers: d.Servers}
	}
	return fp, nil
}

// exportGroups exports f's groups into fp or as RuleCollectionGroups.
func exportGroups(f *policy.File, name string, o ExportOptions, fp *v1.FirewallPolicy, ex *Exported, used map[string]bool) error {
	for _, g := range f.RuleCollectionGroups {
		spec := v1.RuleCollectionGroupSpec{Priority: int32(g.Priority)}
		for _, c := range g.RuleCollections {
			rc := v1.RuleCollection{Name: c.Name, Kind: v1.CollectionKind(c.Kind), Priority: int32(c.Priority), Action: v1.CollectionAction(c.Action)}
			for _, r := range c.Rules {
				rc.Rules = append(rc.Rules, v1.Rule{
					Name:                 r.Name,
					Description:          r.Description,
					Protocols:            r.Protocols,
					SourceAddresses:      r.SourceAddresses,
					SourceIPGroups:       r.SourceIPGroups,
					DestinationAddresses: r.DestinationAddresses,
					DestinationIPGroups:  r.DestinationIPGroups,
					DestinationFQDNs:     r.DestinationFQDNs,
					DestinationPorts:     r.DestinationPorts,
					TargetFQDNs:          r.TargetFQDNs,
					FQDNTags:             r.FQDNTags,
					TranslatedAddress:    r.TranslatedAddress,
					TranslatedFQDN:       r.TranslatedFQDN,
					TranslatedPort:       r.TranslatedPort,
				})
			}
			spec.RuleCollections = append(spec.RuleCollections, rc)
		}
		if o.GroupsNamespace == "" {
			fp.Spec.RuleCollectionGroups = append(fp.Spec.RuleCollectionGroups, v1.RuleCollectionGroupSpecNamed{Name: g.Name, RuleCollectionGroupSpec: spec})
			continue
		}
		objName := objectName(g.Name, used)
		rcg := &v1.RuleCollectionGroup{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1.GroupVersion.String(), Kind: "RuleCollectionGroup"},
			ObjectMeta: metav1.ObjectMeta{Name: objName, Namespace: o.GroupsNamespace},
			Spec:       v1.TeamRuleCollectionGroupSpec{FirewallPolicy: name, RuleCollectionGroupSpec: spec},
		}
		if objName != g.Name {
			rcg.Annotations = map[string]string{"clusterwall.io/group-name": g.Name}
		}
		ex.Groups = append(ex.Groups, rcg)
	}
	if o.GroupsNamespace != "" {
		lo := int32(100)
		fp.Spec.Teams = &v1.TeamGuardrails{
			AllowedKinds:   []v1.CollectionKind{"DNAT", "Network", "Application"},
			AllowedActions: []v1.CollectionAction{"Allow", "Deny", "DNAT"},
			MinPriority:    &lo,
			AnySource:      true,
		}
	}
	return nil
}

// objectName turns a group name into a unique DNS-1123 object name.
func objectName(s string, used map[string]bool) string {
	var b []byte
	for _, r := range []byte(s) {
		switch r = ascii.Lower(r); {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b = append(b, r)
		default:
			if len(b) > 0 && b[len(b)-1] != '-' {
				b = append(b, '-')
			}
		}
	}
	name := string(bytes.Trim(b, "-"))
	if len(name) > 60 {
		name = name[:60]
	}
	if name == "" {
		name = "group"
	}
	base := name
	for i := 2; used[name]; i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	used[name] = true
	return name
}

// YAML renders the objects as one YAML stream (documents separated by ---),
// without empty status and creationTimestamp.
func (ex *Exported) YAML() ([]byte, error) {
	var out bytes.Buffer
	var objs []any
	for i := len(ex.Bases) - 1; i >= 0; i-- {
		objs = append(objs, ex.Bases[i])
	}
	objs = append(objs, ex.Policy)
	for _, g := range ex.Groups {
		objs = append(objs, g)
	}
	for i, o := range objs {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return nil, err
		}
		delete(m, "status")
		if md, ok := m["metadata"].(map[string]any); ok {
			delete(md, "creationTimestamp")
		}
		data, err := yaml.Marshal(m)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(data)
	}
	return out.Bytes(), nil
}

package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Policy inheritance, with Azure Firewall Policy's documented semantics for
// a child policy (learn.microsoft.com/azure/firewall-manager/policy-overview,
// "Hierarchical policies"; firewall-manager/rule-processing, "Inherited
// rules"; firewall-manager/dns-settings, "Policy inheritance"):
//
//   - the base policy's network and application rule collections are
//     processed before the child's, whatever their priorities (network
//     rules still before application rules);
//   - NAT (DNAT) rule collections are not inherited: they are specific to a
//     firewall;
//   - threat-intelligence mode is inherited and a child may only make it
//     stricter (Off < Alert < Deny); the allowlist is inherited and a child
//     may add to it;
//   - DNS settings are inherited and a child may override them.
//
// clusterwall adds what a file-based model needs: the child sees its base's
// IP groups, FQDN tags and service tags and may not redefine them (that
// would change what the base's rules match), and group names are unique
// across the chain (decision logs name the group).

// maxBaseDepth bounds a chain of base policies.
const maxBaseDepth = 8

// chainState follows one chain of base policies.
type chainState struct {
	files []string // absolute paths of the file-based policies in the chain
	depth int
}

// loadBase validates f's base policy; its problems are the child's.
func (v *validator) loadBase(f *File, opts Options, st *chainState) *Policy {
	opts.reuse = nil // a Loader's groups are the child's
	if st.depth >= maxBaseDepth {
		v.errorf("basePolicy", "base policies nested more than %d deep", maxBaseDepth)
		return nil
	}
	next := &chainState{files: st.files, depth: st.depth + 1}
	b := f.BasePolicy
	var (
		base *Policy
		errs ErrorList
	)
	switch {
	case b.Policy != nil:
		// Inline: same file, paths under basePolicy.
		base, errs = validateIn(b.Policy, v.pos.sub("basePolicy."), v.file, opts, v.prefix+"basePolicy.", next)
	case strings.TrimSpace(b.Path) == "":
		v.errorf("basePolicy", "basePolicy: empty path")
		return nil
	default:
		path := b.Path
		if !filepath.IsAbs(path) {
			path = filepath.Join(v.dir, path)
		}
		abs, aerr := filepath.Abs(path)
		if aerr != nil {
			abs = path
		}
		self := ""
		if v.file != "" {
			self, _ = filepath.Abs(v.file)
		}
		for _, seen := range append(append([]string(nil), st.files...), self) {
			if seen != "" && seen == abs {
				v.errorf("basePolicy", "basePolicy %s: the chain of base policies comes back to %s", b.Path, seen)
				return nil
			}
		}
		next.files = append(append([]string(nil), st.files...), self)
		data, rerr := readPolicyFile(path)
		if rerr != nil {
			v.errorf("basePolicy", "basePolicy: %v", rerr)
			return nil
		}
		bf, bpos, derr := DecodeYAML(path, data)
		if bf == nil {
			v.errs = append(v.errs, asList(derr)...)
			return nil
		}
		base, errs = validateIn(bf, bpos, path, opts, "", next)
		if derr != nil {
			v.errs = append(v.errs, asList(derr)...)
		}
	}
	v.errs = append(v.errs, errs...)
	return base
}

func asList(err error) ErrorList {
	if err == nil {
		return nil
	}
	if l, ok := err.(ErrorList); ok {
		return l
	}
	return ErrorList{{Msg: err.Error()}}
}

func cloneTags(m map[string][]string) map[string][]string {
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// baseGroup finds a group of the base chain by name.
func (v *validator) baseGroup(name string) *Group {
	if v.base == nil {
		return nil
	}
	for _, g := range v.base.Groups {
		if strings.EqualFold(g.Name, name) {
			return g
		}
	}
	return nil
}

// threat-intel modes by strictness.
func tiRank(a Action) int {
	switch a {
	case ActionAlert:
		return 1
	case ActionDeny:
		return 2
	}
	return 0
}

// inherit merges the base policy's settings into p (after p's own are read).
func (v *validator) inherit(f *File, p *Policy) {
	p.tagDefs = map[string]bool{}
	for name := range f.ServiceTagDefinitions {
		p.tagDefs[strings.ToLower(name)] = true
	}
	b := v.base
	if b == nil {
		return
	}
	p.Base = b
	for k := range b.tagDefs {
		p.tagDefs[k] = true
	}
	// Threat intelligence: inherited; a child may only be stricter.
	childMode := ""
	if f.ThreatIntel != nil {
		childMode = strings.TrimSpace(f.ThreatIntel.Mode)
	}
	if childMode != "" && tiRank(p.ThreatIntel.Mode) < tiRank(b.ThreatIntel.Mode) {
		v.errorf("threatIntel.mode", "threatIntel.mode %s is weaker than the base policy %q's %s: a child policy may only make threat intelligence stricter (Off < Alert < Deny), as in Azure", childMode, b.Name, modeName(b.ThreatIntel.Mode))
	}
	if childMode == "" || tiRank(b.ThreatIntel.Mode) > tiRank(p.ThreatIntel.Mode) {
		p.ThreatIntel.Mode = b.ThreatIntel.Mode
	}
	// The allowlist and feeds add up.
	var ab AddrSetBuilder
	ab.AddSet(&b.ThreatIntel.AllowAddresses)
	ab.AddSet(&p.ThreatIntel.AllowAddresses)
	p.ThreatIntel.AllowAddresses = ab.Build()
	p.ThreatIntel.AllowFQDNs = append(append([]FQDNPattern(nil), b.ThreatIntel.AllowFQDNs...), p.ThreatIntel.AllowFQDNs...)
	for i, fd := range p.ThreatIntel.Feeds {
		for _, bf := range b.ThreatIntel.Feeds {
			if bf.Name == fd.Name {
				v.errorf(fmt.Sprintf("threatIntel.feeds[%d].name", i), "threat-intel feed %q is a feed of the base policy %q: a child policy adds feeds of other names", fd.Name, b.Name)
			}
		}
	}
	p.ThreatIntel.Feeds = append(append([]Feed(nil), b.ThreatIntel.Feeds...), p.ThreatIntel.Feeds...)
	// DNS: inherited, and the child overrides what it sets.
	if f.DNS == nil || f.DNS.EnableProxy == nil {
		p.DNS.EnableProxy = b.DNS.EnableProxy
	}
	if f.DNS == nil || len(f.DNS.Servers) == 0 {
		p.DNS.Servers = b.DNS.Servers
	}
}

func modeName(a Action) string {
	if a == ActionInvalid {
		return "Off"
	}
	return a.String()
}

// inheritedGroups returns the base policy's groups as the child processes
// them: first, without their DNAT collections.
func (v *validator) inheritedGroups(p *Policy) []*Group {
	var out []*Group
	for _, bg := range v.base.Groups {
		g := &Group{Name: bg.Name, Priority: bg.Priority, Pos: bg.Pos, Policy: bg.Policy, Inherited: true}
		for _, bc := range bg.Collections {
			if bc.Kind == KindDNAT {
				v.warns = append(v.warns, &Error{Pos: bc.Pos, Path: "basePolicy",
					Msg: fmt.Sprintf("DNAT rule collection %s/%s of the base policy %q is not inherited: Azure does not inherit NAT rule collections, which are specific to a firewall", bg.Name, bc.Name, v.base.Name)})
				continue
			}
			c := &Collection{Name: bc.Name, Kind: bc.Kind, Priority: bc.Priority, Action: bc.Action, Group: g, Pos: bc.Pos}
			for _, br := range bc.Rules {
				r := *br
				r.Collection = c
				c.Rules = append(c.Rules, &r)
			}
			g.Collections = append(g.Collections, c)
		}
		out = append(out, g)
	}
	return out
}

// maxPolicyFile bounds a base policy file.
const maxPolicyFile = 64 << 20

// readPolicyFile reads a regular file of at most maxPolicyFile bytes.
func readPolicyFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > maxPolicyFile {
		return nil, fmt.Errorf("%s is larger than %d MB", path, maxPolicyFile>>20)
	}
	return os.ReadFile(path)
}

// InlineBases replaces every basePolicy of f that is a file (relative to
// file's folder) by the policy it names, so that f stands alone (to send it
// elsewhere, or turn it into Kubernetes objects).
func InlineBases(f *File, file string) error {
	seen := map[string]bool{}
	for depth := 0; f.BasePolicy != nil; depth++ {
		if depth >= maxBaseDepth {
			return fmt.Errorf("base policies nested more than %d deep", maxBaseDepth)
		}
		b := f.BasePolicy
		if b.Policy == nil {
			path := b.Path
			if !filepath.IsAbs(path) {
				path = filepath.Join(filepath.Dir(file), path)
			}
			abs, _ := filepath.Abs(path)
			if seen[abs] {
				return fmt.Errorf("basePolicy %s: the chain of base policies comes back to it", b.Path)
			}
			seen[abs] = true
			data, err := readPolicyFile(path)
			if err != nil {
				return fmt.Errorf("basePolicy: %v", err)
			}
			bf, _, err := DecodeYAML(path, data)
			if err != nil {
				return err
			}
			f.BasePolicy = &WireBase{Policy: bf}
			file = path
		}
		f = f.BasePolicy.Policy
	}
	return nil
}

package azcli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/clusterwall/clusterwall/internal/atomicfile"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// Command is one az-style command, e.g. `network-rule create`.
type Command struct {
	// Path is the command's words after "clusterwall".
	Path []string
	// Short is the one-line description.
	Short string
	// Flags are the command's flags.
	Flags []FlagSpec

	kind policy.Kind
	run  func(c *Command, a *Args, out io.Writer) error
}

// Name is the command's words joined, e.g. "network-rule create".
func (c *Command) Name() string { return strings.Join(c.Path, " ") }

// Usage is the command's help text.
func (c *Command) Usage() string {
	return c.Short + "\n\n" + Usage("clusterwall "+c.Name()+" --policy FILE [flags]", c.Flags)
}

// Run parses args (everything after the command's words) and runs the
// command, writing results to out. -h or --help anywhere prints usage.
func (c *Command) Run(args []string, out io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "--help" {
			_, err := io.WriteString(out, c.Usage())
			return err
		}
	}
	a, err := ParseArgs(args, c.Flags)
	if err != nil {
		return fmt.Errorf("%s: %w (see --help)", c.Name(), err)
	}
	return c.run(c, a, out)
}

// Commands returns every az-style command: create, list, show and delete
// for network-rule, application-rule and nat-rule, and collection list,
// show and delete for each.
func Commands() []*Command {
	var out []*Command
	for _, k := range []policy.Kind{policy.KindNetwork, policy.KindApplication, policy.KindDNAT} {
		g := group(k)
		out = append(out,
			&Command{Path: []string{g, "create"}, kind: k, run: runCreate,
				Short: fmt.Sprintf("Create a %s (as az network firewall %s create); creates its collection when needed", kindWord(k), g),
				Flags: createFlags(k)},
			&Command{Path: []string{g, "list"}, kind: k, run: runList,
				Short: fmt.Sprintf("List the rules of a %s rule collection", k),
				Flags: withCommon([]FlagSpec{collFlag(), rcgNameFlag(), outputFlag(), readTagsFlag()})},
			&Command{Path: []string{g, "show"}, kind: k, run: runShow,
				Short: fmt.Sprintf("Show a %s", kindWord(k)),
				Flags: withCommon([]FlagSpec{collFlag(), ruleNameFlag(), rcgNameFlag(), outputFlag(), readTagsFlag()})},
			&Command{Path: []string{g, "delete"}, kind: k, run: runDelete,
				Short: fmt.Sprintf("Delete a %s; a collection left empty is removed, as az does", kindWord(k)),
				Flags: withCommon([]FlagSpec{collFlag(), ruleNameFlag(), rcgNameFlag(), serviceTagsFlag()})},
			&Command{Path: []string{g, "collection", "list"}, kind: k, run: runCollList,
				Short: fmt.Sprintf("List the %s rule collections", k),
				Flags: withCommon([]FlagSpec{rcgNameFlag(), outputFlag(), readTagsFlag()})},
			&Command{Path: []string{g, "collection", "show"}, kind: k, run: runCollShow,
				Short: fmt.Sprintf("Show a %s rule collection", k),
				Flags: withCommon([]FlagSpec{collNameFlag(), rcgNameFlag(), outputFlag(), readTagsFlag()})},
			&Command{Path: []string{g, "collection", "delete"}, kind: k, run: runCollDelete,
				Short: fmt.Sprintf("Delete a %s rule collection and its rules", k),
				Flags: withCommon([]FlagSpec{collNameFlag(), rcgNameFlag(), serviceTagsFlag()})},
		)
	}
	return out
}

// Find returns the command whose path starts words, and the rest of words.
func Find(words []string) (*Command, []string) {
	var best *Command
	for _, c := range Commands() {
		if len(c.Path) <= len(words) && equalWords(c.Path, words[:len(c.Path)]) && (best == nil || len(c.Path) > len(best.Path)) {
			best = c
		}
	}
	if best == nil {
		return nil, words
	}
	return best, words[len(best.Path):]
}

func equalWords(a, b []string) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// group is the command group of a kind, as az names it.
func group(k policy.Kind) string {
	switch k {
	case policy.KindNetwork:
		return "network-rule"
	case policy.KindApplication:
		return "application-rule"
	}
	return "nat-rule"
}

// Flags.

func withCommon(specs []FlagSpec) []FlagSpec {
	common := []FlagSpec{
		{Name: "policy", Required: true, Value: "FILE", Help: "policy file to edit (created when missing); replaces az's -g/-f"},
		{Name: "resource-group", Short: "g", Ignored: true, Value: "RG", Help: "ignored (accepted so that pasted az commands work)"},
		{Name: "firewall-name", Short: "f", Ignored: true, Value: "NAME", Help: "ignored (accepted so that pasted az commands work)"},
		{Name: "help", Short: "h", Bool: true, Help: "show this help"},
	}
	return append(common[:1:1], append(specs, common[1:]...)...)
}

func collFlag() FlagSpec {
	return FlagSpec{Name: "collection-name", Short: "c", Required: true, Value: "NAME", Help: "rule collection name"}
}

func collNameFlag() FlagSpec {
	return FlagSpec{Name: "name", Short: "n", Required: true, Value: "NAME", Help: "rule collection name"}
}

func ruleNameFlag() FlagSpec {
	return FlagSpec{Name: "name", Short: "n", Required: true, Value: "NAME", Help: "rule name"}
}

func rcgNameFlag() FlagSpec {
	return FlagSpec{Name: "rcg-name", Aliases: []string{"rule-collection-group-name"}, Value: "NAME",
		Help: "rule collection group (default: the collection's group, else the kind's default group)"}
}

func outputFlag() FlagSpec {
	return FlagSpec{Name: "output", Short: "o", Value: "FORMAT", Help: "output format: yaml (default) or json"}
}

func serviceTagsFlag() FlagSpec {
	return FlagSpec{Name: "service-tags", Value: "FILE", Help: "service tags file (Azure ServiceTags_Public JSON) for validation; overrides the policy's serviceTags"}
}

// readTagsFlag lets list and show take the same --service-tags as the
// editing commands; they do not validate, so it has no effect.
func readTagsFlag() FlagSpec {
	f := serviceTagsFlag()
	f.Help = "accepted like the editing commands' flag; list and show do not need it"
	return f
}

func createFlags(k policy.Kind) []FlagSpec {
	multi := func(name, value, help string) FlagSpec {
		return FlagSpec{Name: name, Multi: true, Value: value, Help: help}
	}
	one := func(name, value, help string) FlagSpec { return FlagSpec{Name: name, Value: value, Help: help} }
	src := multi("source-addresses", "ADDR", "source IPs, CIDRs, ranges, service tags or '*'")
	src.OneOf = "source"
	srcg := multi("source-ip-groups", "GROUP", "source IP groups (ipGroups: in the policy)")
	srcg.OneOf = "source"
	specs := []FlagSpec{
		collFlag(),
		{Name: "name", Short: "n", Required: true, Value: "NAME", Help: "rule name"},
	}
	switch k {
	case policy.KindNetwork:
		dst := multi("destination-addresses", "ADDR", "destination IPs, CIDRs, ranges, service tags or '*'")
		dstg := multi("destination-ip-groups", "GROUP", "destination IP groups")
		dstf := multi("destination-fqdns", "FQDN", "destination FQDNs (resolved by the DNS proxy)")
		dst.OneOf, dstg.OneOf, dstf.OneOf = "destination", "destination", "destination"
		protos := multi("protocols", "PROTO", "TCP, UDP, ICMP or Any")
		protos.Required = true
		ports := multi("destination-ports", "PORT", "ports or ranges (80, 1000-2000, *)")
		ports.Required = true
		specs = append(specs, protos, src, srcg, dst, dstg, dstf, ports,
			one("action", "ACTION", "Allow or Deny (required for a new collection)"))
	case policy.KindApplication:
		protos := multi("protocols", "PROTO=PORT", "http=80, https=443, mssql=1433")
		protos.Required = true
		tf := multi("target-fqdns", "FQDN", "target FQDNs, '*.example.com' wildcards allowed")
		tags := multi("fqdn-tags", "TAG", "FQDN tags, e.g. AzureKubernetesService")
		tf.OneOf, tags.OneOf = "target", "target"
		specs = append(specs, protos, src, srcg, tf, tags,
			one("action", "ACTION", "Allow or Deny (required for a new collection)"))
	case policy.KindDNAT:
		protos := multi("protocols", "PROTO", "TCP, UDP or Any")
		protos.Required = true
		dst := multi("destination-addresses", "IP", "the firewall's public IP")
		dst.Required = true
		ports := multi("destination-ports", "PORT", "destination ports")
		ports.Required = true
		ta := one("translated-address", "IP", "address to translate to")
		tf := one("translated-fqdn", "FQDN", "FQDN to translate to")
		ta.OneOf, tf.OneOf = "translation", "translation"
		tp := one("translated-port", "PORT", "port to translate to")
		tp.Required = true
		specs = append(specs, protos, src, srcg, dst, ports, ta, tf, tp,
			one("action", "ACTION", "Dnat (required for a new collection)"))
	}
	specs = append(specs,
		one("priority", "N", "collection priority 100-65000 (required for a new collection)"),
		one("description", "TEXT", "rule description"),
		rcgNameFlag(),
		FlagSpec{Name: "rcg-priority", Aliases: []string{"rule-collection-group-priority"}, Value: "N", Help: "priority of a new rule collection group (with --rcg-name)"},
		serviceTagsFlag(),
		FlagSpec{Name: "output", Short: "o", Value: "FORMAT", Help: "print the new rule as yaml or json (default: a one-line summary)"},
	)
	return withCommon(specs)
}

// Building the rule.

// RuleFromArgs builds the rule spec of a create command. Values are
// normalised where they parse (tcp -> TCP, https=443 -> Https:443, allow
// -> Allow) and kept as given otherwise, so that validation reports them
// with their position.
func RuleFromArgs(k policy.Kind, a *Args) (RuleSpec, error) {
	s := RuleSpec{Kind: k, Collection: a.Get("collection-name"), Group: a.Get("rcg-name"), Action: a.Get("action")}
	var err error
	if s.Priority, err = intFlag(a, "priority"); err != nil {
		return s, err
	}
	if s.GroupPriority, err = intFlag(a, "rcg-priority"); err != nil {
		return s, err
	}
	if s.GroupPriority != 0 && s.Group == "" {
		return s, errors.New("--rcg-priority needs --rcg-name (the default groups have fixed priorities)")
	}
	if a.Has("action") {
		s.Action = canonicalAction(s.Action)
	}
	r := policy.WireRule{
		Name:                 a.Get("name"),
		Description:          a.Get("description"),
		SourceAddresses:      a.List("source-addresses"),
		SourceIPGroups:       a.List("source-ip-groups"),
		DestinationAddresses: a.List("destination-addresses"),
		DestinationIPGroups:  a.List("destination-ip-groups"),
		DestinationFQDNs:     a.List("destination-fqdns"),
		DestinationPorts:     a.List("destination-ports"),
		TargetFQDNs:          a.List("target-fqdns"),
		FQDNTags:             a.List("fqdn-tags"),
		TranslatedAddress:    a.Get("translated-address"),
		TranslatedFQDN:       a.Get("translated-fqdn"),
		TranslatedPort:       a.Get("translated-port"),
	}
	for _, p := range a.List("protocols") {
		r.Protocols = append(r.Protocols, normalizeProtocol(k, p))
	}
	s.Rule = r
	return s, nil
}

func intFlag(a *Args, name string) (int, error) {
	if !a.Has(name) {
		return 0, nil
	}
	v := a.Get(name)
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("--%s: expected a whole number, got %q", name, v)
	}
	if n == 0 {
		return 0, fmt.Errorf("--%s: priority 0 is outside 100-65000", name)
	}
	return n, nil
}

// normalizeProtocol writes a protocol the way the policy files do: UDP,
// TCP, ICMP, Any for network and NAT rules; Http:80 for application rules.
func normalizeProtocol(k policy.Kind, p string) string {
	if k == policy.KindApplication {
		ap, err := policy.ParseAppProtocol(p)
		if err != nil {
			return p
		}
		return ap.String()
	}
	pr, ok := policy.ParseProto(p)
	if !ok {
		return p
	}
	return pr.String()
}

// Running.

func runCreate(c *Command, a *Args, out io.Writer) error {
	format, err := outputFormat(a, "")
	if err != nil {
		return err
	}
	spec, err := RuleFromArgs(c.kind, a)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Name(), err)
	}
	var res AddResult
	err = editFile(a, true, func(d *Doc) error {
		res, err = d.AddRule(spec)
		return err
	})
	if err != nil {
		return err
	}
	if format != "" {
		return printValue(out, format, spec.Rule)
	}
	var created []string
	if res.NewGroup {
		created = append(created, fmt.Sprintf("new rule collection group %q", res.Group))
	}
	if res.NewCollection {
		created = append(created, fmt.Sprintf("new %s collection %q", c.kind, res.Collection))
	}
	note := ""
	if len(created) > 0 {
		note = "; created " + strings.Join(created, " and ")
	}
	_, err = fmt.Fprintf(out, "%s: added %s %q to collection %q (group %q, priority %d, %s)%s\n",
		a.Get("policy"), kindWord(c.kind), spec.Rule.Name, res.Collection, res.Group, res.Priority, res.Action, note)
	return err
}

// collectionRules reads the policy file and returns the named collection's
// rules, for list and show.
func collectionRules(c *Command, a *Args) (CollectionRef, []policy.WireRule, string, error) {
	format, err := outputFormat(a, "yaml")
	if err != nil {
		return CollectionRef{}, nil, "", err
	}
	d, err := readDoc(a.Get("policy"))
	if err != nil {
		return CollectionRef{}, nil, "", err
	}
	coll, err := d.Collection(c.kind, a.Get("rcg-name"), a.Get("collection-name"))
	if err != nil {
		return CollectionRef{}, nil, "", err
	}
	rules, err := coll.Rules()
	return coll, rules, format, err
}

func runList(c *Command, a *Args, out io.Writer) error {
	_, rules, format, err := collectionRules(c, a)
	if err != nil {
		return err
	}
	if rules == nil {
		rules = []policy.WireRule{}
	}
	return printValue(out, format, rules)
}

func runShow(c *Command, a *Args, out io.Writer) error {
	coll, rules, format, err := collectionRules(c, a)
	if err != nil {
		return err
	}
	name := a.Get("name")
	for _, r := range rules {
		if strings.EqualFold(r.Name, name) {
			return printValue(out, format, r)
		}
	}
	var names []string
	for _, r := range rules {
		names = append(names, strconv.Quote(r.Name))
	}
	return fmt.Errorf("%s %q not found in collection %q (group %q; it has %s)", kindWord(c.kind), name, coll.Name, coll.Group, strings.Join(names, ", "))
}

func runDelete(c *Command, a *Args, out io.Writer) error {
	var res DeleteResult
	err := editFile(a, false, func(d *Doc) (err error) {
		res, err = d.DeleteRule(c.kind, a.Get("rcg-name"), a.Get("collection-name"), a.Get("name"))
		return err
	})
	if err != nil {
		return err
	}
	note := ""
	if res.CollectionRemoved {
		note = "; the collection was left empty and was removed, as az does"
	}
	_, err = fmt.Fprintf(out, "%s: deleted %s %q from collection %q (group %q)%s\n",
		a.Get("policy"), kindWord(c.kind), a.Get("name"), res.Collection, res.Group, note)
	return err
}

// CollectionView is how list and show print a collection: the wire
// collection with the group it belongs to.
type CollectionView struct {
	RuleCollectionGroup   string `yaml:"ruleCollectionGroup" json:"ruleCollectionGroup"`
	policy.WireCollection `yaml:",inline"`
}

func view(c CollectionRef) (CollectionView, error) {
	wc, err := c.Wire()
	return CollectionView{RuleCollectionGroup: c.Group, WireCollection: wc}, err
}

func runCollList(c *Command, a *Args, out io.Writer) error {
	format, err := outputFormat(a, "yaml")
	if err != nil {
		return err
	}
	d, err := readDoc(a.Get("policy"))
	if err != nil {
		return err
	}
	views := []CollectionView{}
	for _, coll := range d.CollectionsOf(c.kind, a.Get("rcg-name")) {
		v, err := view(coll)
		if err != nil {
			return err
		}
		views = append(views, v)
	}
	return printValue(out, format, views)
}

func runCollShow(c *Command, a *Args, out io.Writer) error {
	format, err := outputFormat(a, "yaml")
	if err != nil {
		return err
	}
	d, err := readDoc(a.Get("policy"))
	if err != nil {
		return err
	}
	coll, err := d.Collection(c.kind, a.Get("rcg-name"), a.Get("name"))
	if err != nil {
		return err
	}
	v, err := view(coll)
	if err != nil {
		return err
	}
	return printValue(out, format, v)
}

func runCollDelete(c *Command, a *Args, out io.Writer) error {
	var coll CollectionRef
	err := editFile(a, false, func(d *Doc) (err error) {
		coll, err = d.DeleteCollection(c.kind, a.Get("rcg-name"), a.Get("name"))
		return err
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s: deleted %s collection %q from group %q\n", a.Get("policy"), c.kind, coll.Name, coll.Group)
	return err
}

// outputFormat reads -o: "yaml" or "json" (az's yamlc and jsonc are the
// same here, "none" prints nothing); def when not given.
func outputFormat(a *Args, def string) (string, error) {
	if !a.Has("output") {
		return def, nil
	}
	switch f := strings.ToLower(a.Get("output")); f {
	case "yaml", "yamlc":
		return "yaml", nil
	case "json", "jsonc":
		return "json", nil
	case "none":
		return "none", nil
	default:
		return "", fmt.Errorf("--output %q is not supported; use yaml, json or none", a.Get("output"))
	}
}

func printValue(out io.Writer, format string, v any) error {
	switch format {
	case "none":
		return nil
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = out.Write(append(b, '\n'))
		return err
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err := out.Write(b.Bytes())
	return err
}

// Files.

// readDoc reads a policy for list and show. The file must decode into the
// wire form (no unknown fields, right shapes); full validation (service
// tags, addresses) is not needed to look at it.
func readDoc(path string) (*Doc, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if _, _, err := policy.DecodeYAML(path, data); err != nil {
		return nil, fmt.Errorf("%s cannot be read as a policy:\n%v", path, err)
	}
	return ParseDoc(data)
}

// NotChangedError reports an edit that would make the policy invalid. Its
// message lists the problems (with FILE:LINE:COL in the proposed text)
// and the lines they point at, and says that the file was not changed.
type NotChangedError struct {
	Path     string
	Errs     error
	Proposed []byte
}

func (e *NotChangedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s was NOT changed: the edit would make the policy invalid:\n%v", e.Path, e.Errs)
	if ex := excerpt(e.Proposed, e.Errs); ex != "" {
		b.WriteString("\nin the proposed text of " + e.Path + ":\n" + ex)
	}
	return strings.TrimRight(b.String(), "\n")
}

// excerpt shows the proposed lines that errors point at, with a caret
// under the column.
func excerpt(data []byte, err error) string {
	var list policy.ErrorList
	if !errors.As(err, &list) {
		return ""
	}
	lines := strings.Split(string(data), "\n")
	cols := map[int]int{}
	for _, e := range list {
		if e.Pos.Line > 0 && e.Pos.Line <= len(lines) {
			if _, seen := cols[e.Pos.Line]; !seen {
				cols[e.Pos.Line] = e.Pos.Column
			}
		}
	}
	nums := make([]int, 0, len(cols))
	for n := range cols {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	var b strings.Builder
	for _, n := range nums {
		label := strconv.Itoa(n)
		fmt.Fprintf(&b, "  %s | %s\n", label, lines[n-1])
		if col := cols[n]; col > 0 {
			fmt.Fprintf(&b, "  %s | %s^\n", strings.Repeat(" ", len(label)), strings.Repeat(" ", col-1))
		}
	}
	return b.String()
}

// editFile runs one edit on the policy file named by --policy: it refuses
// a file that is already invalid, validates the result with policy.Load
// (with --service-tags), and replaces the file atomically only when the
// result is valid. A missing file is a new policy when create is set.
func editFile(a *Args, create bool, edit func(*Doc) error) error {
	path := a.Get("policy")
	opts := policy.Options{ServiceTagsFile: a.Get("service-tags")}
	data, err := os.ReadFile(path)
	mode := fs.FileMode(0o644)
	var d *Doc
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		d = NewDoc(policyName(path))
	case err != nil:
		return err
	case len(bytes.TrimSpace(data)) == 0:
		// An empty file (from touch or mktemp) is a new policy.
		d = NewDoc(policyName(path))
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode()
		}
	default:
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode()
		}
		if _, err := policy.Load(path, data, opts); err != nil {
			return fmt.Errorf("%s is not a valid policy; fix it first (the file was not changed):\n%v", path, err)
		}
		if d, err = ParseDoc(data); err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
	}
	if err := edit(d); err != nil {
		return fmt.Errorf("%v (%s was not changed)", err, path)
	}
	proposed, err := d.Bytes()
	if err != nil {
		return err
	}
	if _, err := policy.Load(path, proposed, opts); err != nil {
		return &NotChangedError{Path: path, Errs: err, Proposed: proposed}
	}
	return atomicfile.Write(path, proposed, mode)
}

// policyName derives a new policy's name from its file name: "p.yaml" -> "p".
func policyName(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

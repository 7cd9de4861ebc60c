// Package azcli implements clusterwall's az-style policy editing commands:
// `clusterwall network-rule create ...` and friends take the flags of
// `az network firewall network-rule create ...` (with `--policy FILE` in
// place of `-g RG -f FIREWALL`) and edit a policy YAML file in place.
//
// The package has three layers: ParseArgs reads az-style arguments (a flag
// takes every following argument up to the next flag, as az's argparse
// does); Doc edits the file's yaml.v3 node tree, so that comments, key order
// and everything the edit does not touch survive; and the Command values
// tie both together with validation through policy.Load before the file is
// replaced atomically. cmd/clusterwall only wires the Commands into cobra.
package azcli

import (
	"github.com/clusterwall/clusterwall/internal/policy"

	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// FlagSpec describes one flag of a command.
type FlagSpec struct {
	// Name is the long name without dashes, e.g. "collection-name".
	Name string
	// Short is an optional one-letter alias without the dash, e.g. "n".
	Short string
	// Aliases are further long names without dashes (e.g. "rule-collection-group-name").
	Aliases []string
	// Multi flags take one or more values; the others take exactly one.
	Multi bool
	// Bool flags take no value (only -h/--help).
	Bool bool
	// Required flags must be given.
	Required bool
	// OneOf names a group of flags of which at least one must be given,
	// e.g. "source" for --source-addresses and --source-ip-groups.
	OneOf string
	// Ignored flags are accepted for pasted az commands and have no effect.
	Ignored bool
	// Value names the value in usage, e.g. "NAME" or "PORT".
	Value string
	// Help is the one-line description shown in usage.
	Help string
}

// Args is the result of ParseArgs: the value(s) of every flag given, by
// canonical (long) name.
type Args struct {
	values map[string][]string
	order  []string // flags in the order given
}

// Has reports whether the flag was given.
func (a *Args) Has(name string) bool {
	_, ok := a.values[name]
	return ok
}

// Get returns the single value of a flag, or "" when it was not given.
func (a *Args) Get(name string) string {
	if v := a.values[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// List returns the values of a flag, or nil when it was not given.
func (a *Args) List(name string) []string { return a.values[name] }

// Names returns the canonical names of the flags given, in order.
func (a *Args) Names() []string { return append([]string(nil), a.order...) }

// looksLikeFlag reports whether an argument starts a new flag: a '-'
// followed by a letter or another '-'. So "-1", "-" and "*" are values.
func looksLikeFlag(s string) bool {
	if len(s) < 2 || s[0] != '-' {
		return false
	}
	if s[1] == '-' {
		return true
	}
	r, _ := utf8.DecodeRuneInString(s[1:])
	return unicode.IsLetter(r)
}

// ParseArgs parses az-style arguments against specs. A flag is --name or a
// one-letter -n; it takes every following argument up to the next one that
// looks like a flag ('-' then a letter or '-'). --name=value (or -n=value)
// gives exactly one value, which may itself start with '-'. Errors name
// the flag and, for unknown flags, list the valid ones. Required flags are
// checked too; the caller checks one-of groups.
func ParseArgs(args []string, specs []FlagSpec) (*Args, error) {
	byName := map[string]*FlagSpec{}
	for i := range specs {
		s := &specs[i]
		byName["--"+s.Name] = s
		if s.Short != "" {
			byName["-"+s.Short] = s
		}
		for _, al := range s.Aliases {
			byName["--"+al] = s
		}
	}
	out := &Args{values: map[string][]string{}}
	given := map[string]string{} // canonical name -> spelling used
	for i := 0; i < len(args); {
		arg := args[i]
		if !looksLikeFlag(arg) {
			return nil, fmt.Errorf("unexpected argument %q: values must follow a flag (quote values that contain spaces)", arg)
		}
		spelled, value, hasValue := strings.Cut(arg, "=")
		spec, ok := byName[spelled]
		if !ok {
			return nil, unknownFlag(spelled, specs)
		}
		if prev, dup := given[spec.Name]; dup {
			if prev == spelled {
				return nil, fmt.Errorf("flag %s is given twice", spelled)
			}
			return nil, fmt.Errorf("flag %s is given twice (as %s and %s)", flagLabel(spec), prev, spelled)
		}
		given[spec.Name] = spelled
		out.order = append(out.order, spec.Name)
		i++
		if spec.Bool {
			if hasValue {
				return nil, fmt.Errorf("flag %s takes no value", spelled)
			}
			out.values[spec.Name] = nil
			continue
		}
		var vals []string
		if hasValue {
			vals = []string{value}
		} else {
			for i < len(args) && !looksLikeFlag(args[i]) {
				vals = append(vals, args[i])
				i++
			}
		}
		switch {
		case len(vals) == 0:
			return nil, fmt.Errorf("flag %s needs a value", spelled)
		case len(vals) > 1 && !spec.Multi:
			return nil, fmt.Errorf("flag %s takes one value, got %d: %s (quote a value that contains spaces)", spelled, len(vals), quoteAll(vals))
		}
		out.values[spec.Name] = vals
	}
	if out.Has("help") {
		return out, nil
	}
	var missing []string
	groups := map[string][]string{}
	var groupOrder []string
	satisfied := map[string]bool{}
	for i := range specs {
		s := &specs[i]
		if s.Required && !out.Has(s.Name) {
			missing = append(missing, flagLabel(s))
		}
		if s.OneOf != "" {
			if _, seen := groups[s.OneOf]; !seen {
				groupOrder = append(groupOrder, s.OneOf)
			}
			groups[s.OneOf] = append(groups[s.OneOf], flagLabel(s))
			if out.Has(s.Name) {
				satisfied[s.OneOf] = true
			}
		}
	}
	n := len(missing)
	parts := []string{}
	if n > 0 {
		parts = append(parts, strings.Join(missing, ", "))
	}
	for _, g := range groupOrder {
		if !satisfied[g] {
			parts = append(parts, "one of "+strings.Join(groups[g], " or "))
			n++
		}
	}
	if n > 0 {
		return out, fmt.Errorf("missing required flag%s: %s", plural(n), strings.Join(parts, "; "))
	}
	return out, nil
}

func unknownFlag(spelled string, specs []FlagSpec) error {
	var valid, names []string
	for i := range specs {
		if specs[i].Ignored {
			continue
		}
		valid = append(valid, flagLabel(&specs[i]))
		names = append(names, "--"+specs[i].Name)
		for _, al := range specs[i].Aliases {
			names = append(names, "--"+al)
		}
	}
	sort.Strings(valid)
	hint := ""
	if s := closest(spelled, names); s != "" {
		hint = fmt.Sprintf(" (did you mean %s?)", s)
	} else if s := uniquePrefix(spelled, names); s != "" {
		hint = fmt.Sprintf(" (did you mean %s?)", s)
	}
	return fmt.Errorf("unknown flag %s%s; valid flags: %s", spelled, hint, strings.Join(valid, ", "))
}

// flagLabel is "--name/-n" or "--name".
func flagLabel(s *FlagSpec) string {
	if s.Short != "" {
		return "--" + s.Name + "/-" + s.Short
	}
	return "--" + s.Name
}

func quoteAll(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, " ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// closest returns the candidate nearest to s by edit distance, if close.
func closest(s string, cands []string) string {
	best, bestD := "", 4
	ls := strings.ToLower(s)
	if len(ls) < 4 {
		return "" // "-x" is close to every short name
	}
	for _, c := range cands {
		if d := policy.EditDistance(ls, strings.ToLower(c)); d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	return best
}

// uniquePrefix returns the one candidate that starts with s, if exactly one
// does. Abbreviated flags are not accepted, only suggested.
func uniquePrefix(s string, cands []string) string {
	if len(s) < 4 {
		return ""
	}
	found := ""
	for _, c := range cands {
		if strings.HasPrefix(c, s) {
			if found != "" {
				return ""
			}
			found = c
		}
	}
	return found
}

// Usage formats a command's usage: its synopsis and one line per flag.
func Usage(synopsis string, specs []FlagSpec) string {
	var b strings.Builder
	b.WriteString("Usage:\n  ")
	b.WriteString(synopsis)
	b.WriteString("\n\nFlags:\n")
	type line struct{ left, help string }
	var lines []line
	width := 0
	for i := range specs {
		s := &specs[i]
		left := "--" + s.Name
		if s.Short != "" {
			left = "-" + s.Short + ", " + left
		} else {
			left = "    " + left
		}
		for _, al := range s.Aliases {
			left += ", --" + al
		}
		if !s.Bool {
			v := s.Value
			if v == "" {
				v = "VALUE"
			}
			if s.Multi {
				v += " [" + v + " ...]"
			}
			left += " " + v
		}
		help := s.Help
		switch {
		case s.Required:
			help += " (required)"
		case s.OneOf != "":
			help += " (this or another " + s.OneOf + " flag is required)"
		}
		lines = append(lines, line{left, help})
		width = max(width, len(left))
	}
	for _, l := range lines {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, l.left, l.help)
	}
	b.WriteString("\nA flag takes every following argument up to the next flag, as in az:\n" +
		"  --protocols 'http=80' 'https=443'. --flag=value gives one value that may start with '-'.\n")
	return b.String()
}

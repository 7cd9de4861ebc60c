package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/atomicfile"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/policy/azure"
)

func importCommands() []*cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Convert another firewall's configuration into a clusterwall policy",
	}
	var out, tagsFile, tagsRef string
	az := &cobra.Command{
		Use:   "azure FILE.json [FILE.json...]",
		Short: "Convert an Azure Firewall Policy or classic Azure Firewall (ARM JSON, az CLI output) into policy YAML",
		Long: `Convert what Azure already holds into clusterwall's policy YAML:

  - an Azure Firewall Policy: an ARM template (az group export, the portal's
    "Export template") with Microsoft.Network/firewallPolicies,
    firewallPolicies/ruleCollectionGroups and ipGroups resources, or the
    output of 'az network firewall policy show' and
    'az network firewall policy rule-collection-group list' (give both files,
    or concatenate them; '-' reads standard input);
  - a classic Azure Firewall: the output of 'az network firewall show', or
    an ARM template with a Microsoft.Network/azureFirewalls resource. Its
    rules land in the default groups as Azure's migration puts them: DNAT
    in DefaultDnatRuleCollectionGroup (100), network rules in
    DefaultNetworkRuleCollectionGroup (200), application rules in
    DefaultApplicationRuleCollectionGroup (300).

Whatever cannot be carried over (web categories, TLS inspection, IDPS, URL
filtering, ...) is printed as "warning: PATH: MSG" and written as a comment
at the rule it concerns; a warning says when a rule was skipped and whether
that makes the policy stricter or LOOSER than it was in Azure. The result is
then validated (service tags come from --service-tags, or from the file
--service-tags-ref names). The YAML is written even when it does not
validate (for example when an IP group must be defined by hand); the exit
code is then 1.`,
		Example: `  az network firewall policy show -g rg -n fwpolicy > policy.json
  az network firewall policy rule-collection-group list -g rg --policy-name fwpolicy > rcgs.json
  clusterwall import azure policy.json rcgs.json --service-tags ServiceTags_Public.json -o policy.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImportAzure(cmd, args, out, tagsFile, tagsRef)
		},
	}
	az.Flags().StringVarP(&out, "output", "o", "", "write the policy to this file (atomically) instead of standard output")
	az.Flags().StringVar(&tagsFile, "service-tags", "", "service tags file (Azure ServiceTags_Public JSON) to validate the result with")
	az.Flags().StringVar(&tagsRef, "service-tags-ref", "", "write serviceTags: PATH into the policy (relative to the output file)")
	cmd.AddCommand(az)
	return []*cobra.Command{cmd}
}

func runImportAzure(cmd *cobra.Command, args []string, out, tagsFile, tagsRef string) error {
	stderr := cmd.ErrOrStderr()
	var srcs []azure.Source
	for _, name := range args {
		var data []byte
		var err error
		if name == "-" {
			data, err = io.ReadAll(cmd.InOrStdin())
			name = "<stdin>"
		} else {
			data, err = os.ReadFile(name)
		}
		if err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("clusterwall: %v", err)}
		}
		srcs = append(srcs, azure.Source{Name: name, Data: data})
	}
	f, warns, err := azure.ImportAll(srcs...)
	if err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	if tagsRef != "" {
		f.ServiceTags = tagsRef
	}
	for _, w := range warns {
		at := ""
		if w.Pos.Line > 0 {
			at = " (" + w.Pos.String() + ")"
		}
		fmt.Fprintf(stderr, "warning: %s: %s%s\n", w.Path, w.Msg, at)
	}

	// Validate as the written file will be read: relative paths from its folder.
	base := out
	if base == "" {
		base = "policy.yaml"
	}
	var verrs policy.ErrorList
	if _, err := policy.Validate(f, base, policy.Options{ServiceTagsFile: tagsFile}); err != nil {
		if !errors.As(err, &verrs) {
			verrs = policy.ErrorList{{Msg: err.Error()}}
		}
	}
	for _, e := range verrs {
		where, field := azure.RulePath(f, e.Path)
		switch {
		case where != "" && field != "":
			fmt.Fprintf(stderr, "error: %s: %s: %s\n", where, field, e.Msg)
		case where != "":
			fmt.Fprintf(stderr, "error: %s: %s\n", where, e.Msg)
		case field != "":
			fmt.Fprintf(stderr, "error: %s: %s\n", field, e.Msg)
		default:
			fmt.Fprintf(stderr, "error: %s\n", e.Msg)
		}
	}

	source := args[0]
	if source == "-" {
		source = "standard input"
	}
	if len(args) > 1 {
		source = fmt.Sprintf("%s and %d more files", args[0], len(args)-1)
	}
	yml, err := azure.Render(f, source, warns, verrs)
	if err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("clusterwall: rendering YAML: %v", err)}
	}
	if out == "" {
		if _, err := cmd.OutOrStdout().Write(yml); err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("clusterwall: %v", err)}
		}
	} else if err := atomicfile.Write(out, yml, 0o644); err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("clusterwall: %v", err)}
	}

	rules, severe := 0, 0
	for _, g := range f.RuleCollectionGroups {
		for _, c := range g.RuleCollections {
			rules += len(c.Rules)
		}
	}
	for _, w := range warns {
		if w.Severe {
			severe++
		}
	}
	summary := fmt.Sprintf("imported %d rule collection groups, %d rules; %d warnings", len(f.RuleCollectionGroups), rules, len(warns))
	if severe > 0 {
		summary += fmt.Sprintf(" (%d may make the policy LOOSER or changed its structure: review them)", severe)
	}
	if len(verrs) > 0 {
		summary += fmt.Sprintf("; %d validation errors", len(verrs))
	}
	fmt.Fprintln(stderr, summary)
	if len(verrs) > 0 {
		return &exitError{code: 1}
	}
	return nil
}

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

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
	var o importOpts
	az := &cobra.Command{
		Use:   "azure FILE.json [FILE.json...]",
		Short: "Convert an Azure Firewall Policy or classic Azure Firewall (ARM template, az CLI or REST output) into policy YAML",
		Long: `Convert what Azure already holds into clusterwall's policy YAML:

  - an Azure Firewall Policy: an ARM template (az group export, the portal's
    "Export template", a quickstart, a compiled Bicep file) with
    Microsoft.Network/firewallPolicies, firewallPolicies/ruleCollectionGroups
    and ipGroups resources, or the output of 'az network firewall policy
    show' and 'az network firewall policy rule-collection-group list' (or
    the REST API's {"value": [...]} list); give both files, or concatenate
    them; '-' reads standard input;
  - a classic Azure Firewall: the output of 'az network firewall show', or
    an ARM template with a Microsoft.Network/azureFirewalls resource. Its
    rules land in the default groups as Azure's migration puts them: DNAT
    in DefaultDnatRuleCollectionGroup (100), network rules in
    DefaultNetworkRuleCollectionGroup (200), application rules in
    DefaultApplicationRuleCollectionGroup (300).

A template is evaluated as 'az deployment group create' would deploy it:
parameters (--parameters, else their defaultValue), variables, template
functions, copy loops, conditions and nested deployments. A value only known
once deployed (a parameter without a value, a public IP address, the resource
group's region) is named with the rules that need it, and the import fails
unless --allow-partial is given.

Whatever is not carried over exactly (web categories, TLS inspection, IDPS,
URL filtering, FQDN tags clusterwall does not build in, ...) is printed as
"warning: PATH: MSG" and written as a comment at the rule it concerns; every
such warning says whether the result is STRICTER or LOOSER than the policy
was in Azure. --strict makes any warning that may be LOOSER an error.
The result is then validated (service tags come from --service-tags, or
from the file --service-tags-ref names). The YAML is written even when it
does not validate (for example when an IP group must be defined by hand);
the exit code is then 1.`,
		Example: `  az network firewall policy show -g rg -n fwpolicy > policy.json
  az network firewall policy rule-collection-group list -g rg --policy-name fwpolicy > rcgs.json
  clusterwall import azure policy.json rcgs.json --service-tags ServiceTags_Public.json -o policy.yaml

  clusterwall import azure azuredeploy.json --parameters @azuredeploy.parameters.json \
      --parameters location=westeurope --public-ip pip-fw=203.0.113.10 --location westeurope --strict -o policy.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImportAzure(cmd, args, o)
		},
	}
	f := az.Flags()
	f.StringVarP(&o.out, "output", "o", "", "write the policy to this file (atomically) instead of standard output")
	f.StringVar(&o.tagsFile, "service-tags", "", "service tags file (Azure ServiceTags_Public JSON) to validate the result with")
	f.StringVar(&o.tagsRef, "service-tags-ref", "", "write serviceTags: PATH into the policy (relative to the output file)")
	f.StringArrayVarP(&o.params, "parameters", "p", nil, "template parameters as az deployment takes them: @FILE.json, NAME=VALUE, NAME=@FILE or a JSON object (repeatable; later ones win)")
	f.StringArrayVar(&o.publicIPs, "public-ip", nil, "NAME=ADDRESS: the address Azure gave the public IP resource NAME (for reference(...).ipAddress in DNAT rules; repeatable)")
	f.StringArrayVar(&o.references, "reference", nil, "NAME=JSON: the deployed state of a resource the template reads with reference() but does not deploy (NAME: its resource ID or name; repeatable)")
	f.StringVar(&o.policy, "policy", "", "import the firewall policy (or firewall) of this name when the input holds several")
	f.BoolVar(&o.includeBase, "include-base", false, "follow the policy's basePolicy within the input files and import it too, as the policy's basePolicy:")
	f.StringVar(&o.location, "location", "", "the region of the resource group the template is deployed to (resourceGroup().location)")
	f.StringVarP(&o.resourceGroup, "resource-group", "g", "", "the resource group's name (resourceGroup().name; only names and IDs depend on it)")
	f.StringVar(&o.subscription, "subscription", "", "the subscription ID (subscription().subscriptionId; only names and IDs depend on it)")
	f.BoolVar(&o.strict, "strict", false, "fail (exit 1, write nothing) when any warning may make the policy LOOSER than in Azure")
	f.BoolVar(&o.allowPartial, "allow-partial", false, "write the policy even when values only known at deployment are missing (the rules that need them are skipped or narrowed)")
	cmd.AddCommand(az)
	return []*cobra.Command{cmd}
}

type importOpts struct {
	out, tagsFile, tagsRef            string
	params, publicIPs, references     []string
	policy, location, resourceGroup   string
	subscription                      string
	includeBase, strict, allowPartial bool
}

// paramArg matches the NAME=VALUE values az takes after --parameters.
var paramArg = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$.-]*=`)

func runImportAzure(cmd *cobra.Command, args []string, o importOpts) error {
	stderr := cmd.ErrOrStderr()
	// az takes several values after one --parameters (--parameters a=1
	// b=@f.json @p.json); the command line library hands the later ones
	// over as arguments: take back those that are not files.
	var files []string
	for _, a := range args {
		if _, err := os.Stat(a); err != nil && len(o.params) > 0 && (paramArg.MatchString(a) || strings.HasPrefix(a, "@")) {
			o.params = append(o.params, a)
			continue
		}
		files = append(files, a)
	}
	if len(files) == 0 {
		return &exitError{code: 1, msg: "clusterwall: import azure: no input file"}
	}
	args = files
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
	params, err := azure.ParseParameters(o.params, os.ReadFile)
	if err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	ips, err := azure.ParsePublicIPs(o.publicIPs)
	if err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	refs, err := azure.ParseReferences(o.references)
	if err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	opts := azure.Options{
		Deploy: azure.Deploy{Parameters: params, PublicIPs: ips, References: refs, Location: o.location,
			ResourceGroup: o.resourceGroup, Subscription: o.subscription},
		Policy: o.policy, IncludeBase: o.includeBase,
	}
	f, warns, err := azure.ImportWith(opts, srcs...)
	if err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	if o.tagsRef != "" {
		f.ServiceTags = o.tagsRef
	}
	for _, w := range warns {
		at := ""
		if w.Pos.Line > 0 {
			at = " (" + w.Pos.String() + ")"
		}
		fmt.Fprintf(stderr, "warning: %s: %s%s\n", w.Path, w.Msg, at)
	}

	// Values only known at deployment: name each, with what needs it.
	if !o.allowPartial {
		var order []string
		need := map[string][]string{}
		for _, w := range warns {
			if w.Unknown == "" {
				continue
			}
			for _, u := range strings.Split(w.Unknown, "; ") {
				if _, ok := need[u]; !ok {
					order = append(order, u)
				}
				need[u] = append(need[u], w.Path)
			}
		}
		if len(order) > 0 {
			var b strings.Builder
			fmt.Fprintf(&b, "error: %d values are only known at deployment or could not be evaluated; nothing was written (give them, or pass --allow-partial to import without them):", len(order))
			for _, u := range order {
				fmt.Fprintf(&b, "\n  %s\n    needed by: %s", u, strings.Join(slices.Compact(slices.Sorted(slices.Values(need[u]))), ", "))
			}
			return &exitError{code: 1, msg: b.String()}
		}
	}
	if o.strict {
		var looser []string
		for _, w := range warns {
			if w.Effect.MayLoosen() {
				looser = append(looser, fmt.Sprintf("  %s: %s", w.Path, w.Msg))
			}
		}
		if len(looser) > 0 {
			return &exitError{code: 1, msg: fmt.Sprintf("error: --strict: %d warnings may make the policy LOOSER than in Azure; nothing was written:\n%s", len(looser), strings.Join(looser, "\n"))}
		}
	}

	// Validate as the written file will be read: relative paths from its folder.
	base := o.out
	if base == "" {
		base = "policy.yaml"
	}
	var verrs policy.ErrorList
	if _, err := policy.Validate(f, base, policy.Options{ServiceTagsFile: o.tagsFile}); err != nil {
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
	if o.out == "" {
		if _, err := cmd.OutOrStdout().Write(yml); err != nil {
			return &exitError{code: 1, msg: fmt.Sprintf("clusterwall: %v", err)}
		}
	} else if err := atomicfile.Write(o.out, yml, 0o644); err != nil {
		return &exitError{code: 1, msg: fmt.Sprintf("clusterwall: %v", err)}
	}

	rules, groups, baseRules, looser, stricter := 0, 0, 0, 0, 0
	for b := f; b != nil; {
		groups += len(b.RuleCollectionGroups)
		for _, g := range b.RuleCollectionGroups {
			for _, c := range g.RuleCollections {
				rules += len(c.Rules)
				if b != f {
					baseRules += len(c.Rules)
				}
			}
		}
		if b.BasePolicy == nil {
			break
		}
		b = b.BasePolicy.Policy
	}
	for _, w := range warns {
		switch {
		case w.Effect.MayLoosen():
			looser++
		case w.Effect == azure.EffectStricter:
			stricter++
		}
	}
	summary := fmt.Sprintf("imported %d rule collection groups, %d rules; %d warnings", groups, rules, len(warns))
	if f.BasePolicy != nil {
		summary = fmt.Sprintf("imported %d rule collection groups, %d rules (%d of them in base policies); %d warnings", groups, rules, baseRules, len(warns))
	}
	if looser+stricter > 0 {
		summary += fmt.Sprintf(" (%d STRICTER, %d may be LOOSER: review them)", stricter, looser)
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

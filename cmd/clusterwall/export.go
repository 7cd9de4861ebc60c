package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/atomicfile"
	"github.com/clusterwall/clusterwall/internal/controller"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/policy/azure"
)

func exportCommands() []*cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Convert a policy into another form",
	}
	var file, name, ns, out, tags string
	crd := &cobra.Command{
		Use:   "crd --policy FILE",
		Short: "Convert a policy (YAML, or Azure ARM JSON) into clusterwall.io/v1alpha1 objects",
		Long: `Convert a policy file into Kubernetes objects for the clusterwall controller
(docs/kubernetes.md): one FirewallPolicy holding the settings and every rule
collection group, or, with --groups-namespace, a FirewallPolicy with the
settings and one RuleCollectionGroup per group in that namespace (with
guardrails that let them do what the file did). The input is validated first
(errors as FILE:LINE:COL); a file starting with '{' is read as an Azure
Firewall Policy export (as 'clusterwall import azure' does). The output is a
YAML stream for 'kubectl apply -f -'.`,
		Example: `  clusterwall export crd --policy examples/aks-egress.yaml | kubectl apply -f -`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return &exitError{code: 2, msg: "clusterwall export crd: --policy FILE is required"}
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return &exitError{code: 1, msg: fmt.Sprintf("clusterwall: %v", err)}
			}
			opts := policy.Options{ServiceTagsFile: tags}
			var f *policy.File
			if strings.HasPrefix(strings.TrimSpace(string(data)), "{") {
				var warns []azure.Warning
				if f, warns, err = azure.Import(file, data); err != nil {
					return &exitError{code: 1, msg: err.Error()}
				}
				for _, w := range warns {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s: %s\n", w.Path, w.Msg)
				}
				if _, err := policy.Validate(f, file, opts); err != nil {
					return &exitError{code: 1, msg: err.Error()}
				}
			} else {
				if _, err := policy.Load(file, data, opts); err != nil {
					return &exitError{code: 1, msg: err.Error()}
				}
				if f, _, err = policy.DecodeYAML(file, data); err != nil {
					return &exitError{code: 1, msg: err.Error()}
				}
				// A base policy becomes a FirewallPolicy of its own.
				if err := policy.InlineBases(f, file); err != nil {
					return &exitError{code: 1, msg: err.Error()}
				}
			}
			ex, err := controller.Export(f, controller.ExportOptions{Name: name, GroupsNamespace: ns})
			if err != nil {
				return &exitError{code: 1, msg: "clusterwall export crd: " + err.Error()}
			}
			for _, w := range ex.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			y, err := ex.YAML()
			if err != nil {
				return err
			}
			if out == "" {
				_, err = cmd.OutOrStdout().Write(y)
				return err
			}
			return atomicfile.Write(out, y, 0o644)
		},
	}
	crd.Flags().StringVar(&file, "policy", "", "the policy file (YAML, or Azure Firewall Policy ARM JSON)")
	crd.Flags().StringVar(&name, "name", controller.DefaultFirewallPolicyName, "name of the FirewallPolicy")
	crd.Flags().StringVar(&ns, "groups-namespace", "", "export the groups as RuleCollectionGroups in this namespace")
	crd.Flags().StringVar(&tags, "service-tags", "", "service tags file to validate the input with (overrides the policy's serviceTags)")
	crd.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of standard output")
	cmd.AddCommand(crd)
	return []*cobra.Command{cmd}
}

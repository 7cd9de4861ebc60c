package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/policy/azcli"
)

// azCommands builds the az-style policy editing commands: network-rule,
// application-rule and nat-rule, each with create, list, show, delete and
// collection list|show|delete. The leaves parse their own flags
// (azcli.ParseArgs), because az flags take several space-separated values,
// which pflag cannot parse.
func azCommands() []*cobra.Command {
	parents := map[string]*cobra.Command{}
	var top []*cobra.Command
	parent := func(path []string) *cobra.Command {
		key := strings.Join(path, " ")
		if p, ok := parents[key]; ok {
			return p
		}
		p := &cobra.Command{
			Use:   path[len(path)-1],
			Short: groupShort(path),
			Args:  cobra.ArbitraryArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return cmd.Help()
				}
				var subs []string
				for _, c := range cmd.Commands() {
					subs = append(subs, c.Name())
				}
				return fmt.Errorf("unknown command %q for %q; valid: %s", args[0], cmd.CommandPath(), strings.Join(subs, ", "))
			},
		}
		parents[key] = p
		return p
	}
	for _, c := range azcli.Commands() {
		leaf := &cobra.Command{
			Use:                c.Path[len(c.Path)-1] + " --policy FILE [flags]",
			Short:              c.Short,
			Long:               c.Usage(),
			DisableFlagParsing: true,
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := c.Run(args, cmd.OutOrStdout()); err != nil {
					return &exitError{code: 1, msg: "clusterwall: " + err.Error()}
				}
				return nil
			},
		}
		var up *cobra.Command
		for i := 1; i < len(c.Path); i++ {
			p := parent(c.Path[:i])
			if i == 1 && up == nil && !contains(top, p) {
				top = append(top, p)
			}
			if up != nil && !contains(up.Commands(), p) {
				up.AddCommand(p)
			}
			up = p
		}
		up.AddCommand(leaf)
	}
	return top
}

func groupShort(path []string) string {
	kind := map[string]string{
		"network-rule":     "network",
		"application-rule": "application",
		"nat-rule":         "DNAT",
	}[path[0]]
	if len(path) == 1 {
		return fmt.Sprintf("Edit a policy's %s rules with az network firewall %s flags", kind, path[0])
	}
	return fmt.Sprintf("List, show or delete %s rule collections", kind)
}

func contains(list []*cobra.Command, c *cobra.Command) bool {
	for _, x := range list {
		if x == c {
			return true
		}
	}
	return false
}

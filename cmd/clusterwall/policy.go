package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/policy"
)

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Work with policy files",
	}
	var tagsFile string
	validate := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check policy files; print every problem as FILE:LINE:COL: message",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bad := false
			for _, f := range args {
				p, err := policy.LoadFile(f, policy.Options{ServiceTagsFile: tagsFile})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					bad = true
					continue
				}
				for _, w := range p.Warnings {
					fmt.Fprintln(os.Stderr, "warning:", w)
				}
				n := 0
				for _, g := range p.Groups {
					for _, c := range g.Collections {
						n += len(c.Rules)
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%d rule collection groups, %d rules)\n", f, len(p.Groups), n)
			}
			if bad {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	validate.Flags().StringVar(&tagsFile, "service-tags", "", "service tags file (Azure ServiceTags_Public JSON); overrides the policy's serviceTags")
	cmd.AddCommand(validate)
	return cmd
}

// loadPolicy loads a policy for a command, with the common --service-tags override.
func loadPolicy(path, tagsFile string) (*policy.Policy, error) {
	p, err := policy.LoadFile(path, policy.Options{ServiceTagsFile: tagsFile})
	if err != nil {
		return nil, &exitError{code: 1, msg: err.Error()}
	}
	return p, nil
}

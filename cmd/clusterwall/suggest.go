package main

import (
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/logquery"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// suggestCommands: `clusterwall suggest`, rules that would allow what the
// decision log shows denied.
func suggestCommands() []*cobra.Command {
	var (
		lf           logFlags
		policyFile   string
		tagsFile     string
		minCount     int
		wildcardMin  int
		clusterCIDRs []string
		exact        bool
		merge        bool
	)
	cmd := &cobra.Command{
		Use:   "suggest [--since 24h] [--min-count N] [--policy FILE | --config FILE] [--merge]",
		Short: "Propose the smallest set of rules that would allow what was denied",
		Long: `suggest reads the decision log's denied flows and prints a rule collection
group, as policy YAML with the evidence counts as comments, that would allow them:
application rules for HTTP/HTTPS names (several subdomains of one registrable
domain become *.domain — never a public suffix), network rules for the rest
(protocol, destinations, ports). Sources collapse into the policy's IP groups,
its rules' source prefixes and --cluster-cidr when they contain them.

It never proposes to allow what threat intelligence flagged, nor overrides an
explicit Deny rule; both are listed in comments. With the running policy
(--policy, or the daemon's --config), flows it already allows are left out and
the group gets a free name and the lowest precedence. The output is validated
before it is printed; --merge prints the whole policy with the group appended.
Review it, then apply it (clusterwall apply, or edit the policy file).
docs/logs.md describes the method.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, cfg, err := lf.path()
			if err != nil {
				return &exitError{code: 1, msg: "suggest: " + err.Error()}
			}
			if policyFile == "" && cfg != nil {
				policyFile = cfg.policy
				if tagsFile == "" {
					tagsFile = cfg.serviceTags
				}
			}
			if merge && policyFile == "" {
				return &exitError{code: 1, msg: "suggest: --merge needs --policy or --config"}
			}
			q, err := lf.filter(time.Now())
			if err != nil {
				return &exitError{code: 1, msg: "suggest: " + err.Error()}
			}
			opts := logquery.SuggestOptions{MinCount: minCount, WildcardMin: wildcardMin, ExactSources: exact}
			for _, s := range clusterCIDRs {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					return &exitError{code: 1, msg: fmt.Sprintf("suggest: --cluster-cidr %q is not a CIDR", s)}
				}
				opts.ClusterCIDRs = append(opts.ClusterCIDRs, p)
			}
			var policyData []byte
			if policyFile != "" {
				if policyData, err = os.ReadFile(policyFile); err != nil {
					return &exitError{code: 1, msg: "suggest: " + err.Error()}
				}
				p, err := policy.Load(policyFile, policyData, policy.Options{ServiceTagsFile: tagsFile})
				if err != nil {
					return &exitError{code: 1, msg: err.Error()}
				}
				opts.Policy = p
			}
			c := logquery.NewCollector()
			if _, err := logquery.Read(path, q, func(r *telemetry.Record) error { c.Add(r); return nil }); err != nil {
				return &exitError{code: 1, msg: "suggest: " + err.Error()}
			}
			s, err := c.Suggest(opts)
			if err != nil {
				return &exitError{code: 1, msg: "suggest: " + err.Error()}
			}
			out := s.YAML()
			name := "suggestion"
			if merge {
				if out, err = logquery.Merge(policyData, s); err != nil {
					return &exitError{code: 1, msg: "suggest: " + err.Error()}
				}
				name = policyFile
			}
			// Never print a policy that does not validate.
			if _, err := policy.Load(name, out, policy.Options{ServiceTagsFile: tagsFile}); err != nil {
				return &exitError{code: 1, msg: fmt.Sprintf("suggest: the generated policy does not validate (a bug; please report it): %v\n%s", err, out)}
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	lf.register(cmd, false)
	cmd.Flags().StringVar(&policyFile, "policy", "", "the running policy (default: the daemon config's policy)")
	cmd.Flags().StringVar(&tagsFile, "service-tags", "", "service tags file (overrides the policy's serviceTags)")
	cmd.Flags().IntVar(&minCount, "min-count", 1, "leave out destinations denied fewer times")
	cmd.Flags().IntVar(&wildcardMin, "wildcard-min", 2, "distinct names below a domain that make a *.domain")
	cmd.Flags().StringSliceVar(&clusterCIDRs, "cluster-cidr", nil, "prefixes sources may collapse into (the cluster subnet)")
	cmd.Flags().BoolVar(&exact, "exact-sources", false, "keep source addresses as seen (no collapse into IP groups or prefixes)")
	cmd.Flags().BoolVar(&merge, "merge", false, "print the whole policy with the suggested group appended")
	cmd.Flags().Lookup("since").DefValue = "24h"
	lf.since = "24h"
	return []*cobra.Command{cmd}
}

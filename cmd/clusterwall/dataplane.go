//go:build linux

package main

import (
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/daemon"
	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nft"
)

// dataplaneCommands: `clusterwall dataplane show|flush|compile`.
func dataplaneCommands() []*cobra.Command {
	cmd := &cobra.Command{
		Use:   "dataplane",
		Short: "Inspect, remove or preview the kernel data plane (nftables table inet clusterwall)",
	}
	var netns string
	runner := func() (*nft.NetlinkRunner, func(), error) {
		if netns == "" {
			return nft.NewNetlinkRunner(nft.NetlinkOptions{}), func() {}, nil
		}
		f, err := nft.OpenNetNS(netns)
		if err != nil {
			return nil, nil, &exitError{code: 1, msg: err.Error()}
		}
		return nft.NewNetlinkRunner(nft.NetlinkOptions{NetNSFd: int(f.Fd())}), func() { f.Close() }, nil
	}

	var all bool
	show := &cobra.Command{
		Use:   "show",
		Short: "Print what is in the kernel: base chains, rules, decision counters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, done, err := runner()
			if err != nil {
				return err
			}
			defer done()
			st, err := r.Show()
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			return st.Format(cmd.OutOrStdout(), all)
		},
	}
	show.Flags().BoolVar(&all, "all", false, "list every chain and set, the classifier's too")

	flush := &cobra.Command{
		Use:   "flush",
		Short: "Remove clusterwall's table (and only it): the firewall stops filtering",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, done, err := runner()
			if err != nil {
				return err
			}
			defer done()
			if err := r.Flush(); err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			fmt.Fprintln(cmd.OutOrStdout(), "table inet clusterwall removed")
			return nil
		},
	}
	for _, c := range []*cobra.Command{show, flush} {
		c.Flags().StringVar(&netns, "netns", "", "network namespace (a name under /run/netns) instead of the current one")
	}

	var (
		cfg             nft.Config
		public, private []string
		snat, tagsFile  string
		logRate         int
	)
	compile := &cobra.Command{
		Use:   "compile POLICY",
		Short: "Print the ruleset a policy compiles to (nft syntax), without touching the kernel",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := loadPolicy(args[0], tagsFile)
			if err != nil {
				return err
			}
			for _, l := range []struct {
				in  []string
				out *[]netip.Addr
			}{{public, &cfg.PublicIPs}, {private, &cfg.PrivateIPs}} {
				for _, s := range l.in {
					a, err := netip.ParseAddr(s)
					if err != nil {
						return &exitError{code: 2, msg: fmt.Sprintf("bad address %q: %v", s, err)}
					}
					*l.out = append(*l.out, a)
				}
			}
			if cfg.SNAT, err = nft.ParseSNATMode(snat); err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			// As the daemon compiles log.ratePerSecond (daemon.Config.DataplaneConfig).
			if logRate < 0 {
				return &exitError{code: 2, msg: fmt.Sprintf("--log-rate must be 0 or more, not %d", logRate)}
			}
			cfg.LimitRuleLogs = logRate > 0
			if logRate == 0 {
				logRate = daemon.DefaultLogRate
			}
			cfg.LogRate, cfg.LogBurst = uint64(logRate), uint32(2*logRate)
			if err := cfg.Validate(); err != nil {
				return &exitError{code: 2, msg: err.Error()}
			}
			m, err := match.Compile(p, match.Options{Gateway: cfg.Gateway()})
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			rs, err := nft.Compile(m, cfg)
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			for _, w := range rs.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			fmt.Fprint(cmd.OutOrStdout(), rs.String())
			fmt.Fprintf(cmd.ErrOrStderr(), "%d network rules, %d DNAT rules: %d chains, %d sets, longest classifier path %d rules\n",
				rs.Stats.NetworkRules, rs.Stats.DNATRules, len(rs.Chains), len(rs.Sets), rs.Stats.MaxSequential)
			return nil
		},
	}
	f := compile.Flags()
	f.StringVar(&cfg.Inside, "inside", "inside", "cluster-facing interface")
	f.StringVar(&cfg.Outside, "outside", "outside", "internet-facing interface")
	f.StringArrayVar(&public, "public-ip", nil, "public IP of the firewall (repeatable)")
	f.StringArrayVar(&private, "private-ip", nil, "private IP of the firewall, the cluster's DNS server (repeatable)")
	f.StringVar(&snat, "snat", "masquerade", "source NAT on the outside: masquerade, fixed (to the public IP) or off")
	f.StringVar(&tagsFile, "service-tags", "", "service tags file (Azure ServiceTags_Public JSON); overrides the policy's serviceTags")
	f.IntVar(&logRate, "log-rate", daemon.DefaultLogRate, "the daemon's log.ratePerSecond: the kernel logs at most this many flows a second (0: every flow a rule decides)")

	cmd.AddCommand(show, flush, compile)
	return []*cobra.Command{cmd}
}

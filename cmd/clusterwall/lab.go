//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/demo"
	"github.com/clusterwall/clusterwall/internal/lab"
)

// labCommands is the `clusterwall lab` family: the network-namespace lab
// that reproduces the seed's topology (docs/lab.md).
func labCommands() []*cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Build the seed's network (cluster subnet, firewall, internet) in network namespaces",
		Long: `The lab reproduces the seed's topology on this machine in network namespaces,
with no link to the host's own network. See docs/lab.md for hosts, names and addresses.`,
	}
	cmd.PersistentFlags().StringVar(&name, "name", lab.DefaultName, "lab name (namespace prefix: NAME-node, NAME-fw, ...)")

	var policyFile, wafConfig, tokenFile, tagsFile string
	var noDaemon, noDNSFwd, verbose, withWAF, haLab, activeActive bool
	up := &cobra.Command{
		Use:   "up",
		Short: "Create the lab (idempotent); with --policy also start the firewall daemon in fw (--waf: with the ingress WAF)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := lab.Config{Name: name, NoDNSForwarder: noDNSFwd}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelInfo
			}
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if (withWAF || wafConfig != "" || tokenFile != "" || tagsFile != "") && (policyFile == "" || noDaemon) {
				return &exitError{code: 2, msg: "clusterwall lab up: --waf, --waf-config, --token-file and --service-tags configure the daemon: they need --policy (without --no-daemon)"}
			}
			if policyFile != "" && !noDaemon {
				// The daemon runs a copy in the lab's state directory: an
				// apply persists there, never over the file given.
				cfg.Daemon = &lab.DaemonOptions{Policy: policyFile, CopyPolicy: true, TokenFile: tokenFile, ServiceTags: tagsFile,
					WAF: withWAF || wafConfig != "", WAFConfig: wafConfig}
			}
			if activeActive && !haLab {
				return &exitError{code: 2, msg: "lab up: --active-active needs --ha"}
			}
			if haLab {
				cfg.HA = &lab.HAOptions{ActiveActive: activeActive}
			}
			start := time.Now()
			l, err := lab.Up(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %s up in %s (state %s)\n", l.Name(), time.Since(start).Round(time.Millisecond), l.Dir())
			return nil
		},
	}
	up.Flags().StringVar(&policyFile, "policy", "", "start the firewall daemon (clusterwall run) in fw with a copy of this policy `FILE` (an apply changes the lab's copy, not FILE)")
	up.Flags().StringVar(&tokenFile, "token-file", "", "the daemon's admin API bearer tokens (`FILE` of \"TOKEN [NAME]\" lines; docs/api.md)")
	up.Flags().StringVar(&tagsFile, "service-tags", "", "the daemon's service tags `FILE` (overrides the policy's serviceTags)")
	up.Flags().BoolVar(&noDaemon, "no-daemon", false, "do not start the firewall daemon, even with --policy")
	up.Flags().BoolVar(&withWAF, "waf", false, "run the ingress WAF in the daemon: HTTPS on 203.0.113.33:443 and [2001:db8:cafe::33]:443, HTTP on port 80 (docs/lab.md)")
	up.Flags().StringVar(&wafConfig, "waf-config", "", "run the ingress WAF with this WAF config instead of the lab's (implies --waf)")
	up.Flags().StringVar(&tokenFile, "admin-token-file", "", "the same as --token-file")
	up.Flags().MarkHidden("admin-token-file")
	up.Flags().BoolVar(&noDNSFwd, "no-dns-forwarder", false, "do not run the stand-in DNS forwarder on 10.42.2.4:53")
	up.Flags().BoolVarP(&verbose, "verbose", "v", false, "log progress")
	up.Flags().BoolVar(&haLab, "ha", false, "two firewalls, fw and fw2, with keepalived and conntrackd (docs/ha.md)")
	up.Flags().BoolVar(&activeActive, "active-active", false, "with --ha: each firewall active for one gateway address; ECMP default routes")

	down := &cobra.Command{
		Use:   "down",
		Short: "Remove the lab: processes, namespaces, /etc/netns entries, state (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			start := time.Now()
			if err := lab.Remove(name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %s down in %s\n", name, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "Print hosts, addresses and processes; exit 1 if the lab is broken or partial",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Open(name)
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			s := l.Status()
			printLabStatus(cmd.OutOrStdout(), s)
			if !s.OK() {
				return &exitError{code: 1}
			}
			return nil
		},
	}

	execCmd := &cobra.Command{
		Use:   "exec HOST -- CMD [ARG...]",
		Short: "Run a command in a lab host's namespace (hosts: " + strings.Join(lab.HostNames, ", ") + ")",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return errors.New("usage: clusterwall lab exec HOST -- CMD [ARG...]")
			}
			l, err := lab.Open(name)
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			c, err := l.Command(context.Background(), args[0], args[1:]...)
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			// Become the command (through `ip netns exec`): stdio, signals
			// and the exit status pass through unchanged.
			return syscall.Exec(c.Path, c.Args, os.Environ())
		},
	}

	ca := &cobra.Command{
		Use:   "ca",
		Short: "Print the path of the lab CA certificate",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Open(name)
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			fmt.Fprintln(cmd.OutOrStdout(), l.CAFile())
			return nil
		},
	}

	serve := &cobra.Command{
		Use:                "serve",
		Short:              "Run lab servers (started by `lab up` inside a namespace)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := lab.ServeMain(args, os.Stderr); code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}

	cmd.AddCommand(up, down, status, execCmd, ca, serve, labDemoCommand(&name))
	return []*cobra.Command{cmd}
}

func printLabStatus(w io.Writer, s *lab.Status) {
	fmt.Fprintf(w, "lab %s (state %s)\n\n", s.Name, s.Dir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tNAMESPACE\tADDRESSES")
	for _, h := range s.Hosts {
		var addrs []string
		for _, a := range h.Addrs {
			addrs = append(addrs, a.String())
		}
		ns := h.NS
		if !h.Exists {
			ns += " (missing)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", h.Host, ns, strings.Join(addrs, " "))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME (inet)\tIPv4\tIPv6")
	for _, n := range lab.Names {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Name, n.V4, n.V6)
	}
	fmt.Fprintf(tw, "(lab DNS)\t%s\t%s\n", lab.DNSV4, lab.DNSV6)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tHOST\tPID\tSTATE\tLOG")
	for _, p := range s.Procs {
		state := "running"
		if !p.Alive {
			state = "DEAD"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", p.Name, p.Host, p.Pid, state, p.Log)
	}
	tw.Flush()
	if s.OK() {
		fmt.Fprintln(w, "\nstatus: ok")
		return
	}
	fmt.Fprintln(w, "\nstatus: BROKEN")
	for _, p := range s.Problems {
		fmt.Fprintln(w, "  -", p)
	}
}

// labDemoCommand is `clusterwall lab demo`: the seed's scenario end to end
// (internal/demo; `make demo` runs it).
func labDemoCommand(name *string) *cobra.Command {
	var (
		cfg     demo.Config
		only    string
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Bring the lab up with the daemon and the seed's policy, check real flows, tear it down",
		Long: `demo brings the lab up with the firewall daemon enforcing the seed's policy, sends
real flows from the cluster and from the internet (curl, dig, probe, NTP, ping),
prints one row per flow — expected and observed outcome and the deciding rule
from the daemon's decision log — and removes the lab again (also on failure and
Ctrl-C). It exits 1 when any observed outcome differs from the expected one.
A lab that already exists is refused unless --reuse (then it stays up).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Name = *name
			cfg.Out = cmd.OutOrStdout()
			if verbose {
				cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			}
			if only != "" {
				re, err := regexp.Compile(only)
				if err != nil {
					return &exitError{code: 2, msg: "--only: " + err.Error()}
				}
				cfg.Only = re
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			_, err := demo.Run(ctx, cfg)
			switch {
			case errors.Is(err, demo.ErrChecksFailed):
				return &exitError{code: 1}
			case err != nil && ctx.Err() != nil:
				return &exitError{code: 130, msg: "demo interrupted; lab removed"}
			case err != nil:
				return &exitError{code: 1, msg: err.Error()}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Policy, "policy", "examples/aks-egress.yaml", "the seed's policy (the checks are written for it)")
	f.BoolVar(&cfg.Reuse, "reuse", false, "run in the lab if it is already up (restarts its daemon with --policy) and leave it up")
	f.BoolVar(&cfg.Keep, "keep", false, "leave the lab up afterwards (for `lab exec` and `dataplane show`)")
	f.DurationVar(&cfg.Timeout, "timeout", time.Second, "how long a client waits before it calls a flow denied")
	f.StringVar(&only, "only", "", "run only the flows matching this regular expression")
	f.BoolVarP(&verbose, "verbose", "v", false, "log the lab's progress")
	f.BoolVar(&cfg.NoHA, "no-ha", false, "skip the high-availability section (a second lab, fw and fw2)")
	return cmd
}

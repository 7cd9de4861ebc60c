package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

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

	var policyFile string
	var noDaemon, noDNSFwd, verbose bool
	up := &cobra.Command{
		Use:   "up",
		Short: "Create the lab (idempotent); with --policy also start the firewall daemon in fw",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := lab.Config{Name: name, NoDNSForwarder: noDNSFwd}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelInfo
			}
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if policyFile != "" && !noDaemon {
				conf, err := labDaemonConfig(name, policyFile)
				if err != nil {
					return err
				}
				cfg.Files = map[string][]byte{"daemon.yaml": conf}
				cfg.DaemonArgs = []string{"--config", filepath.Join(lab.StateDir(name), "daemon.yaml")}
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
	up.Flags().StringVar(&policyFile, "policy", "", "policy file: start `clusterwall run` in fw with it")
	up.Flags().BoolVar(&noDaemon, "no-daemon", false, "do not start the firewall daemon, even with --policy")
	up.Flags().BoolVar(&noDNSFwd, "no-dns-forwarder", false, "do not run the stand-in DNS forwarder on 10.42.2.4:53")
	up.Flags().BoolVarP(&verbose, "verbose", "v", false, "log progress")

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

	cmd.AddCommand(up, down, status, execCmd, ca, serve)
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

// labDaemonConfig returns the daemon's config for the lab's firewall (a
// file in the lab's state directory). The interfaces and addresses are the
// lab's fixed ones (docs/lab.md); the decision log goes to the state
// directory.
func labDaemonConfig(name, policyFile string) ([]byte, error) {
	if err := lab.CheckName(name); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(policyFile)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("--policy: %w", err)
	}
	dir := lab.StateDir(name)
	conf := fmt.Sprintf(`# written by clusterwall lab up --policy
policy: %q
interfaces:
  inside: %s
  outside: %s
publicIPs: [%q, %q]
privateIP: %q
log:
  file: %q
`, abs, lab.FWInside, lab.FWOutside, lab.FWPublicV4, lab.FWPublicV6, lab.FWPrivateV4, filepath.Join(dir, "decisions.log"))
	return []byte(conf), nil
}

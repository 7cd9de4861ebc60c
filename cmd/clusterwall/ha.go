package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/daemon"
	"github.com/clusterwall/clusterwall/internal/ha"
)

// haCommands: `clusterwall ha config` prints what the daemon renders for
// keepalived and conntrackd from its config's ha section; `clusterwall ha
// check` is keepalived's readiness check (docs/ha.md).
func haCommands() []*cobra.Command {
	cmd := &cobra.Command{
		Use:   "ha",
		Short: "High availability: the keepalived and conntrackd configs the daemon renders, its readiness check",
	}
	var configFile, out string
	config := &cobra.Command{
		Use:   "config --config FILE [--out DIR]",
		Short: "Validate the daemon config's ha section and print (or write) the keepalived and conntrackd files it renders",
		Long: `config renders, from the daemon config's ha section, exactly the files the daemon
writes into ha.runDir before it starts keepalived and conntrackd: keepalived.conf,
conntrackd.conf, the notify script (conntrackd's steps on VRRP transitions) and the
readiness check script. The daemon renders and supervises them itself; this command
is for review and troubleshooting. Errors name the config file and field.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile == "" {
				return &exitError{code: 2, msg: "ha config: --config is required"}
			}
			cfg, err := daemon.LoadConfig(configFile)
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			spec := cfg.HASpec()
			if spec == nil {
				return &exitError{code: 1, msg: configFile + ": no ha section"}
			}
			exe, _ := os.Executable()
			spec.CheckCommand = cfg.HACheckCommand(exe)
			files := spec.Files()
			names := make([]string, 0, len(files))
			for n := range files {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				if out != "" {
					mode := os.FileMode(0o644)
					if strings.HasSuffix(n, ".sh") {
						mode = 0o700
					}
					if err := os.MkdirAll(out, 0o700); err != nil {
						return &exitError{code: 1, msg: err.Error()}
					}
					if err := os.WriteFile(filepath.Join(out, n), files[n], mode); err != nil {
						return &exitError{code: 1, msg: err.Error()}
					}
					fmt.Fprintln(cmd.OutOrStdout(), filepath.Join(out, n))
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "# ---- %s (in %s)\n%s\n", n, spec.RunDir, files[n])
			}
			return nil
		},
	}
	config.Flags().StringVar(&configFile, "config", "", "daemon config file (YAML) with an ha section")
	config.Flags().StringVar(&out, "out", "", "write the files into this directory instead of printing them")

	var url string
	var timeout time.Duration
	check := &cobra.Command{
		Use:   "check --url URL",
		Short: "Exit 0 when the daemon's /readyz answers 200 (keepalived's track script)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := &http.Client{Timeout: timeout, Transport: &http.Transport{
				// The admin API on loopback may be HTTPS with a private
				// certificate; readiness carries no secret.
				TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
				DisableKeepAlives: true,
			}}
			resp, err := c.Get(url)
			if err != nil {
				return &exitError{code: 1, msg: "ha check: " + err.Error()}
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if resp.StatusCode != http.StatusOK {
				return &exitError{code: 1, msg: fmt.Sprintf("ha check: %s: %s", resp.Status, strings.TrimSpace(string(body)))}
			}
			return nil
		},
	}
	check.Flags().StringVar(&url, "url", "http://127.0.0.1:9180/readyz", "the daemon's readiness URL")
	check.Flags().DurationVar(&timeout, "timeout", time.Second, "give up after this long")
	cmd.AddCommand(config, check)
	return []*cobra.Command{cmd}
}

// printHAStatus prints the ha part of a /v1/status body (nothing without
// one): role, groups, state sync, the peer, and whether both gateways run
// the same policy.
func printHAStatus(w io.Writer, body []byte) {
	var st struct {
		Generation uint64     `json:"generation"`
		HA         *ha.Status `json:"ha"`
	}
	if json.Unmarshal(body, &st) != nil || st.HA == nil {
		return
	}
	h := st.HA
	last := ""
	if !h.LastRoleChange.IsZero() {
		last = ", last " + h.LastRoleChange.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "ha           %s (%s, gateway %s), %d role changes%s\n", strings.ToUpper(h.Role), h.Mode, h.Name, h.RoleChanges, last)
	for _, g := range h.Groups {
		held := "holds none of its addresses"
		if len(g.Held) > 0 {
			held = "holds " + strings.Join(g.Held, " ")
		}
		fmt.Fprintf(w, "  group %-6s %s, priority %d, %s\n", g.Name, g.State, g.Priority, held)
	}
	s := h.Sync
	detail := ""
	if s.Detail != "" {
		detail = " (" + s.Detail + ")"
	}
	fmt.Fprintf(w, "  sync       %s%s over %s to %s: %d flows of this gateway, %d replicated from the peer; %d errors\n",
		s.State, detail, s.Interface, s.Peer, s.Stats.InternalEntries, s.Stats.ExternalEntries, s.Errors)
	p := h.Peer
	if p.Reachable {
		ready := "ready"
		if !p.Ready {
			ready = "NOT READY"
		}
		fmt.Fprintf(w, "  peer       %s at %s: reachable, %s, %s, policy generation %d\n", p.Name, p.Address, p.Role, ready, p.Generation)
	} else {
		fmt.Fprintf(w, "  peer       %s: UNREACHABLE (%s)\n", p.Address, p.Error)
	}
	switch {
	case h.PolicyInSync == nil:
		fmt.Fprintf(w, "  policy     generation %d here; the peer's is unknown\n", st.Generation)
	case *h.PolicyInSync:
		fmt.Fprintf(w, "  policy     the same on both gateways (sha256 %.12s…; generation %d here, %d on the peer)\n", p.PolicySHA256, st.Generation, p.Generation)
	default:
		fmt.Fprintf(w, "  policy     DIFFERS from the peer's: the peer runs %q generation %d (sha256 %.12s…), this gateway generation %d\n",
			p.PolicyName, p.Generation, p.PolicySHA256, st.Generation)
	}
	proc := func(name string, ps ha.ProcStatus) string {
		if !ps.Running {
			return fmt.Sprintf("%s NOT RUNNING (%s; %d restarts)", name, ps.LastExit, ps.Restarts)
		}
		return fmt.Sprintf("%s pid %d (%d restarts)", name, ps.Pid, ps.Restarts)
	}
	fmt.Fprintf(w, "  processes  %s, %s\n", proc("keepalived", h.Keepalived), proc("conntrackd", h.Conntrackd))
}

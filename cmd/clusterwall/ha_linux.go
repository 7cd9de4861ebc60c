//go:build linux

package main

import (
	"crypto/tls"
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

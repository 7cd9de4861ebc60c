package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/waf"
	"github.com/clusterwall/clusterwall/internal/waf/crstest"
)

func wafCommands() []*cobra.Command {
	cmd := &cobra.Command{
		Use:   "waf",
		Short: "The ingress web application firewall (Coraza + OWASP CRS reverse proxy)",
	}
	cmd.AddCommand(wafServeCmd(), wafValidateCmd(), wafTestCRSCmd())
	return []*cobra.Command{cmd}
}

func wafServeCmd() *cobra.Command {
	var configFile, eventsFile string
	c := &cobra.Command{
		Use:   "serve --config FILE [--events FILE]",
		Short: "Run the WAF reverse proxy standalone (SIGHUP reloads the config)",
		Long: `Serve runs the listeners, routes and WAF policies of a WAF config file
(docs/waf.md). Blocked and detected requests are written as JSON lines to
--events (default: standard output); operational messages go to standard
error. SIGHUP re-reads the file: a valid config replaces the running one
without dropping requests in flight, an invalid one is reported and ignored.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if configFile == "" {
				return &exitError{code: 1, msg: "waf serve: --config is required"}
			}
			cfg, err := waf.LoadConfig(configFile)
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			tuneGCForWAF()
			events := cmd.OutOrStdout()
			if eventsFile != "" && eventsFile != "-" {
				f, err := os.OpenFile(eventsFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
				if err != nil {
					return &exitError{code: 1, msg: "waf serve: " + err.Error()}
				}
				defer f.Close()
				events = f
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			srv, err := waf.NewServer(cfg, waf.Options{Events: events, Logger: logger})
			if err != nil {
				return &exitError{code: 1, msg: "waf serve: " + err.Error()}
			}
			if err := srv.Start(); err != nil {
				return &exitError{code: 1, msg: "waf serve: " + err.Error()}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			for {
				select {
				case <-ctx.Done():
					sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					return srv.Shutdown(sctx)
				case <-hup:
					next, err := waf.LoadConfig(configFile)
					if err == nil {
						err = srv.Reload(next)
					}
					if err != nil {
						logger.Error("reload rejected; the running configuration stays", "err", err)
					}
				}
			}
		},
	}
	c.Flags().StringVar(&configFile, "config", "", "WAF configuration file (YAML)")
	c.Flags().StringVar(&eventsFile, "events", "", "file for the JSON WAF event lines (default standard output)")
	return c
}

func wafValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a WAF config file (fields, references, certificates, SecLang)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := waf.LoadConfig(args[0])
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%d listeners, %d routes, %d policies)\n", args[0], len(cfg.Listeners), len(cfg.Routes), len(cfg.Policies))
			return nil
		},
	}
}

func wafTestCRSCmd() *cobra.Command {
	var (
		filter  string
		verbose bool
		workers int
	)
	c := &cobra.Command{
		Use:   "test-crs [--filter REGEX] [--verbose]",
		Short: "Run the OWASP CRS regression tests over HTTP against the WAF",
		Long: `test-crs starts the WAF on loopback with the CRS test harness's policy
(detection only, paranoia level 4, the marker rule 999999) in front of an
echo backend, sends every CRS regression test's request over a real TCP
connection, reads the WAF's log for the matched rules and reports each
failure, ending with "N passed, N failed, N skipped". Known deviations
(internal/waf/crstest/expected.go) count as skipped. --filter selects tests
by ID, e.g. '^942' or '^920100-5$'. Exits 1 if any test failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o := crstest.Options{Out: cmd.OutOrStdout(), Verbose: verbose, Workers: workers}
			if filter != "" {
				re, err := regexp.Compile(filter)
				if err != nil {
					return &exitError{code: 2, msg: "waf test-crs: --filter: " + err.Error()}
				}
				o.Filter = re
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			s, err := crstest.Run(ctx, o)
			if err != nil {
				return &exitError{code: 2, msg: "waf test-crs: " + err.Error()}
			}
			if s.Failed > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	c.Flags().StringVar(&filter, "filter", "", "run only tests whose ID (RULE-TEST) matches this regular expression")
	c.Flags().BoolVar(&verbose, "verbose", false, "print every test, not only failures")
	c.Flags().IntVar(&workers, "workers", 2, "tests run at once, each on its own listener")
	return c
}

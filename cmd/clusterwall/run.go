package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/daemon"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// runCommands: `clusterwall run --config FILE`, the firewall daemon.
func runCommands() []*cobra.Command {
	var configFile string
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the firewall: program the kernel from the policy and keep it in sync",
		Long: `run loads the config and the policy, programs nftables in one atomic batch and
stays running: it reloads on SIGHUP, when the policy file changes and through the
admin API (POST /v1/reload), always validating first — an invalid policy is
rejected and the running one stays. It logs every new flow's decision as one JSON
line. When it stops (or crashes) the kernel rules stay and keep denying; a restart
re-applies. See docs/daemon.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile == "" {
				return &exitError{code: 1, msg: "run: --config is required"}
			}
			cfg, err := daemon.LoadConfig(configFile)
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
			if cfg.WAF.Config != "" {
				tuneGCForWAF()
			}

			sink, sinkCloser, err := telemetry.OpenSink(cfg.LogSink(), os.Stdout)
			if err != nil {
				return &exitError{code: 1, msg: "run: " + err.Error()}
			}
			defer sinkCloser.Close()
			dlog := telemetry.NewDecisionLog(sink, telemetry.Options{Rate: float64(cfg.LogRate())})
			defer dlog.Close()

			dc := cfg.DataplaneConfig()
			if err := dc.Validate(); err != nil {
				return &exitError{code: 1, msg: "run: " + err.Error()}
			}
			dp := &daemon.NFTDataplane{Runner: nft.NewNetlinkRunner(nft.NetlinkOptions{Logger: log}), Config: dc}
			d := daemon.New(cfg, log, dp, dlog, nft.DefaultLogGroup)

			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			hup := make(chan struct{}, 1)
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGHUP)
			go func() {
				for range sig {
					select {
					case hup <- struct{}{}:
					default:
					}
				}
			}()

			ln, err := d.AdminListener() // TLS / mTLS when admin.tls is set
			if err != nil {
				return &exitError{code: 1, msg: "run: admin listener: " + err.Error()}
			}
			srv := &http.Server{Handler: d.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
			go func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					log.Error("admin API", "err", err)
				}
			}()
			defer srv.Close()
			log.Info("clusterwall running", "config", configFile, "policy", cfg.Policy, "admin", ln.Addr().String())
			if err := d.Run(ctx, hup); err != nil {
				return &exitError{code: 1, msg: fmt.Sprintf("run: %v", err)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "daemon config file (YAML)")
	return []*cobra.Command{cmd}
}

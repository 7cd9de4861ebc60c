//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
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
			for _, w := range cfg.Warnings() {
				log.Warn("unsafe setting", "warning", w)
			}
			if cfg.WAF.Config != "" {
				tuneGCForWAF()
			}

			sink, sinkCloser, err := telemetry.OpenSink(cfg.LogSink(), os.Stdout)
			if err != nil {
				return &exitError{code: 1, msg: "run: " + err.Error()}
			}
			defer sinkCloser.Close()
			dlog := telemetry.NewDecisionLog(sink, telemetry.Options{Rate: float64(cfg.LogRate()), Logger: log})
			defer dlog.Close()

			dc := cfg.DataplaneConfig()
			if err := dc.Validate(); err != nil {
				return &exitError{code: 1, msg: "run: " + err.Error()}
			}
			dp := &daemon.NFTDataplane{Runner: nft.NewNetlinkRunner(nft.NetlinkOptions{Logger: log}), Config: dc}
			d := daemon.New(cfg, log, dp, dlog, nft.DefaultLogGroup)

			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			var wg sync.WaitGroup
			defer wg.Wait()
			hup := make(chan struct{}, 1)
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGHUP)
			defer func() { signal.Stop(sig); close(sig) }()
			wg.Go(func() {
				for range sig {
					select {
					case hup <- struct{}{}:
					default:
					}
				}
			})

			// The admin listener is bound first (a taken port fails before
			// anything is programmed), but served only once every
			// enforcement point serves: requests meanwhile wait in its
			// backlog and never see a component half started. On a
			// signal the admin API stops first, then the daemon (run ends
			// only after the admin API has).
			ln, err := d.AdminListener() // TLS / mTLS when admin.tls is set
			if err != nil {
				return &exitError{code: 1, msg: "run: admin listener: " + err.Error()}
			}
			run, stopRun := context.WithCancel(context.Background())
			defer stopRun()
			if err := d.Start(run); err != nil {
				ln.Close()
				return &exitError{code: 1, msg: fmt.Sprintf("run: %v", err)}
			}
			// Requests' contexts end when the admin API stops: long streams
			// (the dashboard's live decisions) end then too.
			reqs, endReqs := context.WithCancel(context.Background())
			defer endReqs()
			srv := d.AdminServer() // header, idle and body timeouts, connection limit (docs/operations.md)
			srv.BaseContext = func(net.Listener) context.Context { return reqs }
			wg.Go(func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					log.Error("admin API", "err", err)
				}
			})
			wg.Go(func() {
				select {
				case <-ctx.Done():
				case <-run.Done():
				}
				endReqs()
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if srv.Shutdown(sctx) != nil {
					srv.Close()
				}
				stopRun()
			})
			log.Info("clusterwall running", "config", configFile, "policy", cfg.Policy, "admin", ln.Addr().String())
			if err := d.Serve(run, hup); err != nil {
				return &exitError{code: 1, msg: fmt.Sprintf("run: %v", err)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "daemon config file (YAML)")
	return []*cobra.Command{cmd}
}

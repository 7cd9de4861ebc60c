//go:build linux

package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/dnsproxy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// dnsCommands: `clusterwall dns serve` runs the DNS proxy on its own (the
// daemon embeds the same package). Query log lines (AZFWDnsQuery) go to
// stdout as JSON; operational messages to stderr.
func dnsCommands() []*cobra.Command {
	dns := &cobra.Command{
		Use:   "dns",
		Short: "DNS proxy",
	}
	var (
		listen    string
		upstreams []string
		cfg       dnsproxy.Config
		grace     time.Duration
		udpSocks  int
		logRate   float64
		noLog     bool
		verbose   bool
	)
	serve := &cobra.Command{
		Use:   "serve --listen ADDR --upstream ADDR[,ADDR]",
		Short: "Run the DNS proxy: forward to upstreams, cache, log one JSON line per query",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(upstreams) == 0 {
				return &exitError{code: 2, msg: "dns serve: --upstream is required"}
			}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelDebug
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			c := cfg
			c.Upstreams = upstreams
			table := dnsproxy.NewTable(dnsproxy.TableOptions{Grace: grace})
			o := dnsproxy.Options{Table: table, Logger: logger}
			if !noLog {
				dlog := telemetry.NewDecisionLog(cmd.OutOrStdout(), telemetry.Options{Rate: logRate})
				defer dlog.Close()
				o.Log = dlog.Log
			}
			p, err := dnsproxy.New(c, o)
			if err != nil {
				return &exitError{code: 2, msg: "dns serve: " + err.Error()}
			}
			l, err := dnsproxy.Listen(listen, udpSocks)
			if err != nil {
				return fmt.Errorf("dns serve: %w", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go table.Run(ctx, time.Second)
			logger.Warn("dns proxy listening", "addr", l.Addr().String(), "upstreams", upstreams)
			return p.Serve(ctx, l)
		},
	}
	f := serve.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:53", "address to listen on, UDP and TCP (IP:port)")
	f.StringSliceVar(&upstreams, "upstream", nil, "upstream resolvers, IP or IP:port (comma-separated or repeated)")
	f.DurationVar(&cfg.Timeout, "timeout", 2*time.Second, "time one upstream gets to answer")
	f.IntVar(&cfg.CacheSize, "cache-size", 10_000, "cache entries")
	f.DurationVar(&cfg.MaxTTL, "max-ttl", time.Hour, "cap for positive answers' TTL (at most 1h)")
	f.DurationVar(&cfg.MaxNegTTL, "max-negative-ttl", 30*time.Minute, "cap for NXDOMAIN/NODATA TTL (at most 30m)")
	f.DurationVar(&cfg.HealthInterval, "health-interval", 5*time.Second, "time between upstream health checks")
	f.DurationVar(&grace, "grace", dnsproxy.DefaultGrace, "grace period added to TTLs in the learned-address table")
	f.IntVar(&udpSocks, "udp-sockets", 0, "UDP sockets (SO_REUSEPORT) and reader goroutines; 0: one per CPU")
	f.Float64Var(&logRate, "log-rate", 0, "maximum query log lines per second (0: unlimited)")
	f.BoolVar(&noLog, "no-query-log", false, "do not write query log lines")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug messages on stderr")
	dns.AddCommand(serve)
	return []*cobra.Command{dns}
}

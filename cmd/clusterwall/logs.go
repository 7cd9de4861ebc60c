package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/clusterwall/clusterwall/internal/logquery"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// logFlags are the flags every command that reads the decision log takes.
type logFlags struct {
	file, config, since, until string
	actions, categories, srcs  []string
	fqdns, rules               []string
}

func (f *logFlags) register(cmd *cobra.Command, withFilters bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.file, "file", "", "decision log file (default: the daemon config's log.file, else "+logquery.DefaultFile+"); rotated backups next to it are read too")
	fl.StringVar(&f.config, "config", "", "daemon config file whose log.file to read")
	fl.StringVar(&f.since, "since", "", "only lines at most this old (1h, 30m, 7d) or after an RFC 3339 time")
	if !withFilters {
		return
	}
	fl.StringVar(&f.until, "until", "", "only lines before this age or RFC 3339 time")
	fl.StringSliceVar(&f.actions, "action", nil, "Allow, Deny, DNAT or Alert (repeat or comma-separate)")
	fl.StringSliceVar(&f.categories, "category", nil, "AZFWNetworkRule, AZFWApplicationRule, AZFWNatRule, AZFWDnsQuery, AZFWThreatIntel, WAF (or network, application, nat, dns, threatintel, waf)")
	fl.StringSliceVar(&f.srcs, "src", nil, "source IP or CIDR")
	fl.StringSliceVar(&f.fqdns, "fqdn", nil, "destination name or pattern (*.example.com matches its subdomains; the query name for DNS lines)")
	fl.StringSliceVar(&f.rules, "rule", nil, "rule name, collection/rule or group/collection/rule")
}

// daemonFiles are the files a daemon config names that the offline
// commands read (daemonconfig_linux.go reads them).
type daemonFiles struct {
	policy, serviceTags, logFile string
}

// path returns the log file to read, and the daemon config's files when
// --config was given.
func (f *logFlags) path() (string, *daemonFiles, error) {
	var cfg *daemonFiles
	if f.config != "" {
		c, err := readDaemonFiles(f.config)
		if err != nil {
			return "", nil, err
		}
		cfg = c
	}
	if f.file != "" {
		return f.file, cfg, nil
	}
	if cfg != nil {
		if cfg.logFile == "-" {
			return "", nil, fmt.Errorf("%s: log.file is standard output; there is no file to read (set log.file, or pass --file)", f.config)
		}
		return cfg.logFile, cfg, nil
	}
	return logquery.DefaultFile, nil, nil
}

// filter builds the filter the flags describe.
func (f *logFlags) filter(now time.Time) (*logquery.Filter, error) {
	var q logquery.Filter
	var err error
	if q.Since, err = logquery.ParseSince(f.since, now); err != nil {
		return nil, fmt.Errorf("--since: %v", err)
	}
	if q.Until, err = logquery.ParseSince(f.until, now); err != nil {
		return nil, fmt.Errorf("--until: %v", err)
	}
	for _, a := range f.actions {
		switch strings.ToLower(a) {
		case "allow", "deny", "dnat", "alert":
			q.Actions = append(q.Actions, a)
		default:
			return nil, fmt.Errorf("--action: %q is not Allow, Deny, DNAT or Alert", a)
		}
	}
	for _, c := range f.categories {
		cat, err := logquery.ParseCategory(c)
		if err != nil {
			return nil, fmt.Errorf("--category: %v", err)
		}
		q.Categories = append(q.Categories, cat)
	}
	for _, s := range f.srcs {
		p, err := logquery.ParseSource(s)
		if err != nil {
			return nil, fmt.Errorf("--src: %v", err)
		}
		q.Sources = append(q.Sources, p)
	}
	for _, s := range f.fqdns {
		p, err := policy.ParseFQDNPattern(s)
		if err != nil {
			return nil, fmt.Errorf("--fqdn: %v", err)
		}
		q.FQDNs = append(q.FQDNs, p)
	}
	q.Rules = f.rules
	return &q, nil
}

func logsCommands() []*cobra.Command {
	var (
		lf     logFlags
		follow bool
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "logs [--since 1h] [--action Deny] [--category ...] [--src CIDR] [--fqdn PATTERN] [--rule NAME] [--follow] [--json]",
		Short: "Query the decision log: filter, follow, and count top denied destinations",
		Long: `logs reads the daemon's decision log (JSON lines; docs/logs.md describes every
field) — the current file and its rotated backups, gzipped or not, oldest first —
and prints the lines the filters select as a table, or as JSON lines with --json.
Filters of different kinds must all match; repeated values of one filter are
alternatives.

--follow prints lines as they are written, across rotations (like tail -F); it
starts at the end of the file, or with the lines since --since when given.

  clusterwall logs --since 1h --action Deny
  clusterwall logs --fqdn '*.docker.io' --src 10.42.1.0/24 --json
  clusterwall logs top --by fqdn --action Deny --since 24h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _, err := lf.path()
			if err != nil {
				return &exitError{code: 1, msg: "logs: " + err.Error()}
			}
			q, err := lf.filter(time.Now())
			if err != nil {
				return &exitError{code: 1, msg: "logs: " + err.Error()}
			}
			out := cmd.OutOrStdout()
			var emit func(*telemetry.Record) error
			var flush func() error
			if asJSON {
				var buf []byte
				emit = func(r *telemetry.Record) error {
					var err error
					if buf, err = telemetry.AppendJSON(buf[:0], r); err != nil {
						return err
					}
					_, err = out.Write(buf)
					return err
				}
				flush = func() error { return nil }
			} else {
				tw := logquery.NewTableWriter(out)
				emit = func(r *telemetry.Record) error { tw.Write(r); return nil }
				flush = tw.Flush
			}
			if !follow || q.Since != (time.Time{}) {
				st, err := logquery.Read(path, q, emit)
				if err != nil {
					return &exitError{code: 1, msg: "logs: " + err.Error()}
				}
				flush()
				if st.Bad > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "logs: %d lines were not decision records and were skipped\n", st.Bad)
				}
			}
			if !follow {
				return nil
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			// Flush the table after every batch so lines show promptly.
			return logquery.Follow(ctx, path, q, 200*time.Millisecond, func(r *telemetry.Record) error {
				if err := emit(r); err != nil {
					return err
				}
				return flush()
			})
		},
	}
	lf.register(cmd, true)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines (across rotations)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON lines (the log's own format)")
	cmd.AddCommand(logsTopCommand())
	return []*cobra.Command{cmd}
}

func logsTopCommand() *cobra.Command {
	var (
		lf     logFlags
		by     string
		n      int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "top --by fqdn|src|dst|rule|port [--action Deny] [--since 24h] [-n 10]",
		Short: "Count decision lines by destination name, source, destination, rule or port",
		Long: `top counts the selected decision lines by one field and prints the largest
counts with how many distinct sources each was seen from:

  clusterwall logs top --by fqdn --action Deny --since 24h

answers "what did my cluster try to reach that was denied?". --by rule counts
default denies under their reason. The filters are those of clusterwall logs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, _, err := lf.path()
			if err != nil {
				return &exitError{code: 1, msg: "logs top: " + err.Error()}
			}
			q, err := lf.filter(time.Now())
			if err != nil {
				return &exitError{code: 1, msg: "logs top: " + err.Error()}
			}
			c, err := logquery.NewCounter(by)
			if err != nil {
				return &exitError{code: 1, msg: "logs top: --by: " + err.Error()}
			}
			if _, err := logquery.Read(path, q, func(r *telemetry.Record) error { c.Add(r); return nil }); err != nil {
				return &exitError{code: 1, msg: "logs top: " + err.Error()}
			}
			rows := c.Top(n)
			if asJSON {
				return writeTopJSON(cmd.OutOrStdout(), rows)
			}
			return logquery.WriteTop(cmd.OutOrStdout(), by, rows)
		},
	}
	lf.register(cmd, true)
	cmd.Flags().StringVar(&by, "by", "fqdn", "fqdn, src, dst, rule or port")
	cmd.Flags().IntVarP(&n, "top", "n", 10, "how many rows (0: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}

func writeTopJSON(w io.Writer, rows []logquery.Count) error {
	type row struct {
		Key     string    `json:"key"`
		Count   int       `json:"count"`
		Sources int       `json:"sources"`
		First   time.Time `json:"first"`
		Last    time.Time `json:"last"`
	}
	out := make([]row, 0, len(rows))
	for _, r := range rows {
		out = append(out, row{r.Key, r.Count, r.Sources, r.First, r.Last})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// adminCommands: `clusterwall status`, `clusterwall apply FILE` and
// `clusterwall rules` talk to a running daemon's admin API (docs/api.md).
func adminCommands() []*cobra.Command {
	var o adminClientOpts
	status := &cobra.Command{
		Use:   "status",
		Short: "Show a running daemon's status (GET /v1/status)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			code, body, err := o.do(http.MethodGet, "/v1/status", nil)
			if err != nil {
				return &exitError{code: 1, msg: "status: " + err.Error()}
			}
			if code != http.StatusOK {
				return &exitError{code: 1, msg: fmt.Sprintf("status: %d: %s", code, apiMessage(body))}
			}
			if o.json {
				cmd.OutOrStdout().Write(body)
				return nil
			}
			var st struct {
				Generation     uint64    `json:"generation"`
				PolicyFile     string    `json:"policyFile"`
				PolicyName     string    `json:"policyName"`
				Rules          int       `json:"rules"`
				AppliedAt      time.Time `json:"appliedAt"`
				LastReload     string    `json:"lastReload"`
				LastReloadAt   time.Time `json:"lastReloadAt"`
				ConnsCut       uint64    `json:"connectionsCut"`
				LogWritten     uint64    `json:"logLinesWritten"`
				LogDropped     uint64    `json:"logLinesDropped"`
				LogRateLimited uint64    `json:"logLinesRateLimited"`
				Ready          bool      `json:"ready"`
				Problems       []string  `json:"problems"`
				Components     []struct {
					Name   string `json:"name"`
					State  string `json:"state"`
					Detail string `json:"detail"`
				} `json:"components"`
			}
			if err := json.Unmarshal(body, &st); err != nil {
				return &exitError{code: 1, msg: "status: " + err.Error()}
			}
			w := cmd.OutOrStdout()
			ready := "yes"
			if !st.Ready {
				ready = "no: " + strings.Join(st.Problems, "; ")
			}
			fmt.Fprintf(w, "policy       %s (%s), %d rules\n", st.PolicyName, st.PolicyFile, st.Rules)
			fmt.Fprintf(w, "generation   %d, applied %s\n", st.Generation, st.AppliedAt.Format(time.RFC3339))
			fmt.Fprintf(w, "last reload  %s at %s\n", st.LastReload, st.LastReloadAt.Format(time.RFC3339))
			fmt.Fprintf(w, "ready        %s\n", ready)
			fmt.Fprintf(w, "log lines    %d written, %d dropped, %d rate-limited\n", st.LogWritten, st.LogDropped, st.LogRateLimited)
			fmt.Fprintf(w, "conns cut    %d\n", st.ConnsCut)
			if len(st.Components) > 0 {
				fmt.Fprintf(w, "components\n")
				for _, c := range st.Components {
					fmt.Fprintf(w, "  %-20s %-9s %s\n", c.Name, c.State, c.Detail)
				}
			}
			printHAStatus(w, body) // ha.go
			return nil
		},
	}
	apply := &cobra.Command{
		Use:   "apply FILE",
		Short: "Apply a policy to a running daemon (POST /v1/apply); the daemon persists it",
		Long: `apply sends the policy file to the daemon, which validates it, programs the
kernel in one atomic batch and writes it to its policy file (so that a restart
keeps it). A rejected policy changes nothing: its errors are printed as
FILE:LINE:COLUMN: message (with the field path) and apply exits with status 1.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return &exitError{code: 1, msg: "apply: " + err.Error()}
			}
			code, body, err := o.do(http.MethodPost, "/v1/apply", data)
			if err != nil {
				return &exitError{code: 1, msg: "apply: " + err.Error()}
			}
			if code != http.StatusOK {
				return &exitError{code: 1, msg: apiErrorLines(args[0], code, body)}
			}
			var res struct {
				Generation uint64 `json:"generation"`
			}
			json.Unmarshal(body, &res)
			fmt.Fprintf(cmd.OutOrStdout(), "applied %s: generation %d\n", args[0], res.Generation)
			return nil
		},
	}
	rules := &cobra.Command{
		Use:   "rules",
		Short: "Show a running daemon's rules with their hit counts (GET /v1/rules)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			code, body, err := o.do(http.MethodGet, "/v1/rules", nil)
			if err != nil {
				return &exitError{code: 1, msg: "rules: " + err.Error()}
			}
			if code != http.StatusOK {
				return &exitError{code: 1, msg: fmt.Sprintf("rules: %d: %s", code, apiMessage(body))}
			}
			if o.json {
				cmd.OutOrStdout().Write(body)
				return nil
			}
			var res struct {
				Generation uint64 `json:"generation"`
				Rules      []struct {
					Group      string `json:"ruleCollectionGroup"`
					Collection string `json:"ruleCollection"`
					Rule       string `json:"rule"`
					Kind       string `json:"kind"`
					Action     string `json:"action"`
					Hits       uint64 `json:"hits"`
					LastHit    string `json:"lastHit"`
				} `json:"rules"`
			}
			if err := json.Unmarshal(body, &res); err != nil {
				return &exitError{code: 1, msg: "rules: " + err.Error()}
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "generation %d\n%10s  %-11s  %-6s  %-20s  %s\n", res.Generation, "HITS", "KIND", "ACTION", "LAST HIT", "RULE")
			for _, r := range res.Rules {
				last := r.LastHit
				if last == "" {
					last = "never"
				}
				fmt.Fprintf(w, "%10d  %-11s  %-6s  %-20s  %s/%s/%s\n", r.Hits, r.Kind, r.Action, last, r.Group, r.Collection, r.Rule)
			}
			return nil
		},
	}
	for _, c := range []*cobra.Command{status, apply, rules} {
		f := c.Flags()
		f.StringVar(&o.url, "admin", "http://127.0.0.1:9180", "the daemon's admin API (https:// when admin.tls is set)")
		f.StringVar(&o.tokenFile, "token-file", "", "file whose first token is sent as the bearer token")
		f.StringVar(&o.caFile, "cacert", "", "CA certificate to verify an https admin API")
		f.StringVar(&o.certFile, "cert", "", "client certificate (mTLS)")
		f.StringVar(&o.keyFile, "key", "", "client key (mTLS)")
		if c != apply {
			f.BoolVar(&o.json, "json", false, "print the API's JSON")
		}
	}
	return []*cobra.Command{status, apply, rules}
}

type adminClientOpts struct {
	url, tokenFile, caFile, certFile, keyFile string
	json                                      bool
}

func (o *adminClientOpts) do(method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, strings.TrimRight(o.url, "/")+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/yaml")
	}
	if o.tokenFile != "" {
		tok, err := firstToken(o.tokenFile)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	tc := &tls.Config{}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return 0, nil, err
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return 0, nil, fmt.Errorf("%s: no PEM certificate", o.caFile)
		}
	}
	if o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return 0, nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: tc}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// firstToken reads the first token of a token file (the daemon's format:
// "TOKEN [NAME]" lines, # comments).
func firstToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		return strings.Fields(line)[0], nil
	}
	return "", fmt.Errorf("%s: no token", path)
}

type apiErr struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Field   string `json:"field"`
	Message string `json:"message"`
	Text    string `json:"text"`
}

// apiErrorLines renders an error answer: one line per error, as
// FILE:LINE:COLUMN: message [field], the file being the one the user sent.
func apiErrorLines(file string, code int, body []byte) string {
	var res struct {
		Errors     []apiErr `json:"errors"`
		Error      string   `json:"error"`
		PolicyFile string   `json:"policyFile"`
	}
	if json.Unmarshal(body, &res) != nil || (len(res.Errors) == 0 && res.Error == "") {
		return fmt.Sprintf("apply: HTTP %d: %s", code, strings.TrimSpace(string(body)))
	}
	if res.Error != "" {
		return fmt.Sprintf("apply: HTTP %d: %s", code, res.Error)
	}
	var b strings.Builder
	for i, e := range res.Errors {
		if i > 0 {
			b.WriteByte('\n')
		}
		switch {
		case e.Line > 0 && e.File == res.PolicyFile:
			// The daemon read the body as its policy file: name the file sent.
			fmt.Fprintf(&b, "%s:%d:%d: %s", file, e.Line, e.Column, e.Message)
		case e.Text != "":
			b.WriteString(e.Text)
		default:
			b.WriteString(e.Message)
		}
		if e.Field != "" {
			fmt.Fprintf(&b, " [%s]", e.Field)
		}
	}
	return b.String()
}

func apiMessage(body []byte) string {
	var res struct {
		Errors []apiErr `json:"errors"`
		Error  string   `json:"error"`
	}
	if json.Unmarshal(body, &res) == nil {
		if res.Error != "" {
			return res.Error
		}
		if len(res.Errors) > 0 {
			return res.Errors[0].Text
		}
	}
	return strings.TrimSpace(string(body))
}

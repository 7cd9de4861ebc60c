package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// Files of the firewall daemon in a lab's state directory, and its admin
// API inside fw.
const (
	DaemonConfigFile = "daemon.yaml"   // written by Up for Config.Daemon
	PolicyCopyFile   = "policy.yaml"   // the lab's copy of the policy (DaemonOptions.CopyPolicy)
	DecisionLogFile  = "decisions.log" // the daemon's decision log (JSON lines)
	DaemonAdmin      = "127.0.0.1:9180"
)

// DaemonOptions start the real firewall daemon (`Exe run --config
// STATE/daemon.yaml`) in fw with the lab's interfaces and addresses.
type DaemonOptions struct {
	// Policy is the policy file (made absolute).
	Policy string
	// SNAT is the daemon's snat mode: "" (masquerade), "fixed" or "off".
	SNAT string
	// ServiceTags overrides the policy's service tags file.
	ServiceTags string
	// WAF runs the ingress WAF in the daemon (waf.go): Up writes
	// WAFConfig into the state directory as WAFConfigFile and the daemon
	// config's waf section names it.
	WAF bool
	// WAFConfig, with WAF, is a WAF config file of one's own (made
	// absolute) instead of the lab's WAFConfig.
	WAFConfig string
	// TokenFile turns on the admin API's bearer-token check with this
	// token file (docs/api.md); /healthz and /readyz stay open.
	TokenFile string
	// CopyPolicy makes the daemon run a copy of Policy in the lab's state
	// directory (PolicyCopyFile), so that an apply — which persists the
	// policy to the daemon's policy file — changes the lab's copy, never
	// the file given (e.g. examples/ in a checkout). A relative serviceTags
	// of the policy keeps pointing next to the original.
	CopyPolicy bool
	// LogRatePerSecond, when set, is the daemon's log.ratePerSecond (0:
	// every decision is logged; docs/logs.md).
	LogRatePerSecond *int
}

// DaemonConfig returns the config of the firewall daemon of lab name: the
// lab's fixed interfaces (cw-in, cw-out) and addresses (public 203.0.113.32
// and 2001:db8:cafe::32 first, so SNAT and DNAT use them, then the ingress
// WAF's 203.0.113.33 and 2001:db8:cafe::33; private 10.42.2.4), the
// policy's absolute path, the admin API on DaemonAdmin and the decision log
// in the state directory.
func DaemonConfig(name string, o DaemonOptions) ([]byte, error) {
	return daemonConfig(name, HostFW, o, nil)
}

// daemonConfig is the config of host's daemon; with ha (an HA lab, ha.go)
// its own public IPs come first, its decision log is its own, snat is
// fixed and it has an ha section.
func daemonConfig(name, host string, o DaemonOptions, ha *HAOptions) ([]byte, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	abs := func(field, p string) (string, error) {
		a, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(a); err != nil {
			return "", fmt.Errorf("daemon %s: %w", field, err)
		}
		return a, nil
	}
	if o.Policy == "" {
		return nil, fmt.Errorf("daemon policy: no policy file")
	}
	pol, err := abs("policy", o.Policy)
	if err != nil {
		return nil, err
	}
	if o.CopyPolicy {
		pol = filepath.Join(StateDir(name), PolicyCopyFile)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# written by clusterwall lab up for lab %s\n", name)
	fmt.Fprintf(&b, "policy: %q\n", pol)
	if o.ServiceTags != "" {
		tags, err := abs("serviceTags", o.ServiceTags)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "serviceTags: %q\n", tags)
	}
	fmt.Fprintf(&b, "interfaces:\n  inside: %s\n  outside: %s\n", FWInside, FWOutside)
	if ha == nil {
		fmt.Fprintf(&b, "publicIPs: [%q, %q, %q, %q]\n", FWPublicV4, FWPublicV6, FWIngressV4, FWIngressV6)
	} else {
		var q []string
		for _, a := range haPublicIPs(host, ha) {
			q = append(q, strconv.Quote(a.String()))
		}
		fmt.Fprintf(&b, "publicIPs: [%s]\n", strings.Join(q, ", "))
	}
	fmt.Fprintf(&b, "privateIP: %q\n", FWPrivateV4)
	if o.SNAT != "" {
		fmt.Fprintf(&b, "snat: %s\n", o.SNAT)
	} else if ha != nil {
		b.WriteString("snat: fixed\n")
	}
	fmt.Fprintf(&b, "admin:\n  listen: %q\n", DaemonAdmin)
	if o.TokenFile != "" {
		tf, err := abs("admin.tokenFile", o.TokenFile)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "  tokenFile: %q\n", tf)
	}
	logFile := DecisionLogFile
	if host == HostFW2 {
		logFile = Decision2LogFile
	}
	fmt.Fprintf(&b, "log:\n  file: %q\n", filepath.Join(StateDir(name), logFile))
	if o.LogRatePerSecond != nil {
		fmt.Fprintf(&b, "  ratePerSecond: %d\n", *o.LogRatePerSecond)
	}
	if o.WAF {
		wafConf := filepath.Join(StateDir(name), WAFConfigFile)
		if o.WAFConfig != "" {
			if wafConf, err = abs("wafConfig", o.WAFConfig); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(&b, "waf:\n  config: %q\n", wafConf)
	}
	if ha != nil {
		b.WriteString(haDaemonConfig(name, host, ha))
	}
	return []byte(b.String()), nil
}

// copyPolicy reads o.Policy for the lab's copy; when the policy names a
// relative serviceTags file (resolved next to the policy) and o has no
// ServiceTags of its own, the copy's daemon gets that file by its absolute
// path.
func copyPolicy(o DaemonOptions) (DaemonOptions, []byte, error) {
	data, err := os.ReadFile(o.Policy)
	if err != nil {
		return o, nil, fmt.Errorf("daemon policy: %w", err)
	}
	if o.ServiceTags == "" {
		if f, _, _ := policy.DecodeYAML(o.Policy, data); f != nil && f.ServiceTags != "" && !filepath.IsAbs(f.ServiceTags) {
			o.ServiceTags = filepath.Join(filepath.Dir(o.Policy), f.ServiceTags)
		}
	}
	return o, data, nil
}

// DecisionLog is the path of the daemon's decision log (when started
// through Config.Daemon).
func (l *Lab) DecisionLog() string { return filepath.Join(l.dir, DecisionLogFile) }

// AdminClient returns an HTTP client whose connections start in fw, for
// the daemon's admin API at "http://" + DaemonAdmin.
func (l *Lab) AdminClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: l.DialContext(HostFW), DisableKeepAlives: true},
	}
}

// Admin sends one request to the daemon's admin API (path such as
// "/v1/status") and returns the status code and body.
func (l *Lab) Admin(ctx context.Context, method, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+DaemonAdmin+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := l.AdminClient().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// WaitDaemon waits until the daemon in fw is ready: a policy applied and
// its DNS proxy and L7 proxy listening (its /readyz answers 200; the
// daemon's admin API answers only once every enforcement point started).
func (l *Lab) WaitDaemon(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		code, body, err := l.Admin(ctx, http.MethodGet, "/readyz")
		switch {
		case err != nil:
			last = err
		case code == http.StatusOK:
			return nil
		default:
			last = fmt.Errorf("readyz: %d %s", code, strings.TrimSpace(string(body)))
		}
		if r, ok := l.record(DaemonProc); ok && !l.alive(r) {
			return fmt.Errorf("daemon exited (see %s)", r.Log)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("daemon not ready after %s: %v", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// daemonReady is the daemon process's readiness check.
func daemonReady(ctx context.Context, l *Lab) error { return l.WaitDaemon(ctx, readyTimeout) }

// Exists reports whether anything of lab name is on this machine: its state
// directory or any of its namespaces.
func Exists(name string) bool {
	if _, err := os.Stat(StateDir(name)); err == nil {
		return true
	}
	for _, h := range allHosts() {
		if nsExists(nsName(name, h)) {
			return true
		}
	}
	return false
}

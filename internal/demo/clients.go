package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// observation is what a client saw.
type observation struct {
	outcome Outcome
	// bad is set when the flow got through but the answer was not the
	// expected one (another server, another source address): a failure
	// whatever the expectation.
	bad    bool
	detail string
}

func allowed(detail string) observation { return observation{outcome: Allowed, detail: detail} }
func denied(detail string) observation  { return observation{outcome: Denied, detail: detail} }
func wrong(detail string) observation {
	return observation{outcome: Allowed, bad: true, detail: detail}
}

// env is what the clients need.
type env struct {
	lab     *lab.Lab
	exe     string
	timeout time.Duration // how long a denied flow takes to be declared denied
}

// exec runs argv in host and returns its standard output, exit code and
// standard error; a command that could not start is an error.
func (e *env) exec(ctx context.Context, host string, argv ...string) (stdout string, code int, stderr string, err error) {
	cmd, err := e.lab.Command(ctx, host, argv...)
	if err != nil {
		return "", -1, "", err
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ctx.Err() == nil {
		return out.String(), ee.ExitCode(), errb.String(), nil
	}
	if err != nil {
		return out.String(), -1, errb.String(), err
	}
	return out.String(), 0, errb.String(), nil
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

// httpWant is what an allowed HTTP(S) request must see.
type httpWant struct {
	body string     // the body (the name of the server that answered)
	peer netip.Addr // the source the server saw (X-Clusterwall-Peer), if set
}

// curl fetches url from host (from source address src, if valid) with the
// lab CA and reports whether it got through.
func curl(host string, src netip.Addr, url string, want httpWant, extra ...string) probeFunc {
	return func(ctx context.Context, e *env) (observation, error) {
		argv := []string{"curl", "-sS", "-D", "-", "--connect-timeout", secs(e.timeout),
			"--max-time", secs(e.timeout + 2*time.Second), "--cacert", e.lab.CAFile()}
		if src.IsValid() {
			argv = append(argv, "--interface", src.String())
		}
		argv = append(append(argv, extra...), url)
		out, code, stderr, err := e.exec(ctx, host, argv...)
		if err != nil {
			return observation{}, err
		}
		if code != 0 {
			return denied(curlError(code, stderr)), nil
		}
		status, header, body := parseHTTP(out)
		if status != 200 {
			return denied(fmt.Sprintf("HTTP %d", status)), nil
		}
		detail := fmt.Sprintf("body %q", strings.TrimSpace(body))
		peer := header[strings.ToLower(lab.PeerHeader)]
		if want.peer.IsValid() {
			detail += ", server saw " + peer
		}
		if strings.TrimSpace(body) != want.body {
			return wrong(detail + fmt.Sprintf(" (want %q)", want.body)), nil
		}
		if want.peer.IsValid() {
			ap, err := netip.ParseAddrPort(peer)
			if err != nil || ap.Addr().Unmap() != want.peer {
				return wrong(detail + fmt.Sprintf(" (want %s)", want.peer)), nil
			}
		}
		return allowed(detail), nil
	}
}

// curlError describes a curl failure by its exit code (curl(1)).
func curlError(code int, stderr string) string {
	switch code {
	case 6:
		return "could not resolve the name"
	case 7:
		return "connection refused"
	case 28:
		return "timed out"
	case 35:
		return "TLS handshake failed"
	case 52:
		return "empty reply"
	case 56:
		return "connection reset"
	case 60:
		// a certificate that does not name the URL's host (e.g. the
		// ingress WAF's for store.example.com, asked for by address).
		first, _, _ := strings.Cut(strings.TrimSpace(stderr), "\n")
		return "certificate verification failed: " + strings.TrimPrefix(first, "curl: ")
	}
	msg := strings.TrimSpace(stderr)
	msg = strings.TrimPrefix(msg, "curl: ")
	if msg == "" {
		return fmt.Sprintf("curl exit %d", code)
	}
	return msg
}

// parseHTTP splits curl's `-D -` output: the status of the last response,
// its header (lower-case keys) and the body.
func parseHTTP(out string) (status int, header map[string]string, body string) {
	header = map[string]string{}
	rest := out
	for strings.HasPrefix(rest, "HTTP/") {
		head, after, ok := strings.Cut(rest, "\r\n\r\n")
		if !ok {
			return 0, header, ""
		}
		lines := strings.Split(head, "\r\n")
		fields := strings.Fields(lines[0])
		status = 0
		if len(fields) >= 2 {
			status, _ = strconv.Atoi(fields[1])
		}
		clear(header)
		for _, l := range lines[1:] {
			k, v, ok := strings.Cut(l, ":")
			if ok {
				header[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		rest = after
	}
	return status, header, rest
}

// probe connects with `clusterwall probe` from host (from src, if valid)
// and expects the first line of the answer to be want.
func probe(host string, src netip.Addr, network string, dst netip.AddrPort, want string) probeFunc {
	return func(ctx context.Context, e *env) (observation, error) {
		argv := []string{e.exe, "probe", network, dst.String(), "--timeout", e.timeout.String()}
		if src.IsValid() {
			argv = append(argv, "--source", src.String())
		}
		out, code, stderr, err := e.exec(ctx, host, argv...)
		if err != nil {
			return observation{}, err
		}
		out = strings.TrimSpace(out)
		switch {
		case code == 0 && strings.HasPrefix(out, "ok "):
			line, err := strconv.Unquote(strings.TrimPrefix(out, "ok "))
			if err != nil {
				return wrong("answer " + out), nil
			}
			if line != want {
				return wrong(fmt.Sprintf("answer %q (want %q)", line, want)), nil
			}
			return allowed(fmt.Sprintf("answer %q", line)), nil
		case code == 1 && strings.HasPrefix(out, "fail "):
			return denied(probeError(strings.TrimPrefix(out, "fail "))), nil
		}
		return observation{}, fmt.Errorf("probe: exit %d: %s %s", code, out, strings.TrimSpace(stderr))
	}
}

func probeError(msg string) string {
	switch {
	case strings.Contains(msg, "i/o timeout"):
		return "no answer (timed out)"
	case strings.Contains(msg, "connection refused"):
		return "connection refused"
	case strings.Contains(msg, "connection reset"):
		return "connection reset"
	}
	return msg
}

// dig resolves name (type A or AAAA) from host through its resolver (for
// cluster hosts the firewall's DNS at 10.42.2.4).
func dig(ctx context.Context, e *env, host, name, typ string) ([]netip.Addr, string, error) {
	out, code, stderr, err := e.exec(ctx, host, "dig", "+short", "+time=1", "+tries=2", name, typ)
	if err != nil {
		return nil, "", err
	}
	if code != 0 {
		msg := strings.TrimSpace(out + " " + stderr)
		return nil, "resolve " + name + ": " + msg, nil
	}
	var addrs []netip.Addr
	for _, f := range strings.Fields(out) {
		if a, err := netip.ParseAddr(f); err == nil {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, "resolve " + name + ": no " + typ + " record", nil
	}
	return addrs, "", nil
}

// resolve checks that host resolves name to want through its resolver.
func resolve(host, name, typ string, want netip.Addr) probeFunc {
	return func(ctx context.Context, e *env) (observation, error) {
		addrs, fail, err := dig(ctx, e, host, name, typ)
		if err != nil {
			return observation{}, err
		}
		if fail != "" {
			return denied(fail), nil
		}
		for _, a := range addrs {
			if a == want {
				return allowed(fmt.Sprintf("%s %s = %s", name, typ, a)), nil
			}
		}
		return wrong(fmt.Sprintf("%s %s = %v (want %s)", name, typ, addrs, want)), nil
	}
}

// ntp resolves name through host's resolver (so that the firewall's DNS
// proxy learns the address for destinationFqdns rules) and asks the
// address for the time with an NTP client request (RFC 5905 mode 3).
func ntp(host, name, typ string, want netip.Addr) probeFunc {
	return func(ctx context.Context, e *env) (observation, error) {
		addrs, fail, err := dig(ctx, e, host, name, typ)
		if err != nil {
			return observation{}, err
		}
		if fail != "" {
			return denied(fail), nil
		}
		if addrs[0] != want {
			return wrong(fmt.Sprintf("%s %s = %s (want %s)", name, typ, addrs[0], want)), nil
		}
		dst := netip.AddrPortFrom(addrs[0], 123)
		stratum, err := ntpQuery(ctx, e.lab.DialContext(host), dst, e.timeout)
		if err != nil {
			return denied(fmt.Sprintf("%s: %v", dst, err)), nil
		}
		return allowed(fmt.Sprintf("NTP answer from %s, stratum %d", dst, stratum)), nil
	}
}

// ntpQuery sends one NTP client request and returns the server's stratum.
func ntpQuery(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), dst netip.AddrPort, timeout time.Duration) (int, error) {
	c, err := dial(ctx, "udp", dst.String())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	req := make([]byte, 48)
	req[0] = 4<<3 | 3 // version 4, client mode
	rand.Read(req[40:48])
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	resp := make([]byte, 512)
	n, err := c.Read(resp)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, errors.New("no answer (timed out)")
		}
		return 0, err
	}
	if n < 48 || resp[0]&7 != 4 || !bytes.Equal(resp[24:32], req[40:48]) {
		return 0, fmt.Errorf("not an NTP server reply to our request (%d bytes)", n)
	}
	return int(resp[1]), nil
}

// ping sends one ICMP echo request from host.
func ping(host string, dst netip.Addr) probeFunc {
	return func(ctx context.Context, e *env) (observation, error) {
		out, code, stderr, err := e.exec(ctx, host, "ping", "-n", "-c", "1", "-W", secs(e.timeout), dst.String())
		if err != nil {
			return observation{}, err
		}
		switch code {
		case 0:
			return allowed("echo reply"), nil
		case 1:
			return denied("no echo reply"), nil
		}
		return observation{}, fmt.Errorf("ping: exit %d: %s", code, strings.TrimSpace(out+" "+stderr))
	}
}

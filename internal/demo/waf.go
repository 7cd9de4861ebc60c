package demo

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

const sectionWAF = "ingress WAF: client → https://store.example.com at the ingress IP 203.0.113.33:443 → WAF in fw (CRS, PL1, Prevention) → store-front 10.42.1.100:80"

// wafChecks are the rows of issue 5: requests from the internet to
// store-front through the daemon's WAF, on the firewall's second public IP
// (lab.FWIngressV4/V6). Any client reaches it, the API server's authorized
// one included: the seed's DNAT rule for 443 names the first public IP
// only.
func wafChecks() []Check {
	client := lab.HostClient
	auth4, unauth4, unauth6 := lab.ClientAuthorizedV4, lab.ClientUnauthorizedV4, lab.ClientUnauthorizedV6
	in4, in6 := lab.FWIngressV4, lab.FWIngressV6
	host := lab.StoreServerName
	sqli := "/?id=1%27%20OR%20%271%27%3D%271"        // 1' OR '1'='1
	xss := "/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E" // <script>alert(1)</script>
	wafLog := func(src netip.Addr) logFilter { return logFilter{src: src, waf: host} }
	return []Check{
		{Section: sectionWAF, Flow: "client 198.51.100.7 → https://store.example.com/ (benign)", Expect: Allowed,
			run: wafRequest(client, auth4, in4, "/", 0)},
		{Section: sectionWAF, Flow: "client 198.51.100.8 → https://store.example.com/ (benign)", Expect: Allowed,
			run: wafRequest(client, unauth4, in4, "/", 0)},
		{Section: sectionWAF, Flow: "client 2001:db8:c11e::8 → https://store.example.com/ via [2001:db8:cafe::33] (benign)", Expect: Allowed,
			run: wafRequest(client, unauth6, in6, "/", 0)},
		{Section: sectionWAF, Flow: "client 198.51.100.8 → https://store.example.com/?id=1' OR '1'='1 (SQL injection)", Expect: Denied, Rule: "WAF Blocked",
			run: wafRequest(client, unauth4, in4, sqli, 942), log: wafLog(unauth4)},
		{Section: sectionWAF, Flow: "client 198.51.100.7 → https://store.example.com/?q=<script>alert(1)</script> (XSS)", Expect: Denied, Rule: "WAF Blocked",
			run: wafRequest(client, auth4, in4, xss, 941), log: wafLog(auth4)},
	}
}

// wafRequest fetches https://store.example.com+target from host (source
// src), resolving the name to the firewall's ingress address pub, with the
// lab CA. A request that passes must reach store-front with the client's
// address in X-Forwarded-For and leave no WAF line; with attack set (the
// CRS rule family: 942 SQL injection, 941 XSS) it must be refused with a
// 403 page carrying the correlation ID, and the decision log's WAF line
// with that ID must name a rule of the family.
func wafRequest(host string, src, pub netip.Addr, target string, attack int) probeFunc {
	return func(ctx context.Context, e *env) (observation, error) {
		name := lab.StoreServerName
		resolve := fmt.Sprintf("%s:%d:%s", name, lab.WAFPort, pub)
		if pub.Is6() {
			resolve = fmt.Sprintf("%s:%d:[%s]", name, lab.WAFPort, pub)
		}
		argv := []string{"curl", "-sS", "-D", "-", "--connect-timeout", secs(e.timeout),
			"--max-time", secs(e.timeout + 2*time.Second), "--cacert", e.lab.CAFile(),
			"--interface", src.String(), "--resolve", resolve, "https://" + name + target}
		out, code, stderr, err := e.exec(ctx, host, argv...)
		if err != nil {
			return observation{}, err
		}
		if code != 0 {
			return denied(curlError(code, stderr)), nil
		}
		status, header, body := parseHTTP(out)
		id := header["x-correlation-id"]
		if id == "" {
			return wrong(fmt.Sprintf("HTTP %d without X-Correlation-Id", status)), nil
		}
		switch {
		case status == 200:
			xff := header[strings.ToLower(lab.ForwardedForHeader)]
			detail := fmt.Sprintf("body %q, store saw X-Forwarded-For %q, correlation ID %s", strings.TrimSpace(body), xff, id)
			if strings.TrimSpace(body) != strings.TrimSpace(lab.StoreBody) || xff != src.String() {
				return wrong(detail + fmt.Sprintf(" (want %q and %s)", strings.TrimSpace(lab.StoreBody), src)), nil
			}
			if attack != 0 {
				return allowed(detail), nil
			}
			time.Sleep(100 * time.Millisecond) // a WAF line would be written by now
			if r := wafLine(e.lab.DecisionLog(), id); r != nil {
				return wrong(detail + fmt.Sprintf("; but the WAF logged it: %s", describeWAF(r))), nil
			}
			return allowed(detail), nil
		case status == 403:
			detail := fmt.Sprintf("HTTP 403, correlation ID %s", id)
			if !strings.Contains(body, id) {
				return observation{outcome: Denied, bad: true, detail: detail + " (not on the 403 page)"}, nil
			}
			var r *telemetry.Record
			for deadline := time.Now().Add(logWait); r == nil && time.Now().Before(deadline); {
				if r = wafLine(e.lab.DecisionLog(), id); r == nil {
					time.Sleep(25 * time.Millisecond)
				}
			}
			if r == nil {
				return observation{outcome: Denied, bad: true, detail: detail + " (no WAF line with it in the decision log)"}, nil
			}
			if !hasFamily(r.RuleIds, attack) {
				return observation{outcome: Denied, bad: true, detail: detail + fmt.Sprintf(" (logged rules %v, none %dxxx)", r.RuleIds, attack)}, nil
			}
			return denied(detail + " on the page and in the log"), nil
		}
		return denied(fmt.Sprintf("HTTP %d, correlation ID %s", status, id)), nil
	}
}

// wafLine returns the decision log's WAF line with correlation ID id.
func wafLine(path, id string) *telemetry.Record {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	recs := parseRecords(data)
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Category == telemetry.CategoryWAF && recs[i].CorrelationId == id {
			return &recs[i]
		}
	}
	return nil
}

// hasFamily reports whether ids has a CRS rule of the family (942 →
// 942000-942999).
func hasFamily(ids []int, family int) bool {
	for _, id := range ids {
		if id/1000 == family {
			return true
		}
	}
	return false
}

// wafMatch reports whether r is the WAF's line for a request from src to
// the filter's host.
func (f logFilter) wafMatch(r *telemetry.Record) bool {
	return r.Category == telemetry.CategoryWAF && sameAddr(r.SourceIp, f.src) && strings.EqualFold(r.Hostname, f.waf)
}

// describeWAF is the table's "deciding rule" cell for a WAF line.
func describeWAF(r *telemetry.Record) string {
	ids := make([]string, len(r.RuleIds))
	for i, id := range r.RuleIds {
		ids[i] = strconv.Itoa(id)
	}
	return fmt.Sprintf("WAF %s rules %s (score %d)", r.Action, strings.Join(ids, ","), r.AnomalyScore)
}

package demo

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
	"github.com/clusterwall/clusterwall/internal/threatintel"
)

// exe is the clusterwall binary TestMain builds for the tests that run
// the demo (as root).
var exe, buildErr = "", error(nil)

func TestMain(m *testing.M) {
	lab.ServeIfAsked()
	os.Exit(func() int {
		if os.Geteuid() == 0 {
			dir, err := os.MkdirTemp("", "clusterwall-demo-")
			if err != nil {
				buildErr = err
			} else {
				defer os.RemoveAll(dir)
				exe, buildErr = lab.BuildBinaryTo(dir)
			}
		}
		return m.Run()
	}())
}

func binary(t *testing.T) string {
	t.Helper()
	lab.RequireLab(t)
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return exe
}

func TestParseHTTP(t *testing.T) {
	for _, tc := range []struct {
		name, in   string
		status     int
		peer, body string
	}{
		{"one response", "HTTP/1.1 200 OK\r\nX-Clusterwall-Peer: 198.51.100.7:4000\r\nContent-Length: 12\r\n\r\nstore-front\n", 200, "198.51.100.7:4000", "store-front\n"},
		{"proxy CONNECT then response", "HTTP/1.1 200 Connection established\r\n\r\nHTTP/2 403 \r\nx-clusterwall-peer: 10.0.0.1:1\r\n\r\ndenied", 403, "10.0.0.1:1", "denied"},
		{"no header end", "HTTP/1.1 200 OK\r\nContent-Length: 3", 0, "", ""},
		{"not HTTP", "hello", 0, "", "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, header, body := parseHTTP(tc.in)
			if status != tc.status || header["x-clusterwall-peer"] != tc.peer || body != tc.body {
				t.Errorf("parseHTTP = %d, peer %q, body %q; want %d, %q, %q", status, header["x-clusterwall-peer"], body, tc.status, tc.peer, tc.body)
			}
		})
	}
}

func TestParseRecordsSkipsPartialAndForeignLines(t *testing.T) {
	data := []byte(`{"category":"AZFWNetworkRule","SourceIp":"10.42.1.10","Action":"Allow"}
not json
{"msg":"no category"}
{"category":"AZFWNatRule","SourceIp":"198.51.100.7","Action":"DNAT"}
{"category":"AZFWNetworkRule","SourceIp":"10.42.1.1`)
	recs := parseRecords(data)
	if len(recs) != 2 || recs[0].Action != "Allow" || recs[1].Action != "DNAT" {
		t.Fatalf("parseRecords = %+v", recs)
	}
}

func TestPickAndDescribe(t *testing.T) {
	node, ghcr := netip.MustParseAddr("10.42.1.10"), netip.MustParseAddr("192.0.2.10")
	kernelDeny := telemetry.Record{Category: telemetry.CategoryNetworkRule, SourceIp: "10.42.1.10", DestinationIp: "192.0.2.10",
		DestinationPort: 443, Protocol: "TCP", Action: "Deny", ActionReason: "Default Action: no rule matched"}
	other := kernelDeny
	other.DestinationPort = 80
	app := telemetry.Record{Category: telemetry.CategoryApplicationRule, SourceIp: "10.42.1.10", Fqdn: "GHCR.io.", Action: "Allow",
		RuleCollectionGroup: "g", RuleCollection: "aksfwarweb", Rule: "website"}
	dnat := telemetry.Record{Category: telemetry.CategoryNatRule, SourceIp: "198.51.100.7", DestinationIp: "203.0.113.32",
		DestinationPort: 80, Protocol: "TCP", Action: "DNAT", RuleCollection: "exampleset", Rule: "inboundrule",
		TranslatedIp: "10.42.1.100", TranslatedPort: 80}
	dnsA := telemetry.Record{Category: telemetry.CategoryDNSQuery, SourceIp: "10.42.1.10", QueryName: "ghcr.io.", QueryType: "A", ResponseCode: "NXDOMAIN"}
	dnsAAAA := dnsA
	dnsAAAA.QueryType, dnsAAAA.ResponseCode = "AAAA", "NOERROR"
	f := logFilter{src: node, dst: ghcr, port: 443, proto: "TCP"}
	ff := f
	ff.fqdn = "ghcr.io"
	for _, tc := range []struct {
		name     string
		recs     []telemetry.Record
		f        logFilter
		want     string // ruleName
		describe string
	}{
		{"kernel line", []telemetry.Record{other, kernelDeny}, f, "default", "Deny default (no rule matched)"},
		{"no line", []telemetry.Record{other}, f, "", "(no decision logged)"},
		{"proxy line preferred", []telemetry.Record{kernelDeny, app}, ff, "aksfwarweb/website", "Allow aksfwarweb/website"},
		{"proxy line ignored without fqdn", []telemetry.Record{kernelDeny, app}, f, "default", "Deny default (no rule matched)"},
		{"dns", []telemetry.Record{kernelDeny, dnsA, dnsAAAA}, logFilter{src: node, proto: "AAAA", query: "ghcr.io"},
			"dns NOERROR", "DNS proxy: NOERROR AAAA ghcr.io"},
		{"dnat", []telemetry.Record{dnat}, logFilter{src: netip.MustParseAddr("198.51.100.7"), dst: netip.MustParseAddr("203.0.113.32"), port: 80, proto: "TCP"},
			"exampleset/inboundrule", "DNAT exampleset/inboundrule → 10.42.1.100:80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := pick(tc.recs, tc.f)
			if got := ruleName(r); got != tc.want {
				t.Errorf("ruleName(pick) = %q, want %q", got, tc.want)
			}
			if got := describe(r); got != tc.describe {
				t.Errorf("describe = %q, want %q", got, tc.describe)
			}
		})
	}
}

// seedPolicy loads examples/aks-egress.yaml.
func seedPolicy(t *testing.T) (*policy.Policy, string) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "examples", "aks-egress.yaml")
	p, err := policy.LoadFile(path, policy.Options{})
	if err != nil {
		t.Fatalf("the seed policy: %v", err)
	}
	return p, path
}

// labResolver answers destinationFqdns from the lab's name table, as the
// firewall's DNS proxy will once the cluster has resolved the names.
type labResolver struct{}

func (labResolver) Resolved(name string, addr netip.Addr) bool {
	n, ok := lab.Lookup(name)
	return ok && (n.V4 == addr || n.V6 == addr)
}

// TestSeedChecksAgreeWithMatcher: the demo's expectations are the seed
// policy's decisions as the one matcher (internal/match, which `clusterwall
// explain` also asks) computes them — outcome and deciding rule — so the
// table cannot drift from the policy.
func TestSeedChecksAgreeWithMatcher(t *testing.T) {
	p, _ := seedPolicy(t)
	ti := threatintel.New(threatintel.Options{}) // the policy's threatIntel feeds, as the daemon loads them
	if err := ti.Reload(p.ThreatIntel); err != nil {
		t.Fatal(err)
	}
	m, err := match.Compile(p, match.Options{Resolver: labResolver{}, ThreatIntel: ti})
	if err != nil {
		t.Fatal(err)
	}
	protos := map[string]policy.Proto{"TCP": policy.ProtoTCP, "UDP": policy.ProtoUDP, "ICMP": policy.ProtoICMP}
	for _, c := range SeedChecks() {
		if c.run == nil {
			t.Errorf("%s: no client", c.Flow)
		}
		if c.log.zero() {
			if c.Rule != "" {
				t.Errorf("%s: expects rule %s but has no decision log filter", c.Flow, c.Rule)
			}
			continue
		}
		if c.log.query != "" {
			continue // a DNS query to the firewall itself
		}
		if c.log.waf != "" {
			continue // an HTTPS request the WAF in the firewall decides (waf.go)
		}
		fl := match.Flow{Src: c.log.src, Dst: c.log.dst, Proto: protos[c.log.proto], Port: uint16(c.log.port)}
		if c.log.fqdn != "" {
			fl.Name, fl.Scheme = c.log.fqdn, policy.SchemeHTTPS
			if c.log.port == 80 {
				fl.Scheme = policy.SchemeHTTP
			}
		}
		d := m.Decide(fl)
		got := Denied
		if d.Action == policy.ActionAllow || d.Action == policy.ActionDNAT {
			got = Allowed
		}
		rule := "default"
		if d.Rule != nil {
			rule = d.Rule.Collection.Name + "/" + d.Rule.Name
		}
		if d.ThreatIntel == policy.ActionDeny {
			rule = "threat intel Deny"
		}
		if c.Reason == "spoofed" && got == Allowed {
			// The rules allow the name; the L7 proxy refuses the address
			// (its spoofing check, after the matcher).
			got = Denied
		}
		if got != c.Expect || rule != c.Rule {
			t.Errorf("%s: the matcher says %s by %s (%s), the demo expects %s by %s", c.Flow, got, rule, d.Reason, c.Expect, c.Rule)
		}
	}
}

// TestRunRefusesALabItDidNotMake: the demo never takes over (or removes)
// a lab that is already up, unless asked to reuse it.
func TestRunRefusesALabItDidNotMake(t *testing.T) {
	l := lab.NewTestLab(t, lab.Config{})
	_, path := seedPolicy(t)
	var out bytes.Buffer
	_, err := Run(context.Background(), Config{Name: l.Name(), Policy: path, Out: &out})
	if err == nil || !strings.Contains(err.Error(), "already up") || !strings.Contains(err.Error(), "--reuse") {
		t.Fatalf("Run on an existing lab: %v", err)
	}
	if st := l.Status(); !st.OK() {
		t.Errorf("the existing lab was touched: %v", st.Problems)
	}
}

// TestRunChecksAndTearsDown runs a few of the seed's rows (and a row whose
// expectation is deliberately wrong) with the real binary: the table shows
// them, the wrong one fails the run, and the lab is gone afterwards.
func TestRunChecksAndTearsDown(t *testing.T) {
	exe := binary(t)
	_, path := seedPolicy(t)
	name := lab.UniqueName()
	t.Cleanup(func() { lab.Remove(name) })

	var checks []Check
	for _, c := range SeedChecks() {
		if strings.Contains(c.Flow, "9000/tcp") || strings.Contains(c.Flow, "198.51.100.7 → http://") ||
			strings.Contains(c.Flow, "8080") || strings.Contains(c.Flow, "https://example.org/") {
			checks = append(checks, c)
		}
	}
	var wrong, pending Check
	for _, c := range checks {
		if strings.Contains(c.Flow, "198.18.10.5:9000") {
			wrong = c // allowed by apitcp
		}
	}
	wrong.Flow += " (expectation inverted)"
	wrong.Expect = Denied
	pending = wrong
	pending.Flow = strings.Replace(wrong.Flow, "inverted", "inverted, pending", 1)
	pending.Pending = "a component not built yet"
	checks = append(checks, wrong, pending)

	var out bytes.Buffer
	start := time.Now()
	rep, err := Run(context.Background(), Config{Name: name, Policy: path, Exe: exe, Out: &out, Checks: checks})
	t.Logf("demo output (%s):\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if !errors.Is(err, ErrChecksFailed) {
		t.Fatalf("Run: %v, want ErrChecksFailed", err)
	}
	if len(rep.Results) != len(checks) {
		t.Fatalf("%d results for %d checks", len(rep.Results), len(checks))
	}
	for _, r := range rep.Results {
		want := Pass
		switch {
		case r.Pending != "":
			want = Pending
		case r.Check.Flow == wrong.Flow:
			want = Fail
		}
		if r.Status != want {
			t.Errorf("%s: %s (%s), want %s", r.Flow, r.Status, r.Why, want)
		}
	}
	for _, s := range []string{"PASS", "FAIL", "PENDING", "Allow aksfwnr/apitcp", "DNAT exampleset/inboundrule → 10.42.1.100:80", "FAILED:"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q", s)
		}
	}
	if lab.Exists(name) {
		t.Errorf("lab %s still exists after the demo", name)
	}
}

// TestRunInterrupted: cancelling the demo (Ctrl-C) removes the lab.
func TestRunInterrupted(t *testing.T) {
	exe := binary(t)
	_, path := seedPolicy(t)
	name := lab.UniqueName()
	t.Cleanup(func() { lab.Remove(name) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out bytes.Buffer
	var checks []Check
	var canceled atomic.Int64 // when cancel ran (UnixNano)
	for _, c := range SeedChecks() {
		if strings.Contains(c.Flow, "198.18.10.5:9001/tcp") {
			// A dropped flow: the client waits for its timeout; cancel meanwhile.
			run := c.run
			c.run = func(ctx context.Context, e *env) (observation, error) {
				time.AfterFunc(200*time.Millisecond, func() {
					canceled.Store(time.Now().UnixNano())
					cancel()
				})
				return run(ctx, e)
			}
			checks = append(checks, c)
			break
		}
	}
	// The client's timeout is 5 s: a demo that returns within 4 s of the
	// cancel (the lab's removal included) stopped it. Timed from the
	// cancel, not from the start: the lab's set-up before the check takes
	// seconds on a loaded machine (CI once took 5.7 s in all).
	_, err := Run(ctx, Config{Name: name, Policy: path, Exe: exe, Out: &out, Checks: checks, Timeout: 5 * time.Second})
	if at := canceled.Load(); at == 0 {
		t.Fatal("the check did not run: nothing was canceled")
	} else if took := time.Since(time.Unix(0, at)); took > 4*time.Second {
		t.Errorf("the interrupted demo returned %s after the cancel: the client was not stopped", took)
	}
	if err == nil || ctx.Err() == nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if lab.Exists(name) {
		t.Errorf("lab %s still exists after an interrupted demo", name)
	}
}

// TestRunHASection runs the demo's high-availability section alone with
// the real binary: every row passes (fw crashes, the stream, the DNAT'd
// connection and new egress work through fw2, fw comes back), and both
// labs are gone afterwards.
func TestRunHASection(t *testing.T) {
	exe := binary(t)
	_, path := seedPolicy(t)
	name := lab.UniqueName()
	t.Cleanup(func() { lab.Remove(name); lab.Remove(HALabName(name)) })
	var out bytes.Buffer
	rep, err := Run(context.Background(), Config{Name: name, Policy: path, Exe: exe, Out: &out, Only: regexp.MustCompile("^high availability")})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) < 10 || rep.Count(Pass) != len(rep.Results) {
		t.Errorf("%d rows, %d PASS", len(rep.Results), rep.Count(Pass))
	}
	for _, n := range []string{name, HALabName(name)} {
		if lab.Exists(n) {
			t.Errorf("lab %s still exists after the demo", n)
		}
	}
}

package daemon

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/nflog"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

func tiPolicyText(mode string) string {
	return strings.Replace(testPolicy, "name: t\n", "name: t\nthreatIntel:\n  mode: "+mode+
		"\n  allowlist: {fqdns: [ok.evil.example.net]}\n  feeds:\n    - {name: lab, file: feed.txt}\n", 1)
}

// recorder collects what the decision log writes.
type recorder struct {
	mu   sync.Mutex
	recs []telemetry.Record
}

func (r *recorder) add(rec telemetry.Record) {
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
}

func (r *recorder) wait(t *testing.T, what string, ok func(telemetry.Record) bool) telemetry.Record {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		for _, rec := range r.recs {
			if ok(rec) {
				r.mu.Unlock()
				return rec
			}
		}
		r.mu.Unlock()
	}
	t.Fatalf("no decision line: %s", what)
	return telemetry.Record{}
}

func TestThreatIntelInDaemon(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	feed := filepath.Join(dir, "feed.txt")
	os.WriteFile(feed, []byte("192.0.2.10 # web\nevil.example.net # evil\n"), 0o644)
	conf := writeDaemonConfig(t, dir, "")
	os.WriteFile(pol, []byte(tiPolicyText("Deny")), 0o644)
	rec := &recorder{}
	dlog := telemetry.NewDecisionLog(io.Discard, telemetry.Options{OnWrite: rec.add})
	defer dlog.Close()
	fd := &fakeDataplane{}
	d := loadTestDaemon(t, conf, fd, nil, dlog)
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	src, web := netip.MustParseAddr("10.42.1.10"), netip.MustParseAddr("192.0.2.10")
	deny := func(what string) {
		t.Helper()
		_, m := d.Current()
		dec := m.Decide(match.Flow{Src: src, Dst: web, Proto: policy.ProtoTCP, Port: 443})
		if dec.Action != policy.ActionDeny || dec.ThreatIntel != policy.ActionDeny || dec.ThreatDescription != "lab: 192.0.2.10 (web)" {
			t.Fatalf("%s: decision %+v, want a threat-intel deny before the allow rule", what, dec)
		}
	}
	deny("Deny mode")

	// The kernel's part: the listed address, in mode Deny.
	k := d.kernelThreatIntel()
	if k == nil || !k.Deny || len(k.V4) != 1 || k.V4[0].From != web || len(k.V6) != 0 {
		t.Fatalf("kernel threat intel = %+v", k)
	}
	// The DNS proxy's hook: listed names and subdomains, not the allowlisted one.
	block := d.threatBlock(d.cur.Load().policy)
	if bad, why := block("www.evil.example.net"); !bad || why != "threat intel: lab: evil.example.net (evil)" {
		t.Errorf("Block(www.evil.example.net) = %v %q", bad, why)
	}
	if bad, _ := block("ok.evil.example.net"); bad {
		t.Error("allowlisted name blocked")
	}

	// A feed that turns into garbage keeps its previous contents.
	os.WriteFile(feed, []byte("<html>error</html>\n"), 0o644)
	if err := d.Reload("garbage feed"); err != nil {
		t.Fatal(err)
	}
	deny("after a garbage feed")

	// A policy the kernel rejects leaves the running mode.
	fd.fail = errors.New("kernel says no")
	if err := d.ApplyBytes("alert", []byte(tiPolicyText("Alert"))); err == nil {
		t.Fatal("apply did not fail")
	}
	if d.ThreatIntel().Mode() != policy.ActionDeny {
		t.Errorf("mode %v after a failed apply, want Deny", d.ThreatIntel().Mode())
	}
	fd.fail = nil

	// Log lines: the kernel's packet, the DNS proxy's blocked query.
	d.logPacket(d.cur.Load(), &nflog.Packet{Prefix: "cw:D:threat:g7", Src: src, Dst: web, Proto: 6, SrcPort: 40000, DstPort: 443, Time: time.Now()})
	r := rec.wait(t, "kernel AZFWThreatIntel", func(r telemetry.Record) bool {
		return r.Category == telemetry.CategoryThreatIntel && r.Source == "kernel"
	})
	if r.Action != "Deny" || r.DestinationIp != "192.0.2.10" || r.DestinationPort != 443 || r.SourcePort != 40000 || r.ThreatDescription != "lab: 192.0.2.10 (web)" || r.Policy != "t" {
		t.Errorf("kernel line %+v", r)
	}
	d.dnsLog(telemetry.Record{Category: telemetry.CategoryDNSQuery, SourceIp: "10.42.1.10", SourcePort: 5353, Protocol: "udp",
		QueryName: "www.evil.example.net.", QueryType: "A", ResponseCode: "NXDOMAIN", Action: "Deny",
		ActionReason: "threat intel: lab: evil.example.net (evil)"})
	r = rec.wait(t, "DNS AZFWThreatIntel", func(r telemetry.Record) bool {
		return r.Category == telemetry.CategoryThreatIntel && r.Source == "dns"
	})
	if r.Action != "Deny" || r.Fqdn != "www.evil.example.net" || r.SourceIp != "10.42.1.10" || r.ThreatDescription != "lab: evil.example.net (evil)" {
		t.Errorf("dns line %+v", r)
	}
	d.proxyLog(telemetry.Record{Category: telemetry.CategoryApplicationRule, SourceIp: "10.42.1.10", SourcePort: 40001,
		Fqdn: "example.com", DestinationPort: 443, OriginalDestinationIp: "192.0.2.10", Action: "Deny", ActionReason: match.ReasonThreatIntel,
		ThreatDescription: "lab: 192.0.2.10 (web)"})
	r = rec.wait(t, "proxy AZFWThreatIntel", func(r telemetry.Record) bool {
		return r.Category == telemetry.CategoryThreatIntel && r.Source == "proxy" && r.DestinationIp == "192.0.2.10" && r.Action == "Deny"
	})
	if r.ThreatDescription != "lab: 192.0.2.10 (web)" || r.DestinationPort != 443 || r.SourcePort != 40001 {
		t.Errorf("proxy line %+v", r)
	}
	app := rec.wait(t, "proxy AZFWApplicationRule", func(r telemetry.Record) bool {
		return r.Category == telemetry.CategoryApplicationRule && r.SourcePort == 40001
	})
	if app.ThreatDescription != "" {
		t.Errorf("application line carries ThreatDescription: %+v", app)
	}

	// Mode Off: no engine in the matcher, nothing for the kernel.
	if err := d.ApplyBytes("off", []byte(tiPolicyText("Off"))); err != nil {
		t.Fatal(err)
	}
	_, m := d.Current()
	if dec := m.Decide(match.Flow{Src: src, Dst: web, Proto: policy.ProtoTCP, Port: 443}); dec.Action != policy.ActionAllow || dec.ThreatIntel != policy.ActionInvalid {
		t.Errorf("mode Off: %+v", dec)
	}
	if k := d.kernelThreatIntel(); k != nil {
		t.Errorf("mode Off: kernel threat intel %+v", k)
	}
}

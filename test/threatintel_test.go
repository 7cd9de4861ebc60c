package e2e

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// threatPolicy allows the cluster HTTP to the lab's names and enables
// threat intelligence in mode with a feed that lists evil.example.net and
// example.org, their IPv4 addresses, and an allowlist of example.org and
// 192.0.2.14.
func threatPolicy(mode, feed string) string {
	return `apiVersion: clusterwall.io/v1alpha1
kind: FirewallPolicy
name: ti-` + strings.ToLower(mode) + `
dns:
  enableProxy: true
threatIntel:
  mode: ` + mode + `
  allowlist:
    ipAddresses: [192.0.2.14]
    fqdns: [example.org]
  feeds:
    - name: lab
      file: ` + feed + `
ruleCollectionGroups:
  - name: g
    priority: 100
    ruleCollections:
      - name: net
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: web
            protocols: [TCP]
            sourceAddresses: [10.42.1.0/24]
            destinationAddresses: [192.0.2.0/24]
            destinationPorts: ['80']
`
}

// digStatus runs dig for name from host through its resolver (the
// firewall's DNS proxy) and returns the status and the A records.
func digStatus(t *testing.T, f *fwLab, host, name string) (string, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := f.Exec(ctx, host, "dig", "+time=2", "+tries=1", name, "A")
	if err != nil {
		t.Fatalf("dig %s: %v: %s", name, err, out)
	}
	status := ""
	var addrs []string
	for _, line := range strings.Split(string(out), "\n") {
		if i := strings.Index(line, "status: "); i >= 0 {
			status, _, _ = strings.Cut(line[i+len("status: "):], ",")
		}
		if fs := strings.Fields(line); len(fs) == 5 && fs[3] == "A" && !strings.HasPrefix(line, ";") {
			addrs = append(addrs, fs[4])
		}
	}
	return status, addrs
}

// waitRecord waits for a decision line ok accepts.
func waitRecord(t *testing.T, f *fwLab, what string, ok func(r *telemetry.Record) bool) telemetry.Record {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		recs := f.decisions(t)
		for i := range recs {
			if ok(&recs[i]) {
				return recs[i]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no decision line: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestThreatIntelInLab runs the daemon with threat intelligence: in mode
// Deny a listed domain gets NXDOMAIN from the DNS proxy (dig), a listed
// address is dropped by the kernel although a network rule allows it, the
// allowlist exempts an address and a name, and every hit is an
// AZFWThreatIntel line; in mode Alert the same flows pass and are logged.
func TestThreatIntelInLab(t *testing.T) {
	feedDir := t.TempDir()
	feed := filepath.Join(feedDir, "feed.txt")
	if err := os.WriteFile(feed, []byte("evil.example.net # lab evil\nexample.org\n192.0.2.66 # evil host\n192.0.2.14\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFWLab(t, threatPolicy("Deny", feed))
	node := lab.HostNode
	evil, example := lab.MustLookup(lab.NameEvil), lab.MustLookup(lab.NameExample)
	node4 := lab.NodeV4.String()

	// DNS: listed name and its subdomains NXDOMAIN, allowlisted name answered.
	for _, name := range []string{"evil.example.net", "www.Evil.Example.Net"} {
		if st, addrs := digStatus(t, f, node, name); st != "NXDOMAIN" || len(addrs) != 0 {
			t.Errorf("Deny: dig %s = %s %v, want NXDOMAIN", name, st, addrs)
		}
	}
	if st, addrs := digStatus(t, f, node, example.Name); st != "NOERROR" || len(addrs) != 1 || addrs[0] != example.V4.String() {
		t.Errorf("Deny: dig %s (allowlisted) = %s %v", example.Name, st, addrs)
	}
	r := waitRecord(t, f, "AZFWThreatIntel Deny for the DNS query", func(r *telemetry.Record) bool {
		return r.Category == telemetry.CategoryThreatIntel && r.Source == "dns" && r.Fqdn == "evil.example.net" && r.SourceIp == node4
	})
	if r.Action != "Deny" || r.ThreatDescription != "lab: evil.example.net (lab evil)" {
		t.Errorf("DNS threat line: %+v", r)
	}
	waitRecord(t, f, "AZFWDnsQuery NXDOMAIN naming threat intel", func(r *telemetry.Record) bool {
		return r.Category == telemetry.CategoryDNSQuery && r.ResponseCode == "NXDOMAIN" && strings.HasPrefix(r.ActionReason, "threat intel: lab: evil.example.net")
	})

	// Kernel: the listed address is dropped before the allowing rule; the
	// allowlisted one passes.
	if o, _, err := f.tcpLine(node, netip.Addr{}, netip.AddrPortFrom(evil.V4, 80)); err != nil || o != timedOut {
		t.Errorf("Deny: node -> %s:80 = %v %v, want timed out", evil.V4, o, err)
	}
	if o, line, err := f.tcpLine(node, netip.Addr{}, netip.AddrPortFrom(example.V4, 80)); err != nil || o != passed || line != example.Name {
		t.Errorf("Deny: node -> %s:80 (allowlisted) = %v %q %v", example.V4, o, line, err)
	}
	r = waitRecord(t, f, "kernel AZFWThreatIntel Deny", func(r *telemetry.Record) bool {
		return r.Category == telemetry.CategoryThreatIntel && r.Source == "kernel" && r.DestinationIp == evil.V4.String()
	})
	if r.Action != "Deny" || r.SourceIp != node4 || r.DestinationPort != 80 || r.Protocol != "TCP" || r.ThreatDescription != "lab: 192.0.2.66 (evil host)" {
		t.Errorf("kernel threat line: %+v", r)
	}

	// Alert: the same flows pass, and are logged.
	gen := f.status(t).Generation
	f.writePolicy(t, threatPolicy("Alert", feed))
	f.waitStatus(t, "the Alert policy", 10*time.Second, func(s daemonStatus) bool { return s.Generation > gen && s.PolicyName == "ti-alert" })
	if st, addrs := digStatus(t, f, node, "evil.example.net"); st != "NOERROR" || len(addrs) != 1 || addrs[0] != evil.V4.String() {
		t.Errorf("Alert: dig evil.example.net = %s %v", st, addrs)
	}
	if o, line, err := f.tcpLine(node, netip.Addr{}, netip.AddrPortFrom(evil.V4, 80)); err != nil || o != passed || line != evil.Name {
		t.Errorf("Alert: node -> %s:80 = %v %q %v, want passed", evil.V4, o, line, err)
	}
	waitRecord(t, f, "AZFWThreatIntel Alert for the DNS query", func(r *telemetry.Record) bool {
		return r.Category == telemetry.CategoryThreatIntel && r.Source == "dns" && r.Action == "Alert" && r.Fqdn == "evil.example.net"
	})
	waitRecord(t, f, "kernel AZFWThreatIntel Alert", func(r *telemetry.Record) bool {
		return r.Category == telemetry.CategoryThreatIntel && r.Source == "kernel" && r.Action == "Alert" && r.DestinationIp == evil.V4.String()
	})

	// A feed change reaches the kernel without a policy reload.
	gen = f.status(t).Generation
	f.writePolicy(t, threatPolicy("Deny", feed))
	f.waitStatus(t, "the Deny policy", 10*time.Second, func(s daemonStatus) bool { return s.Generation > gen && s.PolicyName == "ti-deny" })
	if err := os.WriteFile(feed, []byte("192.0.2.10 # now ghcr.io's address\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The daemon watches feed files (fsnotify; a stat every minute as a
	// fallback), then updates the kernel's sets in place (checked every
	// second).
	start := time.Now()
	deadline := start.Add(15 * time.Second)
	for {
		o, _, err := f.tcpLine(node, netip.Addr{}, netip.AddrPortFrom(evil.V4, 80))
		if err == nil && o == passed {
			t.Logf("feed file change in the kernel after %v", time.Since(start).Round(100*time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("feed change not applied after 15 s (node -> %s:80 = %v %v)", evil.V4, o, err)
		}
		time.Sleep(time.Second)
	}
	if o, _, err := f.tcpLine(node, netip.Addr{}, netip.AddrPortFrom(lab.MustLookup(lab.NameGHCR).V4, 80)); err != nil || o != timedOut {
		t.Errorf("after the feed change: node -> ghcr.io:80 = %v %v, want timed out", o, err)
	}
	if data, _ := os.ReadFile(f.LogFile(lab.DaemonProc)); !strings.Contains(string(data), "kernel sets updated in place") {
		t.Errorf("daemon.log does not say the kernel sets were updated in place")
	}
}

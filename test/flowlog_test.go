package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
	"github.com/clusterwall/clusterwall/internal/telemetry"
)

const flowLogPolicy = `name: flows
ruleCollectionGroups:
  - name: net
    priority: 200
    ruleCollections:
      - name: web
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: http
            protocols: [TCP]
            sourceAddresses: [10.42.1.0/24]
            destinationAddresses: [192.0.2.10]
            destinationPorts: ['80']
`

// TestFlowLogEveryFlow: with log.ratePerSecond 0 every allowed flow is a
// decision line — 4,000 new connections opened as fast as the node can
// (several thousand a second, beyond the default 1,000 lines/s and its
// burst of 2,000), each found once, with the schema's fields (docs/logs.md)
// and nothing lost in the kernel (no overrun in the daemon's log).
func TestFlowLogEveryFlow(t *testing.T) {
	t.Parallel()
	f := flowLogLab(t, 0, "the daemon logging every flow")

	const count = 4000
	ports, elapsed := openFlows(t, f, count)
	t.Logf("%d connections (%d distinct source ports) in %v: %.0f/s", count, len(ports), elapsed, float64(count)/elapsed.Seconds())

	var lines map[int]telemetry.Record
	deadline := time.Now().Add(15 * time.Second)
	for {
		lines = map[int]telemetry.Record{}
		for _, r := range f.decisions(t) {
			if r.DestinationIp == "192.0.2.10" && r.DestinationPort == 80 {
				lines[r.SourcePort] = r
			}
		}
		if len(lines) >= len(ports) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	missing := 0
	for port := range ports {
		r, ok := lines[port]
		if !ok {
			missing++
			continue
		}
		checkFlowLine(t, r, port)
	}
	if missing > 0 {
		t.Errorf("%d of %d allowed flows have no decision line", missing, len(ports))
	}
	data, _ := os.ReadFile(f.LogFile(lab.DaemonProc))
	if n := strings.Count(string(data), "the kernel dropped decision log messages"); n > 0 {
		t.Errorf("the daemon reported %d overruns", n)
	}
}

// checkFlowLine checks that r is the decision line (docs/logs.md's schema)
// of an allowed flow from the node's source port port.
func checkFlowLine(t *testing.T, r telemetry.Record, port int) {
	t.Helper()
	want := telemetry.Record{Time: r.Time, Category: telemetry.CategoryNetworkRule, SourceIp: lab.NodeV4.String(), SourcePort: port,
		DestinationIp: "192.0.2.10", DestinationPort: 80, Protocol: "TCP", Action: "Allow", Policy: "flows",
		RuleCollectionGroup: "net", RuleCollection: "web", Rule: "http", Source: "kernel"}
	if r.Time.IsZero() || time.Since(r.Time) > time.Minute {
		t.Errorf("line for port %d: time %v", port, r.Time)
	}
	if !recordsEqual(r, want) {
		t.Errorf("line for port %d:\n got %+v\nwant %+v", port, r, want)
	}
}

// openFlows opens count connections from the node to 192.0.2.10:80 as
// fast as 8 workers can, and returns their distinct source ports.
func openFlows(t *testing.T, f *fwLab, count int) (map[int]bool, time.Duration) {
	t.Helper()
	dst := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), 80)
	const workers = 8
	var mu sync.Mutex
	ports := map[int]bool{}
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f.Do(lab.HostNode, func() error {
				d := net.Dialer{Timeout: 2 * time.Second}
				for range count / workers {
					c, err := d.Dial("tcp", dst.String())
					if err != nil {
						return err
					}
					port := c.LocalAddr().(*net.TCPAddr).Port
					c.(*net.TCPConn).SetLinger(0) // RST: no TIME_WAIT
					c.Close()
					mu.Lock()
					if ports[port] {
						mu.Unlock()
						continue // a source port reused: one line per flow still
					}
					ports[port] = true
					mu.Unlock()
				}
				return nil
			})
			if err != nil {
				t.Errorf("worker %d: %v", w, err)
			}
		}()
	}
	wg.Wait()
	return ports, time.Since(start)
}

// TestFlowLogDefaultLimit: with a log rate limit (log.ratePerSecond 50
// here; 1,000 by default) the kernel logs at most that many flows a
// second, yet every flow is allowed, counted in the rule's hits (GET
// /v1/rules) and in clusterwall_decisions_total, which read the kernel
// rule's counter, and the lines that are written keep their schema.
func TestFlowLogDefaultLimit(t *testing.T) {
	t.Parallel()
	const rate = 50
	f := flowLogLab(t, rate, "the daemon logging 50 lines a second")
	series := `clusterwall_decisions_total{action="Allow",category="AZFWNetworkRule",rule="http",rule_collection="web",rule_collection_group="net"}`
	hits := func() uint64 {
		code, body, err := f.Admin(context.Background(), http.MethodGet, "/v1/rules")
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /v1/rules: %d %v", code, err)
		}
		var rh struct {
			Rules []struct {
				Rule string `json:"rule"`
				Hits uint64 `json:"hits"`
			} `json:"rules"`
		}
		if err := json.Unmarshal(body, &rh); err != nil {
			t.Fatal(err)
		}
		for _, r := range rh.Rules {
			if r.Rule == "http" {
				return r.Hits
			}
		}
		t.Fatalf("GET /v1/rules has no rule http: %s", body)
		return 0
	}
	hits0, decided0 := hits(), f.metricValue(t, series)

	const count = 1500
	ports, elapsed := openFlows(t, f, count)
	t.Logf("%d connections (%d distinct source ports) in %v: %.0f/s", count, len(ports), elapsed, float64(count)/elapsed.Seconds())

	// Every flow counted: at least one per distinct source port (a reused
	// port may be one flow or two), at most one per connection.
	if n := hits() - hits0; n < uint64(len(ports)) || n > count {
		t.Errorf("rule hits of http grew by %d for %d connections (%d source ports)", n, count, len(ports))
	}
	if n := f.metricValue(t, series) - decided0; n < float64(len(ports)) || n > count {
		t.Errorf("%s grew by %v for %d connections (%d source ports)", series, n, count, len(ports))
	}
	// Logged: the kernel's burst (2 × rate) and the rate, not every flow.
	time.Sleep(500 * time.Millisecond) // the kernel's batch flush, the writer's
	logged := 0
	for _, r := range f.decisions(t) {
		if r.DestinationIp == "192.0.2.10" && r.DestinationPort == 80 && ports[r.SourcePort] {
			logged++
			checkFlowLine(t, r, r.SourcePort)
		}
	}
	if limit := 2*rate + rate*int(elapsed.Seconds()+2); logged == 0 || logged > limit {
		t.Errorf("%d connections in %v: %d lines, want 1..%d", count, elapsed, logged, limit)
	}
	t.Logf("%d lines", logged)
}

func recordsEqual(a, b telemetry.Record) bool {
	ja, err1 := telemetry.AppendJSON(nil, &a)
	jb, err2 := telemetry.AppendJSON(nil, &b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// flowLogLab is a lab whose daemon runs flowLogPolicy with
// log.ratePerSecond rate (0: every flow).
func flowLogLab(t *testing.T, rate int, what string) *fwLab {
	t.Helper()
	requireFW(t)
	dir := t.TempDir()
	f := &fwLab{dir: dir, policy: filepath.Join(dir, "policy.yaml")}
	if err := os.WriteFile(f.policy, []byte(flowLogPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	f.up(t, &lab.DaemonOptions{Policy: f.policy, LogRatePerSecond: &rate}, what)
	return f
}

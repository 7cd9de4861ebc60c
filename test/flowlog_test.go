package e2e

import (
	"net"
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
	requireFW(t)
	dir := t.TempDir()
	f := &fwLab{dir: dir, policy: filepath.Join(dir, "policy.yaml")}
	if err := os.WriteFile(f.policy, []byte(flowLogPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	unlimited := 0
	f.up(t, &lab.DaemonOptions{Policy: f.policy, LogRatePerSecond: &unlimited}, "the daemon logging every flow")

	dst := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.10"), 80)
	const count, workers = 4000, 8
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
	elapsed := time.Since(start)
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
	if missing > 0 {
		t.Errorf("%d of %d allowed flows have no decision line", missing, len(ports))
	}
	data, _ := os.ReadFile(f.LogFile(lab.DaemonProc))
	if n := strings.Count(string(data), "the kernel dropped decision log messages"); n > 0 {
		t.Errorf("the daemon reported %d overruns", n)
	}
}

func recordsEqual(a, b telemetry.Record) bool {
	ja, err1 := telemetry.AppendJSON(nil, &a)
	jb, err2 := telemetry.AppendJSON(nil, &b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

package e2e

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/daemon"
	"github.com/clusterwall/clusterwall/internal/lab"
)

// logsPolicy has two deny rules in the order given: a reload that swaps
// them changes every rule's index in the kernel's log prefixes.
func logsPolicy(name string, first, second string) string {
	rule := func(n string) string {
		port := map[string]string{"deny-one": "7001", "deny-two": "7002"}[n]
		return fmt.Sprintf(`          - name: %s
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.10]
            destinationPorts: ['%s']
`, n, port)
	}
	return `name: ` + name + `
ruleCollectionGroups:
  - name: net
    priority: 200
    ruleCollections:
      - name: block
        kind: Network
        priority: 100
        action: Deny
        rules:
` + rule(first) + rule(second)
}

// TestDecisionLogLatencyAndReload: a decision line arrives well within
// 200 ms (the NFLOG flush timeout is 20 ms, not the kernel's default 1 s);
// while reloads keep swapping the order of two rules, every line names the
// rule that decided its flow (the log prefixes carry the ruleset
// generation), and a packet to the firewall itself that its input chain
// drops is logged too.
func TestDecisionLogLatencyAndReload(t *testing.T) {
	t.Parallel()
	f := newFWLab(t, logsPolicy("logs-a", "deny-one", "deny-two"))
	dst := netip.MustParseAddr("192.0.2.10")

	// Latency: time from the SYN to the line in the file.
	var lat []time.Duration
	for i := 0; i < 7; i++ {
		src := lab.NodeV4
		before := len(f.decisions(t))
		start := time.Now()
		c, err := f.dial(lab.HostNode, netip.Addr{}, "tcp", netip.AddrPortFrom(dst, 7001), time.Second)
		if err == nil {
			c.Close()
			t.Fatal("denied flow connected")
		}
		key := flowKey{src: src, dst: dst, port: 7001, proto: "TCP"}
		for {
			recs := f.decisions(t)
			found := false
			for _, r := range recs[before:] {
				if key.match(&r) {
					found = true
					if r.Rule != "deny-one" || r.Action != "Deny" {
						t.Errorf("line %+v, want Deny by deny-one", r)
					}
				}
			}
			if found {
				lat = append(lat, time.Since(start))
				break
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("no decision line for %s after 2 s", key)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("decision line latency: min %v median %v max %v", lat[0], lat[len(lat)/2], lat[len(lat)-1])
	if lat[len(lat)/2] > 200*time.Millisecond {
		t.Errorf("median decision line latency %v, want < 200 ms", lat[len(lat)/2])
	}

	// Reloads that reorder the rules, with flows to both ports all along.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var sent sync.Map
	for _, port := range []uint16{7001, 7002} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for {
				select {
				case <-stop:
					sent.Store(port, n)
					return
				default:
				}
				if c, err := f.dial(lab.HostNode, netip.Addr{}, "tcp", netip.AddrPortFrom(dst, port), 500*time.Millisecond); err == nil {
					c.Close()
				}
				n++
				time.Sleep(3 * time.Millisecond)
			}
		}()
	}
	gen := f.status(t).Generation
	for i := 0; i < 8; i++ {
		if i%2 == 0 {
			f.writePolicy(t, logsPolicy(fmt.Sprintf("logs-b%d", i), "deny-two", "deny-one"))
		} else {
			f.writePolicy(t, logsPolicy(fmt.Sprintf("logs-a%d", i), "deny-one", "deny-two"))
		}
		want := gen + 1
		f.waitStatus(t, "the reload", 10*time.Second, func(s daemonStatus) bool { return s.Generation >= want })
		gen = want
		time.Sleep(150 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	// Input chain drop: TCP to a port the firewall does not serve.
	if c, err := f.dial(lab.HostNode, netip.Addr{}, "tcp", netip.AddrPortFrom(lab.FWInsideV4, 2222), 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("TCP 2222 to the firewall connected")
	}
	inKey := flowKey{src: lab.NodeV4, dst: lab.FWInsideV4, port: 2222, proto: "TCP"}
	got := f.waitDecisions(t, []flowKey{inKey}, 3*time.Second)
	if r, ok := got[inKey]; !ok {
		t.Errorf("no decision line for the input-chain drop %s", inKey)
	} else if r.Action != "Deny" || r.ActionReason != daemon.ReasonInputDrop {
		t.Errorf("input drop line %+v, want Deny with %q", r, daemon.ReasonInputDrop)
	}

	time.Sleep(100 * time.Millisecond)
	want := map[int]string{7001: "deny-one", 7002: "deny-two"}
	counts := map[string]int{}
	policies := map[string]bool{}
	for _, r := range f.decisions(t) {
		if r.DestinationIp != dst.String() || r.Source != "kernel" {
			continue
		}
		w, ok := want[r.DestinationPort]
		if !ok {
			continue
		}
		if r.Rule != w || r.Action != "Deny" {
			t.Errorf("line for port %d names rule %q (policy %s), want %q", r.DestinationPort, r.Rule, r.Policy, w)
		}
		counts[r.Rule]++
		policies[r.Policy] = true
	}
	n1, _ := sent.Load(uint16(7001))
	n2, _ := sent.Load(uint16(7002))
	t.Logf("lines: %v (flows sent: 7001 %v, 7002 %v) from %d policy generations", counts, n1, n2, len(policies))
	if counts["deny-one"] < 20 || counts["deny-two"] < 20 || len(policies) < 5 {
		t.Errorf("too few lines across the reloads: %v from policies %v", counts, logsKeys(policies))
	}
}

func logsKeys(m map[string]bool) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// TestHAFailoverMeasure measures CW_HA_FAILOVERS failovers (e.g. 20; the
// test skips without it): each time fresh connections (an SNAT'd echo
// stream, a DNAT'd HTTP keep-alive connection, an L7-proxied HTTPS one),
// then fw crashes (links cut, every process killed), and the time until a
// new flow passes and until the stream's next echo is recorded, with what
// survived; then fw comes back and takes over again (failback), and the
// stream must still run. With CW_HA_NOSYNC=1 the backup's conntrackd is
// stopped first (the control). `make ha-bench` runs both; docs/ha.md and
// docs/benchmarks.md have the results.
func TestHAFailoverMeasure(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CW_HA_FAILOVERS"))
	if n <= 0 {
		t.Skip("set CW_HA_FAILOVERS=N to measure N failovers (make ha-bench)")
	}
	noSync := os.Getenv("CW_HA_NOSYNC") == "1"
	h := newHALab(t)
	if noSync {
		h.stopBackupSync(t)
	}
	dst := ap(nonazure4, 9101)
	h.echoServer(t, dst)
	mcr := lab.MustLookup("mcr.microsoft.com")
	var newFlows, resumed []time.Duration
	var streamLost, dnatLost, failbackLost, proxiedClean, proxiedHung int
	for i := 1; i <= n; i++ {
		stream := h.openStream(t, dst)
		dnat := h.openKeepAlive(t, lab.HostClient, ap(lab.FWPublicV4, 80), "")
		proxied := h.openKeepAlive(t, lab.HostNode, ap(mcr.V4, 443), mcr.Name)
		if !noSync {
			h.waitReplicated(t, 2)
		}
		h.stream = stream
		r := h.crashActive(t, 5*time.Second)
		newFlows = append(newFlows, r.newFlows)
		line := fmt.Sprintf("failover %2d: new flows %6s", i, r.newFlows.Round(time.Millisecond))
		if r.lost {
			streamLost++
			line += ", stream LOST"
		} else {
			resumed = append(resumed, r.resumed)
			line += fmt.Sprintf(", stream resumed %6s", r.resumed.Round(time.Millisecond))
		}
		if err := dnat.Get(); err != nil {
			dnatLost++
			line += ", DNAT keep-alive LOST"
		}
		if err := proxied.ClosedCleanly(5 * time.Second); err != nil {
			proxiedHung++
			line += ", proxied: " + err.Error()
		} else {
			proxiedClean++
		}
		back := h.failback(t)
		line += fmt.Sprintf("; failback %s", back.Round(time.Millisecond))
		if !r.lost {
			if _, ok := stream.FirstAfter(time.Now(), time.Now().Add(5*time.Second)); !ok {
				failbackLost++
				line += ", stream LOST in the failback"
			}
		}
		t.Log(line)
		stream.Close()
	}
	mode := "with state sync"
	if noSync {
		mode = "CONTROL: backup's conntrackd stopped"
	}
	t.Logf("%d failovers, %s (advert interval %s):", n, mode, "300ms")
	t.Logf("  new flows pass after:       median %s, worst %s", median(newFlows), worst(newFlows))
	if len(resumed) > 0 {
		t.Logf("  established stream resumes: median %s, worst %s", median(resumed), worst(resumed))
	}
	t.Logf("  lost: SNAT'd streams %d/%d, DNAT'd keep-alive connections %d/%d, streams in the failback %d/%d",
		streamLost, n, dnatLost, n, failbackLost, n-streamLost)
	t.Logf("  L7-proxied connections: %d/%d closed with a reset, %d hung", proxiedClean, n, proxiedHung)
	if !noSync && (streamLost > 0 || dnatLost > 0 || failbackLost > 0) {
		t.Errorf("established connections were lost")
	}
	if noSync && streamLost == 0 {
		t.Errorf("control: no stream was lost without state sync")
	}
}

// waitReplicated waits until fw2 holds at least n replicated flows (15 s:
// conntrackd's updates took more than 5 s in a -race CI run under load).
func (h *haLab) waitReplicated(t *testing.T, n uint64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for h.haStatus(t, lab.HostFW2).Sync.Stats.ExternalEntries < n {
		if time.Now().After(deadline) {
			t.Fatalf("fw2 holds fewer than %d replicated flows after 15s", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2].Round(time.Millisecond)
	}
	return ((s[len(s)/2-1] + s[len(s)/2]) / 2).Round(time.Millisecond)
}

func worst(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d).Round(time.Millisecond)
}

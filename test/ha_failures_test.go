package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// TestHADaemonFailure: the active gateway's daemon dies (SIGKILL) while
// the machine, keepalived and conntrackd stay up. keepalived's readiness
// check (the daemon's /readyz) fails, the gateway goes to FAULT and gives
// its addresses up, the backup takes over, and the established stream and
// DNAT'd connection continue (the kernel rules stayed: fail closed, and
// the state was replicated). A restarted daemon replaces the orphaned
// keepalived and conntrackd, resynchronises and takes its group back.
func TestHADaemonFailure(t *testing.T) {
	t.Parallel()
	h := newHALab(t)
	h.establish(t, true)
	t0 := time.Now()
	if err := h.Signal(lab.DaemonProc, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := h.WaitRoles(ctx, map[string]string{lab.HostFW2: "active"}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	if _, ok := h.stream.FirstAfter(time.Now(), time.Now().Add(5*time.Second)); !ok {
		t.Fatalf("the stream stalled after the daemon failure: %v", h.stream.Err())
	}
	if err := h.dnat.Get(); err != nil {
		t.Errorf("DNAT'd keep-alive connection after the daemon failure: %v", err)
	}
	notify, _ := os.ReadFile(filepath.Join(h.Dir(), "ha-"+lab.HostFW, "notify.log"))
	if !strings.Contains(string(notify), "group gw: fault") {
		t.Errorf("fw's keepalived did not go to FAULT:\n%s", notify)
	}
	t.Logf("daemon killed on the active: fw2 active after %s; stream and DNAT'd connection kept", took.Round(time.Millisecond))
	h.checkNewEgress(t, "after the daemon failure")

	// Restart the daemon: it takes the group back (preempt) and the flows go on.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := h.Start(rctx, h.DaemonProcFor(lab.HostFW)); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitRoles(rctx, map[string]string{lab.HostFW: "active", lab.HostFW2: "backup"}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.stream.FirstAfter(time.Now(), time.Now().Add(5*time.Second)); !ok {
		t.Fatalf("the stream stalled after the daemon's restart: %v", h.stream.Err())
	}
	if err := h.dnat.Get(); err != nil {
		t.Errorf("DNAT'd keep-alive connection after the restart: %v", err)
	}
	st := h.haStatus(t, lab.HostFW)
	if st.Role != "active" || !st.Peer.Reachable {
		t.Errorf("fw after the restart: %+v", st)
	}
}

// TestHASyncLinkCut is the split-brain case of issue 12: the sync link is
// cut while both gateways live. VRRP runs on the cluster and internet
// links, so there is still exactly one active gateway; both report the
// sync down and the peer unreachable; a flow opened meanwhile is not
// replicated. When the link comes back the active gateway resynchronises
// (a bulk send), and a failover then keeps the flows opened before and
// during the outage.
func TestHASyncLinkCut(t *testing.T) {
	t.Parallel()
	h := newHALab(t)
	h.establish(t, true)
	before := h.haStatus(t, lab.HostFW2).Sync.Stats.ExternalEntries
	ctx := context.Background()
	link := func(state string) {
		t.Helper()
		if out, err := h.Exec(ctx, lab.HostFW2, "ip", "link", "set", lab.FWSync, state); err != nil {
			t.Fatalf("sync link %s: %v %s", state, err, out)
		}
	}
	link("down")
	deadline := time.Now().Add(15 * time.Second)
	for {
		fw, fw2 := h.haStatus(t, lab.HostFW), h.haStatus(t, lab.HostFW2)
		if fw.Sync.State == "down" && fw2.Sync.State == "down" && !fw.Peer.Reachable && !fw2.Peer.Reachable {
			if fw.Role != "active" || fw2.Role != "backup" {
				t.Fatalf("roles with the sync link cut: fw %s, fw2 %s (want one active)", fw.Role, fw2.Role)
			}
			t.Logf("sync link cut: both see the sync down and the peer unreachable; fw still active, fw2 backup")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sync link cut, but fw: sync %s peer %v; fw2: sync %s peer %v", fw.Sync.State, fw.Peer.Reachable, fw2.Sync.State, fw2.Peer.Reachable)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A flow opened while the sync is down.
	during := h.openStream(t, ap(nonazure4, 9101))
	time.Sleep(500 * time.Millisecond)
	if n := h.haStatus(t, lab.HostFW2).Sync.Stats.ExternalEntries; n > before {
		t.Fatalf("fw2 got a flow over a cut sync link (%d > %d)", n, before)
	}
	link("up")
	deadline = time.Now().Add(20 * time.Second)
	for {
		fw, fw2 := h.haStatus(t, lab.HostFW), h.haStatus(t, lab.HostFW2)
		if fw.Sync.State == "ok" && fw2.Sync.State == "ok" && fw2.Sync.Stats.ExternalEntries > before {
			t.Logf("sync link back: fw resynchronised %d time(s); fw2 holds %d replicated flows (was %d)", fw.Sync.Resyncs, fw2.Sync.Stats.ExternalEntries, before)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the sync link came back: fw sync %s (resyncs %d), fw2 sync %s with %d replicated flows (before the cut %d)",
				fw.Sync.State, fw.Sync.Resyncs, fw2.Sync.State, fw2.Sync.Stats.ExternalEntries, before)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := h.crashActive(t, 5*time.Second)
	if r.lost {
		t.Fatalf("the stream opened before the cut did not survive the failover")
	}
	if _, ok := during.FirstAfter(time.Now(), time.Now().Add(5*time.Second)); !ok {
		t.Fatalf("the stream opened while the sync link was cut did not survive the failover after the resync: %v", during.Err())
	}
}

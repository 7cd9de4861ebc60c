package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// haPolicy: an SNAT'd network-rule stream (192.0.2.99:9101), new egress by
// address (ghcr.io's 192.0.2.10:80) and by name (example.org:80, a
// destinationFqdns rule), an L7 application rule (mcr.microsoft.com over
// HTTPS, through the proxy) and a DNAT'd service (203.0.113.32:80 to
// store-front).
const haPolicy = `name: e2e-ha
ruleCollectionGroups:
  - name: publish
    priority: 100
    ruleCollections:
      - name: dnat
        kind: DNAT
        priority: 100
        action: DNAT
        rules:
          - name: web4
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [203.0.113.32]
            destinationPorts: ['80']
            translatedAddress: 10.42.1.100
            translatedPort: '80'
  - name: net
    priority: 200
    ruleCollections:
      - name: egress
        kind: Network
        priority: 200
        action: Allow
        rules:
          - name: stream
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.99]
            destinationPorts: ['9101']
          - name: by-address
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.10]
            destinationPorts: ['80']
          - name: by-name
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationFqdns: [example.org]
            destinationPorts: ['80']
  - name: app
    priority: 300
    ruleCollections:
      - name: registries
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: mcr
            protocols: ['Https:443']
            sourceAddresses: ['*']
            targetFqdns: [mcr.microsoft.com]
`

// haLab is an HA lab (fw active, fw2 backup) with the daemons enforcing
// haPolicy and the connections a failover must keep.
type haLab struct {
	*fwLab
	stream *lab.Stream    // node → 192.0.2.99:9101, SNAT'd, echoing every 20 ms
	dnat   *lab.KeepAlive // client → 203.0.113.32:80 (DNAT to store-front), HTTP keep-alive
}

func newHALab(t *testing.T) *haLab {
	t.Helper()
	requireFW(t)
	dir := t.TempDir()
	f := &fwLab{dir: dir, policy: filepath.Join(dir, "policy.yaml")}
	if err := os.WriteFile(f.policy, []byte(haPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f.Lab = lab.NewTestLab(t, lab.Config{Exe: exe, Daemon: &lab.DaemonOptions{Policy: f.policy}, HA: &lab.HAOptions{}})
	t.Logf("HA lab %s up in %s", f.Name(), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range []string{lab.DaemonProc, lab.Daemon2Proc} {
			data, _ := os.ReadFile(f.LogFile(n))
			t.Logf("%s.log:\n%s", n, tail(data, 40))
		}
		for _, h := range []string{lab.HostFW, lab.HostFW2} {
			for _, n := range []string{"notify.log", "conntrackd.log", "keepalived.log"} {
				data, _ := os.ReadFile(filepath.Join(f.Dir(), "ha-"+h, n))
				t.Logf("%s %s:\n%s", h, n, tail(data, 25))
			}
		}
	})
	if err := f.warmUp(); err != nil {
		t.Fatal(err)
	}
	return &haLab{fwLab: f}
}

func tail(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// establish opens the connections a failover must keep and waits until
// the backup has their state (conntrackd's external cache).
func (h *haLab) establish(t *testing.T, waitSync bool) {
	t.Helper()
	dst := ap(nonazure4, 9101)
	h.echoServer(t, dst)
	h.stream = h.openStream(t, dst)
	h.dnat = h.openKeepAlive(t, lab.HostClient, ap(lab.FWPublicV4, 80), "")
	// The stream is SNAT'd to the group's public IP (which moves), never
	// the gateway's own address.
	if _, peer, err := h.httpGet(lab.HostNode, netip.Addr{}, "http", ap(ghcr4, 80)); err != nil || peer.Addr() != lab.FWPublicV4 {
		t.Fatalf("egress through the active gateway: peer %v, %v; want SNAT to %s", peer, err, lab.FWPublicV4)
	}
	if !waitSync {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := h.haStatus(t, lab.HostFW2)
		if st.Sync.Stats.ExternalEntries >= 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fw2 has %d replicated flows after 5s, want the stream and the DNAT'd connection: %+v", st.Sync.Stats.ExternalEntries, st.Sync)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// haStatusView is the part of /v1/status's ha the tests read.
type haStatusView struct {
	Role        string `json:"role"`
	RoleChanges uint64 `json:"roleChanges"`
	Groups      []struct {
		Name  string   `json:"name"`
		State string   `json:"state"`
		Held  []string `json:"held"`
	} `json:"groups"`
	Sync struct {
		State string `json:"state"`
		Stats struct {
			InternalEntries uint64 `json:"internalEntries"`
			ExternalEntries uint64 `json:"externalEntries"`
		} `json:"stats"`
		Errors  uint64 `json:"errors"`
		Resyncs uint64 `json:"resyncs"`
	} `json:"sync"`
	Peer struct {
		Reachable    bool   `json:"reachable"`
		Name         string `json:"name"`
		Role         string `json:"role"`
		Generation   uint64 `json:"generation"`
		PolicySHA256 string `json:"policySHA256"`
	} `json:"peer"`
	PolicyInSync *bool `json:"policyInSync"`
}

func (h *haLab) haStatus(t *testing.T, host string) haStatusView {
	t.Helper()
	code, body, err := h.AdminOf(context.Background(), host, http.MethodGet, "/v1/status")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s: GET /v1/status: %d %v %s", host, code, err, body)
	}
	var st struct {
		HA *haStatusView `json:"ha"`
	}
	if err := json.Unmarshal(body, &st); err != nil || st.HA == nil {
		t.Fatalf("%s: /v1/status without ha: %v %s", host, err, body)
	}
	return *st.HA
}

// failoverResult is one failover, measured from the crash.
type failoverResult struct {
	newFlows time.Duration // until a new connection (by address) passes
	resumed  time.Duration // until the established stream's next echo
	lost     bool          // the stream did not resume
}

// crashActive kills fw (links down, every process killed) and measures
// how long new flows and the established stream take to pass again
// (waiting at most resumeWait for the stream once new flows pass).
func (h *haLab) crashActive(t *testing.T, resumeWait time.Duration) failoverResult {
	t.Helper()
	t0 := time.Now()
	if err := h.Crash(lab.HostFW); err != nil {
		t.Fatal(err)
	}
	// An echo may still complete while Crash takes the links down; any
	// after Crash returned went through the backup.
	down := time.Now()
	var r failoverResult
	deadline := t0.Add(15 * time.Second)
	for {
		c, err := h.dial(lab.HostNode, netip.Addr{}, "tcp", ap(ghcr4, 80), 150*time.Millisecond)
		if err == nil {
			c.Close()
			r.newFlows = time.Since(t0)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new flow passed within 15s of the crash (last: %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if at, ok := h.stream.FirstAfter(down, t0.Add(r.newFlows+resumeWait)); ok {
		r.resumed = at.Sub(t0)
	} else {
		r.lost = true
	}
	return r
}

// failback revives fw (a rebooted machine: network reset, daemon
// started) and waits until it is active again and fw2 backup.
func (h *haLab) failback(t *testing.T) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := h.Revive(ctx, lab.HostFW); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(ctx, h.DaemonProcFor(lab.HostFW)); err != nil {
		t.Fatalf("restart fw's daemon: %v", err)
	}
	if err := h.WaitRoles(ctx, map[string]string{lab.HostFW: "active", lab.HostFW2: "backup"}, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return time.Since(t0)
}

// TestHAFailover is the HA pair's promise, with real keepalived and
// conntrackd in the lab: the active gateway dies (its links cut, every
// process on it killed); an established SNAT'd network-rule stream and a
// DNAT'd inbound keep-alive connection continue through the backup; new
// egress by address and by name passes; an L7-proxied connection (which
// cannot move) sees a reset rather than a hang; the backup reports itself
// active. Then fw comes back and takes over again (failback) without
// cutting the flows either. TestHAFailoverWithoutSync is the control: the
// same failover with the backup's conntrackd stopped loses the stream.
func TestHAFailover(t *testing.T) {
	t.Parallel()
	h := newHALab(t)
	h.establish(t, true)
	st := h.haStatus(t, lab.HostFW)
	if st.Role != "active" || !st.Peer.Reachable || st.Peer.Name != lab.HostFW2 || st.Peer.Role != "backup" ||
		st.PolicyInSync == nil || !*st.PolicyInSync || st.Sync.State != "ok" {
		t.Fatalf("fw before the failover: %+v", st)
	}
	// An L7-proxied TLS connection, kept alive.
	mcr := lab.MustLookup("mcr.microsoft.com")
	proxied := h.openKeepAlive(t, lab.HostNode, ap(mcr.V4, 443), mcr.Name)
	h.checkProxiedEgressSource(t, mcr, "before the failover")

	r := h.crashActive(t, 5*time.Second)
	t.Logf("failover: new flows after %s, the established stream resumed after %s", r.newFlows.Round(time.Millisecond), r.resumed.Round(time.Millisecond))
	if r.lost {
		t.Fatalf("the established SNAT'd stream did not resume after the failover (%v)", h.stream.Err())
	}
	if err := h.dnat.Get(); err != nil {
		t.Errorf("DNAT'd keep-alive connection after the failover: %v", err)
	}
	if err := proxied.ClosedCleanly(5 * time.Second); err != nil {
		t.Errorf("L7-proxied connection after the failover: %v", err)
	}
	h.checkNewEgress(t, "after the failover")
	h.checkProxiedEgressSource(t, mcr, "after the failover")
	// fw2 is active and, within a few of its polls, sees its peer gone.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st2 := h.haStatus(t, lab.HostFW2)
		if st2.Role == "active" && !st2.Peer.Reachable {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("fw2 after the failover: role %s, peer reachable %v", st2.Role, st2.Peer.Reachable)
			break
		}
	}

	took := h.failback(t)
	t.Logf("failback: fw active again %s after it came back", took.Round(time.Millisecond))
	// The stream went on through the failback.
	time.Sleep(500 * time.Millisecond)
	if err := h.stream.Err(); err != nil {
		t.Fatalf("the established stream broke in the failback: %v", err)
	}
	if _, ok := h.stream.FirstAfter(time.Now(), time.Now().Add(5*time.Second)); !ok {
		t.Fatalf("the established stream stalled after the failback")
	}
	if err := h.dnat.Get(); err != nil {
		t.Errorf("DNAT'd keep-alive connection after the failback: %v", err)
	}
	h.checkNewEgress(t, "after the failback")
	if st := h.haStatus(t, lab.HostFW); st.Role != "active" || st.RoleChanges < 1 {
		t.Errorf("fw after the failback: %+v", st)
	}
}

// TestHAFailoverWithoutSync is TestHAFailover's control: with conntrackd
// stopped (SIGSTOP) on the backup, it has no state of the established
// flows, and after the same crash the stream does not resume although new
// flows pass: state sync is what keeps established connections.
func TestHAFailoverWithoutSync(t *testing.T) {
	t.Parallel()
	h := newHALab(t)
	h.stopBackupSync(t)
	h.establish(t, false)
	r := h.crashActive(t, 4*time.Second)
	t.Logf("failover without sync: new flows after %s; stream resumed: %v", r.newFlows.Round(time.Millisecond), !r.lost)
	if !r.lost {
		t.Fatalf("the stream resumed %s after the crash although the backup had no state: the failover test proves nothing", r.resumed)
	}
	h.checkNewEgress(t, "after the failover without sync")
}

// stopBackupSync freezes fw2's conntrackd (SIGSTOP: not dead, so its
// supervisor does not restart it, and it receives nothing).
func (h *haLab) stopBackupSync(t *testing.T) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.Dir(), "ha-"+lab.HostFW2, "conntrackd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(data), &pid)
	if pid <= 1 {
		t.Fatalf("conntrackd pid %q", data)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
}

// checkNewEgress: new connections by address and, after resolving through
// the gateway's DNS proxy, by name pass.
func (h *haLab) checkNewEgress(t *testing.T, when string) {
	t.Helper()
	if body, _, err := h.httpGet(lab.HostNode, netip.Addr{}, "http", ap(ghcr4, 80)); err != nil || body != "ghcr.io" {
		t.Errorf("new egress by address %s: %q %v", when, body, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := h.Exec(ctx, lab.HostNode, "dig", "+short", "+time=2", "+tries=2", "example.org", "A", "@"+lab.FWPrivateV4.String())
	a, perr := netip.ParseAddr(strings.TrimSpace(string(out)))
	if err != nil || perr != nil {
		t.Errorf("resolving example.org through the gateway %s: %v %q", when, err, out)
		return
	}
	if body, _, err := h.httpGet(lab.HostNode, netip.Addr{}, "http", ap(a, 80)); err != nil || body != "example.org" {
		t.Errorf("new egress by name (example.org at %s) %s: %q %v", a, when, body, err)
	}
}

// checkProxiedEgressSource checks that a new connection through the
// active gateway's L7 proxy reaches the internet from the public IP, as
// every other egress flow does: the proxy's upstream connections are
// marked (proxy.Config.Mark) so that the HA rule keeping the gateway's own
// connections on its own address leaves them alone.
func (h *haLab) checkProxiedEgressSource(t *testing.T, n lab.Name, when string) {
	t.Helper()
	body, peer, err := h.httpGetName(lab.HostNode, n)
	if err != nil || body != n.Name {
		t.Errorf("https://%s/ through the L7 proxy %s: %q %v", n.Name, when, body, err)
		return
	}
	if peer.Addr() != lab.FWPublicV4 {
		t.Errorf("https://%s/ through the L7 proxy %s: the server saw the connection from %s, want the public IP %s", n.Name, when, peer, lab.FWPublicV4)
	}
}

// openStream starts an echo stream from node to dst (closed when the test ends).
func (h *haLab) openStream(t *testing.T, dst netip.AddrPort) *lab.Stream {
	t.Helper()
	s, err := h.OpenStream(lab.HostNode, dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openKeepAlive opens an HTTP(S) keep-alive connection (closed when the
// test ends).
func (h *haLab) openKeepAlive(t *testing.T, host string, dst netip.AddrPort, serverName string) *lab.KeepAlive {
	t.Helper()
	k, err := h.OpenKeepAlive(host, dst, serverName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

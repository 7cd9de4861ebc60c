package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// The demo's high-availability section (docs/ha.md, docs/lab.md): a second
// lab with two firewalls, fw and fw2, running the daemon with keepalived
// and conntrackd and the same seed policy. Long-lived connections are
// opened through fw, fw dies (links cut, every process killed), and the
// rows check what must survive and what must work on fw2; then fw comes
// back and takes over again.

const sectionHA = "high availability: fw and fw2 (keepalived + conntrackd); fw crashes, then comes back"

// haStreamAddr is an address of AzureCloud.eastus (the seed's apitcp rule
// allows TCP 9000 there) the section adds to the lab internet for an echo
// server: the established SNAT'd stream.
var haStreamAddr = netip.MustParseAddr("198.18.10.6")

// HALabName is the HA section's lab: name with "ha" (at most 8 characters).
func HALabName(name string) string { return name[:min(len(name), 6)] + "ha" }

type haStep struct {
	what   string
	ok     bool
	detail string
}

// runHA runs the HA section and returns its rows as results.
func runHA(ctx context.Context, cfg Config, out io.Writer) (res []Result, err error) {
	name := HALabName(cfg.Name)
	if lab.Exists(name) {
		return nil, fmt.Errorf("demo: lab %s (the HA section's) is already up; remove it with `clusterwall lab down --name %s`", name, name)
	}
	fmt.Fprintf(out, "\n%s\n", sectionHA)
	if !cfg.Keep {
		defer func() {
			t := time.Now()
			if derr := lab.Remove(name); derr != nil {
				err = errors.Join(err, fmt.Errorf("demo: lab down: %w", derr))
				return
			}
			fmt.Fprintf(out, "lab %s down in %s\n", name, time.Since(t).Round(time.Millisecond))
		}()
	}
	start := time.Now()
	l, err := lab.Up(ctx, lab.Config{Name: name, Exe: cfg.Exe, Log: cfg.Log,
		Daemon: &lab.DaemonOptions{Policy: cfg.Policy}, HA: &lab.HAOptions{}})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "lab %s up in %s (fw and fw2, VRRP advert 300ms, preempt delay 2s)\n", name, time.Since(start).Round(time.Millisecond))
	step := func(what string, ok bool, format string, args ...any) {
		s := haStep{what: what, ok: ok, detail: fmt.Sprintf(format, args...)}
		status, outcome := Pass, Allowed
		if !s.ok {
			status, outcome = Fail, Denied
		}
		fmt.Fprintf(out, "%-8s %-78s %s\n", status, s.what, s.detail)
		res = append(res, Result{Check: Check{Section: sectionHA, Flow: s.what, Expect: Allowed}, Observed: outcome,
			Detail: s.detail, Status: status, Why: s.detail})
	}

	// 1. The pair.
	fwSt, fw2St := haWaitStatus(ctx, l, 10*time.Second, func(a, b haView) bool {
		return a.Role == "active" && b.Role == "backup" && a.Sync.State == "ok" && a.PolicyInSync != nil && *a.PolicyInSync
	})
	step("fw active, fw2 backup, state sync up, the same policy on both", fwSt.Role == "active" && fw2St.Role == "backup" &&
		fwSt.Sync.State == "ok" && fwSt.PolicyInSync != nil && *fwSt.PolicyInSync,
		"fw %s, fw2 %s, sync %s, peer %s generation %d", fwSt.Role, fw2St.Role, fwSt.Sync.State, fwSt.Peer.Name, fwSt.Peer.Generation)

	// 2. Long-lived connections through fw.
	if _, err := l.Exec(ctx, lab.HostInet, "ip", "addr", "add", netip.PrefixFrom(haStreamAddr, 32).String(), "dev", "names"); err != nil {
		return res, err
	}
	echo, err := l.EchoServer(lab.HostInet, netip.AddrPortFrom(haStreamAddr, 9000))
	if err != nil {
		return res, err
	}
	defer echo.Close()
	stream, err := l.OpenStream(lab.HostNode, netip.AddrPortFrom(haStreamAddr, 9000))
	if err != nil {
		return res, err
	}
	defer stream.Close()
	dnat, err := l.OpenKeepAlive(lab.HostClient, netip.AddrPortFrom(lab.FWPublicV4, 80), "")
	if err != nil {
		return res, err
	}
	defer dnat.Close()
	mcr := lab.MustLookup("mcr.microsoft.com")
	proxied, err := l.OpenKeepAlive(lab.HostNode, netip.AddrPortFrom(mcr.V4, 443), mcr.Name)
	if err != nil {
		return res, err
	}
	defer proxied.Close()
	_, fw2St = haWaitStatus(ctx, l, 5*time.Second, func(_, b haView) bool { return b.Sync.Stats.ExternalEntries >= 2 })
	step("connections through fw: a stream, a DNAT'd keep-alive, an L7-proxied HTTPS keep-alive",
		fw2St.Sync.Stats.ExternalEntries >= 2, "node → 198.18.10.6:9000 (aksfwnr/apitcp, SNAT'd), client → 203.0.113.32:80 (exampleset/inboundrule), node → https://mcr.microsoft.com; fw2 holds %d flows replicated by conntrackd",
		fw2St.Sync.Stats.ExternalEntries)

	// 3. fw dies.
	t0 := time.Now()
	if err := l.Crash(lab.HostFW); err != nil {
		return res, err
	}
	down := time.Now()
	step("fw crashes: its links cut, its daemon, keepalived and conntrackd killed", true, "")
	tunnel := lab.MustLookup(lab.NameAzureCloud)
	var newAfter time.Duration
	for deadline := t0.Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if line := l.TCPLine(lab.HostNode, netip.AddrPortFrom(tunnel.V4, 9000), 150*time.Millisecond); line == tunnel.Name {
			newAfter = time.Since(t0)
			break
		}
	}
	step("new flow by address through fw2: node → 198.18.10.5:9000 (aksfwnr/apitcp)", newAfter > 0, "passes %.2f s after the crash", newAfter.Seconds())
	at, ok := stream.FirstAfter(down, t0.Add(newAfter+5*time.Second))
	step("the established SNAT'd stream continues through fw2", ok, "resumed %.2f s after the crash%s", at.Sub(t0).Seconds(), errText(stream.Err()))
	err = dnat.Get()
	step("the DNAT'd keep-alive connection continues (next request on it)", err == nil, "%s", orOK(err))
	body, cerr := l.Exec(ctx, lab.HostNode, "curl", "-sS", "--max-time", "5", "--cacert", l.CAFile(), "https://"+mcr.Name+"/")
	step("new egress by name through fw2: node → https://mcr.microsoft.com/ (its DNS, L7 proxy)",
		cerr == nil && strings.TrimSpace(string(body)) == mcr.Name, "%s", orOK(cerr))
	err = proxied.ClosedCleanly(5 * time.Second)
	step("the L7-proxied keep-alive connection (cannot move): a clean reset, no hang", err == nil, "%s", orText(err, "reset"))
	_, fw2St = haWaitStatus(ctx, l, 5*time.Second, func(_, b haView) bool { return b.Role == "active" && !b.Peer.Reachable })
	step("fw2 reports itself active and its peer unreachable", fw2St.Role == "active" && !fw2St.Peer.Reachable,
		"role %s, %d role change(s)", fw2St.Role, fw2St.RoleChanges)

	// 4. fw comes back.
	t1 := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = l.Revive(rctx, lab.HostFW)
	if err == nil {
		err = l.Start(rctx, l.DaemonProcFor(lab.HostFW))
	}
	if err == nil {
		err = l.WaitRoles(rctx, map[string]string{lab.HostFW: "active", lab.HostFW2: "backup"}, 20*time.Second)
	}
	step("fw comes back (network reset, daemon started): resyncs, takes over again", err == nil, "fw active %.2f s after it came back%s", time.Since(t1).Seconds(), errText(err))
	_, ok = stream.FirstAfter(time.Now(), time.Now().Add(5*time.Second))
	err = dnat.Get()
	step("after the failback the stream and the DNAT'd connection still run", ok && err == nil, "%s", orOK(errors.Join(stream.Err(), err)))
	return res, nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

func orOK(err error) string { return orText(err, "ok") }

func orText(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

// haView is the part of /v1/status's ha the section reads.
type haView struct {
	Role        string `json:"role"`
	RoleChanges uint64 `json:"roleChanges"`
	Sync        struct {
		State string `json:"state"`
		Stats struct {
			ExternalEntries uint64 `json:"externalEntries"`
		} `json:"stats"`
	} `json:"sync"`
	Peer struct {
		Reachable  bool   `json:"reachable"`
		Name       string `json:"name"`
		Generation uint64 `json:"generation"`
	} `json:"peer"`
	PolicyInSync *bool `json:"policyInSync"`
}

func haStatusOf(ctx context.Context, l *lab.Lab, host string) haView {
	var v struct {
		HA haView `json:"ha"`
	}
	code, body, err := l.AdminOf(ctx, host, http.MethodGet, "/v1/status")
	if err == nil && code == http.StatusOK {
		json.Unmarshal(body, &v)
	}
	return v.HA
}

// haWaitStatus polls both firewalls' status until ok accepts them (or
// timeout) and returns the last.
func haWaitStatus(ctx context.Context, l *lab.Lab, timeout time.Duration, ok func(fw, fw2 haView) bool) (haView, haView) {
	deadline := time.Now().Add(timeout)
	for {
		a, b := haStatusOf(ctx, l, lab.HostFW), haStatusOf(ctx, l, lab.HostFW2)
		if ok(a, b) || time.Now().After(deadline) || ctx.Err() != nil {
			return a, b
		}
		time.Sleep(100 * time.Millisecond)
	}
}

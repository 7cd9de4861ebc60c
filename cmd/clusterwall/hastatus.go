package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/ha"
)

// printHAStatus prints the ha part of a /v1/status body (nothing without
// one): role, groups, state sync, the peer, and whether both gateways run
// the same policy.
func printHAStatus(w io.Writer, body []byte) {
	var st struct {
		Generation uint64     `json:"generation"`
		HA         *ha.Status `json:"ha"`
	}
	if json.Unmarshal(body, &st) != nil || st.HA == nil {
		return
	}
	h := st.HA
	last := ""
	if !h.LastRoleChange.IsZero() {
		last = ", last " + h.LastRoleChange.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "ha           %s (%s, gateway %s), %d role changes%s\n", strings.ToUpper(h.Role), h.Mode, h.Name, h.RoleChanges, last)
	for _, g := range h.Groups {
		held := "holds none of its addresses"
		if len(g.Held) > 0 {
			held = "holds " + strings.Join(g.Held, " ")
		}
		fmt.Fprintf(w, "  group %-6s %s, priority %d, %s\n", g.Name, g.State, g.Priority, held)
	}
	s := h.Sync
	detail := ""
	if s.Detail != "" {
		detail = " (" + s.Detail + ")"
	}
	fmt.Fprintf(w, "  sync       %s%s over %s to %s: %d flows of this gateway, %d replicated from the peer; %d errors\n",
		s.State, detail, s.Interface, s.Peer, s.Stats.InternalEntries, s.Stats.ExternalEntries, s.Errors)
	p := h.Peer
	if p.Reachable {
		ready := "ready"
		if !p.Ready {
			ready = "NOT READY"
		}
		fmt.Fprintf(w, "  peer       %s at %s: reachable, %s, %s, policy generation %d\n", p.Name, p.Address, p.Role, ready, p.Generation)
	} else {
		fmt.Fprintf(w, "  peer       %s: UNREACHABLE (%s)\n", p.Address, p.Error)
	}
	switch {
	case h.PolicyInSync == nil:
		fmt.Fprintf(w, "  policy     generation %d here; the peer's is unknown\n", st.Generation)
	case *h.PolicyInSync:
		fmt.Fprintf(w, "  policy     the same on both gateways (sha256 %.12s…; generation %d here, %d on the peer)\n", p.PolicySHA256, st.Generation, p.Generation)
	default:
		fmt.Fprintf(w, "  policy     DIFFERS from the peer's: the peer runs %q generation %d (sha256 %.12s…), this gateway generation %d\n",
			p.PolicyName, p.Generation, p.PolicySHA256, st.Generation)
	}
	proc := func(name string, ps ha.ProcStatus) string {
		if !ps.Running {
			return fmt.Sprintf("%s NOT RUNNING (%s; %d restarts)", name, ps.LastExit, ps.Restarts)
		}
		return fmt.Sprintf("%s pid %d (%d restarts)", name, ps.Pid, ps.Restarts)
	}
	fmt.Fprintf(w, "  processes  %s, %s\n", proc("keepalived", h.Keepalived), proc("conntrackd", h.Conntrackd))
}

package ha

import (
	"bufio"
	"strconv"
	"strings"
	"time"
)

// Roles of a gateway (Status.Role).
const (
	RoleActive   = "active"   // holds the addresses of at least one group
	RoleBackup   = "backup"   // ready to take over, holds nothing
	RoleFault    = "fault"    // a link is down or the daemon is not ready: cannot take over
	RoleStarting = "starting" // keepalived has not reported yet
	RoleStopped  = "stopped"  // keepalived is not running
)

// Status is a gateway's HA state (the admin API's /v1/status "ha" and
// `clusterwall status`).
type Status struct {
	Name string `json:"name"`
	Mode string `json:"mode"`
	// Role: active, backup, fault, starting or stopped.
	Role           string        `json:"role"`
	RoleChanges    uint64        `json:"roleChanges"`
	LastRoleChange time.Time     `json:"lastRoleChange,omitzero"`
	Groups         []GroupStatus `json:"groups"`
	Keepalived     ProcStatus    `json:"keepalived"`
	Conntrackd     ProcStatus    `json:"conntrackd"`
	Sync           SyncStatus    `json:"sync"`
	Peer           PeerStatus    `json:"peer"`
	// PolicyInSync is false when the peer runs a different policy than
	// this gateway (null while the peer is unreachable).
	PolicyInSync *bool `json:"policyInSync"`
}

// GroupStatus is one VRRP group on this gateway.
type GroupStatus struct {
	Name string `json:"name"`
	// State: active, backup, fault, stopped or unknown (keepalived's
	// MASTER, BACKUP, FAULT, STOP).
	State     string   `json:"state"`
	Priority  int      `json:"priority"`
	Addresses []string `json:"addresses"`
	// Held are the group's addresses present on this gateway's interfaces.
	Held []string `json:"held"`
}

// ProcStatus is one supervised process.
type ProcStatus struct {
	Running  bool   `json:"running"`
	Pid      int    `json:"pid,omitempty"`
	Restarts uint64 `json:"restarts"`
	LastExit string `json:"lastExit,omitempty"`
}

// SyncStatus is conntrackd's state sync over the dedicated link.
type SyncStatus struct {
	Interface string `json:"interface"`
	Peer      string `json:"peer"`
	// State: "ok" (messages from the peer arrive), "down" (none for a
	// while, or conntrackd not running), "unknown" (not asked yet).
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
	// LastReceived is when the peer's last sync message arrived.
	LastReceived time.Time `json:"lastReceived,omitzero"`
	Stats        SyncStats `json:"stats"`
	// Errors counts send and receive errors, malformed and lost messages
	// and conntrackd restarts since the daemon started.
	Errors uint64 `json:"errors"`
	// Resyncs counts the full resynchronisations after a sync outage.
	Resyncs uint64 `json:"resyncs"`
}

// SyncStats are conntrackd's counters (`conntrackd -s`).
type SyncStats struct {
	InternalEntries uint64 `json:"internalEntries"` // flows this gateway tracks
	ExternalEntries uint64 `json:"externalEntries"` // flows replicated from the peer
	PacketsSent     uint64 `json:"packetsSent"`
	PacketsReceived uint64 `json:"packetsReceived"`
	SendErrors      uint64 `json:"sendErrors"`
	ReceiveErrors   uint64 `json:"receiveErrors"`
	Malformed       uint64 `json:"malformed"`
	Lost            uint64 `json:"lost"`
}

// PeerStatus is what this gateway knows of its peer (its daemon's peer
// API over the sync link).
type PeerStatus struct {
	Address   string    `json:"address"`
	Reachable bool      `json:"reachable"`
	LastSeen  time.Time `json:"lastSeen,omitzero"`
	Error     string    `json:"error,omitempty"`
	PeerInfo
}

// PeerInfo is what a daemon tells its peer.
type PeerInfo struct {
	Name string `json:"name,omitempty"`
	// Instance identifies the daemon process (new at every start): a
	// peer that restarted has lost what it was sent.
	Instance   string `json:"instance,omitempty"`
	Role       string `json:"role,omitempty"`
	Ready      bool   `json:"ready"`
	Generation uint64 `json:"generation"`
	// PolicySHA256 is the SHA-256 of the running policy's text.
	PolicySHA256 string `json:"policySHA256,omitempty"`
	PolicyName   string `json:"policyName,omitempty"`
}

// ParseStats reads the output of `conntrackd -s`.
func ParseStats(out string) (SyncStats, bool) {
	var st SyncStats
	found := false
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasSuffix(line, ":") && !strings.Contains(line, "\t"):
			section = strings.TrimSuffix(line, ":")
			if strings.HasPrefix(section, "UDP traffic") || strings.HasPrefix(section, "TCP traffic") || strings.HasPrefix(section, "Multicast traffic") {
				section = "traffic"
			}
			continue
		}
		nums := numbers(line)
		switch {
		case strings.HasPrefix(line, "current active connections:") && len(nums) == 1:
			switch section {
			case "cache internal":
				st.InternalEntries, found = nums[0], true
			case "cache external":
				st.ExternalEntries, found = nums[0], true
			}
		case section == "traffic" && strings.Contains(line, "Pckts sent") && len(nums) == 2:
			st.PacketsSent, st.PacketsReceived, found = nums[0], nums[1], true
		case section == "traffic" && strings.Contains(line, "Error send") && len(nums) == 2:
			st.SendErrors, st.ReceiveErrors = nums[0], nums[1]
		case strings.Contains(line, "Malformed msgs") && strings.Contains(line, "Lost msgs") && len(nums) == 2:
			st.Malformed, st.Lost = nums[0], nums[1]
		}
	}
	return st, found
}

func numbers(line string) []uint64 {
	var out []uint64
	for _, f := range strings.Fields(line) {
		if n, err := strconv.ParseUint(f, 10, 64); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// ParseFIFOLine reads one line keepalived writes to its notify FIFO:
// `INSTANCE "name" STATE PRIORITY` or `GROUP "name" STATE`.
func ParseFIFOLine(line string) (kind, name, state string, ok bool) {
	kind, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	if kind != "INSTANCE" && kind != "GROUP" {
		return "", "", "", false
	}
	q, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return "", "", "", false
	}
	name, _ = strconv.Unquote(q)
	f := strings.Fields(rest[len(q):])
	if name == "" || len(f) == 0 {
		return "", "", "", false
	}
	return kind, name, f[0], true
}

// stateName maps keepalived's state words to ours.
func stateName(k string) string {
	switch k {
	case "MASTER":
		return RoleActive
	case "BACKUP":
		return RoleBackup
	case "FAULT":
		return RoleFault
	case "STOP", "DELETED":
		return RoleStopped
	}
	return "unknown"
}

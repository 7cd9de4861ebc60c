package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestPrintHAStatus: clusterwall status shows the role, the groups, the
// sync, the peer and a policy that differs from the peer's.
func TestPrintHAStatus(t *testing.T) {
	body := `{"generation": 3, "ha": {"name": "fw", "mode": "active-standby", "role": "active", "roleChanges": 2,
	  "groups": [{"name": "gw", "state": "active", "priority": 200, "addresses": ["10.42.1.1/24"], "held": ["10.42.1.1"]}],
	  "keepalived": {"running": true, "pid": 10, "restarts": 0}, "conntrackd": {"running": false, "restarts": 1, "lastExit": "signal: killed"},
	  "sync": {"interface": "cw-sync", "peer": "10.42.255.2", "state": "down", "detail": "no sync message from the peer for 7s",
	           "stats": {"internalEntries": 4, "externalEntries": 1}, "errors": 3},
	  "peer": {"address": "10.42.255.2:9181", "reachable": true, "name": "fw2", "role": "backup", "ready": true, "generation": 5,
	           "policySHA256": "abcdef0123456789abcdef", "policyName": "other"},
	  "policyInSync": false}}`
	var out bytes.Buffer
	printHAStatus(&out, []byte(body))
	got := out.String()
	for _, want := range []string{
		"ha           ACTIVE (active-standby, gateway fw), 2 role changes",
		"group gw     active, priority 200, holds 10.42.1.1",
		"sync       down (no sync message from the peer for 7s) over cw-sync to 10.42.255.2: 4 flows of this gateway, 1 replicated from the peer; 3 errors",
		"peer       fw2 at 10.42.255.2:9181: reachable, backup, ready, policy generation 5",
		`policy     DIFFERS from the peer's: the peer runs "other" generation 5 (sha256 abcdef012345…), this gateway generation 3`,
		"conntrackd NOT RUNNING (signal: killed; 1 restarts)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	out.Reset()
	printHAStatus(&out, []byte(`{"generation": 1}`))
	if out.Len() != 0 {
		t.Errorf("without ha: %q", out.String())
	}
}

package e2e

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// TestCrashFailsClosed kills the daemon with SIGKILL: the kernel table
// stays, established connections continue, allowed new flows are still
// allowed and denied ones still denied. `dataplane flush` then removes the
// table (and the firewall only forwards: the denied flow passes), and a
// restarted daemon applies the policy again.
func TestCrashFailsClosed(t *testing.T) {
	t.Parallel()
	f := newFWLab(t, streamPolicyWith(0, false))
	keep := ap(nonazure4, 9101)
	f.echoServer(t, keep)
	conn := f.echoDial(t, lab.HostNode, keep)

	allowed := flowCase{name: "allowed", host: lab.HostNode, proto: "TCP", dst: ap(ghcr4, 80), want: passed, line: "ghcr.io"}
	allowed6 := flowCase{name: "allowed v6", host: lab.HostNode, proto: "TCP", dst: ap(ghcr6, 80), want: passed, line: "ghcr.io"}
	denied := flowCase{name: "denied", host: lab.HostNode, proto: "TCP", dst: ap(example4, 80), want: timedOut}
	denied6 := flowCase{name: "denied v6", host: lab.HostNode, proto: "TCP", dst: ap(example6, 80), want: timedOut}

	pid := f.Pid(lab.DaemonProc)
	if err := f.Signal(lab.DaemonProc, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.Pid(lab.DaemonProc) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("daemon (pid %d) still runs after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}

	out, err := f.cw(t, lab.HostFW, "dataplane", "show")
	if err != nil || !strings.Contains(out, "table inet clusterwall") || !strings.Contains(out, "net/egress/web") {
		t.Fatalf("after the crash, dataplane show: %v\n%s", err, out)
	}
	if err := conn.roundTrip(1024, 2*time.Second); err != nil {
		t.Errorf("established connection after the crash: %v", err)
	}
	for _, c := range []flowCase{allowed, allowed6, denied, denied6} {
		c.name += " after the crash"
		c.run(t, f)
	}

	// flush removes the table: the firewall now only forwards.
	if out, err := f.cw(t, lab.HostFW, "dataplane", "flush"); err != nil {
		t.Fatalf("dataplane flush: %v\n%s", err, out)
	}
	if out, err := f.cw(t, lab.HostFW, "dataplane", "show"); strings.Contains(out, "chain forward") {
		t.Errorf("dataplane show after flush (%v) still lists the table:\n%s", err, out)
	}
	open := denied
	open.name, open.want, open.line = "denied flow without the table", passed, "example.org"
	open.run(t, f)

	// A restart applies the policy again.
	f.restartDaemon(t)
	if st := f.waitStatus(t, "the restart's apply", 5*time.Second, func(s daemonStatus) bool { return s.LastReload != "" }); st.Generation != 1 || st.LastReload != "ok" {
		t.Errorf("restarted daemon: status %+v", st)
	}
	for _, c := range []flowCase{allowed, allowed6, denied, denied6} {
		c.name += " after the restart"
		c.run(t, f)
	}
	if err := conn.roundTrip(1024, 2*time.Second); err != nil {
		t.Errorf("established connection after the restart: %v", err)
	}
}

// TestStopKeepsRules: a clean stop (SIGTERM) leaves the rules in force
// too, and the decision log names the rule of a flow seen after a restart.
func TestStopKeepsRules(t *testing.T) {
	t.Parallel()
	f := newFWLab(t, streamPolicyWith(0, false))
	if err := f.Stop(lab.DaemonProc); err != nil {
		t.Fatal(err)
	}
	for _, c := range []flowCase{
		{name: "denied after stop", host: lab.HostNode, proto: "TCP", dst: ap(example4, 80), want: timedOut},
		{name: "allowed after stop", host: lab.HostNode, proto: "TCP", dst: ap(ghcr4, 80), want: passed, line: "ghcr.io"},
	} {
		c.run(t, f)
	}
	f.restartDaemon(t)
	c := flowCase{name: "logged after restart", host: lab.HostNode, proto: "TCP", dst: ap(netip.MustParseAddr("2001:db8:192::10"), 80),
		want: passed, line: "ghcr.io", rule: "net/egress/web", action: "Allow"}
	c.run(t, f)
	checkDecisions(t, f, []flowCase{c})
}

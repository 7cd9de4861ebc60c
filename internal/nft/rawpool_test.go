package nft

import (
	"net/netip"
	"testing"
)

// TestKernelSocketKept: applies reuse one netlink socket (closing one
// makes the kernel wait for the release of what the last transactions
// deleted: rawnl.go), and a socket that carried a rejected batch is not
// used again; the applies and counter reads after it get their own
// answers.
func TestKernelSocketKept(t *testing.T) {
	l := newLab(t)
	startServers(t, l)
	r := l.runner()
	good := applyKinds(t, l, r)
	first := idleSocket(r)
	if first == nil {
		t.Fatal("no socket kept after an apply")
	}
	other, err := compilePolicy(loadPolicy(t, "../../examples/aks-egress.yaml"), labConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(other); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(good); err != nil {
		t.Fatal(err)
	}
	if idleSocket(r) != first {
		t.Fatalf("the applies did not reuse the kept socket")
	}
	// A batch the kernel rejects (a DNAT in a filter chain): its socket
	// is closed, not kept.
	bad, err := compilePolicy(loadPolicy(t, "../../examples/aks-egress.yaml"), labConfig())
	if err != nil {
		t.Fatal(err)
	}
	fwd := bad.Chain("forward")
	fwd.Rules = append([]*Rule{{Stmts: []Stmt{DNAT{Addr: netip.MustParseAddr("10.42.1.10"), Port: 80}}}}, fwd.Rules...)
	if err := r.Apply(bad); err == nil {
		t.Fatal("the kernel accepted a DNAT in the forward filter chain")
	}
	if idleSocket(r) == first {
		t.Fatalf("the socket of a rejected batch was kept")
	}
	// What follows reads its own answers.
	if err := r.Apply(other); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(good); err != nil {
		t.Fatal(err)
	}
	if got, _ := dialTCP(t, l.node, ap("198.18.10.5:80"), blockWait); got != passed {
		t.Fatalf("allowed flow: %s", got)
	}
	if _, err := r.CountersAfterApply(); err != nil {
		t.Fatal(err)
	}
	r.CloseIdle()
	if idleSocket(r) != nil {
		t.Fatal("CloseIdle kept the socket")
	}
	if err := r.Apply(other); err != nil {
		t.Fatal(err)
	}
}

func idleSocket(r *NetlinkRunner) *rawConn {
	// The last apply's old ruleset is deleted in the background on the
	// pool's socket (retire.go): wait until it is back.
	r.Settle()
	r.pool.mu.Lock()
	defer r.pool.mu.Unlock()
	return r.pool.idle
}

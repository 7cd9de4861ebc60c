package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// TestSNATPoolExhaustion: one public IP with a deliberately narrow port
// range (8 ports) runs out — the 9th concurrent connection to one
// destination gets no source port and fails, and /v1/status shows 8 of 8
// ports used; with a second IP in the pool (64 ports) 40 connections to
// the same destination all pass: the narrow IP's 8 ports are used up and
// the pool carries the rest. A pool address the outside interface does not
// have stops the daemon at start with an error naming it.
func TestSNATPoolExhaustion(t *testing.T) {
	t.Parallel()
	f := newFWLab(t, haPolicy)
	dst := ap(nonazure4, 9101)
	f.echoServer(t, dst)
	second := addr("203.0.113.40")
	conf := filepath.Join(f.Dir(), lab.DaemonConfigFile)
	orig, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	pool := func(entries string) {
		t.Helper()
		c := regexp.MustCompile(`(?m)^publicIPs: \[`).ReplaceAllString(string(orig), `publicIPs: ["`+second.String()+`", `)
		c += "snat: pool\nsnatPool:\n" + entries
		if err := os.WriteFile(conf, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := f.Stop(lab.DaemonProc); err != nil {
			t.Fatal(err)
		}
	}
	const narrow = "  - {address: 203.0.113.32, ports: 40000-40007}\n"
	const wide = "  - {address: 203.0.113.40, ports: 41000-41063}\n"

	// 203.0.113.40 is not on cw-out yet: the daemon refuses to start.
	pool(narrow + wide)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = f.Start(ctx, f.DaemonProcFor(lab.HostFW))
	if err == nil || !strings.Contains(err.Error(), "snatPool[1].address: 203.0.113.40 is not an address of the outside interface cw-out") {
		t.Fatalf("daemon with a pool address not on the outside interface: %v", err)
	}
	if out, err := f.Exec(ctx, lab.HostFW, "ip", "addr", "add", second.String()+"/24", "dev", lab.FWOutside); err != nil {
		t.Fatalf("%v %s", err, out)
	}

	open := func(n int) (ok int, conns []net.Conn) {
		for i := 0; i < n; i++ {
			c, err := f.dial(lab.HostNode, lab.NodeV4, "tcp", dst, 700*time.Millisecond)
			if err != nil {
				continue
			}
			conns = append(conns, c)
			ok++
		}
		return ok, conns
	}
	closeAll := func(cs []net.Conn) {
		for _, c := range cs {
			c.Close()
		}
	}

	// One narrow address: it runs out.
	pool(narrow)
	f.restartDaemon(t)
	ok, conns := open(12)
	use := f.poolUse(t)
	closeAll(conns)
	t.Logf("one address with 8 ports: %d of 12 connections to %s; pool use %+v", ok, dst, use)
	if ok != 8 || use["203.0.113.32"].PortsUsed != 8 {
		t.Fatalf("one address with 8 ports: %d of 12 connections passed, %d ports used; want 8 and 8", ok, use["203.0.113.32"].PortsUsed)
	}
	waitNoFlows(t, f)

	// The pool: the narrow address is used up, the wide one carries the rest.
	pool(narrow + wide)
	f.restartDaemon(t)
	ok, conns = open(40)
	use = f.poolUse(t)
	closeAll(conns)
	t.Logf("pool of 8 + 64 ports: %d of 40 connections; pool use %+v", ok, use)
	if ok != 40 {
		t.Fatalf("pool: %d of 40 connections to one destination passed", ok)
	}
	if n, m := use["203.0.113.32"].PortsUsed, use["203.0.113.40"].PortsUsed; n != 8 || m != 32 {
		t.Errorf("pool use: %d ports of 203.0.113.32 (want all 8), %d of 203.0.113.40 (want 32)", n, m)
	}
	if v := f.metricValue(t, `clusterwall_snat_pool_ports{ip="203.0.113.40"}`); v != 64 {
		t.Errorf("clusterwall_snat_pool_ports of 203.0.113.40: %v, want 64", v)
	}
}

type poolUse struct {
	Address   string `json:"address"`
	Ports     uint32 `json:"ports"`
	Flows     int    `json:"flows"`
	PortsUsed int    `json:"portsUsed"`
}

func (f *fwLab) poolUse(t *testing.T) map[string]poolUse {
	t.Helper()
	code, body, err := f.Admin(context.Background(), http.MethodGet, "/v1/status")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/v1/status: %d %v", code, err)
	}
	var st struct {
		SNATPool []poolUse `json:"snatPool"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	out := map[string]poolUse{}
	for _, u := range st.SNATPool {
		out[u.Address] = u
	}
	return out
}

func (f *fwLab) metricValue(t *testing.T, series string) float64 {
	t.Helper()
	h := &haLab{fwLab: f}
	return h.metric(t, lab.HostFW, series)
}

// waitNoFlows waits until the closed connections' entries left the
// established state (they linger in TIME_WAIT/CLOSE, holding their ports
// for that destination): flush them, as the phases must not share ports.
func waitNoFlows(t *testing.T, f *fwLab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := f.Exec(ctx, lab.HostFW, "conntrack", "-F"); err != nil {
		t.Fatalf("conntrack -F: %v %s", err, out)
	}
}

package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/clusterwall/clusterwall/internal/daemon"
	"github.com/clusterwall/clusterwall/internal/lab"
)

// TestLabDaemonConfigLoads: the config the lab writes for the daemon
// (lab.DaemonConfig) passes the daemon's strict loader and means what the
// lab's topology needs. It needs no root.
func TestLabDaemonConfigLoads(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(pol, []byte("name: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := lab.DaemonConfig("cwx", lab.DaemonOptions{Policy: pol, SNAT: "off"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, lab.DaemonConfigFile)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := daemon.LoadConfig(path)
	if err != nil {
		t.Fatalf("daemon.LoadConfig rejects the lab's config: %v\n%s", err, data)
	}
	dc := c.DataplaneConfig()
	if c.Policy != pol || dc.Inside != lab.FWInside || dc.Outside != lab.FWOutside || c.Admin.Listen != lab.DaemonAdmin ||
		c.Log.File != filepath.Join(lab.StateDir("cwx"), lab.DecisionLogFile) || dc.SNAT.String() != "off" ||
		len(dc.PublicIPs) != 4 || dc.PublicIPs[0] != lab.FWPublicV4 || dc.PublicIPs[1] != lab.FWPublicV6 ||
		dc.PublicIPs[2] != lab.FWIngressV4 || dc.PublicIPs[3] != lab.FWIngressV6 ||
		len(dc.PrivateIPs) != 1 || dc.PrivateIPs[0] != lab.FWPrivateV4 {
		t.Errorf("config %+v / %+v from:\n%s", c, dc, data)
	}
}

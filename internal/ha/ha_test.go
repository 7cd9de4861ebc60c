package ha

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var pubs = []netip.Addr{netip.MustParseAddr("203.0.113.32"), netip.MustParseAddr("2001:db8:cafe::32"), netip.MustParseAddr("203.0.113.34")}

func env() Env {
	return Env{ConfigDir: "/etc/clusterwall", Inside: "cw-in", Outside: "cw-out", PublicIPs: pubs, HostName: "gw-a"}
}

func good() Config {
	return Config{
		Sync: SyncConfig{Interface: "cw-sync", Address: "10.42.255.1", Peer: "10.42.255.2"},
		Groups: []GroupConfig{{
			Name: "gw", VirtualRouterID: 51, Priority: 200,
			InsideAddresses: []string{"10.42.1.1/24", "2001:db8:42:1::1/64"},
			PublicIPs:       []string{"203.0.113.32/24", "2001:db8:cafe::32/64", "203.0.113.34/24"},
		}},
		RunDir: "ha",
	}
}

func TestValidateDefaults(t *testing.T) {
	c := good()
	s, probs := c.Validate(env())
	if len(probs) > 0 {
		t.Fatalf("problems: %v", probs)
	}
	if s.Name != "gw-a" || s.RunDir != "/etc/clusterwall/ha" || s.SyncPort != DefaultSyncPort || s.APIPort != DefaultAPIPort ||
		s.Advert != time.Second || s.PreemptDelay != DefaultPreemptDelay || s.Mode() != "active-standby" {
		t.Errorf("spec %+v", s)
	}
	if got := len(s.Addrs()); got != 5 {
		t.Errorf("Addrs: %d, want 5", got)
	}
}

func TestValidateErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(c *Config)
		field string
		msg   string
	}{
		{"no sync interface", func(c *Config) { c.Sync.Interface = "" }, "ha.sync.interface", "required"},
		{"sync is inside", func(c *Config) { c.Sync.Interface = "cw-in" }, "ha.sync.interface", "dedicated"},
		{"bad peer", func(c *Config) { c.Sync.Peer = "peer.example" }, "ha.sync.peer", "not an IP address"},
		{"peer is self", func(c *Config) { c.Sync.Peer = c.Sync.Address }, "ha.sync.peer", "own"},
		{"mixed families", func(c *Config) { c.Sync.Peer = "fd00::2" }, "ha.sync.peer", "different families"},
		{"same ports", func(c *Config) { c.Sync.APIPort = 3780 }, "ha.sync.apiPort", "sync port"},
		{"bad port", func(c *Config) { c.Sync.Port = 70000 }, "ha.sync.port", "not a port"},
		{"no groups", func(c *Config) { c.Groups = nil }, "ha.groups", "at least one"},
		{"vrid", func(c *Config) { c.Groups[0].VirtualRouterID = 0 }, "ha.groups[0].virtualRouterID", "1-255"},
		{"priority", func(c *Config) { c.Groups[0].Priority = 255 }, "ha.groups[0].priority", "1-254"},
		{"bad name", func(c *Config) { c.Groups[0].Name = "a b" }, "ha.groups[0].name", "not a group name"},
		{"bad address", func(c *Config) { c.Groups[0].InsideAddresses[0] = "10.42.1.300/24" }, "ha.groups[0].insideAddresses[0]", "not an address"},
		{"only v6 inside", func(c *Config) { c.Groups[0].InsideAddresses = []string{"2001:db8:42:1::1/64"} }, "ha.groups[0].insideAddresses", "IPv4"},
		{"not a public IP", func(c *Config) { c.Groups[0].PublicIPs = append(c.Groups[0].PublicIPs, "203.0.113.99/24") }, "ha.groups[0].publicIPs[3]", "not one of publicIPs"},
		{"public IP in no group", func(c *Config) { c.Groups[0].PublicIPs = c.Groups[0].PublicIPs[:2] }, "ha.groups", "203.0.113.34 is in no group"},
		{"address twice", func(c *Config) { c.Groups[0].InsideAddresses = append(c.Groups[0].InsideAddresses, "10.42.1.1/24") }, "ha.groups[0].insideAddresses[2]", "already"},
		{"duplicate vrid", func(c *Config) {
			c.Groups = append(c.Groups, GroupConfig{Name: "b", VirtualRouterID: 51, Priority: 100, InsideAddresses: []string{"10.42.1.4/24"}, PublicIPs: []string{"203.0.113.34/24"}})
			c.Groups[0].PublicIPs = c.Groups[0].PublicIPs[:2]
		}, "ha.groups[1].virtualRouterID", "also group gw's"},
		{"advert", func(c *Config) { c.VRRP.AdvertInterval = "1500ms" }, "ha.vrrp.advertInterval", "whole seconds"},
		{"advert cs", func(c *Config) { c.VRRP.AdvertInterval = "305ms" }, "ha.vrrp.advertInterval", "centiseconds"},
		{"advert word", func(c *Config) { c.VRRP.AdvertInterval = "fast" }, "ha.vrrp.advertInterval", "not a duration"},
		{"check", func(c *Config) { c.VRRP.CheckInterval = "500ms" }, "ha.vrrp.checkInterval", "less than"},
		{"fall", func(c *Config) { c.VRRP.CheckFall = 1000 }, "ha.vrrp.checkFall", "between 1 and 100"},
		{"runDir too long", func(c *Config) { c.RunDir = "/" + strings.Repeat("x", 100) }, "ha.runDir", "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			_, probs := c.Validate(env())
			for _, p := range probs {
				if p.Field == tc.field && strings.Contains(p.Msg, tc.msg) {
					return
				}
			}
			t.Errorf("want a problem at %s containing %q; got %+v", tc.field, tc.msg, probs)
		})
	}
}

func spec(t *testing.T, groups int) *Spec {
	t.Helper()
	c := good()
	c.VRRP.AdvertInterval = "300ms"
	c.RunDir = t.TempDir()
	if groups == 2 {
		c.Groups[0].PublicIPs = c.Groups[0].PublicIPs[:2]
		c.Groups = append(c.Groups, GroupConfig{Name: "gw2", VirtualRouterID: 52, Priority: 100,
			InsideAddresses: []string{"10.42.1.4/24"}, PublicIPs: []string{"203.0.113.34/24"}})
	}
	s, probs := c.Validate(env())
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	s.CheckCommand = []string{"/usr/local/bin/clusterwall", "ha", "check", "--url", "http://127.0.0.1:9180/readyz"}
	s.LocalAddrs = []netip.Addr{netip.MustParseAddr("10.42.2.4")}
	return s
}

func TestRender(t *testing.T) {
	s := spec(t, 1)
	k := string(s.KeepalivedConfig())
	for _, want := range []string{
		"vrrp_sync_group cw_gw {", "vrrp_instance cw_gw_in {", "vrrp_instance cw_gw_out {", "interface cw-in", "interface cw-out",
		"version 3", "advert_int 0.30", "preempt_delay 5", "10.42.1.1/24 dev cw-in", "virtual_ipaddress_excluded {",
		"2001:db8:42:1::1/64 dev cw-in preferred_lft 0", "203.0.113.32/24 dev cw-out", "notify_fifo " + s.Path(KeepalivedFIFO),
		"notify_master \"" + s.Path(NotifyScript) + " master gw\"", "enable_script_security", "script \"" + s.Path(CheckScript) + "\"",
	} {
		if !strings.Contains(k, want) {
			t.Errorf("keepalived.conf lacks %q:\n%s", want, k)
		}
	}
	c := string(s.ConntrackdConfig())
	for _, want := range []string{
		"Mode FTFW", "IPv4_address 10.42.255.1", "IPv4_Destination_Address 10.42.255.2", "Interface cw-sync", "Port 3780",
		"LockFile " + s.Path(ConntrackdLock), "Path " + s.Path(ConntrackdSocket), "LogFile " + s.Path(ConntrackdLog),
		"IPv4_address 10.42.1.1", "IPv6_address 2001:db8:cafe::32", "IPv4_address 10.42.2.4", "IPv4_address 127.0.0.1",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("conntrackd.conf lacks %q:\n%s", want, c)
		}
	}
	n := string(s.NotifyScript())
	if !strings.Contains(n, "-C "+s.Path(ConntrackdConf)) || !strings.Contains(n, "$C -c") || !strings.Contains(n, "$C -t") {
		t.Errorf("notify.sh:\n%s", n)
	}
	if aa := string(spec(t, 2).NotifyScript()); strings.Contains(aa, "$C -t") {
		t.Errorf("active/active notify.sh purges the kernel's timers:\n%s", aa)
	}
	if got := string(s.CheckScript()); !strings.Contains(got, "exec /usr/local/bin/clusterwall ha check --url http://127.0.0.1:9180/readyz\n") {
		t.Errorf("check.sh:\n%s", got)
	}
}

// TestKeepalivedAcceptsConfig has the real keepalived check the rendered
// configs (one and two groups), in a network namespace of its own that
// holds the interfaces they name.
func TestKeepalivedAcceptsConfig(t *testing.T) {
	kp, err := exec.LookPath("keepalived")
	if err != nil {
		t.Skip("keepalived not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace)")
	}
	for _, groups := range []int{1, 2} {
		s := spec(t, groups)
		for name, data := range s.Files() {
			if err := os.WriteFile(s.Path(name), data, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		script := "ip link add cw-in type veth peer name cw-out && ip link add cw-sync type veth peer name x && " +
			kp + " --config-test -f " + filepath.Join(s.RunDir, KeepalivedConf)
		out, err := exec.Command("unshare", "--net", "sh", "-c", script).CombinedOutput()
		if err != nil {
			t.Errorf("%d group(s): keepalived --config-test: %v\n%s\n%s", groups, err, out, s.KeepalivedConfig())
		}
	}
}

func TestParseStats(t *testing.T) {
	data, err := os.ReadFile("testdata/conntrackd-s.txt")
	if err != nil {
		t.Fatal(err)
	}
	st, ok := ParseStats(string(data))
	want := SyncStats{InternalEntries: 0, ExternalEntries: 3, PacketsSent: 19, PacketsReceived: 25}
	if !ok || st != want {
		t.Errorf("ParseStats = %+v, %v; want %+v", st, ok, want)
	}
	if _, ok := ParseStats("connect: no such file or directory"); ok {
		t.Errorf("ParseStats accepted garbage")
	}
}

func TestParseFIFOLine(t *testing.T) {
	for _, tc := range []struct{ line, kind, name, state string }{
		{`INSTANCE "cw_gw_in" MASTER 200`, "INSTANCE", "cw_gw_in", "MASTER"},
		{`GROUP "cw_gw" BACKUP`, "GROUP", "cw_gw", "BACKUP"},
		{`INSTANCE "a b" FAULT 0`, "INSTANCE", "a b", "FAULT"},
		{`INSTANCE "unterminated MASTER 1`, "", "", ""},
		{`garbage`, "", "", ""},
	} {
		k, n, s, ok := ParseFIFOLine(tc.line)
		if ok != (tc.kind != "") || k != tc.kind || n != tc.name || s != tc.state {
			t.Errorf("ParseFIFOLine(%q) = %q %q %q %v", tc.line, k, n, s, ok)
		}
	}
}

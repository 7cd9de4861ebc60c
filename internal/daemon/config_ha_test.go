package daemon

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestConfigHAAndSNATPool: the ha section and snatPool are validated with
// the rest of the config; every error names the file and the field.
func TestConfigHAAndSNATPool(t *testing.T) {
	const base = "policy: policy.yaml\ninterfaces: {inside: cw-in, outside: cw-out}\npublicIPs: [203.0.113.32, 203.0.113.40]\n"
	const ha = `ha:
  name: a
  sync: {interface: cw-sync, address: 10.42.255.1, peer: 10.42.255.2}
  groups:
    - name: gw
      virtualRouterID: 51
      priority: 200
      insideAddresses: [10.42.1.1/24]
      publicIPs: [203.0.113.32/24, 203.0.113.40/24]
`
	for _, tc := range []struct {
		name, conf string
		want       []string // substrings of the error; none: valid
	}{
		{"ha", base + ha, nil},
		{"ha defaults snat to fixed", base + ha, nil},
		{"ha with masquerade", base + "snat: masquerade\n" + ha, []string{"config.yaml: snat: masquerade cannot be used with ha"}},
		{"ha bad priority", base + strings.Replace(ha, "priority: 200", "priority: 0", 1), []string{"config.yaml: ha.groups[0].priority: 0 is not a VRRP priority"}},
		{"ha unknown field", base + ha + "  preempt: yes\n", []string{"config.yaml:", "unknown field \"preempt\""}},
		{"pool", base + "snat: pool\nsnatPool:\n  - {address: 203.0.113.32, ports: 40000-40007}\n  - {address: 203.0.113.40}\n", nil},
		{"pool without entries", base + "snat: pool\n", []string{"config.yaml: snatPool: snat: pool needs at least one snatPool entry"}},
		{"entries without pool", base + "snat: fixed\nsnatPool: [{address: 203.0.113.32}]\n", []string{"config.yaml: snatPool: snatPool is only used with snat: pool"}},
		{"pool address not public", base + "snat: pool\nsnatPool: [{address: 203.0.113.99}]\n", []string{"config.yaml: snatPool[0].address: 203.0.113.99 is not one of publicIPs"}},
		{"pool bad ports", base + "snat: pool\nsnatPool: [{address: 203.0.113.32, ports: 9-1}]\n", []string{"config.yaml: snatPool[0].ports: \"9-1\" is not a port range"}},
		{"pool twice", base + "snat: pool\nsnatPool: [{address: 203.0.113.32}, {address: 203.0.113.32}]\n", []string{"snatPool[1].address: 203.0.113.32 is in the pool twice"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "config.yaml")
			if err := os.WriteFile(p, []byte(tc.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(p)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if c.HA != nil && (c.HASpec() == nil || c.DataplaneConfig().HA == nil || c.DataplaneConfig().SNAT.String() != "fixed") {
					t.Errorf("ha config: spec %v, data plane %+v", c.HASpec(), c.DataplaneConfig())
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want %q", tc.want)
			}
			for _, w := range tc.want {
				// "config.yaml: FIELD: ..." stands for the error at the
				// field's position: config.yaml:LINE:COL: FIELD: ...
				re := regexp.QuoteMeta(w)
				if rest, ok := strings.CutPrefix(w, "config.yaml: "); ok {
					re = `config\.yaml(:\d+:\d+)?: ` + regexp.QuoteMeta(rest)
				}
				if !regexp.MustCompile(re).MatchString(err.Error()) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

package daemon

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/policy"
)

// fakeDataplane records applies; fail makes the next Apply fail.
type fakeDataplane struct {
	applied []*policy.Policy
	fail    error
	fqdn    map[string][]netip.Addr
}

func (f *fakeDataplane) Apply(p *policy.Policy, m *match.Matcher) (LogIndex, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	f.applied = append(f.applied, p)
	return newNFTIndex(m, 0, nil, nil), nil
}

func (f *fakeDataplane) AddFQDNAddrs(name string, addrs []netip.Addr, ttl time.Duration) error {
	if f.fqdn == nil {
		f.fqdn = map[string][]netip.Addr{}
	}
	f.fqdn[name] = append(f.fqdn[name], addrs...)
	return nil
}

const testPolicy = `name: t
ruleCollectionGroups:
  - name: g
    priority: 200
    ruleCollections:
      - name: c
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: web
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.10]
            destinationPorts: ['443']
`

func newTestDaemon(t *testing.T) (*Daemon, *fakeDataplane, string) {
	t.Helper()
	dir := t.TempDir()
	fd := &fakeDataplane{}
	d := loadTestDaemon(t, writeDaemonConfig(t, dir, ""), fd, nil, nil)
	return d, fd, filepath.Join(dir, "policy.yaml")
}

func TestReloadKeepsOldPolicyOnErrors(t *testing.T) {
	d, fd, pol := newTestDaemon(t)
	if err := d.Reload("start"); err != nil {
		t.Fatal(err)
	}
	if st := d.Status(); st.Generation != 1 || st.Rules != 1 || st.LastReload != "ok" {
		t.Fatalf("status after start: %+v", st)
	}
	// An invalid policy: rejected with FILE:LINE:COL, the running one stays.
	os.WriteFile(pol, []byte(strings.Replace(testPolicy, "['443']", "['70000']", 1)), 0o644)
	err := d.Reload("test")
	if err == nil || !strings.Contains(err.Error(), "policy.yaml:15:32: network rule \"web\": port 70000 out of range") {
		t.Fatalf("err = %v", err)
	}
	if st := d.Status(); st.Generation != 1 || !strings.Contains(st.LastReload, "70000") {
		t.Fatalf("status after bad reload: %+v", st)
	}
	if len(fd.applied) != 1 {
		t.Fatalf("the kernel was programmed %d times, want 1", len(fd.applied))
	}
	// A kernel failure: the running state stays too.
	os.WriteFile(pol, []byte(strings.Replace(testPolicy, "['443']", "['8443']", 1)), 0o644)
	fd.fail = errors.New("netlink: boom")
	if err := d.Reload("test"); err == nil || !strings.Contains(err.Error(), "previous ruleset stays") {
		t.Fatalf("err = %v", err)
	}
	_, m := d.Current()
	flow := match.Flow{Src: netip.MustParseAddr("10.42.1.10"), Dst: netip.MustParseAddr("192.0.2.10"), Proto: policy.ProtoTCP, Port: 443}
	if got := m.Decide(flow).Action; got != policy.ActionAllow {
		t.Fatalf("old policy not in force: %v", got)
	}
	// A good reload: generation 2, new decision.
	fd.fail = nil
	if err := d.Reload("test"); err != nil {
		t.Fatal(err)
	}
	_, m = d.Current()
	if d.Status().Generation != 2 || m.Decide(flow).Action != policy.ActionDeny {
		t.Fatalf("new policy not applied: gen %d", d.Status().Generation)
	}
}

func TestAdminAPI(t *testing.T) {
	d, _, pol := newTestDaemon(t)
	srv := httptest.NewServer(d.AdminHandler())
	defer srv.Close()
	if r, _ := http.Get(srv.URL + "/healthz"); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("healthz before apply = %d", r.StatusCode)
	}
	if r, _ := http.Post(srv.URL+"/v1/reload", "", nil); r.StatusCode != 200 {
		t.Errorf("reload = %d", r.StatusCode)
	}
	if r, _ := http.Get(srv.URL + "/healthz"); r.StatusCode != 200 {
		t.Errorf("healthz = %d", r.StatusCode)
	}
	os.WriteFile(pol, []byte("bogus: 1\n"), 0o644)
	r, _ := http.Post(srv.URL+"/v1/reload", "", nil)
	if r.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("bad reload = %d", r.StatusCode)
	}
	r, _ = http.Post(srv.URL+"/v1/validate", "application/yaml", strings.NewReader(testPolicy))
	if r.StatusCode != 200 {
		t.Errorf("validate good = %d", r.StatusCode)
	}
	r, _ = http.Post(srv.URL+"/v1/validate", "application/yaml", strings.NewReader("ruleCollectionGroups: 3\n"))
	if r.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("validate bad = %d", r.StatusCode)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ conf, want string }{
		// Semantic errors are placed by the policy's position index too.
		{"policy: p.yaml\ninterfaces: {inside: a, outside: b}\npublicIPs: [x]\n", "c.yaml:3:13: publicIPs[0]: \"x\" is not an IP address"},
		{"policy: p.yaml\ninterfaces: {inside: a}\npublicIPs: [1.2.3.4]\n", "interfaces.outside are required"},
		{"policy: p.yaml\ninterfaces: {inside: a, outside: b}\npublicIPs: [1.2.3.4]\nsnat: weird\n", "snat mode must be"},
		{"policy: p.yaml\ninterfacez: {}\n", "c.yaml:2:1: unknown field \"interfacez\""},
		{"policy: p.yaml\ninterfaces: {inside: a, outside: b}\npublicIPs: [1.2.3.4]\ndns: {upstreams: [nope]}\n", "c.yaml:4:19: dns.upstreams[0]"},
		{"policy: p.yaml\ninterfaces: {inside: a, outside: b}\npublicIPs: [1.2.3.4]\nproxy:\n  spoof: maybe\n", "c.yaml:5:10: proxy.spoof: spoof must be refuse or reroute"},
		{"policy: p.yaml\ninterfaces: {inside: a, outside: b}\npublicIPs: [1.2.3.4]\nproxy:\n  loops: -2\n", "c.yaml:5:10: proxy.loops: loops must be 0"},
	} {
		f := filepath.Join(dir, "c.yaml")
		os.WriteFile(f, []byte(tt.conf), 0o644)
		_, err := LoadConfig(f)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want %q", tt.conf, err, tt.want)
		}
	}
}

func TestLogIndex(t *testing.T) {
	p, err := policy.LoadFile("../../examples/aks-egress.yaml", policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := match.Compile(p, match.Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := newNFTIndex(m, 0, nil, nil)
	for prefix, want := range map[string]string{"cw:A:1": "apitcp", "cw:N:0": "inboundrule", "cw:D:default": ""} {
		ld, ok := x.Lookup(prefix)
		if !ok {
			t.Fatalf("%s not found", prefix)
		}
		got := ""
		if ld.Rule != nil {
			got = ld.Rule.Name
		}
		if got != want {
			t.Errorf("%s -> %q, want %q", prefix, got, want)
		}
	}
	if _, ok := x.Lookup("cw:A:99"); ok {
		t.Error("out of range index found")
	}
}

package daemon

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/policy"
)

// TestApplyIncrementalEqualsFull: the daemon's applies decode and validate
// only the groups whose text changed (policy.Loader), and the policy in
// force after each equals a full load of the same text; a bad edit is
// rejected with its file:line:column and the running policy stays.
func TestApplyIncrementalEqualsFull(t *testing.T) {
	d, fd, _ := newTestDaemon(t)
	a := policyYAML(1000, 1, false, 0) // 4 groups of 250 rules
	one := policyYAML(1000, 1, false, 1)
	if a == one {
		t.Fatal("the variant changes nothing")
	}
	bad := strings.Replace(one, "'7001'", "'70001'", 1)
	check := func(text string, minReused int) {
		t.Helper()
		if err := d.ApplyBytes("test", []byte(text)); err != nil {
			t.Fatal(err)
		}
		if d.loader.Reused < minReused {
			t.Fatalf("%d groups reused, want at least %d", d.loader.Reused, minReused)
		}
		want, err := policy.Load(d.cfg.Policy, []byte(text), d.cfg.PolicyOptions())
		if err != nil {
			t.Fatal(err)
		}
		p, _ := d.Current()
		if !reflect.DeepEqual(p, want) {
			t.Fatal("the policy in force differs from a full load of its text")
		}
		if fd.applied[len(fd.applied)-1] != p {
			t.Fatal("the dataplane was not given the policy in force")
		}
	}
	check(a, -1)
	check(one, 3)
	check(a, 3)
	err := d.ApplyBytes("test", []byte(bad))
	if err == nil || !regexp.MustCompile(regexp.QuoteMeta(d.cfg.Policy)+`:\d+:\d+: .*port 70001 out of range`).MatchString(err.Error()) {
		t.Fatalf("bad edit: %v", err)
	}
	if p, _ := d.Current(); countRules(p) != 1000 || d.Status().Generation != 3 {
		t.Fatalf("the running policy changed after a bad edit: generation %d", d.Status().Generation)
	}
	check(one, 3)
}

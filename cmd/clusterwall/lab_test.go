//go:build linux

package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// TestLabCLI drives `clusterwall lab` as a user would, with the real
// binary: up (twice), status, ca, exec (output and exit status), down
// (twice), and status on a lab that is gone.
func TestLabCLI(t *testing.T) {
	lab.RequireLab(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is missing (apt-get install -y curl)")
	}
	bin := lab.BuildBinary(t)
	name := lab.UniqueName()
	t.Cleanup(func() { lab.Remove(name) })
	run := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"lab", "--name", name}, args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return string(out), 0
		case errors.As(err, &ee):
			return string(out), ee.ExitCode()
		}
		t.Fatalf("%v: %v", args, err)
		return "", -1
	}
	expect := func(wantCode int, wantOut string, args ...string) string {
		t.Helper()
		out, code := run(args...)
		if code != wantCode || !strings.Contains(out, wantOut) {
			t.Errorf("lab %s: exit %d, output %q; want exit %d and %q", strings.Join(args, " "), code, out, wantCode, wantOut)
		}
		return out
	}

	expect(0, "lab "+name+" up", "up")
	expect(0, "lab "+name+" up", "up")
	if out := expect(0, "status: ok", "status"); !strings.Contains(out, "status: ok") {
		for _, f := range []string{"inet", "store", "api", "dnsfwd"} {
			data, _ := os.ReadFile(lab.StateDir(name) + "/" + f + ".log")
			t.Logf("%s.log:\n%s", f, data)
		}
		data, _ := os.ReadFile(lab.StateDir(name) + "/state.json")
		t.Logf("state.json:\n%s", data)
	}
	ca := strings.TrimSpace(expect(0, "/ca.pem", "ca"))
	if _, err := os.Stat(ca); err != nil {
		t.Errorf("lab ca: %v", err)
	}
	expect(0, "ghcr.io\n", "exec", "node", "--", "curl", "-sS", "--cacert", ca, "https://ghcr.io/")
	expect(0, "example.org\n", "exec", "client", "--", "curl", "-sS", "--interface", "198.51.100.8", "http://192.0.2.14/")
	expect(3, "", "exec", "node", "--", "sh", "-c", "exit 3")
	expect(1, "unknown lab host", "exec", "nosuch", "--", "true")
	expect(0, "down", "down")
	expect(0, "down", "down")
	expect(1, "is not up", "status")
	expect(1, "is not up", "exec", "node", "--", "true")
}

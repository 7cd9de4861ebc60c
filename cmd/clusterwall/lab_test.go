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

// TestLabCLIWAF: `lab up --policy P --waf` runs the ingress WAF in the
// daemon from the command line: HTTPS on 203.0.113.33:443 serves
// store-front with the lab CA's certificate, HTTP on :80 answers (404:
// no route of the file uses it); --waf without the daemon is refused.
func TestLabCLIWAF(t *testing.T) {
	lab.RequireLab(t)
	bin := lab.BuildBinary(t)
	name := lab.UniqueName()
	t.Cleanup(func() { lab.Remove(name) })
	pol := t.TempDir() + "/p.yaml"
	if err := os.WriteFile(pol, []byte("name: lab-cli-waf\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, int) {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"lab", "--name", name}, args...)...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := run("up", "--waf"); code != 2 || !strings.Contains(out, "they need --policy") {
		t.Fatalf("up --waf without --policy: exit %d %q", code, out)
	}
	if out, code := run("up", "--policy", pol, "--waf"); code != 0 {
		t.Fatalf("up --policy --waf: exit %d %s", code, out)
	}
	ca := lab.StateDir(name) + "/ca.pem"
	if out, code := run("exec", "client", "--", "curl", "-sS", "--max-time", "5", "--resolve", "store.example.com:443:203.0.113.33",
		"--cacert", ca, "https://store.example.com/"); code != 0 || out != "store-front\n" {
		t.Errorf("HTTPS through the WAF: exit %d %q", code, out)
	}
	if out, code := run("exec", "client", "--", "curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://203.0.113.33/"); code != 0 || out != "404" {
		t.Errorf("HTTP listener: exit %d %q, want 404", code, out)
	}
	if out, code := run("down"); code != 0 {
		t.Errorf("down: %d %s", code, out)
	}
}

// TestLabUpDaemonOptions: `lab up --policy FILE --token-file F
// --service-tags T` starts the daemon on a copy of FILE with the token file
// and service tags; an apply through the admin API changes the lab's copy,
// never FILE; the help names FILE, not "clusterwall run".
func TestLabUpDaemonOptions(t *testing.T) {
	help, err := exec.Command(lab.BuildBinary(t), "lab", "up", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(help), "--policy FILE") || strings.Contains(string(help), "--policy clusterwall run") {
		t.Errorf("lab up --help: %v\n%s", err, help)
	}
	lab.RequireLab(t)
	bin := lab.BuildBinary(t)
	name := lab.UniqueName()
	t.Cleanup(func() { lab.Remove(name) })
	dir := t.TempDir()
	example, err := os.ReadFile("../../examples/aks-egress.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The policy names its service tags relatively: the copy must keep
	// finding them next to the original.
	pol := dir + "/policy.yaml"
	tags, _ := os.ReadFile("../../examples/service-tags.json")
	os.WriteFile(dir+"/service-tags.json", tags, 0o644)
	os.WriteFile(pol, example, 0o644)
	tokens := dir + "/tokens"
	os.WriteFile(tokens, []byte("0123456789abcdef0123 tester\n"), 0o600)
	if out, err := exec.Command(bin, "lab", "--name", name, "up", "--policy", pol, "--token-file", tokens).CombinedOutput(); err != nil {
		data, _ := os.ReadFile(lab.StateDir(name) + "/" + lab.DaemonProc + ".log")
		t.Fatalf("lab up: %v\n%s\ndaemon.log:\n%s", err, out, data)
	}
	l, err := lab.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := l.Admin(t.Context(), "GET", "/v1/status"); code != 401 {
		t.Errorf("GET /v1/status without the token = %d, want 401 (the token file is not in use)", code)
	}
	changed := strings.Replace(string(example), "name: aks-egress-fw", "name: changed-by-apply", 1)
	os.WriteFile(dir+"/changed.yaml", []byte(changed), 0o644)
	out, err := l.Exec(t.Context(), lab.HostFW, bin, "apply", dir+"/changed.yaml", "--token-file", tokens)
	if err != nil || !strings.Contains(string(out), "generation 2") {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if data, _ := os.ReadFile(pol); string(data) != string(example) {
		t.Errorf("the apply changed the policy file given to lab up")
	}
	if data, _ := os.ReadFile(lab.StateDir(name) + "/" + lab.PolicyCopyFile); string(data) != changed {
		t.Errorf("the lab's copy is not the applied policy:\n%s", data)
	}
	// Without --policy the daemon options are refused.
	if out, err := exec.Command(bin, "lab", "--name", name, "up", "--token-file", tokens).CombinedOutput(); err == nil || !strings.Contains(string(out), "need --policy") {
		t.Errorf("lab up --token-file without --policy: %v\n%s", err, out)
	}
}

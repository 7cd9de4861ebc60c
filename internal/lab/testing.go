package lab

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ServeIfAsked turns a test binary into the lab's server program: call it
// first in TestMain. When the binary was started as `BIN lab serve ...`
// (by a lab whose Config.Exe is the test binary, the default), it serves
// and exits; otherwise it returns at once.
func ServeIfAsked() {
	if len(os.Args) >= 3 && os.Args[1] == "lab" && os.Args[2] == "serve" {
		os.Exit(ServeMain(os.Args[3:], os.Stderr))
	}
}

// RequireLab skips the test unless labs can be made here: root, and `ip
// netns` from iproute2.
func RequireLab(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("lab tests need root (network namespaces); skipping")
	}
	if err := exec.Command("ip", "netns", "list").Run(); err != nil {
		t.Skipf("lab tests need `ip netns` (iproute2): %v; skipping", err)
	}
}

// UniqueName returns a fresh lab name for a test: "cwt" and 4 random
// letters and digits.
func UniqueName() string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 4)
	rand.Read(b)
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return "cwt" + string(b)
}

// NewTestLab brings up a lab with a unique name (cfg.Name is replaced)
// and removes it when the test ends. It skips the test where labs cannot
// be made (RequireLab).
func NewTestLab(t testing.TB, cfg Config) *Lab {
	t.Helper()
	RequireLab(t)
	cfg.Name = UniqueName()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := Up(ctx, cfg)
	t.Cleanup(func() {
		if err := Remove(cfg.Name); err != nil {
			t.Errorf("lab down %s: %v", cfg.Name, err)
		}
	})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	return l
}

// BuildBinary builds cmd/clusterwall into a temporary directory of the
// test and returns its path (for Config.Exe when a test needs the real
// daemon, or to test the CLI).
func BuildBinary(t testing.TB) string {
	t.Helper()
	bin, err := BuildBinaryTo(t.TempDir())
	if err != nil {
		t.Fatalf("BuildBinary: %v", err)
	}
	return bin
}

// BuildBinaryTo builds cmd/clusterwall into dir (e.g. once in TestMain)
// with go build's extra flags (e.g. "-race") and returns its path.
func BuildBinaryTo(dir string, flags ...string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("cannot find the module root (go env GOMOD: %q, %v)", gomod, err)
	}
	bin := filepath.Join(dir, "clusterwall")
	args := append(append([]string{"build"}, flags...), "-o", bin, "./cmd/clusterwall")
	cmd := exec.Command(goBin, args...)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

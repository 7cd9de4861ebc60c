// Package sysctl reads and writes kernel parameters under /proc/sys. The
// net.* ones belong to the network namespace of the calling thread when
// the file is opened: call them inside the namespace (the lab's inNetns,
// netns.Set on a locked thread) to act on it.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Path is the file of a parameter given by its path elements, e.g.
// Path("net", "ipv4", "conf", "eth0.100", "rp_filter") — elements may hold
// dots (VLAN interface names), which the dotted form cannot say.
func Path(elems ...string) string {
	return filepath.Join(append([]string{"/proc/sys"}, elems...)...)
}

// Key is the file of a dotted parameter name, e.g. net.ipv4.ip_forward.
func Key(key string) string { return Path(strings.Split(key, ".")...) }

// Read returns a parameter's value without surrounding white space.
func Read(file string) (string, error) {
	b, err := os.ReadFile(file)
	return strings.TrimSpace(string(b)), err
}

// Write sets a parameter.
func Write(file, value string) error {
	if err := os.WriteFile(file, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(strings.TrimPrefix(file, "/proc/sys/"), "/", "."), value, err)
	}
	return nil
}

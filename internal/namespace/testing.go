//go:build linux

package namespace

import (
	"errors"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RequireRoot skips the test unless it runs as root (network namespaces).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel test: needs root (network namespaces)")
	}
}

// ForTest creates a namespace with a unique name that starts with prefix,
// its loopback up and IPv6 duplicate address detection off (addresses are
// usable at once), deleted when the test ends. It skips the test where
// namespaces cannot be made.
func ForTest(t testing.TB, prefix string) string {
	t.Helper()
	RequireRoot(t)
	name := UniqueName(prefix)
	h, err := Create(name)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("cannot create network namespaces here: %v", err)
		}
		t.Fatal(err)
	}
	h.Close()
	t.Cleanup(func() {
		if err := Delete(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	if err := Do(name, func() error {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		for _, k := range []string{"all", "default"} {
			if err == nil {
				err = WriteSysctl("net.ipv6.conf."+k+".accept_dad", "0")
			}
		}
		return err
	}); err != nil {
		t.Fatalf("namespace %s: %v", name, err)
	}
	return name
}

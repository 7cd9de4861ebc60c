package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/clusterwall/clusterwall/internal/sysctl"
)

// netnsDir is where named network namespaces live (as with `ip netns`).
const netnsDir = "/run/netns"

// etcNetnsDir holds per-namespace files that `ip netns exec` bind-mounts
// over /etc (resolv.conf).
const etcNetnsDir = "/etc/netns"

// inNetns runs fn on a fresh OS thread that has joined the namespace ns.
// The thread is never handed back to the Go scheduler: the goroutine exits
// while still locked, so the runtime discards the thread, and no other
// goroutine can ever run in the wrong namespace.
func inNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// inNamed is inNetns for a named namespace.
func inNamed(name string, fn func() error) error {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	defer ns.Close()
	return inNetns(ns, fn)
}

// ensureSharedRunDir makes /run/netns a shared mount, as `ip netns add`
// does, so that the namespace bind mounts made here propagate to (and are
// removed from) the mount namespaces `ip netns exec` creates.
func ensureSharedRunDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	// Not a mount point yet: bind it onto itself, then retry.
	if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", netnsDir, err)
	}
	if err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	return nil
}

// createNamed creates the named network namespace, returning a handle to it.
// The creating thread is discarded (see inNetns), so the caller's thread
// never leaves the root namespace.
func createNamed(name string) (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	rc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// netns.NewNamed unshares this thread into the new namespace.
		ns, err := netns.NewNamed(name)
		rc <- result{ns, err}
	}()
	r := <-rc
	if r.err != nil {
		return netns.None(), fmt.Errorf("create namespace %s: %w", name, r.err)
	}
	return r.ns, nil
}

// nsExists reports whether the named namespace exists.
func nsExists(name string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(netnsDir, name), &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// nsInode returns the inode of the named namespace (what /proc/PID/ns/net
// of a process in it links to), or 0.
func nsInode(name string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(netnsDir, name), &st); err != nil {
		return 0
	}
	return st.Ino
}

// deleteNamed removes the named namespace's bind mount and file; the
// kernel frees the namespace (and its interfaces) once nothing holds it.
func deleteNamed(name string) error {
	p := filepath.Join(netnsDir, name)
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// writeSysctl writes a sysctl of the current thread's network namespace
// (call it inside inNetns): key is dotted, e.g. net.ipv4.ip_forward.
func writeSysctl(key, value string) error { return sysctl.Write(sysctl.Key(key), value) }

// readSysctl reads a sysctl of the current thread's network namespace.
func readSysctl(key string) (string, error) { return sysctl.Read(sysctl.Key(key)) }

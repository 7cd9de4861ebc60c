//go:build linux

// Package namespace is the project's one set of network-namespace helpers:
// create and delete named namespaces (as `ip netns add|del` does, so that
// `ip netns exec` works on them), run code inside one, read and write its
// sysctls, and give a test a namespace of its own. The lab and the kernel
// tests of nft and the L7 proxy all use it.
//
// Code runs in a namespace on a fresh OS thread that is never handed back
// to the Go scheduler (its goroutine exits while still locked, so the
// runtime discards the thread): no other goroutine can ever run in the
// wrong namespace, and the caller's thread never leaves its own.
package namespace

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/clusterwall/clusterwall/internal/sysctl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir is where named network namespaces live (as with `ip netns`).
const Dir = "/run/netns"

// errGoexit: fn ended its goroutine (t.FailNow, runtime.Goexit).
var errGoexit = errors.New("namespace: the function called runtime.Goexit")

// DoHandle runs fn on a fresh OS thread that has joined the namespace h
// (see the package documentation). Sockets fn opens belong to h for their
// whole life. When fn calls runtime.Goexit — a test's t.Fatal inside fn —
// the calling goroutine exits too, as if it had called it itself.
func DoHandle(h netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		returned := false
		defer func() {
			if !returned {
				errc <- errGoexit
			}
		}()
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with this goroutine.
		if err := netns.Set(h); err != nil {
			returned = true
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		err := fn()
		returned = true
		errc <- err
	}()
	err := <-errc
	if err == errGoexit {
		runtime.Goexit()
	}
	return err
}

// Do is DoHandle for the named namespace.
func Do(name string, fn func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	defer h.Close()
	return DoHandle(h, fn)
}

// Create creates the named namespace and returns a handle to it (close it
// when done; the namespace lives on until Delete). Like `ip netns add`,
// it makes Dir a shared mount first, so that the namespace's bind mount
// propagates to (and is removed from) the mount namespaces `ip netns exec`
// creates.
func Create(name string) (netns.NsHandle, error) {
	if err := ensureSharedDir(); err != nil {
		return netns.None(), err
	}
	type result struct {
		h   netns.NsHandle
		err error
	}
	rc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// netns.NewNamed unshares this thread into the new namespace; the
		// thread is discarded with the goroutine.
		h, err := netns.NewNamed(name)
		rc <- result{h, err}
	}()
	r := <-rc
	if r.err != nil {
		return netns.None(), fmt.Errorf("create namespace %s: %w", name, r.err)
	}
	return r.h, nil
}

// ensureSharedDir makes Dir a shared mount, as `ip netns add` does.
func ensureSharedDir() error {
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", Dir, err)
	}
	// Not a mount point yet: bind it onto itself, then retry.
	if err := unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", Dir, err)
	}
	if err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", Dir, err)
	}
	return nil
}

// Exists reports whether the named namespace exists.
func Exists(name string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(Dir, name), &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// Inode returns the inode of the named namespace (what /proc/PID/ns/net of
// a process in it links to), or 0.
func Inode(name string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(Dir, name), &st); err != nil {
		return 0
	}
	return st.Ino
}

// Delete removes the named namespace's bind mount and file; the kernel
// frees the namespace (and its interfaces) once nothing holds it. A
// namespace that does not exist is not an error.
func Delete(name string) error {
	p := filepath.Join(Dir, name)
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

// WriteSysctl writes a sysctl of the current thread's network namespace
// (call it inside Do): key is dotted, e.g. net.ipv4.ip_forward.
func WriteSysctl(key, value string) error { return sysctl.Write(sysctl.Key(key), value) }

// ReadSysctl reads a sysctl of the current thread's network namespace.
func ReadSysctl(key string) (string, error) { return sysctl.Read(sysctl.Key(key)) }

// UniqueName returns prefix followed by 4 random letters and digits (tests
// running at the same time, and other helpers' labs, never collide).
func UniqueName(prefix string) string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 4)
	rand.Read(b)
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return prefix + string(b)
}

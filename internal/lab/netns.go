package lab

import (
	"github.com/vishvananda/netns"

	"github.com/clusterwall/clusterwall/internal/namespace"
)

// The lab's namespaces are made and entered with internal/namespace (the
// one set of namespace helpers, shared with the kernel tests); these are
// its names for them.

// etcNetnsDir holds per-namespace files that `ip netns exec` bind-mounts
// over /etc (resolv.conf).
const etcNetnsDir = "/etc/netns"

// inNetns runs fn on a fresh OS thread that has joined the namespace ns.
func inNetns(ns netns.NsHandle, fn func() error) error { return namespace.DoHandle(ns, fn) }

// inNamed is inNetns for a named namespace.
func inNamed(name string, fn func() error) error { return namespace.Do(name, fn) }

// createNamed creates the named network namespace, returning a handle to it.
func createNamed(name string) (netns.NsHandle, error) { return namespace.Create(name) }

// nsExists reports whether the named namespace exists.
func nsExists(name string) bool { return namespace.Exists(name) }

// nsInode returns the inode of the named namespace, or 0.
func nsInode(name string) uint64 { return namespace.Inode(name) }

// deleteNamed removes the named namespace.
func deleteNamed(name string) error { return namespace.Delete(name) }

// writeSysctl and readSysctl access the current thread's namespace's
// sysctls (call them inside inNetns).
func writeSysctl(key, value string) error   { return namespace.WriteSysctl(key, value) }
func readSysctl(key string) (string, error) { return namespace.ReadSysctl(key) }

//go:build linux

package namespace

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNamespace: a test namespace exists, code in Do runs inside it (its
// own network namespace inode, loopback up) while the caller stays in its
// own; a Goexit inside fn ends the caller's goroutine too; Delete removes it.
func TestNamespace(t *testing.T) {
	name := ForTest(t, "cwns")
	if !Exists(name) || Inode(name) == 0 {
		t.Fatalf("%s does not exist", name)
	}
	self := func() string {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		l, _ := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", tid()))
		return l
	}
	outside := self()
	var inside string
	if err := Do(name, func() error {
		inside = self()
		v, err := ReadSysctl("net.ipv6.conf.all.accept_dad")
		if err == nil && v != "0" {
			err = fmt.Errorf("accept_dad = %s", v)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == outside || inside != fmt.Sprintf("net:[%d]", Inode(name)) {
		t.Errorf("inside %s, outside %s, namespace inode %d", inside, outside, Inode(name))
	}
	if self() != outside {
		t.Errorf("the caller's thread moved to %s", self())
	}

	reached := make(chan bool, 1)
	go func() {
		defer func() { reached <- false }()
		Do(name, func() error { runtime.Goexit(); return nil })
		reached <- true
	}()
	if <-reached {
		t.Error("the caller went on after fn called runtime.Goexit")
	}

	other := UniqueName("cwns")
	h, err := Create(other)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if err := Delete(other); err != nil || Exists(other) {
		t.Errorf("Delete(%s): %v, exists %v", other, err, Exists(other))
	}
	if err := Delete(other); err != nil {
		t.Errorf("deleting a deleted namespace: %v", err)
	}
}

func tid() int { return unix.Gettid() }

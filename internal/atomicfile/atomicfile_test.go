package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteAndPending: Write replaces a file (following a link, keeping
// it), with the mode asked for; Prepare keeps the file as it is until
// Commit, keeps its mode, and Discard leaves no temporary file behind.
func TestWriteAndPending(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.yaml")
	if err := Write(p, []byte("one"), 0o640); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("content %q", b)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(p, link); err == nil {
		if err := Write(link, []byte("two"), 0o640); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
			t.Error("the link was replaced by a file")
		}
		if b, _ := os.ReadFile(p); string(b) != "two" {
			t.Errorf("target content %q", b)
		}
	}
	pend, err := Prepare(p, []byte("three"))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) == "three" {
		t.Fatal("Prepare changed the file")
	}
	if err := pend.Commit(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "three" {
		t.Fatalf("after Commit %q", b)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("Prepare did not keep the mode: %v", fi.Mode())
	}
	pend, err = Prepare(p, []byte("four"))
	if err != nil {
		t.Fatal(err)
	}
	pend.Discard()
	if b, _ := os.ReadFile(p); string(b) != "three" {
		t.Errorf("after Discard %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("files left: %v", ents)
	}
}

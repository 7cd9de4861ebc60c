// Package atomicfile replaces files so that a reader sees the old or the
// new contents, never a part, and a crash leaves one of them: the one way
// clusterwall writes policy files (az-style edits, import, export, the
// daemon's POST /v1/apply).
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data, with permissions mode. A symbolic link at
// path is followed: its target is replaced and the link kept.
func Write(path string, data []byte, mode fs.FileMode) error {
	p, err := prepare(path, data, mode, false)
	if err != nil {
		return err
	}
	return p.Commit()
}

// Pending is a new version of a file, written and synced next to it, not
// yet in place: Commit puts it in place, Discard drops it.
type Pending struct {
	tmp, target string
}

// Prepare writes data to a temporary file in path's directory (the same
// file system, so that Commit's rename is atomic), synced, with path's
// permissions and owner (mode 0644 for a new file). Nothing changes at path
// until Commit.
func Prepare(path string, data []byte) (*Pending, error) {
	return prepare(path, data, 0o644, true)
}

// PrepareMode is Prepare with permissions mode whatever path's are (a file
// that holds secrets: 0600).
func PrepareMode(path string, data []byte, mode fs.FileMode) (*Pending, error) {
	return prepare(path, data, mode, false)
}

func prepare(path string, data []byte, mode fs.FileMode, keepMode bool) (p *Pending, err error) {
	target := path
	if resolved, rerr := filepath.EvalSymlinks(path); rerr == nil {
		target = resolved
	} else if !errors.Is(rerr, fs.ErrNotExist) {
		return nil, rerr
	}
	old, statErr := os.Stat(target)
	if statErr == nil && keepMode {
		mode = old.Mode().Perm()
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return nil, err
	}
	if err = f.Sync(); err != nil {
		return nil, err
	}
	if err = f.Chmod(mode.Perm()); err != nil {
		return nil, err
	}
	if statErr == nil {
		keepOwner(f, old)
	}
	if err = f.Close(); err != nil {
		return nil, err
	}
	return &Pending{tmp: tmp, target: target}, nil
}

// Commit renames the new version over the file and syncs the directory.
func (p *Pending) Commit() error {
	if err := os.Rename(p.tmp, p.target); err != nil {
		os.Remove(p.tmp)
		return fmt.Errorf("replace %s: %w", p.target, err)
	}
	if dir, err := os.Open(filepath.Dir(p.target)); err == nil {
		dir.Sync() // not supported everywhere (Windows): best effort
		dir.Close()
	}
	return nil
}

// Discard removes the new version; the file stays as it was.
func (p *Pending) Discard() { os.Remove(p.tmp) }

// Package logquery reads clusterwall's decision log (JSON lines written by
// internal/telemetry, rotated by lumberjack): it lists the current file and
// its rotated backups (gzipped or not) in time order, filters records,
// follows the file across rotations, counts top talkers, and proposes the
// rules that would allow what was denied (Suggest). The CLI's `logs` and
// `suggest` commands are thin wrappers around it.
package logquery

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// DefaultFile is where the decision log is read when no path is given.
const DefaultFile = "/var/log/clusterwall/decisions.log"

// backupTimeFormat is lumberjack's timestamp in backup names
// (<name>-<time><ext>[.gz]), UTC.
const backupTimeFormat = "2006-01-02T15-04-05.000"

// File is one decision log file.
type File struct {
	Path string
	// Rotated is the rotation time of a backup (every line in it is older);
	// zero for the current file.
	Rotated time.Time
	Gzip    bool
}

// Files lists the backups of path (oldest first), then path itself if it
// exists. Files that are not lumberjack backups of path are ignored.
func Files(path string) ([]File, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	ext := filepath.Ext(base)
	prefix := strings.TrimSuffix(base, ext) + "-"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	var out []File
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasPrefix(name, prefix) {
			continue
		}
		rest := name[len(prefix):]
		gz := strings.HasSuffix(rest, ".gz")
		rest = strings.TrimSuffix(rest, ".gz")
		if !strings.HasSuffix(rest, ext) {
			continue
		}
		t, err := time.Parse(backupTimeFormat, strings.TrimSuffix(rest, ext))
		if err != nil {
			continue
		}
		out = append(out, File{Path: filepath.Join(dir, name), Rotated: t, Gzip: gz})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Rotated.Equal(out[j].Rotated) {
			return out[i].Rotated.Before(out[j].Rotated)
		}
		return !out[i].Gzip && out[j].Gzip
	})
	// While lumberjack compresses a backup, both the file and its partial
	// .gz exist: keep the plain one (readFile falls back to the .gz when
	// the plain file is gone by the time it is opened).
	dedup := out[:0]
	for _, f := range out {
		if n := len(dedup); n > 0 && dedup[n-1].Rotated.Equal(f.Rotated) {
			continue
		}
		dedup = append(dedup, f)
	}
	out = dedup
	if _, err := os.Stat(path); err == nil {
		out = append(out, File{Path: path})
	} else if len(out) == 0 {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	return out, nil
}

// Stats counts what a read saw.
type Stats struct {
	Files   int
	Lines   int
	Matched int
	// Bad counts lines that are not decision records (a torn last line, a
	// foreign file).
	Bad int
}

// Read calls fn with every record of path and its backups that f accepts,
// oldest file first. Backups rotated before f.Since are skipped unread.
// fn returning an error stops the read with that error.
func Read(path string, f *Filter, fn func(*telemetry.Record) error) (Stats, error) {
	var st Stats
	files, err := Files(path)
	if err != nil {
		return st, err
	}
	for _, file := range files {
		if f != nil && !f.Since.IsZero() && !file.Rotated.IsZero() && file.Rotated.Before(f.Since) {
			continue
		}
		st.Files++
		if err := readFile(file, f, &st, fn); err != nil {
			return st, err
		}
	}
	return st, nil
}

func readFile(file File, f *Filter, st *Stats, fn func(*telemetry.Record) error) error {
	fh, err := os.Open(file.Path)
	if err != nil && errors.Is(err, os.ErrNotExist) && !file.Gzip && !file.Rotated.IsZero() {
		// Compressed since it was listed.
		file.Path, file.Gzip = file.Path+".gz", true
		fh, err = os.Open(file.Path)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // removed by retention while we read
		}
		return err
	}
	defer fh.Close()
	var r io.Reader = fh
	if file.Gzip {
		zr, err := gzip.NewReader(fh)
		if err != nil {
			return fmt.Errorf("%s: %w", file.Path, err)
		}
		defer zr.Close()
		r = zr
	}
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A very long line: collect it whole.
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if len(line) > 0 {
			if e := handleLine(line, f, st, fn); e != nil {
				return e
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", file.Path, err)
		}
	}
}

func handleLine(line []byte, f *Filter, st *Stats, fn func(*telemetry.Record) error) error {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil
	}
	st.Lines++
	var rec telemetry.Record
	if err := json.Unmarshal(line, &rec); err != nil {
		st.Bad++
		return nil
	}
	if f != nil && !f.Match(&rec) {
		return nil
	}
	st.Matched++
	return fn(&rec)
}

// Follow calls fn with every record f accepts that is appended to path
// from now on, until ctx ends, like `tail -F`: when the file is rotated
// (renamed and created again) it finishes the old file and continues with
// the new one; when it is truncated it starts over.
func Follow(ctx context.Context, path string, f *Filter, poll time.Duration, fn func(*telemetry.Record) error) error {
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	var st Stats
	var fh *os.File
	var partial []byte
	var off int64
	var openedAt time.Time
	open := func(atEnd bool) {
		at := time.Now().UTC().Truncate(time.Millisecond)
		h, err := os.Open(path)
		if err != nil {
			return
		}
		fh, off, partial, openedAt = h, 0, nil, at
		if atEnd {
			off, _ = h.Seek(0, io.SeekEnd)
		}
	}
	// drain reads what was appended since the last call.
	drain := func() error {
		if fh == nil {
			return nil
		}
		buf := make([]byte, 64<<10)
		for {
			n, err := fh.Read(buf)
			if n > 0 {
				off += int64(n)
				data := append(partial, buf[:n]...)
				for {
					i := bytes.IndexByte(data, '\n')
					if i < 0 {
						break
					}
					if e := handleLine(data[:i+1], f, &st, fn); e != nil {
						return e
					}
					data = data[i+1:]
				}
				partial = append([]byte(nil), data...)
			}
			if err != nil {
				return nil // EOF (or a read error: retried at the next poll)
			}
		}
	}
	open(true)
	defer func() {
		if fh != nil {
			fh.Close()
		}
	}()
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		if err := drain(); err != nil {
			return err
		}
		// Rotated or truncated?
		if fh == nil {
			open(false)
		} else if cur, err := os.Stat(path); err == nil {
			old, err2 := fh.Stat()
			switch {
			case err2 == nil && !sameFile(old, cur):
				if err := drain(); err != nil { // the old file's last lines
					return err
				}
				oldFh, oldAt := fh, openedAt
				fh = nil
				open(false)
				// More than one rotation since the last poll: the files
				// rotated between ours and the one just opened are read
				// whole from their backups, before the new file.
				err := readRotatedBetween(path, oldFh, oldAt, fh, f, &st, fn)
				oldFh.Close()
				if err != nil {
					return err
				}
				continue
			case cur.Size() < off:
				fh.Seek(0, io.SeekStart)
				off, partial = 0, nil
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// readRotatedBetween reads the backups of path rotated after old (the
// file Follow just finished, opened at t) except cur (the file it reads
// next). old's backup is found by identity, or else is the oldest backup
// rotated at or after t.
func readRotatedBetween(path string, old *os.File, t time.Time, cur *os.File, f *Filter, st *Stats, fn func(*telemetry.Record) error) error {
	files, err := Files(path)
	if err != nil {
		return nil
	}
	is := func(file File, h *os.File) bool {
		if h == nil || file.Gzip {
			return false
		}
		a, err1 := os.Stat(file.Path)
		b, err2 := h.Stat()
		return err1 == nil && err2 == nil && os.SameFile(a, b)
	}
	var cands []File
	own := -1
	for _, file := range files {
		if file.Rotated.IsZero() || file.Rotated.Before(t) {
			continue
		}
		if is(file, old) {
			own = len(cands)
		}
		cands = append(cands, file)
	}
	if own < 0 {
		own = 0
	}
	for i, file := range cands {
		if is(file, cur) {
			break // cur was rotated too: it and what follows come later
		}
		if i <= own {
			continue
		}
		if err := readFile(file, f, st, fn); err != nil {
			return err
		}
	}
	return nil
}

func sameFile(a, b os.FileInfo) bool { return os.SameFile(a, b) }

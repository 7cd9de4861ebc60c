package telemetry

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"gopkg.in/natefinch/lumberjack.v2"
)

// Retention defaults of the decision log file (the daemon config's log
// section applies them when maxBackups / maxAgeDays are absent): at most
// DefaultMaxSizeMB × (DefaultMaxBackups + 1) MB on disk before compression,
// and nothing older than DefaultMaxAgeDays.
const (
	DefaultMaxSizeMB  = 100
	DefaultMaxBackups = 10
	DefaultMaxAgeDays = 14
)

// SinkConfig says where decision lines go. The daemon config's `log:`
// section fills it (docs/logs.md).
type SinkConfig struct {
	// File is the decision log file; "-" or "" means no file (standard
	// output only).
	File string
	// MaxSizeMB is the size at which the file is rotated (default 100).
	MaxSizeMB int
	// MaxBackups is how many rotated files are kept (0: all, subject to
	// MaxAgeDays). The daemon's default is DefaultMaxBackups.
	MaxBackups int
	// MaxAgeDays removes rotated files older than this many days (0: no
	// age limit). The daemon's default is DefaultMaxAgeDays.
	MaxAgeDays int
	// Compress gzips rotated files.
	Compress bool
	// Stdout also writes every line to standard output. It is implied when
	// File is "-" or "".
	Stdout bool
}

// OpenSink opens the writer a DecisionLog writes to: a size-rotated file
// (gopkg.in/natefinch/lumberjack.v2: rotation, retention by count and age,
// gzip of backups) and/or standard output. The file is opened (and its
// directory created) now, so that a bad path is reported at start. Close
// the returned Closer after the DecisionLog.
func OpenSink(c SinkConfig, stdout io.Writer) (io.Writer, io.Closer, error) {
	if c.File == "" || c.File == "-" {
		return stdout, nopCloser{}, nil
	}
	if c.MaxSizeMB < 0 || c.MaxBackups < 0 || c.MaxAgeDays < 0 {
		return nil, nil, errors.New("decision log: maxSizeMB, maxBackups and maxAgeDays must not be negative")
	}
	if c.MaxSizeMB == 0 {
		c.MaxSizeMB = DefaultMaxSizeMB
	}
	if err := os.MkdirAll(filepath.Dir(c.File), 0o750); err != nil {
		return nil, nil, fmt.Errorf("decision log: %w", err)
	}
	f, err := os.OpenFile(c.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("decision log: %w", err)
	}
	f.Close()
	lj := &lumberjack.Logger{
		Filename:   c.File,
		MaxSize:    c.MaxSizeMB,
		MaxBackups: c.MaxBackups,
		MaxAge:     c.MaxAgeDays,
		Compress:   c.Compress,
	}
	if !c.Stdout {
		return lj, lj, nil
	}
	return teeWriter{lj, stdout}, lj, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// Unbounded reports whether a file sink keeps rotated files forever (no
// count and no age limit): its disk use then grows with the traffic.
func (c SinkConfig) Unbounded() bool {
	return c.File != "" && c.File != "-" && c.MaxBackups == 0 && c.MaxAgeDays == 0
}

// teeWriter writes to every writer even when one fails (io.MultiWriter
// stops at the first error), and reports the first error.
type teeWriter []io.Writer

func (t teeWriter) Write(p []byte) (int, error) {
	var first error
	for _, w := range t {
		if _, err := w.Write(p); err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return 0, first
	}
	return len(p), nil
}

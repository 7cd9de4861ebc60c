//go:build !linux

package nflog

import (
	"errors"
	"syscall"
)

// recv: NFLOG is Linux's.
func (r *Reader) recv() (n, full int, err error) {
	return 0, 0, errors.New("nflog: needs Linux")
}

func forceReadBuffer(syscall.RawConn, int) {}

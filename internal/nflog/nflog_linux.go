//go:build linux

package nflog

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recv reads one datagram into r.buf and returns the bytes read and the
// datagram's length: a raw recvfrom(2) on the non-blocking socket (no
// scheduler bookkeeping for a call that does not block); the runtime's
// poller waits when nothing is there, honouring the read deadline. ENOBUFS
// (the kernel dropped messages for a full socket buffer) is counted as an
// overrun and reading goes on.
func (r *Reader) recv() (n, full int, err error) {
	var errno syscall.Errno
	err = r.rc.Read(func(fd uintptr) bool {
		for {
			m, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)), unix.MSG_TRUNC, 0, 0)
			switch e {
			case 0:
				full = int(m)
				return true
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			case unix.ENOBUFS:
				r.overruns.Add(1)
				continue
			}
			errno = e
			return true
		}
	})
	if err != nil {
		return 0, 0, err
	}
	if errno != 0 {
		return 0, 0, errno
	}
	return min(full, len(r.buf)), full, nil
}

// forceReadBuffer sets the socket's receive buffer to n bytes beyond
// net.core.rmem_max (SO_RCVBUFFORCE; root).
func forceReadBuffer(rc syscall.RawConn, n int) {
	_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) })
}

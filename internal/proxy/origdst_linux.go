package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h
// (x/sys/unix exports only the IPv4 name; both are 80).
const ip6tSOOriginalDst = 80

// ErrNotRedirected is returned for a connection that
// the kernel did not redirect (no NAT entry, not a TPROXY socket): a client
// that connected to the proxy's port directly.
var ErrNotRedirected = errors.New("connection was not redirected to the proxy (no original destination)")

// originalDst returns the destination a client connected to before
// the kernel steered the connection to the proxy.
//
//   - nft `redirect` / `dnat` to the proxy: the conntrack NAT entry, read
//     with getsockopt(SOL_IP, SO_ORIGINAL_DST) → sockaddr_in, or for IPv6
//     getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) → sockaddr_in6;
//   - nft `tproxy` to a listener with IP_TRANSPARENT: there is no NAT, and
//     the socket's local address is the original destination.
//
// A connection that was not translated and arrived on the listener's own
// port was not redirected: ErrNotRedirected. The proxy's port must
// therefore not be a port that application rules name.
//
// fd is the accepted socket (IPv4 or IPv6: v4); local returns its local
// address, asked only when needed.
func originalDst(fd int, v4 bool, local func() netip.AddrPort, listener netip.AddrPort) (netip.AddrPort, error) {
	var dst netip.AddrPort
	var err error
	if v4 {
		dst, err = origDst4(fd)
	} else {
		dst, err = origDst6(fd)
	}
	switch {
	case err == nil:
	case errors.Is(err, unix.ENOENT):
		// No conntrack entry: with TPROXY the local address is the
		// original destination.
		dst = local()
	default:
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", err)
	}
	// Untranslated and on the proxy's own port: the client connected to
	// the proxy directly (conntrack answers with the real destination
	// when nothing was translated; so does TPROXY, but then the port is
	// the original one).
	if !dst.IsValid() || (listener.IsValid() && dst.Port() == listener.Port() && dst == local()) {
		return netip.AddrPort{}, ErrNotRedirected
	}
	return dst, nil
}

func origDst4(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, err
	}
	if sa.Family != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("SO_ORIGINAL_DST returned family %d", sa.Family)
	}
	port := uint16(sa.Port>>8 | sa.Port<<8) // network byte order
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}

func origDst6(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet6
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, err
	}
	if sa.Family != unix.AF_INET6 {
		return netip.AddrPort{}, fmt.Errorf("IP6T_SO_ORIGINAL_DST returned family %d", sa.Family)
	}
	port := uint16(sa.Port>>8 | sa.Port<<8)
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port), nil
}

// getsockopt is a raw system call: it never blocks, and skipping the
// scheduler's syscall bookkeeping spares a wake-up of the runtime's
// sysmon thread (see copySmall).
func getsockopt(fd, level, opt int, val unsafe.Pointer, size *uint32) error {
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(val), uintptr(unsafe.Pointer(size)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// tcpIdle returns how long the TCP connection c has had no data in either
// direction, from TCP_INFO (tcpi_last_data_recv, tcpi_last_data_sent). It
// costs one getsockopt and nothing on the data path, so the splice loops
// need no deadlines. ok is false when c is not a kernel TCP socket.
func tcpIdle(c net.Conn) (idleMillis uint32, ok bool) {
	sc, isSC := c.(syscall.Conn)
	if !isSC {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return 0, false
	}
	return min(info.Last_data_recv, info.Last_data_sent), true
}

// addrPortOf converts a *net.TCPAddr to a netip.AddrPort with a plain
// (unmapped) address.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), true
	case interface{ AddrPort() netip.AddrPort }:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), true
	}
	if a == nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), true
}

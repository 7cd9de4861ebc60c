package lab

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Server roles of `clusterwall lab serve --role ROLE`, each started by the
// lab inside one host's namespace.
const (
	RoleInet   = "inet"   // every name's HTTP/HTTPS, NTP, tunnel ports, and the lab DNS
	RoleStore  = "store"  // store-front: HTTP on 80
	RoleAPI    = "api"    // API server stand-in: HTTPS on 443
	RoleDNSFwd = "dnsfwd" // plain DNS forwarder on the firewall's private IP
)

// PeerHeader is the response header in which lab HTTP servers report the
// source address and port they saw (to check SNAT and DNAT).
const PeerHeader = "X-Clusterwall-Peer"

// Bodies of the cluster-side servers.
const (
	StoreBody = "store-front\n"
	APIBody   = "api\n"
)

// ServeMain is `clusterwall lab serve`: it parses args (--role, --dir,
// --ready-fd), binds every listener of the role, reports readiness on the
// ready fd, and serves until SIGTERM or SIGINT. It returns the exit code.
// Test binaries call it from TestMain to act as the lab's server program.
func ServeMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("lab serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	role := fs.String("role", "", "server role: inet, store, api or dnsfwd")
	dir := fs.String("dir", "", "the lab's state directory (certificates)")
	readyFD := fs.Int("ready-fd", -1, "file descriptor to write \"ok\" to once every listener is bound")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("role", *role)
	var ready io.WriteCloser
	if *readyFD >= 0 {
		ready = os.NewFile(uintptr(*readyFD), "ready")
	}
	fail := func(err error) int {
		log.Error("lab serve failed", "err", err)
		if ready != nil {
			fmt.Fprintf(ready, "error: %v\n", err)
			ready.Close()
		}
		return 1
	}
	s, err := newServers(*role, *dir, log)
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	done := s.serve(ctx)
	log.Info("lab serve ready", "listeners", len(s.closers))
	if ready != nil {
		io.WriteString(ready, "ok\n")
		ready.Close()
	}
	<-done
	log.Info("lab serve stopped")
	return 0
}

// servers is a set of bound listeners and the loops that serve them.
type servers struct {
	log     *slog.Logger
	run     []func()
	closers []io.Closer
}

func newServers(role, dir string, log *slog.Logger) (*servers, error) {
	s := &servers{log: log}
	var err error
	switch role {
	case RoleInet:
		err = s.inet(dir)
	case RoleStore:
		err = s.httpBoth(StoreV4, StoreV6, 80, "store-front", nil)
	case RoleAPI:
		var cert tls.Certificate
		if cert, err = loadLeaf(dir, APIServerName); err == nil {
			err = s.httpBoth(APIV4, APIV6, 443, "api", &cert)
		}
	case RoleDNSFwd:
		err = s.dnsForwarder()
	default:
		err = fmt.Errorf("unknown role %q (want inet, store, api or dnsfwd)", role)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *servers) close() {
	for _, c := range s.closers {
		c.Close()
	}
}

// serve starts every loop; the returned channel closes when ctx is done and
// every listener is closed.
func (s *servers) serve(ctx context.Context) <-chan struct{} {
	var wg sync.WaitGroup
	for _, r := range s.run {
		wg.Add(1)
		go func() { defer wg.Done(); r() }()
	}
	done := make(chan struct{})
	go func() {
		<-ctx.Done()
		s.close()
		wg.Wait()
		close(done)
	}()
	return done
}

func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

func (s *servers) inet(dir string) error {
	for _, n := range Names {
		cert, err := loadLeaf(dir, n.Name)
		if err != nil {
			return err
		}
		if err := s.httpBoth(n.V4, n.V6, 80, n.Name, nil); err != nil {
			return err
		}
		if err := s.httpBoth(n.V4, n.V6, 443, n.Name, &cert); err != nil {
			return err
		}
		for _, a := range []netip.Addr{n.V4, n.V6} {
			if n.NTP {
				if err := s.udp(a, 123, ntpReply); err != nil {
					return err
				}
			}
			if n.Tunnel {
				body := n.Name + "\n"
				if err := s.tcpHello(a, 9000, body); err != nil {
					return err
				}
				if err := s.udp(a, 1194, func(req []byte, _ time.Time) []byte { return req }); err != nil {
					return err
				}
			}
		}
	}
	auth := &authority{zones: Zones()}
	for _, a := range []netip.Addr{DNSV4, DNSV6} {
		if err := s.dns(a, auth); err != nil {
			return err
		}
	}
	return nil
}

// httpBoth serves HTTP (or HTTPS when cert is set) on a v4 and a v6 address.
func (s *servers) httpBoth(v4, v6 netip.Addr, port int, name string, cert *tls.Certificate) error {
	for _, a := range []netip.Addr{v4, v6} {
		if err := s.http(a, port, name, cert); err != nil {
			return err
		}
	}
	return nil
}

// nameHandler answers every method and path with 200 and body name+"\n".
func nameHandler(name string) http.Handler {
	body := name + "\n"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Header().Set(PeerHeader, r.RemoteAddr)
		w.Header().Set(ForwardedForHeader, r.Header.Get("X-Forwarded-For"))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			io.WriteString(w, body)
		}
	})
}

func (s *servers) http(a netip.Addr, port int, name string, cert *tls.Certificate) error {
	ln, err := net.Listen("tcp", hostPort(a, port))
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           nameHandler(name),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if cert != nil {
		// The certificate of the address's own name, whatever SNI says:
		// a client that sent another name fails verification, as it would
		// on the internet.
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
	}
	s.closers = append(s.closers, srv)
	s.run = append(s.run, func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server", "addr", hostPort(a, port), "err", err)
		}
	})
	return nil
}

// tcpHello accepts connections, writes body and closes.
func (s *servers) tcpHello(a netip.Addr, port int, body string) error {
	ln, err := net.Listen("tcp", hostPort(a, port))
	if err != nil {
		return err
	}
	s.closers = append(s.closers, ln)
	s.run = append(s.run, func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, body)
			c.Close()
		}
	})
	return nil
}

// udp answers every datagram with reply(datagram) (nil: no answer).
func (s *servers) udp(a netip.Addr, port int, reply func(req []byte, received time.Time) []byte) error {
	pc, err := net.ListenPacket("udp", hostPort(a, port))
	if err != nil {
		return err
	}
	s.closers = append(s.closers, pc)
	s.run = append(s.run, func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := reply(buf[:n], time.Now()); out != nil {
				pc.WriteTo(out, from)
			}
		}
	})
	return nil
}

// ntpEpochOffset is the number of seconds from 1900-01-01 to 1970-01-01.
const ntpEpochOffset = 2208988800

func ntpTime(t time.Time) uint64 {
	secs := uint64(t.Unix() + ntpEpochOffset)
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return secs<<32 | frac
}

// ntpReply answers an NTP client request (mode 3) as a stratum 1 server
// (RFC 5905 packet format); anything else gets no answer.
func ntpReply(req []byte, received time.Time) []byte {
	if len(req) < 48 || req[0]&0x7 != 3 {
		return nil
	}
	version := req[0] >> 3 & 0x7
	out := make([]byte, 48)
	out[0] = version<<3 | 4 // LI 0 (no warning), server mode
	out[1] = 1              // stratum 1
	out[2] = req[2]         // poll
	out[3] = 0xec           // precision 2^-20 s
	// root delay and root dispersion: 0
	copy(out[12:16], "LAB\x00")
	binary.BigEndian.PutUint64(out[16:24], ntpTime(received.Add(-time.Second))) // reference
	copy(out[24:32], req[40:48])                                                // origin = client's transmit
	binary.BigEndian.PutUint64(out[32:40], ntpTime(received))                   // receive
	binary.BigEndian.PutUint64(out[40:48], ntpTime(time.Now()))                 // transmit
	return out
}

// dns serves handler on UDP and TCP port 53 of a.
func (s *servers) dns(a netip.Addr, h dns.Handler) error {
	pc, err := net.ListenPacket("udp", hostPort(a, 53))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", hostPort(a, 53))
	if err != nil {
		pc.Close()
		return err
	}
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	// Closing the sockets ends ActivateAndServe.
	s.closers = append(s.closers, pc, ln)
	for _, srv := range []*dns.Server{udp, tcp} {
		s.run = append(s.run, func() {
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Debug("dns server stopped", "addr", hostPort(a, 53), "err", err)
			}
		})
	}
	return nil
}

func (s *servers) dnsForwarder() error {
	fwd := &forwarder{upstream: hostPort(DNSV4, 53)}
	for _, a := range []netip.Addr{FWPrivateV4, FWPrivateV6} {
		if err := s.dns(a, fwd); err != nil {
			return err
		}
	}
	return nil
}

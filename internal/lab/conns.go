package lab

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Long-lived connections through the firewall, for failover and reload
// checks (the HA tests and `lab demo`'s HA section).

// EchoServer serves TCP echo on addr in host until Close.
func (l *Lab) EchoServer(host string, addr netip.AddrPort) (io.Closer, error) {
	var ln net.Listener
	if err := l.Do(host, func() error {
		var err error
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		return nil, fmt.Errorf("echo server on %s in %s: %w", addr, host, err)
	}
	s := &echoServer{ln: ln}
	go s.serve()
	return s, nil
}

type echoServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (s *echoServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		go func() { io.Copy(c, c); c.Close() }()
	}
}

func (s *echoServer) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	return err
}

// Stream keeps an echo connection busy: a 64-byte round trip every 20 ms,
// noting when each succeeded, until the first error or Close.
type Stream struct {
	conn  net.Conn
	once  sync.Once
	done  chan struct{}
	ended chan struct{}
	mu    sync.Mutex
	ok    []time.Time
	err   error
}

// OpenStream connects from host to an echo server at dst and starts the
// round trips.
func (l *Lab) OpenStream(host string, dst netip.AddrPort) (*Stream, error) {
	c, err := l.dialFrom(host, dst, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect %s from %s: %w", dst, host, err)
	}
	s := &Stream{conn: c, done: make(chan struct{}), ended: make(chan struct{})}
	if err := s.roundTrip(); err != nil {
		c.Close()
		return nil, fmt.Errorf("echo %s: %w", dst, err)
	}
	go s.run()
	return s, nil
}

func (s *Stream) roundTrip() error {
	msg := bytes.Repeat([]byte{byte(time.Now().UnixNano())}, 64)
	s.conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := s.conn.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s.conn, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo mismatch")
	}
	return nil
}

func (s *Stream) run() {
	defer close(s.ended)
	for {
		select {
		case <-s.done:
			return
		case <-time.After(20 * time.Millisecond):
		}
		err := s.roundTrip()
		s.mu.Lock()
		if err != nil {
			s.err = err
			s.mu.Unlock()
			return
		}
		s.ok = append(s.ok, time.Now())
		s.mu.Unlock()
	}
}

// FirstAfter waits until a round trip succeeds after t0 and returns when;
// false when none did by deadline (or the stream failed).
func (s *Stream) FirstAfter(t0, deadline time.Time) (time.Time, bool) {
	for {
		s.mu.Lock()
		for _, at := range s.ok {
			if at.After(t0) {
				s.mu.Unlock()
				return at, true
			}
		}
		failed := s.err != nil
		s.mu.Unlock()
		if failed || time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Err is the error that ended the stream (nil while it runs).
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops the round trips and closes the connection.
func (s *Stream) Close() error {
	s.once.Do(func() { close(s.done); s.conn.Close(); <-s.ended })
	return nil
}

// KeepAlive is one HTTP/1.1 connection (HTTPS when opened with a server
// name) reused for every request.
type KeepAlive struct {
	c    net.Conn
	br   *bufio.Reader
	host string
}

// OpenKeepAlive connects from host to dst, over TLS with serverName (and
// the lab CA) when it is not empty, and sends a first request.
func (l *Lab) OpenKeepAlive(host string, dst netip.AddrPort, serverName string) (*KeepAlive, error) {
	c, err := l.dialFrom(host, dst, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect %s from %s: %w", dst, host, err)
	}
	k := &KeepAlive{c: c, host: dst.Addr().String()}
	if serverName != "" {
		pool, err := l.CAPool()
		if err != nil {
			c.Close()
			return nil, err
		}
		k.c = tls.Client(c, &tls.Config{ServerName: serverName, RootCAs: pool})
		k.host = serverName
	}
	k.br = bufio.NewReader(k.c)
	if err := k.Get(); err != nil {
		k.c.Close()
		return nil, fmt.Errorf("first request to %s: %w", dst, err)
	}
	return k, nil
}

// Get sends one request on the connection and reads the whole response.
func (k *KeepAlive) Get() error {
	k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(k.c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", k.host); err != nil {
		return err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || resp.Close {
		return fmt.Errorf("%s (close %v)", resp.Status, resp.Close)
	}
	return nil
}

// ClosedCleanly reports nil when the next request fails with a reset or
// end of stream within timeout — a clean close — and an error when it
// still works or the client hangs.
func (k *KeepAlive) ClosedCleanly(timeout time.Duration) error {
	k.c.SetDeadline(time.Now().Add(timeout))
	_, err := fmt.Fprintf(k.c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", k.host)
	if err == nil {
		_, err = http.ReadResponse(k.br, nil)
	}
	var ne net.Error
	switch {
	case err == nil:
		return errors.New("the connection still answers")
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("the client hangs (no reset within %s): %v", timeout, err)
	}
	return nil
}

// Close closes the connection.
func (k *KeepAlive) Close() error { return k.c.Close() }

// dialFrom opens a TCP connection from host to dst.
func (l *Lab) dialFrom(host string, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := l.Do(host, func() error {
		var err error
		c, err = net.DialTimeout("tcp", dst.String(), timeout)
		return err
	})
	return c, err
}

// TCPLine connects from host to dst and returns the first line the server
// writes (the lab's TCP 9000 servers write their name), or "" when the
// connection does not get through within timeout.
func (l *Lab) TCPLine(host string, dst netip.AddrPort, timeout time.Duration) string {
	c, err := l.dialFrom(host, dst, timeout)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

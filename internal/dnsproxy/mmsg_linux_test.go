package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestUDPBatcher moves datagrams from several real clients through the raw
// recvmmsg/sendmmsg code on loopback sockets (IPv4, IPv6 and an IPv6
// wildcard socket reached over IPv4): every datagram arrives whole with its
// sender's address, an oversized one is flagged, a batch smaller than the
// queue takes several reads, every reply reaches the right client, and a
// closed socket ends the reads with net.ErrClosed.
func TestUDPBatcher(t *testing.T) {
	for _, tc := range []struct {
		name, listen, client string
		retries              int
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1", 0},
		{"ipv4-retries", "127.0.0.1:0", "127.0.0.1", 3},
		{"ipv6", "[::1]:0", "::1", 0},
		{"v4-mapped", "[::]:0", "127.0.0.1", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc, err := net.ListenPacket("udp", tc.listen)
			if err != nil {
				t.Skipf("listen %s: %v", tc.listen, err)
			}
			srv := pc.(*net.UDPConn)
			defer srv.Close()
			const batch, bufSize = 4, 512
			b, err := newUDPBatcher(srv, batch, bufSize)
			if err != nil {
				t.Fatal(err)
			}
			b.retries = tc.retries
			port := srv.LocalAddr().(*net.UDPAddr).AddrPort().Port()
			to := netip.AddrPortFrom(netip.MustParseAddr(tc.client), port)

			const clients, each = 3, 2
			var cls []*net.UDPConn
			want := map[string]netip.AddrPort{} // payload -> sender
			for c := range clients {
				cc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(tc.client), 0)))
				if err != nil {
					t.Skipf("client socket: %v", err)
				}
				defer cc.Close()
				cls = append(cls, cc)
				for i := range each {
					msg := fmt.Sprintf("client %d query %d", c, i)
					if _, err := cc.WriteToUDPAddrPort([]byte(msg), to); err != nil {
						t.Fatal(err)
					}
					want[msg] = cc.LocalAddr().(*net.UDPAddr).AddrPort()
				}
			}
			// A datagram larger than the buffer: read, but flagged.
			if _, err := cls[0].WriteToUDPAddrPort(make([]byte, bufSize+100), to); err != nil {
				t.Fatal(err)
			}

			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, truncated, reads := 0, 0, 0
			for got+truncated < clients*each+1 {
				n, err := b.readBatch()
				if err != nil {
					t.Fatalf("readBatch after %d datagrams: %v", got+truncated, err)
				}
				reads++
				if n < 1 || n > batch {
					t.Fatalf("readBatch returned %d", n)
				}
				k := 0
				for i := range n {
					wire, src, ok := b.message(i)
					if !ok {
						truncated++
						continue
					}
					from, known := want[string(wire)]
					if !known {
						t.Fatalf("unexpected datagram %q", wire)
					}
					if src != from {
						t.Errorf("%q: source %v, want %v", wire, src, from)
					}
					delete(want, string(wire))
					got++
					b.setReply(k, i, []byte("re: "+string(wire)))
					k++
				}
				for sent := 0; sent < k; {
					w, err := b.writeBatch(sent, k)
					if err != nil {
						t.Fatalf("writeBatch: %v", err)
					}
					sent += w
				}
			}
			if truncated != 1 {
				t.Errorf("%d datagrams flagged as truncated, want 1", truncated)
			}
			if reads < 2 {
				t.Errorf("%d datagrams in %d reads of at most %d", got+truncated, reads, batch)
			}
			srvAddr := to
			for c, cc := range cls {
				cc.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 1024)
				for range each {
					n, from, err := cc.ReadFromUDPAddrPort(buf)
					if err != nil {
						t.Fatalf("client %d: %v", c, err)
					}
					if !strings.HasPrefix(string(buf[:n]), fmt.Sprintf("re: client %d query", c)) {
						t.Errorf("client %d got %q", c, buf[:n])
					}
					if from.Port() != srvAddr.Port() || from.Addr().Unmap() != srvAddr.Addr() {
						t.Errorf("client %d: reply from %v, want %v", c, from, srvAddr)
					}
				}
			}

			srv.SetReadDeadline(time.Time{})
			errc := make(chan error, 1)
			go func() { _, err := b.readBatch(); errc <- err }()
			time.Sleep(20 * time.Millisecond)
			srv.Close()
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("read on a closed socket: %v, want net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("read did not end when the socket closed")
			}
		})
	}
}

// TestUDPReadErrorsBackOff: a UDP socket whose reads keep failing (not
// closed: e.g. ENOMEM) is retried with a growing delay, not in a busy
// loop, and its reader still ends with the context.
func TestUDPReadErrorsBackOff(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := pc.(*net.UDPConn)
	defer c.Close()
	b, err := newUDPBatcher(c, udpBatch, maxUDPQuery)
	if err != nil {
		t.Fatal(err)
	}
	var reads atomic.Int64
	b.read = func(uintptr) bool {
		reads.Add(1)
		b.n, b.errno = 0, syscall.ENOMEM
		return true
	}
	px, err := New(Config{Upstreams: []string{"127.0.0.1:9"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	done := make(chan struct{})
	go func() { px.serveUDP(ctx, c, b, &wg); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the UDP reader did not end with its context")
	}
	// 5, 10, 20, 40, 80, 160 ms ...: about 7 reads in 400 ms.
	if n := reads.Load(); n < 2 || n > 20 {
		t.Errorf("%d failing reads in 400 ms, want a few (backoff)", n)
	}
}

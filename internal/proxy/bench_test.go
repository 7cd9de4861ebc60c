package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// tlsSink is a TLS server that completes handshakes and then drains the
// connection until the client closes it.
func tlsSink(b *testing.B) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	cfg := &tls.Config{Certificates: []tls.Certificate{getPKI(b).server}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				if tc.Handshake() == nil {
					io.Copy(io.Discard, tc)
				}
			}()
		}
	}()
	ap, _ := addrPortOf(ln.Addr())
	return ap
}

// handshakeVia dials addr and completes a TLS handshake for ok.test.
func handshakeVia(b *testing.B, addr string, cfg *tls.Config) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		b.Fatal(err)
	}
	tc.Close()
}

func benchProxy(b *testing.B, dst netip.AddrPort) string {
	p := New(Config{
		Matcher:           testPolicy(b, dst.Port(), dst.Port()),
		Resolver:          StaticResolver{"ok.test": {dst.Addr()}},
		OriginalDst:       fixedDst(dst),
		Log:               func(telemetry.Record) {},
		MaxConnsPerSource: -1,
		MaxConns:          -1,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go p.Serve(ln)
	b.Cleanup(func() { p.Close() })
	return ln.Addr().String()
}

// BenchmarkProxyTLSConnect is one TCP connection and TLS 1.3 handshake
// (ECDSA P-256) through the transparent proxy on loopback: accept, peek
// the ClientHello, decide, verify the destination, dial, replay, splice.
// BenchmarkDirectTLSConnect is the same without the proxy; the difference
// is the proxy's cost per connection.
func BenchmarkProxyTLSConnect(b *testing.B) {
	dst := tlsSink(b)
	addr := benchProxy(b, dst)
	cfg := &tls.Config{ServerName: "ok.test", RootCAs: getPKI(b).pool}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			handshakeVia(b, addr, cfg)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				handshakeVia(b, addr, cfg)
			}
		})
	})
}

func BenchmarkDirectTLSConnect(b *testing.B) {
	dst := tlsSink(b)
	cfg := &tls.Config{ServerName: "ok.test", RootCAs: getPKI(b).pool}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			handshakeVia(b, dst.String(), cfg)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				handshakeVia(b, dst.String(), cfg)
			}
		})
	})
}

// BenchmarkProxyDecisionPath is the proxy's own work per connection
// without TLS crypto: a recorded ClientHello is sent through the proxy to
// a server that only reads it, then the connection closes.
func BenchmarkProxyDecisionPath(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	dst, _ := addrPortOf(ln.Addr())
	addr := benchProxy(b, dst)
	hello := realHello(b, &tls.Config{ServerName: "ok.test"})
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.Write(hello)
		c.(*net.TCPConn).CloseWrite()
		if _, err := io.Copy(io.Discard, c); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkProxyBulk moves 64 MiB per operation through an established
// proxied connection (splice) and, for comparison, directly.
func BenchmarkProxyBulk(b *testing.B) {
	const chunk = 64 << 20
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				// Acknowledge every chunk with one byte.
				buf := make([]byte, 256<<10)
				total := 0
				for {
					n, err := c.Read(buf)
					total += n
					for total >= chunk {
						total -= chunk
						c.Write([]byte{1})
					}
					if err != nil {
						c.Close()
						return
					}
				}
			}()
		}
	}()
	dst, _ := addrPortOf(ln.Addr())
	proxied := benchProxy(b, dst)
	for _, tc := range []struct{ name, addr, head string }{
		{"direct", dst.String(), ""},
		{"proxy", proxied, "PUT / HTTP/1.1\r\nHost: ok.test\r\n\r\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := net.Dial("tcp", tc.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			head := len(tc.head)
			if head > 0 {
				// The proxy adds "Connection: close" to the head it sends.
				io.WriteString(c, tc.head)
				head += len("Connection: close\r\n")
			}
			// Fill the first chunk's head bytes so chunks stay aligned.
			pad := make([]byte, chunk-head)
			ack := make([]byte, 1)
			data := make([]byte, chunk)
			b.SetBytes(chunk)
			first := true
			for b.Loop() {
				if first {
					c.Write(pad)
					first = false
				} else {
					c.Write(data)
				}
				if _, err := io.ReadFull(c, ack); err != nil {
					b.Fatal(fmt.Errorf("ack: %w", err))
				}
			}
		})
	}
}

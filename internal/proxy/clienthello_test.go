package proxy

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// captureConn records what a TLS client writes and fails every read, so
// that a handshake stops right after the ClientHello.
type captureConn struct {
	net.Conn // nil: only Read, Write, Close and deadlines are called
	buf      bytes.Buffer
}

func (c *captureConn) Write(b []byte) (int, error)      { return c.buf.Write(b) }
func (c *captureConn) Read([]byte) (int, error)         { return 0, io.ErrUnexpectedEOF }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// realHello returns the ClientHello records crypto/tls's client sends for
// cfg.
func realHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c := &captureConn{}
	tls.Client(c, cfg).Handshake()
	if c.buf.Len() == 0 {
		t.Fatal("the TLS client wrote nothing")
	}
	return c.buf.Bytes()
}

// rerecord splits the ClientHello handshake message carried by records
// into records of at most size bytes.
func rerecord(t testing.TB, records []byte, size int) []byte {
	t.Helper()
	var msg []byte
	for b := records; len(b) > 0; {
		n := int(binary.BigEndian.Uint16(b[3:5]))
		msg = append(msg, b[5:5+n]...)
		b = b[5+n:]
	}
	var out []byte
	for len(msg) > 0 {
		k := min(size, len(msg))
		out = append(out, 22, 3, 1, byte(k>>8), byte(k))
		out = append(out, msg[:k]...)
		msg = msg[k:]
	}
	return out
}

// helloSpec builds ClientHellos by hand for the cases a real client never
// sends.
type helloSpec struct {
	recordVersion uint16
	exts          [][]byte // full extensions (type, length, data)
	noExts        bool
	hsType        byte
	bodyPad       int // extra bytes after the extensions (length mismatch)
}

func ext(typ uint16, data []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// sniExt builds a server_name extension with the given (type, name) entries.
func sniExt(entries ...any) []byte {
	var list []byte
	for i := 0; i < len(entries); i += 2 {
		list = append(list, byte(entries[i].(int)))
		name := entries[i+1].(string)
		list = binary.BigEndian.AppendUint16(list, uint16(len(name)))
		list = append(list, name...)
	}
	data := binary.BigEndian.AppendUint16(nil, uint16(len(list)))
	return ext(extServerName, append(data, list...))
}

func (s helloSpec) build() []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	body = append(body, 0, 2, 0x13, 0x01)    // one cipher suite
	body = append(body, 1, 0)                // null compression
	if !s.noExts {
		var exts []byte
		for _, e := range s.exts {
			exts = append(exts, e...)
		}
		body = binary.BigEndian.AppendUint16(body, uint16(len(exts)))
		body = append(body, exts...)
	}
	body = append(body, make([]byte, s.bodyPad)...)
	typ := s.hsType
	if typ == 0 {
		typ = handshakeClientHello
	}
	msg := append([]byte{typ, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	rv := s.recordVersion
	if rv == 0 {
		rv = 0x0301
	}
	rec := []byte{22, byte(rv >> 8), byte(rv), byte(len(msg) >> 8), byte(len(msg))}
	return append(rec, msg...)
}

func TestParseRealClientHellos(t *testing.T) {
	tests := []struct {
		name    string
		cfg     *tls.Config
		wantSNI string
	}{
		{"TLS 1.3 with SNI", &tls.Config{ServerName: "ghcr.io"}, "ghcr.io"},
		{"TLS 1.2 only", &tls.Config{ServerName: "example.com", MaxVersion: tls.VersionTLS12}, "example.com"},
		{"TLS 1.0-1.2", &tls.Config{ServerName: "a.b.example.com", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS12}, "a.b.example.com"},
		{"upper case is lowered", &tls.Config{ServerName: "GHCR.IO"}, "ghcr.io"},
		{"no SNI (IP address)", &tls.Config{ServerName: "10.1.2.3"}, ""},
		{"no SNI (no name)", &tls.Config{InsecureSkipVerify: true}, ""},
		{"long name", &tls.Config{ServerName: strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".example"}, strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".example"},
		{"ALPN and session tickets", &tls.Config{ServerName: "h2.example", NextProtos: []string{"h2", "http/1.1"}, ClientSessionCache: tls.NewLRUClientSessionCache(4)}, "h2.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := realHello(t, tt.cfg)
			h, err := ParseClientHello(raw, 0)
			if err != nil {
				t.Fatalf("ParseClientHello: %v", err)
			}
			if h.ServerName != tt.wantSNI || h.HasSNI != (tt.wantSNI != "") {
				t.Errorf("got SNI %q (has %v), want %q", h.ServerName, h.HasSNI, tt.wantSNI)
			}
			if h.Len != len(raw) {
				t.Errorf("Len = %d, want %d", h.Len, len(raw))
			}
			// Fragmented across records of several sizes, and read one
			// byte at a time: same answer.
			for _, size := range []int{1, 2, 3, 4, 7, 100, 512} {
				frag := rerecord(t, raw, size)
				h2, err := ParseClientHello(frag, 0)
				if err != nil {
					t.Fatalf("records of %d: %v", size, err)
				}
				buf := make([]byte, maxPeek(DefaultMaxClientHello))
				h3, n, err := ReadClientHello(iotest.OneByteReader(bytes.NewReader(append(frag, "early data"...))), buf, 0, 0)
				if err != nil {
					t.Fatalf("records of %d, one byte a read: %v", size, err)
				}
				if h2.ServerName != tt.wantSNI || h3.ServerName != tt.wantSNI {
					t.Errorf("records of %d: SNI %q / %q, want %q", size, h2.ServerName, h3.ServerName, tt.wantSNI)
				}
				if n != len(frag) || h3.Len != len(frag) {
					t.Errorf("records of %d: read %d bytes (Len %d), want exactly %d", size, n, h3.Len, len(frag))
				}
			}
		})
	}
}

// TestReadClientHelloAcrossTCPWrites sends a real ClientHello over
// loopback in small writes with pauses, split in records and not.
func TestReadClientHelloAcrossTCPWrites(t *testing.T) {
	raw := realHello(t, &tls.Config{ServerName: "split.example"})
	for _, tc := range []struct {
		name  string
		data  []byte
		chunk int
	}{
		{"one record, 7-byte writes", raw, 7},
		{"one record, header alone first", raw, 5},
		{"records of 50, 33-byte writes", rerecord(t, raw, 50), 33},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					return
				}
				defer c.Close()
				c.(*net.TCPConn).SetNoDelay(true)
				for b := tc.data; len(b) > 0; {
					k := min(tc.chunk, len(b))
					c.Write(b[:k])
					b = b[k:]
					time.Sleep(time.Millisecond)
				}
				time.Sleep(100 * time.Millisecond)
			}()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, maxPeek(DefaultMaxClientHello))
			h, n, err := ReadClientHello(c, buf, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if h.ServerName != "split.example" || n != len(tc.data) {
				t.Errorf("SNI %q, %d bytes; want split.example, %d", h.ServerName, n, len(tc.data))
			}
			if !bytes.Equal(buf[:n], tc.data) {
				t.Error("peeked bytes differ from what was sent")
			}
		})
	}
}

func TestClientHelloRejects(t *testing.T) {
	real := realHello(t, &tls.Config{ServerName: "x.example"})
	big := helloSpec{exts: [][]byte{sniExt(0, "big.example"), ext(0xff01, make([]byte, 20000))}}.build()
	tests := []struct {
		name string
		data []byte
		kind HelloErrorKind
		msg  string
	}{
		{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), HelloNotTLS, "not a TLS handshake record"},
		{"SSLv2 hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0x15, 0, 0, 0, 0x10}, HelloNotTLS, "SSLv2"},
		{"alert record", []byte{21, 3, 3, 0, 2, 2, 40}, HelloNotTLS, "first byte 0x15"},
		{"record version 2.0", []byte{22, 2, 0, 0, 4, 1, 0, 0, 0}, HelloMalformed, "record version"},
		{"empty record", []byte{22, 3, 1, 0, 0}, HelloMalformed, "empty handshake record"},
		{"record over 16 KiB", []byte{22, 3, 1, 0x40, 0x01}, HelloMalformed, "exceeds 16384"},
		{"ServerHello type", helloSpec{hsType: 2}.build(), HelloMalformed, "not ClientHello"},
		{"message over the limit", []byte{22, 3, 1, 0, 4, 1, 0x01, 0, 0}, HelloTooLarge, "exceeds the limit"},
		{"huge claimed message", []byte{22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}, HelloTooLarge, "exceeds the limit"},
		{"oversized real extension", big, HelloMalformed, "exceeds 16384"},
		{"truncated", real[:len(real)-10], HelloTruncated, "truncated"},
		{"app data after partial hello", append(rerecord(t, real, 10)[:15], 23, 3, 3, 0, 1, 0), HelloMalformed, "record type 23"},
		{"duplicate SNI extension", helloSpec{exts: [][]byte{sniExt(0, "a.example"), sniExt(0, "b.example")}}.build(), HelloMalformed, "duplicate server_name"},
		{"two host_names", helloSpec{exts: [][]byte{sniExt(0, "a.example", 0, "b.example")}}.build(), HelloMalformed, "more than one host_name"},
		{"trailing dot", helloSpec{exts: [][]byte{sniExt(0, "a.example.")}}.build(), HelloMalformed, "trailing dot"},
		{"empty label", helloSpec{exts: [][]byte{sniExt(0, "a..example")}}.build(), HelloMalformed, "empty label"},
		{"NUL in name", helloSpec{exts: [][]byte{sniExt(0, "a.example\x00.evil")}}.build(), HelloMalformed, "byte 0x00"},
		{"space in name", helloSpec{exts: [][]byte{sniExt(0, "a example")}}.build(), HelloMalformed, "byte 0x20"},
		{"IPv6 literal", helloSpec{exts: [][]byte{sniExt(0, "::1")}}.build(), HelloMalformed, "byte 0x3a"},
		{"label of 64", helloSpec{exts: [][]byte{sniExt(0, strings.Repeat("a", 64)+".example")}}.build(), HelloMalformed, "label longer"},
		{"empty host_name", helloSpec{exts: [][]byte{sniExt(0, "")}}.build(), HelloMalformed, "bad server_name entry"},
		{"empty SNI list", helloSpec{exts: [][]byte{ext(extServerName, []byte{0, 0})}}.build(), HelloMalformed, "bad server_name list"},
		{"SNI list longer than extension", helloSpec{exts: [][]byte{ext(extServerName, []byte{0, 9, 0, 0, 1, 'a'})}}.build(), HelloMalformed, "bad server_name list"},
		{"junk after SNI list", helloSpec{exts: [][]byte{ext(extServerName, []byte{0, 4, 0, 0, 1, 'a', 0xff})}}.build(), HelloMalformed, "bad server_name list"},
		{"extensions length mismatch", helloSpec{exts: [][]byte{sniExt(0, "a.example")}, bodyPad: 3}.build(), HelloMalformed, "extensions length"},
		{"truncated extension", helloSpec{exts: [][]byte{{0, 0, 0, 9, 1}}}.build(), HelloMalformed, "truncated extension"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseClientHello(tt.data, 0)
			if err == nil {
				t.Fatal("accepted")
			}
			if k := helloKind(err); k != tt.kind || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q (kind %d), want kind %d containing %q", err, k, tt.kind, tt.msg)
			}
			// The streaming reader agrees (with a buffer of the proxy's size).
			buf := make([]byte, maxPeek(DefaultMaxClientHello))
			_, _, err2 := ReadClientHello(iotest.OneByteReader(bytes.NewReader(tt.data)), buf, 0, 0)
			if k := helloKind(err2); k != tt.kind {
				t.Errorf("reader: error %v (kind %d), want kind %d", err2, k, tt.kind)
			}
		})
	}
}

func TestClientHelloAccepts(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		sni     string
		has     bool
		ech     bool
		comment string
	}{
		{"no extensions (TLS 1.0 style)", helloSpec{noExts: true}.build(), "", false, false, ""},
		{"empty extension block", helloSpec{}.build(), "", false, false, ""},
		{"unknown name type skipped", helloSpec{exts: [][]byte{sniExt(7, "whatever", 0, "real.example")}}.build(), "real.example", true, false, ""},
		{"only unknown name type", helloSpec{exts: [][]byte{sniExt(7, "whatever")}}.build(), "", false, false, ""},
		{"underscore and digits", helloSpec{exts: [][]byte{sniExt(0, "_srv.1a-b.example")}}.build(), "_srv.1a-b.example", true, false, ""},
		{"IPv4 literal passes to the proxy", helloSpec{exts: [][]byte{sniExt(0, "10.0.0.1")}}.build(), "10.0.0.1", true, false, ""},
		{"ECH outer name", helloSpec{exts: [][]byte{sniExt(0, "public.example"), ext(extECH, []byte{0, 1, 2})}}.build(), "public.example", true, true, ""},
		{"record version 3.3", helloSpec{recordVersion: 0x0303, exts: [][]byte{sniExt(0, "v.example")}}.build(), "v.example", true, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseClientHello(tt.data, 0)
			if err != nil {
				t.Fatal(err)
			}
			if h.ServerName != tt.sni || h.HasSNI != tt.has || h.ECH != tt.ech {
				t.Errorf("got %+v, want SNI %q has %v ECH %v", h, tt.sni, tt.has, tt.ech)
			}
		})
	}
}

// TestReadClientHelloBounded: a reader never reads past its buffer, and a
// stream of tiny records ends as "too large" once the buffer is full.
func TestReadClientHelloBounded(t *testing.T) {
	// An endless stream of 1-byte handshake records, never completing a
	// 16 KiB message.
	msgHead := []byte{22, 3, 1, 0, 4, 1, 0, 0x3f, 0xff}
	stream := io.MultiReader(bytes.NewReader(msgHead), &repeatReader{pat: []byte{22, 3, 1, 0, 1, 0xaa}})
	buf := make([]byte, 4096)
	_, n, err := ReadClientHello(stream, buf, 0, 0)
	if helloKind(err) != HelloTooLarge {
		t.Fatalf("err = %v, want too large", err)
	}
	if n > len(buf) {
		t.Fatalf("read %d bytes into a %d-byte buffer", n, len(buf))
	}
}

type repeatReader struct {
	pat []byte
	off int
}

func (r *repeatReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = r.pat[r.off%len(r.pat)]
		r.off++
	}
	return len(b), nil
}

// goServerName parses data with crypto/tls's server and returns the
// ClientHello's server name.
func goServerName(data []byte) (string, bool) {
	var name string
	got := false
	errStop := errors.New("stop")
	c := &replayConn{r: bytes.NewReader(data)}
	srv := tls.Server(c, &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		name, got = chi.ServerName, true
		return nil, errStop
	}})
	srv.Handshake()
	return name, got
}

type replayConn struct {
	captureConn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c *replayConn) Write(b []byte) (int, error) { return len(b), nil }

// TestAgreesWithCryptoTLS checks the corpus of real and crafted hellos
// against crypto/tls's parser (the fuzz target does the same on random
// input).
func TestAgreesWithCryptoTLS(t *testing.T) {
	for _, data := range seedHellos(t) {
		checkAgainstGo(t, data)
	}
}

func checkAgainstGo(t *testing.T, data []byte) {
	t.Helper()
	ours, err := ParseClientHello(data, 0)
	if err != nil {
		return
	}
	goName, ok := goServerName(data)
	if !ok {
		return // crypto/tls is stricter about other fields
	}
	if !strings.EqualFold(goName, ours.ServerName) {
		t.Errorf("crypto/tls reads SNI %q, we read %q (input %x)", goName, ours.ServerName, data)
	}
}

func seedHellos(t testing.TB) [][]byte {
	real := realHello(t, &tls.Config{ServerName: "seed.example"})
	return [][]byte{
		real,
		rerecord(t, real, 1),
		rerecord(t, real, 64),
		realHello(t, &tls.Config{ServerName: "tls12.example", MaxVersion: tls.VersionTLS12}),
		realHello(t, &tls.Config{InsecureSkipVerify: true}),
		helloSpec{noExts: true}.build(),
		helloSpec{exts: [][]byte{sniExt(7, "x", 0, "y.example")}}.build(),
		helloSpec{exts: [][]byte{sniExt(0, "a.example"), sniExt(0, "b.example")}}.build(),
		helloSpec{exts: [][]byte{sniExt(0, "a.example.")}}.build(),
		helloSpec{exts: [][]byte{sniExt(0, "10.0.0.1")}}.build(),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff},
	}
}

var writeSeeds = flag.Bool("write-fuzz-seeds", false, "rewrite testdata/fuzz seed corpora")

// TestWriteFuzzSeeds writes the seed corpora under testdata/fuzz (run with
// -write-fuzz-seeds); without the flag it checks that they exist.
func TestWriteFuzzSeeds(t *testing.T) {
	corpora := map[string][][]byte{
		"FuzzClientHello": seedHellos(t),
		"FuzzHTTPHead":    seedHeads(),
	}
	for target, seeds := range corpora {
		dir := filepath.Join("testdata", "fuzz", target)
		if !*writeSeeds {
			ents, err := os.ReadDir(dir)
			if err != nil || len(ents) < len(seeds) {
				t.Errorf("%s: %d seed files, want at least %d (run go test -run TestWriteFuzzSeeds -write-fuzz-seeds)", dir, len(ents), len(seeds))
			}
			continue
		}
		os.MkdirAll(dir, 0o755)
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// FuzzClientHello: the parser never panics, the streaming reader agrees
// with it byte for byte, and when both our parser and crypto/tls accept an
// input they read the same server name.
func FuzzClientHello(f *testing.F) {
	for _, s := range seedHellos(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseClientHello(data, 0)
		buf := make([]byte, maxPeek(DefaultMaxClientHello))
		h2, n, err2 := ReadClientHello(iotest.OneByteReader(bytes.NewReader(data)), buf, 0, 0)
		if n > len(buf) {
			t.Fatalf("read %d bytes into %d", n, len(buf))
		}
		if (err == nil) != (err2 == nil) || helloKind(err) != helloKind(err2) {
			// The only allowed difference: input longer than the reader's
			// buffer.
			if helloKind(err2) != HelloTooLarge || len(data) <= len(buf) {
				t.Fatalf("ParseClientHello: %v; ReadClientHello: %v", err, err2)
			}
		}
		if err == nil && err2 == nil && h != h2 {
			t.Fatalf("ParseClientHello %+v, ReadClientHello %+v", h, h2)
		}
		if err == nil {
			if h.HasSNI != (h.ServerName != "") || strings.ToLower(h.ServerName) != h.ServerName {
				t.Fatalf("bad result %+v", h)
			}
			if h.HasSNI && checkHostName([]byte(h.ServerName)) != nil {
				t.Fatalf("accepted bad name %q", h.ServerName)
			}
			checkAgainstGo(t, data)
		}
	})
}

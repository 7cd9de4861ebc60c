package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSpliceIsZeroCopy runs the proxy in a child process (this test binary
// again) and pushes 32 MiB each way through it. /proc/PID/io counts the
// bytes a process moved through read(2)/write(2) (rchar, wchar); splice(2)
// is not counted. If the proxy copied through user space, both would grow
// by at least 32 MiB; spliced, they grow by the peeked head only.
func TestSpliceIsZeroCopy(t *testing.T) {
	if os.Getenv("CW_PROXY_SPLICE_CHILD") != "" {
		t.Skip("child")
	}
	if _, err := os.Stat("/proc/self/io"); err != nil {
		t.Skip("no /proc/PID/io here")
	}
	const size = 32 << 20
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := srv.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sent := make(chan struct{})
		go func() { io.Copy(c, io.LimitReader(zeros{}, size)); c.(*net.TCPConn).CloseWrite(); close(sent) }()
		n, _ := io.Copy(io.Discard, c)
		<-sent
		got <- n
	}()

	cmd, proxyAddr, stop := startChildProxy(t, "TestSpliceChild", "CW_PROXY_SPLICE_CHILD="+srv.Addr().String())
	defer stop()
	before := procIO(t, cmd.Process.Pid)

	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	head := "PUT /bulk HTTP/1.1\r\nHost: ok.test\r\n\r\n"
	recv := make(chan int64, 1)
	go func() { n, _ := io.Copy(io.Discard, c); recv <- n }()
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(c, io.LimitReader(zeros{}, size)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if n := <-recv; n != size {
		t.Fatalf("client received %d bytes, want %d", n, size)
	}
	if n := <-got; n < size {
		t.Fatalf("server received %d bytes, want at least %d", n, size)
	}
	after := procIO(t, cmd.Process.Pid)
	dr, dw := after["rchar"]-before["rchar"], after["wchar"]-before["wchar"]
	t.Logf("proxy moved 2 x %d MiB; its read/write syscalls moved rchar +%d B, wchar +%d B (syscr +%d, syscw +%d)",
		size>>20, dr, dw, after["syscr"]-before["syscr"], after["syscw"]-before["syscw"])
	if dr > 1<<20 || dw > 1<<20 {
		t.Errorf("the proxy copied through user space: rchar +%d, wchar +%d for 2 x %d bytes", dr, dw, size)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func procIO(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Skipf("read /proc/%d/io: %v", pid, err)
	}
	m := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if ok {
			m[k], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return m
}

// TestSpliceChild is the child of TestSpliceIsZeroCopy: a proxy whose
// original destination is the parent's server. It serves until stdin
// closes.
func TestSpliceChild(t *testing.T) {
	target := os.Getenv("CW_PROXY_SPLICE_CHILD")
	if target == "" {
		t.Skip("only run by TestSpliceIsZeroCopy")
	}
	dst := netip.MustParseAddrPort(target)
	p := New(Config{
		Matcher:       testPolicy(t, 1, dst.Port()),
		Resolver:      StaticResolver{"ok.test": {dst.Addr()}},
		OriginalDst:   fixedDst(dst),
		HTTPKeepAlive: true,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	fmt.Printf("LISTEN %s\n", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	p.Close()
}

// TestFullDestinationPausesSource: while a relayed connection's
// destination takes nothing (the client stops reading), the segments that
// keep arriving from the source must not wake the event loop for a write
// that fails again (pauseSrc turns the source's EPOLLIN off until the
// destination drains). The client reads 8 MiB at full speed (so the
// kernel grows the sockets' buffers), stops for half a second while the
// server keeps sending, then reads the rest: every byte must arrive in
// order, and the loop's pumps that found the destination full and moved
// nothing (stats.futile) stay few — without the pause, every segment that
// arrives during the stall costs one.
func TestFullDestinationPausesSource(t *testing.T) {
	const size = 96 << 20
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		c, err := srv.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for { // the request head
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		buf := make([]byte, 256<<10)
		for sent := 0; sent < size; {
			n := min(len(buf), size-sent)
			for i := range buf[:n] {
				buf[i] = byte((sent + i) % 251)
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
			sent += n
		}
	}()
	dst, _ := addrPortOf(srv.Addr())
	p := New(Config{
		Matcher:       testPolicy(t, 1, dst.Port()),
		Resolver:      StaticResolver{"ok.test": {dst.Addr()}},
		OriginalDst:   fixedDst(dst),
		HTTPKeepAlive: true,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	defer p.Close()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(c, "GET /bulk HTTP/1.1\r\nHost: ok.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	got, buf := 0, make([]byte, 256<<10)
	read := func(limit int) {
		for got < limit {
			n, err := c.Read(buf[:min(len(buf), limit-got)])
			for i, b := range buf[:n] {
				if want := byte((got + i) % 251); b != want {
					t.Fatalf("byte %d is %d, want %d", got+i, b, want)
				}
			}
			got += n
			if err != nil {
				t.Fatalf("after %d of %d bytes: %v", got, size, err)
			}
		}
	}
	read(8 << 20)
	before := p.stats.futile.Load()
	time.Sleep(500 * time.Millisecond) // the server keeps sending
	stalled := p.stats.futile.Load() - before
	read(size)
	total := p.stats.futile.Load()
	t.Logf("futile pumps: %d during the stall, %d in all", stalled, total)
	if stalled > 4 {
		t.Errorf("%d futile pumps while the destination was full (want the source paused: ≤ 4)", stalled)
	}
}

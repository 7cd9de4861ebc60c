//go:build linux

package nflog

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNS is a fresh, unnamed network namespace (nothing to collide with
// other tests' or labs' names) with loopback up, an nftables rule that
// logs UDP to port 9 to NFLOG group 7 with prefix "cw:test", a UDP socket
// connected to 127.0.0.1:9 in it and a sink there.
type testNS struct {
	ns   netns.NsHandle
	conn *net.UDPConn // connected to 127.0.0.1:9
}

const testGroup = 7

func newTestNS(t testing.TB) *testNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // and enters it
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	t.Cleanup(func() { ns.Close() })
	lo, err := vnl.LinkByName("lo")
	if err == nil {
		err = vnl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatal(err)
	}
	// A sink on port 9, so that no ICMP error comes back (its buffer
	// overflows: the packets are logged on the way out, that is enough).
	sink, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:9")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:9")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tb := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "t"})
	ch := c.AddChain(&nftables.Chain{Name: "out", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(9)},
		&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: testGroup, Data: []byte("cw:test")},
	}})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	return &testNS{ns: ns, conn: conn}
}

func (n *testNS) send(t testing.TB, count int) {
	t.Helper()
	for i := 0; i < count; i++ {
		if _, err := n.conn.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReaderBatches: packets the kernel logs arrive complete and parsed,
// in batches of many packets per datagram (BatchBytes, BatchPackets), with
// no overrun. With the kernel's defaults (a page per batch, 100 packets)
// the 6,000 packets would take at least 60 datagrams.
func TestReaderBatches(t *testing.T) {
	n := newTestNS(t)
	r, err := Open(testGroup, int(n.ns))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const count = 6000
	n.send(t, count)
	got, datagrams := 0, 0
	local := n.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	deadline := time.Now().Add(10 * time.Second)
	for got < count {
		r.SetDeadline(deadline)
		pkts, bad, err := r.Receive()
		if err != nil {
			t.Fatalf("after %d packets in %d datagrams (%d overruns): %v", got, datagrams, r.Overruns(), err)
		}
		datagrams++
		if bad != 0 {
			t.Errorf("%d messages could not be parsed", bad)
		}
		for _, p := range pkts {
			want := Packet{Prefix: "cw:test", Family: unix.AF_INET, Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1"),
				Proto: 17, SrcPort: local.Port(), DstPort: 9, OutIf: p.OutIf, Time: p.Time}
			if p != want {
				t.Fatalf("packet %d: got %+v, want %+v", got, p, want)
			}
			if time.Since(p.Time) > time.Minute || p.OutIf == 0 {
				t.Fatalf("packet %d: time %v, output interface %d", got, p.Time, p.OutIf)
			}
			got++
		}
	}
	if got != count || r.Overruns() != 0 {
		t.Errorf("%d packets, %d overruns", got, r.Overruns())
	}
	if datagrams > count/100 {
		t.Errorf("%d packets came in %d datagrams: the kernel is not batching", count, datagrams)
	}
	t.Logf("%d packets in %d datagrams", count, datagrams)
	if allocs := testing.AllocsPerRun(20, func() {
		n.send(t, 50)
		r.SetDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := r.Receive(); err != nil {
			t.Fatal(err)
		}
	}); allocs > 55 { // the sends' own; nothing per packet on the reading side
		t.Errorf("%.0f allocations per 50 packets sent and received", allocs)
	}
}

// BenchmarkReader: CPU per logged packet on the reading side (receive and
// parse), the kernel batching; run with -benchtime Nx for N packets.
func BenchmarkReader(b *testing.B) {
	n := newTestNS(b)
	r, err := Open(testGroup, int(n.ns))
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	done := make(chan int)
	var cpu time.Duration
	go func() {
		runtime.LockOSThread()
		t0 := threadCPU()
		got := 0
		for got < b.N {
			r.SetDeadline(time.Now().Add(10 * time.Second))
			pkts, _, err := r.Receive()
			if err != nil {
				break
			}
			got += len(pkts)
		}
		cpu = threadCPU() - t0
		done <- got
	}()
	b.ResetTimer()
	n.send(b, b.N)
	got := <-done
	b.StopTimer()
	if got < b.N-int(r.Overruns())*BatchBytes/64 {
		b.Logf("%d of %d packets read, %d overruns", got, b.N, r.Overruns())
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(max(got, 1)), "reader-cpu-ns/pkt")
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// TestReaderCountsOverruns: when the daemon falls behind and the kernel
// drops log messages (the socket's buffer is full), Overruns says so —
// the non-blocking socket never returns ENOBUFS from recvfrom itself.
func TestReaderCountsOverruns(t *testing.T) {
	n := newTestNS(t)
	r, err := Open(testGroup, int(n.ns))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Far more than the receive buffer holds, with nobody reading.
	n.send(t, 200000)
	got := 0
	for {
		r.SetDeadline(time.Now().Add(300 * time.Millisecond))
		pkts, _, err := r.Receive()
		if err != nil {
			break
		}
		got += len(pkts)
	}
	if r.Overruns() == 0 || got >= 200000 {
		t.Errorf("read %d of 200000 packets, %d overruns", got, r.Overruns())
	}
	t.Logf("read %d of 200000 packets, %d overruns", got, r.Overruns())
}

// BenchmarkKernelLogCost: the sending thread's CPU per packet through a
// log rule, with the group bound (every packet becomes a log message, read
// by a Reader) and unbound (nobody listens: the kernel skips the message)
// — the difference is what logging a packet costs the kernel's data path.
func BenchmarkKernelLogCost(b *testing.B) {
	for _, bound := range []bool{false, true} {
		name := "unbound"
		if bound {
			name = "bound"
		}
		b.Run(name, func(b *testing.B) {
			n := newTestNS(b)
			done := make(chan struct{})
			if bound {
				r, err := Open(testGroup, int(n.ns))
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					defer close(done)
					for {
						r.SetDeadline(time.Now().Add(time.Second))
						if _, _, err := r.Receive(); err != nil {
							return
						}
					}
				}()
				defer func() { r.Close(); <-done }()
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ResetTimer()
			t0 := threadCPU()
			n.send(b, b.N)
			b.ReportMetric(float64((threadCPU()-t0).Nanoseconds())/float64(b.N), "send-cpu-ns/pkt")
		})
	}
}

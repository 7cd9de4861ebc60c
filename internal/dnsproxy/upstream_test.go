package dnsproxy

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestOrderUnderFlapping is the regression test for the daemon crash of
// issue 17: an upstream whose health flips while order runs fell between
// its "healthy" and "down" passes, the list to try came back empty, and
// forward dereferenced a nil context error. Every call must return every
// upstream exactly once, whatever the flags do meanwhile.
func TestOrderUnderFlapping(t *testing.T) {
	for _, n := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("%d upstreams", n), func(t *testing.T) {
			us := make([]*upstream, n)
			for i := range us {
				us[i] = newUpstream(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)}), 53))
			}
			var stop atomic.Bool
			var wg sync.WaitGroup
			for _, u := range us {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						u.down.Store(!u.down.Load())
					}
				}()
			}
			defer func() { stop.Store(true); wg.Wait() }()
			deadline := time.Now().Add(300 * time.Millisecond)
			for calls := 0; time.Now().Before(deadline); calls++ {
				got := order(us)
				seen := map[*upstream]int{}
				for _, u := range got {
					seen[u]++
				}
				if len(got) != n || len(seen) != n {
					t.Fatalf("call %d: order returned %d upstreams (%d distinct), want each of %d once", calls, len(got), len(seen), n)
				}
			}
		})
	}
}

// TestForwardFlappingUpstream drives the crash's reproduction through the
// real proxy: one upstream that answers REFUSED (so forward marks it down
// after every query) and a health check that brings it back every few
// milliseconds, under 32 concurrent clients asking random names. The
// proxy must answer every query (SERVFAIL here) and keep serving. The
// race window is narrow: before the fix this test crashed only now and
// then; TestOrderUnderFlapping is the one that fails every time.
func TestForwardFlappingUpstream(t *testing.T) {
	z := newZoneAt(t, "127.0.0.1:0", 1)
	z.rcode.Store(dns.RcodeRefused)
	h := startProxy(t, Config{
		Upstreams: []string{z.addr}, Timeout: 300 * time.Millisecond,
		HealthInterval: time.Millisecond, MaxFails: 1,
	}, Options{})
	var wg sync.WaitGroup
	var answered, failed atomic.Int64
	deadline := time.Now().Add(2 * time.Second)
	for c := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				r, err := h.tryAsk("udp", fmt.Sprintf("r%d-%d.flap.example.test.", c, i), dns.TypeA)
				if err != nil {
					failed.Add(1)
					continue
				}
				if r.Rcode != dns.RcodeServerFailure {
					t.Errorf("rcode %s, want SERVFAIL (the only upstream refuses)", dns.RcodeToString[r.Rcode])
					return
				}
				answered.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("answered %d queries, %d client errors", answered.Load(), failed.Load())
	if answered.Load() == 0 {
		t.Fatal("no query answered")
	}
	// Still serving after the flood.
	z.rcode.Store(0)
	eventually(t, 3*time.Second, "an answer from the recovered upstream", func() bool {
		r, err := h.tryAsk("udp", "after.any.example.test.", dns.TypeA)
		return err == nil && len(aRecords(r)) == 1
	})
}

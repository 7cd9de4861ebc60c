package nft

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/nflog"
	"github.com/clusterwall/clusterwall/internal/policy"
	"github.com/clusterwall/clusterwall/internal/threatintel"
)

// kernelThreats compiles a real threat-intel feed and allowlist and
// returns the ranges the kernel gets.
func kernelThreats(t testing.TB, deny bool, feed string, allow ...string) *ThreatIntel {
	t.Helper()
	d, err := threatintel.Parse("lab", "lab.txt", threatintel.FormatPlain, strings.NewReader(feed))
	if err != nil || d.Invalid != 0 {
		t.Fatalf("feed: %v %v", err, d.Errors)
	}
	var b policy.AddrSetBuilder
	for _, a := range allow {
		if _, err := policy.ParseAddrToken(a, &b); err != nil {
			t.Fatal(err)
		}
	}
	v4, v6 := threatintel.Compile([]*threatintel.FeedData{d}, threatintel.Allowlist{Addrs: b.Build()}).BlockedRanges()
	return &ThreatIntel{Deny: deny, V4: v4, V6: v6}
}

// nflogWatch collects the prefixes and addresses the firewall logs.
type nflogWatch struct{ r *nflog.Reader }

func watchNFLOG(t *testing.T, l *lab) *nflogWatch {
	r, err := nflog.Open(DefaultLogGroup, l.fwFD)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return &nflogWatch{r}
}

// wait returns true when a packet with prefix from src to dst is logged
// within d.
func (w *nflogWatch) wait(prefix string, src, dst netip.Addr, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		w.r.SetDeadline(deadline)
		pkts, _, err := w.r.Receive()
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				return false
			}
			continue
		}
		for _, p := range pkts {
			if p.Prefix == prefix && p.Src == src && p.Dst == dst {
				return true
			}
		}
	}
	return false
}

// TestKernelThreatIntel: listed addresses are dropped before DNAT and in
// forward in mode Deny (even where a rule allows the flow), logged and let
// through in mode Alert, and the allowlist exempts; a feed refresh updates
// the sets in place.
func TestKernelThreatIntel(t *testing.T) {
	l := newLab(t)
	startServers(t, l)
	r := l.runner()
	p := loadPolicy(t, "testdata/kinds.yaml")
	nl := watchNFLOG(t, l)
	ip := netip.MustParseAddr
	const feed = `
198.18.10.0/24     # the allowed web servers' network
198.51.100.7       # the authorized DNAT source
2001:db8:ac:10::5
`
	apply := func(ti *ThreatIntel) {
		t.Helper()
		cfg := labConfig()
		cfg.ThreatIntel = ti
		rs, err := compilePolicy(p, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Apply(rs); err != nil {
			t.Fatal(err)
		}
	}
	type probe struct {
		name     string
		from     string
		proto    string
		src, dst string
		want     outcome
	}
	check := func(mode string, probes []probe) {
		t.Helper()
		for _, pr := range probes {
			var got outcome
			switch pr.proto {
			case "tcp":
				var src netip.Addr
				if pr.src != "" {
					src = ip(pr.src)
				}
				got, _ = dialTCPFrom(t, pr.from, src, ap(pr.dst), blockWait)
			case "udp":
				got, _ = udpProbe(t, pr.from, ap(pr.dst), blockWait)
			}
			if got != pr.want {
				t.Errorf("%s: %s: %s, want %s", mode, pr.name, got, pr.want)
			}
		}
	}

	apply(kernelThreats(t, true, feed, "198.18.10.53"))
	check("Deny", []probe{
		{"listed destination allowed by a rule", l.node, "tcp", "", "198.18.10.5:80", blocked},
		{"listed IPv6 destination allowed by a rule", l.node, "tcp", "", "[2001:db8:ac:10::5]:443", blocked},
		{"allowlisted address in a listed network", l.node, "udp", "", "198.18.10.53:53", passed},
		{"unlisted destination", l.node, "tcp", "", "198.18.20.5:80", refused},
		{"listed source before DNAT", l.inet, "tcp", "198.51.100.7", "203.0.113.32:6443", blocked},
		{"unlisted source DNAT", l.inet, "tcp", "", "203.0.113.32:8080", passed},
	})
	if !nl.wait("cw:D:threat", ip("10.42.1.10"), ip("198.18.10.5"), 3*time.Second) {
		t.Error("Deny: no cw:D:threat log for 10.42.1.10 -> 198.18.10.5")
	}
	if !nl.wait("cw:D:threat", ip("198.51.100.7"), ip("203.0.113.32"), 3*time.Second) {
		t.Error("Deny: no cw:D:threat log for the DNAT source (logged before DNAT)")
	}

	apply(kernelThreats(t, false, feed, "198.18.10.53"))
	check("Alert", []probe{
		{"listed destination allowed by a rule", l.node, "tcp", "", "198.18.10.5:80", passed},
		{"listed source DNAT", l.inet, "tcp", "198.51.100.7", "203.0.113.32:6443", passed},
		{"rules still deny", l.node, "tcp", "", "198.18.10.5:81", blocked},
	})
	if !nl.wait("cw:A:threat", ip("10.42.1.10"), ip("198.18.10.5"), 3*time.Second) {
		t.Error("Alert: no cw:A:threat log for 10.42.1.10 -> 198.18.10.5")
	}

	// A feed refresh: new contents in place, without an apply.
	if _, err := r.UpdateThreatIntel(kernelThreats(t, true, "198.18.20.5\n")); !errors.Is(err, ErrThreatIntelNeedsApply) {
		t.Errorf("update across modes: %v, want ErrThreatIntelNeedsApply", err)
	}
	apply(kernelThreats(t, true, feed))
	took, err := r.UpdateThreatIntel(kernelThreats(t, true, "198.18.20.5\n"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("in-place update of the sets: %v", took)
	check("Deny after refresh", []probe{
		{"no longer listed", l.node, "tcp", "", "198.18.10.5:80", passed},
		{"newly listed (a deny rule would reset)", l.node, "tcp", "", "198.18.20.5:80", blocked},
	})
	st, err := r.Show()
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprint(st); !strings.Contains(s, "ti_v4") {
		t.Errorf("show lacks the threat-intel set")
	}
}

// TestKernelThreatIntel100k applies 100,000 feed entries (about 90 % IPv4
// addresses and networks, 10 % IPv6 networks) with the seed-sized kinds
// policy, measures the apply and an in-place refresh, and checks that a
// listed address is dropped.
func TestKernelThreatIntel100k(t *testing.T) {
	l := newLab(t)
	startServers(t, l)
	r := l.runner()
	p := loadPolicy(t, "testdata/kinds.yaml")
	gen := func(seed uint64) string {
		rnd := rand.New(rand.NewPCG(seed, 3))
		var b strings.Builder
		b.WriteString("198.18.10.5\n")
		for i := 1; i < 100000; i++ {
			switch x := rnd.IntN(10); {
			case x < 7:
				fmt.Fprintf(&b, "%d.%d.%d.%d\n", 1+rnd.IntN(100), rnd.IntN(256), rnd.IntN(256), rnd.IntN(256))
			case x < 9:
				fmt.Fprintf(&b, "%d.%d.%d.0/%d\n", 1+rnd.IntN(100), rnd.IntN(256), rnd.IntN(256), 20+rnd.IntN(11))
			default:
				fmt.Fprintf(&b, "2001:db8:%x:%x::/%d\n", 1+rnd.IntN(65535), rnd.IntN(65536), 48+rnd.IntN(17))
			}
		}
		return b.String()
	}
	ti := kernelThreats(t, true, gen(1))
	start := time.Now()
	cfg := labConfig()
	cfg.ThreatIntel = ti
	rs, err := compilePolicy(p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	compiled := time.Since(start)
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	applied := time.Since(start)
	ti2 := kernelThreats(t, true, gen(2))
	upd, err := r.UpdateThreatIntel(ti2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("100,000 entries: %d IPv4 + %d IPv6 ranges; compile %v, compile+apply %v; in-place refresh (another 100,000) %v",
		len(ti.V4), len(ti.V6), compiled.Round(time.Millisecond), applied.Round(time.Millisecond), upd.Round(time.Millisecond))
	if applied > 30*time.Second || upd > 30*time.Second {
		t.Errorf("too slow: apply %v, refresh %v", applied, upd)
	}
	if got, _ := dialTCP(t, l.node, ap("198.18.10.5:80"), blockWait); got != blocked {
		t.Errorf("listed 198.18.10.5:80: %s, want blocked", got)
	}
	if got, _ := udpProbe(t, l.node, ap("198.18.10.53:53"), blockWait); got != passed {
		t.Errorf("unlisted 198.18.10.53:53/udp: %s, want pass", got)
	}
}

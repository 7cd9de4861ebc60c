package nft

import (
	"net/netip"
	"strings"
	"testing"
)

func poolConfig() Config {
	c := labConfig()
	c.PublicIPs = append(c.PublicIPs, netip.MustParseAddr("203.0.113.40"))
	c.SNAT = SNATPool
	c.SNATPool = []SNATPoolEntry{
		{Addr: netip.MustParseAddr("203.0.113.32"), PortLo: 40000, PortHi: 40007},
		{Addr: netip.MustParseAddr("203.0.113.40"), PortLo: 1024, PortHi: 65535},
	}
	return c
}

// TestCompileSNATPool: one rule per pool address and protocol, each but
// the last taking its share by its own counter; IPv6 (no pool address)
// falls back to its first public IP.
func TestCompileSNATPool(t *testing.T) {
	rs, err := compilePolicy(loadExample(t), poolConfig())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range rs.Chain("postrouting").Rules {
		b.WriteString(r.String() + "\n")
	}
	text := b.String()
	for _, want := range []string{
		`oifname "outside" meta nfproto ipv4 meta l4proto tcp numgen inc mod 64520 < 8 snat ip to 203.0.113.32:40000-40007`,
		`oifname "outside" meta nfproto ipv4 meta l4proto tcp snat ip to 203.0.113.40:1024-65535`,
		`oifname "outside" meta nfproto ipv4 meta l4proto udp numgen inc mod 64520 < 8 snat ip to 203.0.113.32:40000-40007`,
		`oifname "outside" meta nfproto ipv4 numgen inc mod 64520 < 8 snat ip to 203.0.113.32`,
		`oifname "outside" meta nfproto ipv4 snat ip to 203.0.113.40`,
		`oifname "outside" meta nfproto ipv6 snat ip6 to 2001:db8:cafe::32`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("postrouting lacks %q:\n%s", want, text)
		}
	}
	bad := poolConfig()
	bad.SNATPool[1].Addr = netip.MustParseAddr("198.51.100.1")
	if _, err := compilePolicy(loadExample(t), bad); err == nil || !strings.Contains(err.Error(), "not a public IP") {
		t.Errorf("pool address outside publicIPs: %v", err)
	}
}

// TestKernelApplyShowSNATPool: the kernel takes the pool's rules and
// `dataplane show` renders them as compiled.
func TestKernelApplyShowSNATPool(t *testing.T) {
	l := newLab(t)
	rs, err := compilePolicy(loadExample(t), poolConfig())
	if err != nil {
		t.Fatal(err)
	}
	r := l.runner()
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	st, err := r.Show()
	if err != nil {
		t.Fatal(err)
	}
	gc, wc := st.Chain("postrouting"), stateOf(rs).Chain("postrouting")
	if gc == nil || len(gc.Rules) != len(wc.Rules) {
		t.Fatalf("postrouting: kernel %+v, want %d rules", gc, len(wc.Rules))
	}
	for i := range wc.Rules {
		if gc.Rules[i].Text != wc.Rules[i].Text {
			t.Errorf("rule %d:\nkernel:   %s\ncompiled: %s", i, gc.Rules[i].Text, wc.Rules[i].Text)
		}
	}
}

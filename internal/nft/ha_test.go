package nft

import (
	"net/netip"
	"strings"
	"testing"
)

func haConfig() Config {
	c := labConfig()
	c.SNAT = SNATFixed
	c.HA = &HA{VRRPIfaces: []string{"inside", "outside"}, SyncIface: "sync", Peer: netip.MustParseAddr("10.42.255.2"), SyncPort: 3780, APIPort: 9181, ProxyMark: DefaultProxyMark}
	return c
}

// TestCompileHA: VRRP and the sync link are accepted on their interfaces
// only, a new TCP flow must start with a SYN, and the gateway's own
// connections are not translated; without HA none of it is there.
func TestCompileHA(t *testing.T) {
	p := loadExample(t)
	rs, err := compilePolicy(p, haConfig())
	if err != nil {
		t.Fatal(err)
	}
	text := func(ch string) string {
		var b strings.Builder
		for _, r := range rs.Chain(ch).Rules {
			b.WriteString(r.String() + "\n")
		}
		return b.String()
	}
	for _, want := range []struct{ chain, rule string }{
		{"input", `iifname "inside" meta nfproto ipv4 meta l4proto 112 ip daddr 224.0.0.18 accept`},
		{"input", `iifname "outside" meta nfproto ipv4 meta l4proto 112 ip daddr 224.0.0.18 accept`},
		{"input", `iifname "sync" meta nfproto ipv4 ip saddr 10.42.255.2 meta l4proto udp th dport 3780 accept`},
		{"input", `iifname "sync" meta nfproto ipv4 ip saddr 10.42.255.2 meta l4proto tcp th dport 9181 accept`},
		{"forward", `ct state new meta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn counter drop`},
		{"postrouting", `oifname "outside" fib saddr type local meta mark != 0x00006377 accept`},
	} {
		if !strings.Contains(text(want.chain), want.rule) {
			t.Errorf("chain %s lacks %q:\n%s", want.chain, want.rule, text(want.chain))
		}
	}
	// The SYN rule comes right after the established and invalid rules,
	// before any rule that could accept a new flow.
	fwd := rs.Chain("forward").Rules
	if len(fwd) < 3 || !strings.Contains(fwd[2].String(), "tcp flags") {
		t.Errorf("forward chain starts:\n%s", text("forward"))
	}
	plain, err := compilePolicy(p, labConfig())
	if err != nil {
		t.Fatal(err)
	}
	if s := plain.String(); strings.Contains(s, "224.0.0.18") || strings.Contains(s, "tcp flags") || strings.Contains(s, "fib saddr") {
		t.Errorf("HA rules without HA:\n%s", s)
	}
	var rec Recorder
	if err := rec.Apply(rs); err != nil {
		t.Fatal(err)
	}
	bad := haConfig()
	bad.HA.SyncIface = "inside"
	if _, err := compilePolicy(p, bad); err == nil || !strings.Contains(err.Error(), "dedicated") {
		t.Errorf("sync link on the inside interface: %v", err)
	}
}

// TestKernelApplyShowHA programs the HA rules and reads them back: the
// kernel takes them (fib in postrouting, the TCP flags match) and `dataplane
// show` renders them as compiled.
func TestKernelApplyShowHA(t *testing.T) {
	l := newLab(t)
	rs, err := compilePolicy(loadExample(t), haConfig())
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
	want := stateOf(rs)
	for _, ch := range []string{"input", "forward", "postrouting"} {
		gc, wc := st.Chain(ch), want.Chain(ch)
		if gc == nil || len(gc.Rules) != len(wc.Rules) {
			t.Fatalf("chain %s: kernel %+v, want %d rules", ch, gc, len(wc.Rules))
		}
		for i := range wc.Rules {
			if gc.Rules[i].Text != wc.Rules[i].Text {
				t.Errorf("chain %s rule %d:\nkernel:   %s\ncompiled: %s", ch, i, gc.Rules[i].Text, wc.Rules[i].Text)
			}
		}
	}
}

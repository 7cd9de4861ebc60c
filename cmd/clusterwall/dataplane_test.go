//go:build linux

package main

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/clusterwall/clusterwall/internal/match"
	"github.com/clusterwall/clusterwall/internal/namespace"
	"github.com/clusterwall/clusterwall/internal/nft"
	"github.com/clusterwall/clusterwall/internal/policy"
)

func TestDataplaneCompile(t *testing.T) {
	out, err := run(t, "dataplane", "compile", "../../examples/aks-egress.yaml", "--public-ip", "203.0.113.32", "--private-ip", "10.42.2.4")
	if err != nil {
		t.Fatal(err)
	}
	// Chains are named after their content (a hash follows the name).
	if !regexp.MustCompile(`goto dnat_0_[0-9a-f]{16} comment "cw:N:0 DefaultDnatRuleCollectionGroup/exampleset/inboundrule"`).MatchString(out) {
		t.Errorf("output lacks the goto to dnat_0_<hash>")
	}
	// As the daemon by default (log.ratePerSecond 1000): a leaf of one
	// rule holds its decision — what does not match returns, then the
	// counter and limited log, then the verdict (a leaf of several rules
	// goes to the rule's decision chain instead).
	if !strings.Contains(out, `ip daddr . th dport != 198.18.10.0/24 . 9000 return comment "cw:A:1 DefaultNetworkRuleCollectionGroup/aksfwnr/apitcp"`+"\n\t\tcounter name \"cw:A:1\" limit name") {
		t.Errorf("output lacks rule 1's leaf with its decision:\n%s", out)
	}
	for _, want := range []string{
		"table inet clusterwall {",
		"limit cw_log_1000_2000 {",
		`counter name "cw:A:1" limit name "cw_log_1000_2000" log prefix "cw:A:1" group 100 comment "cw:A:1 DefaultNetworkRuleCollectionGroup/aksfwnr/apitcp"` + "\n\t\taccept comment",
		"3 network rules, 2 DNAT rules",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Every flow logged: one rule, counter, log, verdict.
	out, err = run(t, "dataplane", "compile", "../../examples/aks-egress.yaml", "--public-ip", "203.0.113.32", "--private-ip", "10.42.2.4", "--log-rate", "0")
	if err != nil {
		t.Fatal(err)
	}
	if want := `counter name "cw:A:1" log prefix "cw:A:1" group 100 accept comment "cw:A:1 DefaultNetworkRuleCollectionGroup/aksfwnr/apitcp"`; !strings.Contains(out, want) {
		t.Errorf("--log-rate 0: output lacks %q", want)
	}
	if _, err := run(t, "dataplane", "compile", "../../examples/aks-egress.yaml", "--log-rate", "-1"); err == nil {
		t.Fatal("--log-rate -1 accepted")
	}
	if _, err := run(t, "dataplane", "compile", "../../examples/aks-egress.yaml", "--public-ip", "192.0.2.1"); err == nil ||
		!strings.Contains(err.Error(), "not a public IP of the firewall") {
		t.Fatalf("DNAT to a foreign address: %v", err)
	}
	if _, err := run(t, "dataplane", "compile", "../../examples/aks-egress.yaml", "--snat", "nope"); err == nil {
		t.Fatal("bad --snat accepted")
	}
}

// TestDataplaneShowFlush programs a namespace it creates and runs
// `dataplane show` and `dataplane flush` against it (root only).
func TestDataplaneShowFlush(t *testing.T) {
	ns := namespace.ForTest(t, "cwcli-")
	p, err := policy.LoadFile("../../examples/aks-egress.yaml", policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := nft.Config{Inside: "inside", Outside: "outside", PublicIPs: []netip.Addr{netip.MustParseAddr("203.0.113.32")}}
	m, err := match.Compile(p, match.Options{Gateway: cfg.Gateway()})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := nft.Compile(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := nft.OpenNetNS(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := nft.NewNetlinkRunner(nft.NetlinkOptions{NetNSFd: int(f.Fd())}).Apply(rs); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "dataplane", "show", "--netns", ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"chain forward (type filter hook forward priority 0 policy accept)", "cw:D:default", "  drop\n", "cw:A:1", "DefaultNetworkRuleCollectionGroup/aksfwnr/apitcp"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if _, err := run(t, "dataplane", "flush", "--netns", ns); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "dataplane", "show", "--netns", ns)
	if err != nil || !strings.Contains(out, "not present") {
		t.Fatalf("show after flush: %v\n%s", err, out)
	}
	if _, err := run(t, "dataplane", "show", "--netns", "no-such-ns-"+ns); err == nil {
		t.Fatal("show in a missing namespace succeeded")
	}
}

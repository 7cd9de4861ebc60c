package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// flowCase is one flow through the firewall and what must happen to it.
type flowCase struct {
	name  string
	host  string
	src   netip.Addr // default: the host's address of dst's family
	proto string     // TCP, UDP, ICMP
	dst   netip.AddrPort
	want  outcome
	line  string // for a TCP flow that passes: the server's first line / HTTP body
	// The decision log line: "group/collection/rule" or "default", and the action.
	rule, action string
}

var (
	ap   = netip.AddrPortFrom
	addr = netip.MustParseAddr
)

func (c *flowCase) source() netip.Addr {
	if c.src.IsValid() {
		return c.src
	}
	v6 := c.dst.Addr().Is6()
	switch c.host {
	case lab.HostNode:
		return map[bool]netip.Addr{false: lab.NodeV4, true: lab.NodeV6}[v6]
	case lab.HostClient:
		return map[bool]netip.Addr{false: lab.ClientAuthorizedV4, true: lab.ClientAuthorizedV6}[v6]
	}
	panic("flowCase: no source for host " + c.host)
}

func (c *flowCase) key() flowKey {
	k := flowKey{src: c.source(), dst: c.dst.Addr(), proto: c.proto}
	if c.proto != "ICMP" {
		k.port = int(c.dst.Port())
	}
	return k
}

// run sends the flow and checks the client's view.
func (c *flowCase) run(t *testing.T, f *fwLab) {
	t.Helper()
	var got outcome
	var line string
	var err error
	switch c.proto {
	case "TCP":
		got, line, err = f.tcpLine(c.host, c.source(), c.dst)
	case "UDP":
		got, err = f.udpEcho(c.host, c.source(), c.dst)
	case "ICMP":
		got, err = f.ping(c.host, c.source(), c.dst.Addr())
	default:
		t.Fatalf("bad proto %q", c.proto)
	}
	if err != nil {
		t.Errorf("%s: %v", c.name, err)
		return
	}
	if got != c.want {
		t.Errorf("%s: %s %s: %s, want %s", c.name, c.host, c.key(), got, c.want)
		return
	}
	if c.line != "" && line != c.line {
		t.Errorf("%s: answer %q, want %q (the flow landed elsewhere)", c.name, line, c.line)
	}
}

// checkDecisions checks that each case's flow has a decision log line
// naming the expected rule and action, with Azure's field names.
func checkDecisions(t *testing.T, f *fwLab, cases []flowCase) {
	t.Helper()
	var keys []flowKey
	for _, c := range cases {
		keys = append(keys, c.key())
	}
	found := f.waitDecisions(t, keys, 3*time.Second)
	for _, c := range cases {
		r, ok := found[c.key()]
		if !ok {
			t.Errorf("%s: no decision log line for %s", c.name, c.key())
			continue
		}
		rule := "default"
		if r.Rule != "" {
			rule = r.RuleCollectionGroup + "/" + r.RuleCollection + "/" + r.Rule
		}
		if rule != c.rule || r.Action != c.action {
			t.Errorf("%s: decision %s by %s, want %s by %s (line %+v)", c.name, r.Action, rule, c.action, c.rule, r)
		}
		wantCat := "AZFWNetworkRule"
		if c.action == "DNAT" {
			wantCat = "AZFWNatRule"
		}
		if r.Category != wantCat || r.Policy == "" || r.Source != "kernel" || r.Time.IsZero() {
			t.Errorf("%s: decision line %+v: want category %s, a policy name, source kernel and a time", c.name, r, wantCat)
		}
		if c.rule == "default" && !strings.Contains(r.ActionReason, "no rule matched") {
			t.Errorf("%s: default deny line has ActionReason %q", c.name, r.ActionReason)
		}
		if (c.proto == "TCP" || c.proto == "UDP") && r.SourcePort == 0 {
			t.Errorf("%s: decision line without SourcePort: %+v", c.name, r)
		}
	}
}

// both returns the case for IPv4 and for IPv6 (the same name's addresses).
func both(c flowCase, dst4, dst6 netip.Addr) []flowCase {
	c4, c6 := c, c
	c4.name, c6.name = "v4/"+c.name, "v6/"+c.name
	c4.dst, c6.dst = ap(dst4, c.dst.Port()), ap(dst6, c.dst.Port())
	return []flowCase{c4, c6}
}

func runCases(t *testing.T, f *fwLab, cases [][]flowCase) {
	t.Helper()
	var all []flowCase
	for _, cs := range cases {
		all = append(all, cs...)
	}
	// The flows are independent (and dropped ones take a second each).
	var wg sync.WaitGroup
	for _, c := range all {
		wg.Add(1)
		go func() { defer wg.Done(); c.run(t, f) }()
	}
	wg.Wait()
	checkDecisions(t, f, all)
}

// TestNetworkRules sends one flow per network rule kind (TCP, UDP and ICMP
// allow; TCP, UDP and ICMP Deny rules; service tags) in both families.
// Allowed flows must reach the server the address belongs to; a Deny rule
// rejects TCP with a reset and drops UDP and ICMP; each decision is logged
// with its rule.
func TestNetworkRules(t *testing.T) {
	t.Parallel()
	f := shared.get(t)
	ghcr, tunnel, nonazure, example := lab.MustLookup(lab.NameGHCR), lab.MustLookup(lab.NameAzureCloud), lab.MustLookup(lab.NameNonAzure), lab.MustLookup(lab.NameExample)
	runCases(t, f, [][]flowCase{
		both(flowCase{name: "tcp allow", host: lab.HostNode, proto: "TCP", dst: ap(netip.Addr{}, 80), want: passed, line: ghcr.Name,
			rule: "net/egress/web", action: "Allow"}, ghcr.V4, ghcr.V6),
		both(flowCase{name: "tcp allow by service tag", host: lab.HostNode, proto: "TCP", dst: ap(netip.Addr{}, 9000), want: passed, line: tunnel.Name,
			rule: "net/egress/tunnel-tcp", action: "Allow"}, tunnel.V4, tunnel.V6),
		both(flowCase{name: "udp allow", host: lab.HostNode, proto: "UDP", dst: ap(netip.Addr{}, 1194), want: passed,
			rule: "net/egress/tunnel-udp", action: "Allow"}, tunnel.V4, tunnel.V6),
		both(flowCase{name: "icmp allow", host: lab.HostNode, proto: "ICMP", want: passed,
			rule: "net/egress/ping", action: "Allow"}, ghcr.V4, ghcr.V6),
		both(flowCase{name: "tcp deny rule resets", host: lab.HostNode, proto: "TCP", dst: ap(netip.Addr{}, 443), want: refused,
			rule: "net/blocklist/no-example", action: "Deny"}, example.V4, example.V6),
		both(flowCase{name: "icmp deny rule", host: lab.HostNode, proto: "ICMP", want: timedOut,
			rule: "net/blocklist/no-ping", action: "Deny"}, example.V4, example.V6),
		{
			// One rule per family: the v4 address is denied by a Deny rule,
			// the v6 one allowed by the Allow collection.
			{name: "v4/udp deny rule", host: lab.HostNode, proto: "UDP", dst: ap(nonazure.V4, 1194), want: timedOut,
				rule: "net/blocklist/no-udp4", action: "Deny"},
			{name: "v6/udp allow (deny rule is v4 only)", host: lab.HostNode, proto: "UDP", dst: ap(nonazure.V6, 1194), want: passed,
				rule: "net/egress/nonazure-udp", action: "Allow"},
		},
	})
}

// TestPriorities: inside a group a Deny collection with the better
// priority wins over an Allow collection; across groups the group's
// priority wins over a better collection priority in a later group.
func TestPriorities(t *testing.T) {
	t.Parallel()
	f := shared.get(t)
	mcr, raw, example := lab.MustLookup("mcr.microsoft.com"), lab.MustLookup("raw.githubusercontent.com"), lab.MustLookup(lab.NameExample)
	runCases(t, f, [][]flowCase{
		// net/blocklist (100, Deny) beats net/egress (200, Allow: web).
		both(flowCase{name: "deny collection beats allow collection", host: lab.HostNode, proto: "TCP", dst: ap(netip.Addr{}, 80), want: refused,
			rule: "net/blocklist/no-example", action: "Deny"}, example.V4, example.V6),
		// guard (group 150) late-allow (65000) beats net (group 200) blocklist (100, Deny).
		both(flowCase{name: "group priority beats collection priority (allow)", host: lab.HostNode, proto: "TCP", dst: ap(netip.Addr{}, 80), want: passed, line: mcr.Name,
			rule: "guard/late-allow/mcr-http", action: "Allow"}, mcr.V4, mcr.V6),
		// guard late-deny (64000) beats net/egress/web's allow.
		both(flowCase{name: "group priority beats collection priority (deny)", host: lab.HostNode, proto: "TCP", dst: ap(netip.Addr{}, 80), want: refused,
			rule: "guard/late-deny/raw-http", action: "Deny"}, raw.V4, raw.V6),
	})
}

// TestDefaultDeny: flows no rule allows are dropped (and logged as the
// default action), from the cluster and from the internet.
func TestDefaultDeny(t *testing.T) {
	t.Parallel()
	f := shared.get(t)
	tunnel, nonazure := lab.MustLookup(lab.NameAzureCloud), lab.MustLookup(lab.NameNonAzure)
	deny := func(c flowCase) flowCase { c.want, c.rule, c.action = timedOut, "default", "Deny"; return c }
	runCases(t, f, [][]flowCase{
		both(deny(flowCase{name: "tcp port not allowed", host: lab.HostNode, proto: "TCP", dst: ap(netip.Addr{}, 9001)}), tunnel.V4, tunnel.V6),
		both(deny(flowCase{name: "tcp outside the service tag", host: lab.HostNode, proto: "TCP", dst: ap(netip.Addr{}, 9000)}), nonazure.V4, nonazure.V6),
		both(deny(flowCase{name: "udp port not allowed", host: lab.HostNode, proto: "UDP", dst: ap(netip.Addr{}, 1195)}), tunnel.V4, tunnel.V6),
		both(deny(flowCase{name: "internet to a cluster address", host: lab.HostClient, proto: "TCP", dst: ap(netip.Addr{}, 80)}), lab.StoreV4, lab.StoreV6),
		both(deny(flowCase{name: "internet ping to a cluster address", host: lab.HostClient, proto: "ICMP"}), lab.StoreV4, lab.StoreV6),
	})
	// The firewall's public address itself: only published ports answer.
	for _, dst := range []netip.AddrPort{ap(lab.FWPublicV4, 9999), ap(lab.FWPublicV6, 9999)} {
		got, _, err := f.tcpLine(lab.HostClient, netip.Addr{}, dst)
		if err != nil || got != timedOut {
			t.Errorf("client → %s (nothing published): %s %v, want timed out", dst, got, err)
		}
	}
}

// TestDNAT: the public IP's published ports reach the cluster services
// with the client's own source address (the firewall is the cluster's
// default route: no SNAT needed on the way in), including a port
// translation and a rule restricted to authorized sources, in both
// families.
func TestDNAT(t *testing.T) {
	t.Parallel()
	f := shared.get(t)
	type dnatCase struct {
		name   string
		src    netip.Addr
		scheme string
		dst    netip.AddrPort
		body   string // "" means denied
		rule   string
	}
	cases := []dnatCase{
		{"v4/web", lab.ClientUnauthorizedV4, "http", ap(lab.FWPublicV4, 80), "store-front", "publish/dnat/web4"},
		{"v6/web", lab.ClientUnauthorizedV6, "http", ap(lab.FWPublicV6, 80), "store-front", "publish/dnat/web6"},
		{"v4/port translation", lab.ClientAuthorizedV4, "http", ap(lab.FWPublicV4, 8080), "store-front", "publish/dnat/alt4"},
		{"v4/api authorized", lab.ClientAuthorizedV4, "https", ap(lab.FWPublicV4, 443), "api", "publish/dnat/api4"},
		{"v6/api authorized", lab.ClientAuthorizedV6, "https", ap(lab.FWPublicV6, 443), "api", "publish/dnat/api6"},
		{"v4/api unauthorized", lab.ClientUnauthorizedV4, "https", ap(lab.FWPublicV4, 443), "", ""},
		{"v6/api unauthorized", lab.ClientUnauthorizedV6, "https", ap(lab.FWPublicV6, 443), "", ""},
		{"v6/no port translation rule", lab.ClientAuthorizedV6, "http", ap(lab.FWPublicV6, 8080), "", ""},
	}
	var keys []flowKey
	for _, c := range cases {
		body, peer, err := f.httpGet(lab.HostClient, c.src, c.scheme, c.dst)
		if c.body == "" {
			if err == nil {
				t.Errorf("%s: %s from %s answered %q, want denied", c.name, c.dst, c.src, body)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %s from %s: %v", c.name, c.dst, c.src, err)
			continue
		}
		if body != c.body {
			t.Errorf("%s: body %q, want %q", c.name, body, c.body)
		}
		if peer.Addr() != c.src {
			t.Errorf("%s: the service saw %s, want the client's address %s", c.name, peer, c.src)
		}
		keys = append(keys, flowKey{src: c.src, dst: c.dst.Addr(), port: int(c.dst.Port()), proto: "TCP"})
	}
	found := f.waitDecisions(t, keys, 3*time.Second)
	i := 0
	for _, c := range cases {
		if c.body == "" {
			continue
		}
		k := keys[i]
		i++
		r, ok := found[k]
		if !ok {
			t.Errorf("%s: no decision line for %s", c.name, k)
			continue
		}
		want := strings.Split(c.rule, "/")
		if r.Category != "AZFWNatRule" || r.Action != "DNAT" || r.RuleCollectionGroup != want[0] || r.RuleCollection != want[1] || r.Rule != want[2] {
			t.Errorf("%s: decision line %+v, want AZFWNatRule DNAT by %s", c.name, r, c.rule)
		}
		wantTo := map[string]netip.Addr{"store-front": lab.StoreV4, "api": lab.APIV4}[c.body]
		if c.dst.Addr().Is6() {
			wantTo = map[string]netip.Addr{"store-front": lab.StoreV6, "api": lab.APIV6}[c.body]
		}
		wantPort := 80
		if c.body == "api" {
			wantPort = 443
		}
		if r.TranslatedIp != wantTo.String() || r.TranslatedPort != wantPort {
			t.Errorf("%s: translated to %s:%d, want %s:%d", c.name, r.TranslatedIp, r.TranslatedPort, wantTo, wantPort)
		}
	}
}

// TestSNAT: outbound flows leave with the firewall's public address
// (masquerade on the outside interface), in both families.
func TestSNAT(t *testing.T) {
	t.Parallel()
	f := shared.get(t)
	ghcr := lab.MustLookup(lab.NameGHCR)
	for _, c := range []struct {
		dst  netip.Addr
		want netip.Addr
	}{{ghcr.V4, lab.FWPublicV4}, {ghcr.V6, lab.FWPublicV6}} {
		for _, scheme := range []string{"http", "https"} {
			port := map[string]uint16{"http": 80, "https": 443}[scheme]
			body, peer, err := f.httpGet(lab.HostNode, netip.Addr{}, scheme, ap(c.dst, port))
			if err != nil {
				t.Errorf("%s to %s: %v", scheme, c.dst, err)
				continue
			}
			if body != ghcr.Name || peer.Addr() != c.want {
				t.Errorf("%s to %s: body %q, server saw %s; want %q from %s", scheme, c.dst, body, peer, ghcr.Name, c.want)
			}
		}
	}
}

// TestDataplaneShow: `clusterwall dataplane show` in fw lists the table,
// the policy's rules by name and their decision counters, which count new
// flows.
func TestDataplaneShow(t *testing.T) {
	t.Parallel()
	f := shared.get(t)
	counter := func(out, rule string) (int, bool) {
		for _, line := range strings.Split(out, "\n") {
			fields := strings.Fields(line)
			if len(fields) >= 4 && fields[len(fields)-1] == rule {
				var n int
				_, err := fmt.Sscan(fields[0], &n)
				return n, err == nil
			}
		}
		return 0, false
	}
	before, err := f.cw(t, lab.HostFW, "dataplane", "show")
	if err != nil {
		t.Fatalf("dataplane show: %v", err)
	}
	for _, want := range []string{"table inet clusterwall", "chain forward", "chain prerouting", "decision counters", "net/egress/tunnel-tcp", "publish/dnat/web4"} {
		if !strings.Contains(before, want) {
			t.Errorf("dataplane show lacks %q:\n%s", want, before)
		}
	}
	n0, ok := counter(before, "net/egress/tunnel-tcp")
	if !ok {
		t.Fatalf("no counter for net/egress/tunnel-tcp in:\n%s", before)
	}
	tunnel := lab.MustLookup(lab.NameAzureCloud)
	const flows = 3
	for range flows {
		if got, _, err := f.tcpLine(lab.HostNode, netip.Addr{}, ap(tunnel.V4, 9000)); err != nil || got != passed {
			t.Fatalf("tunnel flow: %s %v", got, err)
		}
	}
	after, err := f.cw(t, lab.HostFW, "dataplane", "show")
	if err != nil {
		t.Fatalf("dataplane show: %v", err)
	}
	// Other tests running in parallel may add flows of their own.
	if n1, _ := counter(after, "net/egress/tunnel-tcp"); n1 < n0+flows {
		t.Errorf("counter of net/egress/tunnel-tcp went from %d to %d after %d new flows", n0, n1, flows)
	}
}

package nft

import (
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
)

const blockWait = 1500 * time.Millisecond

var ap = netip.MustParseAddrPort

// startServers starts the echo-the-peer servers of the traffic tests.
func startServers(t *testing.T, l *lab) {
	for _, a := range []string{
		"198.18.10.5:80", "198.18.10.5:81", "198.18.10.5:23", "198.18.10.5:443", "198.18.10.5:8050",
		"198.18.20.5:80", "198.18.10.53:53", "198.18.10.123:123",
		"[2001:db8:ac:10::5]:443", "[2001:db8:ac:10::5]:444", "[2001:db8:ac:20::5]:80",
		"203.0.113.10:80",
	} {
		serve(t, l.inet, ap(a))
	}
	for _, a := range []string{"10.42.1.10:80", "10.42.1.10:443", "[2001:db8:42:1::10]:80"} {
		serve(t, l.node, ap(a))
	}
}

func applyKinds(t *testing.T, l *lab, r *NetlinkRunner) *Ruleset {
	t.Helper()
	rs, err := compilePolicy(loadPolicy(t, "testdata/kinds.yaml"), labConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestKernelTraffic applies testdata/kinds.yaml to the firewall of a
// three-namespace lab and sends real traffic through it: every rule kind,
// priorities, both families, DNAT and SNAT, the input chain, default deny.
func TestKernelTraffic(t *testing.T) {
	l := newLab(t)
	startServers(t, l)
	r := l.runner()

	// Before any table: plain forwarding (the lab routes), so that a
	// blocked outcome below is the firewall's doing.
	if got, _ := dialTCP(t, l.node, ap("198.18.10.5:81"), blockWait); got != passed {
		t.Fatalf("without a table, node -> 198.18.10.5:81 = %s, want pass", got)
	}
	applyKinds(t, l, r)

	for _, tc := range []struct {
		name  string
		from  string
		proto string // tcp, udp, icmp
		src   string
		dst   string
		want  outcome
		seen  string // source address the server saw (prefix match)
	}{
		{"allow rule passes, masqueraded", l.node, "tcp", "", "198.18.10.5:80", passed, "203.0.113.32:"},
		{"port range", l.node, "tcp", "", "198.18.10.5:8050", passed, "203.0.113.32:"},
		{"other port: default deny", l.node, "tcp", "", "198.18.10.5:81", blocked, ""},
		{"deny collection before allow: tcp reset", l.node, "tcp", "", "198.18.20.5:80", refused, ""},
		{"deny rule any destination port 23", l.node, "tcp", "", "198.18.10.5:23", refused, ""},
		{"udp rule", l.node, "udp", "", "198.18.10.53:53", passed, "203.0.113.32:"},
		{"tcp of a udp+tcp rule", l.node, "tcp", "", "198.18.10.53:53", passed, "203.0.113.32:"},
		{"udp to a tcp-only allow: default deny", l.node, "udp", "", "198.18.10.5:80", blocked, ""},
		{"udp deny rule drops", l.node, "udp", "", "198.18.20.5:80", blocked, ""},
		{"icmp rule", l.node, "icmp", "", "198.18.10.5", passed, ""},
		{"icmp deny rule", l.node, "icmp", "", "198.18.20.5", blocked, ""},
		{"icmp from outside: default deny", l.inet, "icmp", "", "10.42.1.10", blocked, ""},
		{"ipv6 allow, masqueraded", l.node, "tcp", "", "[2001:db8:ac:10::5]:443", passed, "[2001:db8:cafe::32]:"},
		{"ipv6 other port", l.node, "tcp", "", "[2001:db8:ac:10::5]:444", blocked, ""},
		{"ipv6 deny rule", l.node, "tcp", "", "[2001:db8:ac:20::5]:80", refused, ""},
		{"ipv6 icmp rule", l.node, "icmp", "", "2001:db8:ac:10::5", passed, ""},
		{"dnat keeps the client's address", l.inet, "tcp", "", "203.0.113.32:8080", passed, "203.0.113.10:"},
		{"dnat second port", l.inet, "tcp", "", "203.0.113.32:8081", passed, "203.0.113.10:"},
		{"dnat udp", l.inet, "udp", "", "203.0.113.32:8080", passed, "203.0.113.10:"},
		{"dnat ipv6", l.inet, "tcp", "", "[2001:db8:cafe::32]:8080", passed, "[2001:db8:cafe::10]:"},
		{"dnat from an authorized source", l.inet, "tcp", "198.51.100.7", "203.0.113.32:6443", passed, "198.51.100.7:"},
		{"dnat from another source", l.inet, "tcp", "203.0.113.10", "203.0.113.32:6443", blocked, ""},
		{"inbound to the cluster: default deny", l.inet, "tcp", "", "10.42.1.10:80", blocked, ""},
		{"input: dns to the firewall from inside", l.node, "udp", "", "10.42.1.1:53", refused, ""},
		{"input: other port to the firewall", l.node, "tcp", "", "10.42.1.1:22", blocked, ""},
		{"input: public ip from outside", l.inet, "tcp", "", "203.0.113.32:22", blocked, ""},
		{"input: ping the firewall", l.inet, "icmp", "", "203.0.113.32", passed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got outcome
			var seen string
			switch tc.proto {
			case "tcp":
				var src netip.Addr
				if tc.src != "" {
					src = netip.MustParseAddr(tc.src)
				}
				got, seen = dialTCPFrom(t, tc.from, src, ap(tc.dst), blockWait)
			case "udp":
				got, seen = udpProbe(t, tc.from, ap(tc.dst), blockWait)
			case "icmp":
				got = ping(t, tc.from, netip.MustParseAddr(tc.dst), blockWait)
			}
			if got != tc.want {
				t.Fatalf("%s %s -> %s: %s, want %s", tc.proto, tc.from, tc.dst, got, tc.want)
			}
			if tc.seen != "" && !strings.HasPrefix(seen, tc.seen) {
				t.Fatalf("server saw %q, want %s...", seen, tc.seen)
			}
		})
	}

	st, err := r.Show()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, c := range st.Counters() {
		counts[c.Tag] = c.Packets
	}
	// Counters (one object dump, what the daemon's rule hits read) agrees
	// with Show.
	cs, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	read := map[string]uint64{}
	for _, c := range cs {
		read[c.Tag] = c.Packets
	}
	for _, tag := range []string{"cw:A:2", "cw:A:3", "cw:A:4", "cw:D:0", "cw:D:1", "cw:N:0", "cw:N:1", "cw:N:2", "cw:D:default", "cw:D:input"} {
		if counts[tag] == 0 {
			t.Errorf("counter %s is 0 after traffic that hits it (%v)", tag, counts)
		}
		if read[tag] != counts[tag] {
			t.Errorf("Counters() has %s = %d, Show %d (%v)", tag, read[tag], counts[tag], cs)
		}
	}
	// CountersOf (a request per counter, by name) reads the same, and
	// leaves out the counters the table does not have...
	objs, err := r.listObjects(r.table(), nftables.ObjTypeCounter)
	if err != nil {
		t.Fatal(err)
	}
	var tags []LogTag
	for name := range objs {
		if tag, err := ParseLogTag(name); err == nil {
			tags = append(tags, tag)
		}
	}
	// ... in more than one datagram of requests (512 each), among 1,000
	// names the table does not have.
	for i := range 1000 {
		tags = append(tags, LogTag{Kind: LogAllow, Index: 1000 + i, Gen: 7})
	}
	slices.Reverse(tags)
	byName, err := r.CountersOf(tags)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) < 10 || !reflect.DeepEqual(byName, cs) {
		t.Errorf("CountersOf = %v\nCounters = %v", byName, cs)
	}
}

// TestKernelFQDN: a destinationFqdns rule denies until the DNS proxy adds
// the resolved address, and a re-apply keeps the address.
func TestKernelFQDN(t *testing.T) {
	l := newLab(t)
	startServers(t, l)
	r := l.runner()
	rs := applyKinds(t, l, r)
	ntp := ap("198.18.10.123:123")
	if got, _ := udpProbe(t, l.node, ntp, blockWait); got != blocked {
		t.Fatalf("before resolution: %s, want blocked", got)
	}
	if err := r.AddFQDNAddrs("ntp.example.org", []netip.Addr{netip.MustParseAddr("198.18.10.123"), netip.MustParseAddr("2001:db8:ac:10::123")}, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, _ := udpProbe(t, l.node, ntp, blockWait); got != passed {
		t.Fatalf("after resolution: %s, want pass", got)
	}
	// Adding again refreshes (no error for elements that exist), also when
	// an answer holds an address twice (found by TestKernelDifferential:
	// the transaction deleted it twice and failed).
	if err := r.AddFQDNAddrs("NTP.example.org.", []netip.Addr{netip.MustParseAddr("198.18.10.123"), netip.MustParseAddr("::ffff:198.18.10.123")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if got, _ := udpProbe(t, l.node, ntp, blockWait); got != passed {
		t.Fatalf("after re-apply: %s, want pass", got)
	}
	st, err := r.Show()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Sets {
		if n := stripHash(s.Name); n == "fqdn_5_v4" && s.Elements != 1 || n == "fqdn_5_v6" && s.Elements != 1 {
			t.Errorf("set %s has %d elements, want 1", s.Name, s.Elements)
		}
	}
	// Another name of no rule: nothing to do, no error.
	if err := r.AddFQDNAddrs("unknown.example.org", []netip.Addr{netip.MustParseAddr("198.18.10.5")}, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestKernelDNATFQDN: a DNAT rule with translatedFqdn does not translate
// (the flow meets the input chain's drop) until the name has an address;
// then it translates to the lowest one (the matcher's choice); a re-apply
// keeps it, and a lower address learned later takes over.
func TestKernelDNATFQDN(t *testing.T) {
	l := newLab(t)
	startServers(t, l)
	addr(t, l.node, "eth0", "10.42.1.11/24")
	serve(t, l.node, ap("10.42.1.11:80"))
	r := l.runner()
	rs := applyKinds(t, l, r)
	web := ap("203.0.113.32:8082")
	if got, _ := dialTCP(t, l.inet, web, blockWait); got != blocked {
		t.Fatalf("before resolution: %s, want blocked", got)
	}
	if err := r.AddFQDNAddrs("web.lab.example", []netip.Addr{netip.MustParseAddr("10.42.1.11"), netip.MustParseAddr("2001:db8:42:1::10")}, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, seen := dialTCP(t, l.inet, web, blockWait); got != passed || !strings.HasPrefix(seen, "203.0.113.10:") {
		t.Fatalf("after resolution: %s (server saw %q), want pass, client address kept", got, seen)
	}
	if err := r.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if got, _ := dialTCP(t, l.inet, web, blockWait); got != passed {
		t.Fatalf("after re-apply: %s, want pass", got)
	}
	// 10.42.1.10 is lower: new flows go there (the server answers with the
	// client's address either way; the node's two servers tell by their
	// listen address only through conntrack, so ask the kernel's map).
	if err := r.AddFQDNAddrs("web.lab.example", []netip.Addr{netip.MustParseAddr("10.42.1.10")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(l.fwFD))
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.GetSetByName(&nftables.Table{Name: DefaultTable, Family: nftables.TableFamilyINet}, setNamed(rs, "dnat_fqdn_3_v4").Name)
	if err != nil {
		t.Fatal(err)
	}
	els, err := c.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	if len(els) != 1 || netip.AddrFrom4([4]byte(els[0].Val)) != netip.MustParseAddr("10.42.1.10") {
		t.Fatalf("map elements %+v, want 203.0.113.32 : 10.42.1.10", els)
	}
	if got, _ := dialTCP(t, l.inet, web, blockWait); got != passed {
		t.Fatalf("after a lower address: %s, want pass", got)
	}
}

// TestKernelReloadKeepsFlows re-applies (alternating two policies that
// both allow the flows) in a loop while an established TCP connection
// exchanges messages and new connections are opened: none may fail.
func TestKernelReloadKeepsFlows(t *testing.T) {
	a, b := twoPolicies(t, 0)
	reloadLoop(t, a, b, 4*time.Second, 10)
}

// TestKernelReload10kKeepsFlows is the same with 10,000 more rules in both
// policies: each apply replaces a table of some 20,000 rules.
func TestKernelReload10kKeepsFlows(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	a, b := twoPolicies(t, 10000)
	reloadLoop(t, a, b, 10*time.Second, 3)
}

// twoPolicies compiles testdata/kinds.yaml (A) and the same with one more
// Deny rule (B), each followed by extra generated rules.
func twoPolicies(t *testing.T, extra int) (*Ruleset, *Ruleset) {
	data, err := os.ReadFile("testdata/kinds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bsrc := strings.Replace(string(data), "          - name: no-telnet", `          - name: no-smtp
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: ['*']
            destinationPorts: ['25']
          - name: no-telnet`, 1)
	var out []*Ruleset
	for _, src := range []string{string(data), bsrc} {
		p, err := loadPolicyBytes("kinds.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		if extra > 0 {
			p.Groups = append(p.Groups, bigPolicy(extra, 1).Groups...)
		}
		rs, err := compilePolicy(p, labConfig())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rs)
	}
	if out[0].String() == out[1].String() {
		t.Fatal("the two policies compile alike")
	}
	return out[0], out[1]
}

func reloadLoop(t *testing.T, a, b *Ruleset, d time.Duration, minApplies int64) {
	l := newLab(t)
	startServers(t, l)
	r := l.runner()
	if err := r.Apply(a); err != nil {
		t.Fatal(err)
	}
	conn := dialKeep(t, l.node, ap("198.18.10.5:80"))
	defer conn.Close()

	stop := make(chan struct{})
	var (
		applies  atomic.Int64
		slowest  atomic.Int64
		wg       sync.WaitGroup
		applyErr atomic.Value
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			rs := a
			if i%2 == 1 {
				rs = b
			}
			start := time.Now()
			if err := r.Apply(rs); err != nil {
				applyErr.Store(err)
				return
			}
			if el := int64(time.Since(start)); el > slowest.Load() {
				slowest.Store(el)
			}
			applies.Add(1)
		}
	}()
	halt := func() {
		close(stop)
		wg.Wait()
	}
	deadline := time.Now().Add(d)
	msgs, fresh, denied := 0, 0, 0
	for time.Now().Before(deadline) {
		if err := conn.echo(time.Second); err != nil {
			halt()
			t.Fatalf("established connection broke after %d messages and %d applies: %v", msgs, applies.Load(), err)
		}
		msgs++
		// New connections, as many as fit: each must get through with its
		// first SYN (a retransmission means a packet was lost).
		for k := 0; k < 5; k++ {
			retrans, err := dialSYNs(t, l.node, ap("198.18.10.5:443"))
			if err != nil || retrans != 0 {
				halt()
				t.Fatalf("new allowed connection %d during applies: err %v, %d retransmissions", fresh, err, retrans)
			}
			fresh++
		}
		if msgs%20 == 0 {
			if got, _ := dialTCP(t, l.node, ap("198.18.10.5:81"), 300*time.Millisecond); got != blocked {
				halt()
				t.Fatalf("denied connection during applies: %s", got)
			}
			denied++
		}
		time.Sleep(2 * time.Millisecond)
	}
	halt()
	if err, _ := applyErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	if applies.Load() < minApplies {
		t.Fatalf("only %d applies ran", applies.Load())
	}
	t.Logf("%d applies (slowest %v) while %d messages crossed one connection, %d new connections passed with their first SYN and %d were denied: no loss",
		applies.Load(), time.Duration(slowest.Load()), msgs, fresh, denied)
}

// TestHelperProcessApply is not a test: TestKernelFailClosed runs the test
// binary with CW_NFT_HELPER_NETNS set, and this applies the policy in that
// namespace and exits, as a daemon that crashes would.
func TestHelperProcessApply(t *testing.T) {
	ns := os.Getenv("CW_NFT_HELPER_NETNS")
	if ns == "" {
		t.Skip("helper process for TestKernelFailClosed")
	}
	f, err := OpenNetNS(ns)
	if err != nil {
		os.Exit(2)
	}
	rs, err := compilePolicy(loadPolicy(t, "testdata/kinds.yaml"), labConfig())
	if err != nil {
		os.Exit(3)
	}
	if err := NewNetlinkRunner(NetlinkOptions{NetNSFd: int(f.Fd())}).Apply(rs); err != nil {
		os.Exit(4)
	}
	os.Exit(0) // no cleanup, no flush: the process is gone
}

// TestKernelFailClosed: a process applies the ruleset and exits; the rules
// stay in the kernel and keep denying (and allowing) without it.
func TestKernelFailClosed(t *testing.T) {
	l := newLab(t)
	startServers(t, l)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessApply$")
	cmd.Env = append(os.Environ(), "CW_NFT_HELPER_NETNS="+l.fw)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	st, err := l.runner().Show()
	if err != nil {
		t.Fatal(err)
	}
	fwd := st.Chain("forward")
	if !st.Present || fwd == nil || len(fwd.Rules) == 0 || fwd.Rules[len(fwd.Rules)-1].Text != "drop" {
		t.Fatalf("after the applying process exited the table is gone: %+v", st)
	}
	if got, _ := dialTCP(t, l.node, ap("198.18.10.5:81"), blockWait); got != blocked {
		t.Fatalf("denied flow after the process exited: %s, want blocked", got)
	}
	if got, _ := dialTCP(t, l.inet, ap("10.42.1.10:80"), blockWait); got != blocked {
		t.Fatalf("inbound after the process exited: %s, want blocked", got)
	}
	if got, _ := dialTCP(t, l.node, ap("198.18.10.5:80"), blockWait); got != passed {
		t.Fatalf("allowed flow after the process exited: %s, want pass", got)
	}
}

// TestKernelFlushOnlyOurs: Flush removes clusterwall's table and leaves
// another table alone; it is idempotent.
func TestKernelFlushOnlyOurs(t *testing.T) {
	l := newLab(t)
	startServers(t, l)
	r := l.runner()
	applyKinds(t, l, r)
	c, err := nftables.New(nftables.WithNetNSFd(l.fwFD))
	if err != nil {
		t.Fatal(err)
	}
	other := c.AddTable(&nftables.Table{Name: "other", Family: nftables.TableFamilyINet})
	c.AddChain(&nftables.Chain{Name: "keep", Table: other})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range tables {
		names = append(names, tb.Name)
	}
	if strings.Join(names, ",") != "other" {
		t.Fatalf("tables after flush: %v, want [other]", names)
	}
	if st, err := r.Show(); err != nil || st.Present {
		t.Fatalf("show after flush: %+v %v", st, err)
	}
	if err := r.Flush(); err != nil {
		t.Fatalf("second flush: %v", err)
	}
	// Without the table nothing filters: the lab forwards again.
	if got, _ := dialTCP(t, l.node, ap("198.18.10.5:81"), blockWait); got != passed {
		t.Fatalf("after flush: %s, want pass", got)
	}
}

// TestKernelBadApplyKeepsOld: a ruleset the kernel rejects changes
// nothing; the error names the failing object.
func TestKernelBadApplyKeepsOld(t *testing.T) {
	l := newLab(t)
	startServers(t, l)
	r := l.runner()
	good := applyKinds(t, l, r)
	bad, err := compilePolicy(loadPolicy(t, "../../examples/aks-egress.yaml"), labConfig())
	if err != nil {
		t.Fatal(err)
	}
	// A DNAT statement in a filter chain: the kernel refuses the rule.
	fwd := bad.Chain("forward")
	fwd.Rules = append([]*Rule{{Stmts: []Stmt{DNAT{Addr: netip.MustParseAddr("10.42.1.10"), Port: 80}}}}, fwd.Rules...)
	err = r.Apply(bad)
	if err == nil {
		t.Fatal("the kernel accepted a DNAT in the forward filter chain")
	}
	if !strings.Contains(err.Error(), "add rule clusterwall forward") {
		t.Errorf("error does not name the rule: %v", err)
	}
	t.Logf("rejected as expected: %v", err)
	st, err := r.Show()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Chains) != len(good.Chains) || stateChainNamed(st, "rule_0_tcp") == nil || len(st.Sets) != len(good.Sets) {
		t.Fatalf("the table changed after a failed apply")
	}
	if got, _ := dialTCP(t, l.node, ap("198.18.10.5:80"), blockWait); got != passed {
		t.Fatalf("allowed flow after a failed apply: %s", got)
	}
	if got, _ := dialTCP(t, l.node, ap("198.18.10.5:81"), blockWait); got != blocked {
		t.Fatalf("denied flow after a failed apply: %s", got)
	}
}

package demo

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/clusterwall/clusterwall/internal/lab"
)

const sectionThreat = "threat intelligence (mode Deny, examples/threatintel feeds), spoofed SNI, FQDN network rules"

// threatChecks are the rows of issue 4: a domain and an address from the
// threat-intel feeds, a TLS SNI sent to another name's address, and NTP to
// ntp.ubuntu.com allowed only at the addresses the firewall's DNS proxy
// resolved for it.
func threatChecks() []Check {
	name := lab.MustLookup
	evil, ghcr, example, ntpName := name(lab.NameEvil), name(lab.NameGHCR), name(lab.NameExample), name(lab.NameNTP)
	node, node4 := lab.HostNode, lab.NodeV4
	none := netip.Addr{}
	ap := netip.AddrPortFrom
	return []Check{
		{Section: sectionThreat, Flow: "node → DNS evil.example.net A via the firewall (domain in the feed)", Expect: Denied, Rule: "threat intel Deny",
			run: resolve(node, evil.Name, "A", evil.V4), log: logFilter{src: node4, query: evil.Name, threat: true}},
		{Section: sectionThreat, Flow: "node → https://evil.example.net/ at 192.0.2.66 (curl --resolve; address in the feed)", Expect: Denied, Rule: "threat intel Deny",
			run: curl(node, none, "https://"+evil.Name+"/", httpWant{body: evil.Name}, "-4", "--resolve", evil.Name+":443:"+evil.V4.String()),
			log: logFilter{src: node4, dst: evil.V4, port: 443, proto: "TCP", threat: true}},
		{Section: sectionThreat, Flow: "node → TLS SNI ghcr.io sent to example.org's 192.0.2.14 (curl --connect-to)", Expect: Denied,
			Rule: "aksfwarweb/website", Reason: "spoofed",
			run: curl(node, none, "https://"+ghcr.Name+"/", httpWant{body: ghcr.Name}, "-4", "--connect-to", ghcr.Name+":443:"+example.V4.String()+":443"),
			log: logFilter{src: node4, dst: example.V4, port: 443, proto: "TCP", fqdn: ghcr.Name}},
		{Section: sectionThreat, Flow: "node → 192.0.2.14:123/udp (NTP to an address ntp.ubuntu.com never resolved to)", Expect: Denied, Rule: "default",
			run: ntpAt(node, ap(example.V4, 123)), log: logFilter{src: node4, dst: example.V4, port: 123, proto: "UDP"}},
		{Section: sectionThreat, Flow: "node → NTP: unresolved address denied, dig ntp.ubuntu.com via the firewall, then its address allowed", Expect: Allowed, Rule: "aksfwnr/time",
			run: ntpAfterDNS(node, ntpName.Name, ap(example.V4, 123), ntpName.V4), log: logFilter{src: node4, dst: ntpName.V4, port: 123, proto: "UDP"}},
	}
}

// ntpAt sends one NTP client request from host to dst.
func ntpAt(host string, dst netip.AddrPort) probeFunc {
	return func(ctx context.Context, e *env) (observation, error) {
		stratum, err := ntpQuery(ctx, e.lab.DialContext(host), dst, e.timeout)
		if err != nil {
			return denied(fmt.Sprintf("%s: %v", dst, err)), nil
		}
		return allowed(fmt.Sprintf("NTP answer from %s, stratum %d", dst, stratum)), nil
	}
}

// ntpAfterDNS shows that an FQDN network rule allows exactly the
// addresses the firewall resolved for its name: NTP to other (an address
// the name does not have) must be denied; then host resolves name through
// the firewall's DNS proxy (which puts the answer in the kernel's set
// before it answers) and NTP to the answer must get through. The row is
// Allowed only when all three steps behave.
func ntpAfterDNS(host, name string, other netip.AddrPort, want netip.Addr) probeFunc {
	return func(ctx context.Context, e *env) (observation, error) {
		var steps []string
		if _, err := ntpQuery(ctx, e.lab.DialContext(host), other, e.timeout); err == nil {
			return wrong(fmt.Sprintf("NTP to %s (not an address of %s) got an answer", other, name)), nil
		}
		steps = append(steps, fmt.Sprintf("1) %s denied", other))
		addrs, fail, err := dig(ctx, e, host, name, "A")
		if err != nil {
			return observation{}, err
		}
		if fail != "" {
			return denied(strings.Join(append(steps, "2) "+fail), "; ")), nil
		}
		if addrs[0] != want {
			return wrong(fmt.Sprintf("%s A = %s (want %s)", name, addrs[0], want)), nil
		}
		steps = append(steps, fmt.Sprintf("2) %s = %s", name, addrs[0]))
		dst := netip.AddrPortFrom(addrs[0], 123)
		stratum, err := ntpQuery(ctx, e.lab.DialContext(host), dst, e.timeout)
		if err != nil {
			return denied(strings.Join(append(steps, fmt.Sprintf("3) %s: %v", dst, err)), "; ")), nil
		}
		steps = append(steps, fmt.Sprintf("3) NTP answer from %s, stratum %d", dst, stratum))
		return allowed(strings.Join(steps, "; ")), nil
	}
}

package demo

import (
	"context"
	"net/netip"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// probeFunc runs one flow with a real client and reports what it saw; an
// error means the client could not be run at all (not a denial).
type probeFunc func(ctx context.Context, e *env) (observation, error)

// Check is one row of the demo: a flow, what the seed's policy says about
// it, and the rule expected to decide it.
type Check struct {
	Section string
	Flow    string
	Expect  Outcome
	// Rule is the deciding rule the decision log must name:
	// "collection/rule", "default" for the default deny, "dns NOERROR" for
	// a DNS query the firewall's DNS proxy answered, or "" when the flow
	// has no decision line (other flows to the firewall itself).
	Rule string
	// Reason, when set, must be part of the decision line's ActionReason
	// (e.g. "spoofed" for a refused spoofed SNI).
	Reason string
	// Pending, when set, says which missing component enforces this flow:
	// the row is run and shown but does not count (no seed row needs it
	// since the L7 proxy and the DNS proxy run in the daemon).
	Pending string

	run probeFunc
	log logFilter
}

const (
	sectionEgress  = "egress: cluster (node 10.42.1.10, 2001:db8:42:1::10) → internet"
	sectionInbound = "inbound: internet (client) → firewall public IP 203.0.113.32 → cluster"
	sectionAPI     = "API server lock-down (--api-server-authorized-ip-ranges 198.51.100.7/32)"
)

// inputDrop is the ActionReason part of the decision line of a packet to
// the firewall itself that no DNAT rule took and no service of the
// firewall accepts (its input chain drops and logs it).
const inputDrop = "input chain"

// SeedChecks are the rows for examples/aks-egress.yaml, the seed's policy.
func SeedChecks() []Check {
	name := lab.MustLookup
	ghcr, storage, mcr, example := name(lab.NameGHCR), name(lab.NameStorage), name("mcr.microsoft.com"), name(lab.NameExample)
	ntpName, tunnel, nonazure := name(lab.NameNTP), name(lab.NameAzureCloud), name(lab.NameNonAzure)
	node4, node6 := lab.NodeV4, lab.NodeV6
	auth4, unauth4, auth6 := lab.ClientAuthorizedV4, lab.ClientUnauthorizedV4, lab.ClientAuthorizedV6
	pub4, pub6 := lab.FWPublicV4, lab.FWPublicV6
	ap := netip.AddrPortFrom
	tcp := func(src, dst netip.Addr, port int) logFilter {
		return logFilter{src: src, dst: dst, port: port, proto: "TCP"}
	}
	udp := func(src, dst netip.Addr, port int) logFilter {
		return logFilter{src: src, dst: dst, port: port, proto: "UDP"}
	}
	https := func(src, dst netip.Addr, fqdn string) logFilter {
		f := tcp(src, dst, 443)
		f.fqdn = fqdn
		return f
	}
	httpName := func(src, dst netip.Addr, fqdn string) logFilter {
		f := tcp(src, dst, 80)
		f.fqdn = fqdn
		return f
	}
	node := lab.HostNode
	client := lab.HostClient
	none := netip.Addr{}

	return append([]Check{
		// Egress.
		{Section: sectionEgress, Flow: "node → DNS ghcr.io A via the firewall 10.42.2.4", Expect: Allowed, Rule: "dns NOERROR",
			run: resolve(node, ghcr.Name, "A", ghcr.V4), log: logFilter{src: node4, proto: "A", query: ghcr.Name}},
		{Section: sectionEgress, Flow: "node → DNS ghcr.io AAAA via the firewall 10.42.2.4", Expect: Allowed, Rule: "dns NOERROR",
			run: resolve(node, ghcr.Name, "AAAA", ghcr.V6), log: logFilter{src: node4, proto: "AAAA", query: ghcr.Name}},
		{Section: sectionEgress, Flow: "node → https://ghcr.io/", Expect: Allowed, Rule: "aksfwarweb/website",
			run: curl(node, none, "https://ghcr.io/", httpWant{body: ghcr.Name}, "-4"), log: https(node4, ghcr.V4, ghcr.Name)},
		{Section: sectionEgress, Flow: "node → https://ghcr.io/ over IPv6", Expect: Allowed, Rule: "aksfwarweb/website",
			run: curl(node, none, "https://ghcr.io/", httpWant{body: ghcr.Name}, "-6"), log: https(node6, ghcr.V6, ghcr.Name)},
		{Section: sectionEgress, Flow: "node → https://mystorage.blob.core.windows.net/", Expect: Allowed, Rule: "aksfwarweb/storage",
			run: curl(node, none, "https://"+storage.Name+"/", httpWant{body: storage.Name}, "-4"), log: https(node4, storage.V4, storage.Name)},
		{Section: sectionEgress, Flow: "node → https://mcr.microsoft.com/ (AKS FQDN tag)", Expect: Allowed, Rule: "aksfwar/fqdn",
			run: curl(node, none, "https://"+mcr.Name+"/", httpWant{body: mcr.Name}, "-4"), log: https(node4, mcr.V4, mcr.Name)},
		{Section: sectionEgress, Flow: "node → https://example.org/", Expect: Denied, Rule: "default",
			run: curl(node, none, "https://example.org/", httpWant{body: example.Name}, "-4"), log: https(node4, example.V4, example.Name)},
		{Section: sectionEgress, Flow: "node → http://mcr.microsoft.com/ (AKS FQDN tag, Http:80)", Expect: Allowed, Rule: "aksfwar/fqdn",
			run: curl(node, none, "http://"+mcr.Name+"/", httpWant{body: mcr.Name}, "-4"), log: httpName(node4, mcr.V4, mcr.Name)},
		{Section: sectionEgress, Flow: "node → http://ghcr.io/ (rule website is Https:443 only)", Expect: Denied, Rule: "default",
			run: curl(node, none, "http://ghcr.io/", httpWant{body: ghcr.Name}, "-4"), log: httpName(node4, ghcr.V4, ghcr.Name)},
		{Section: sectionEgress, Flow: "node → ntp.ubuntu.com:123/udp (NTP)", Expect: Allowed, Rule: "aksfwnr/time",
			run: ntp(node, ntpName.Name, "A", ntpName.V4), log: udp(node4, ntpName.V4, 123)},
		{Section: sectionEgress, Flow: "node → ntp.ubuntu.com:123/udp (NTP) over IPv6", Expect: Allowed, Rule: "aksfwnr/time",
			run: ntp(node, ntpName.Name, "AAAA", ntpName.V6), log: udp(node6, ntpName.V6, 123)},
		{Section: sectionEgress, Flow: "node → AzureCloud.eastus 198.18.10.5:9000/tcp", Expect: Allowed, Rule: "aksfwnr/apitcp",
			run: probe(node, none, "tcp", ap(tunnel.V4, 9000), tunnel.Name), log: tcp(node4, tunnel.V4, 9000)},
		{Section: sectionEgress, Flow: "node → AzureCloud.eastus [2001:db8:ac:10::5]:9000/tcp", Expect: Allowed, Rule: "aksfwnr/apitcp",
			run: probe(node, none, "tcp", ap(tunnel.V6, 9000), tunnel.Name), log: tcp(node6, tunnel.V6, 9000)},
		{Section: sectionEgress, Flow: "node → AzureCloud.eastus 198.18.10.5:1194/udp", Expect: Allowed, Rule: "aksfwnr/apiudp",
			run: probe(node, none, "udp", ap(tunnel.V4, 1194), "probe"), log: udp(node4, tunnel.V4, 1194)},
		{Section: sectionEgress, Flow: "node → AzureCloud.eastus 198.18.10.5:9001/tcp", Expect: Denied, Rule: "default",
			run: probe(node, none, "tcp", ap(tunnel.V4, 9001), ""), log: tcp(node4, tunnel.V4, 9001)},
		{Section: sectionEgress, Flow: "node → nonazure.example.net 192.0.2.99:9000/tcp", Expect: Denied, Rule: "default",
			run: probe(node, none, "tcp", ap(nonazure.V4, 9000), nonazure.Name), log: tcp(node4, nonazure.V4, 9000)},
		{Section: sectionEgress, Flow: "node → nonazure.example.net [2001:db8:192::99]:9000/tcp", Expect: Denied, Rule: "default",
			run: probe(node, none, "tcp", ap(nonazure.V6, 9000), nonazure.Name), log: tcp(node6, nonazure.V6, 9000)},
		{Section: sectionEgress, Flow: "node → ping ghcr.io 192.0.2.10 (ICMP)", Expect: Denied, Rule: "default",
			run: ping(node, ghcr.V4), log: logFilter{src: node4, dst: ghcr.V4, proto: "ICMP"}},

		// Inbound through DNAT.
		{Section: sectionInbound, Flow: "client 198.51.100.7 → http://203.0.113.32/ (store-front)", Expect: Allowed, Rule: "exampleset/inboundrule",
			run: curl(client, auth4, "http://203.0.113.32/", httpWant{body: "store-front", peer: auth4}), log: tcp(auth4, pub4, 80)},
		{Section: sectionInbound, Flow: "client 198.51.100.8 → http://203.0.113.32/ (store-front)", Expect: Allowed, Rule: "exampleset/inboundrule",
			run: curl(client, unauth4, "http://203.0.113.32/", httpWant{body: "store-front", peer: unauth4}), log: tcp(unauth4, pub4, 80)},
		{Section: sectionInbound, Flow: "client → 203.0.113.32:8080/tcp (nothing published)", Expect: Denied, Rule: "default", Reason: inputDrop,
			run: probe(client, auth4, "tcp", ap(pub4, 8080), ""), log: tcp(auth4, pub4, 8080)},
		{Section: sectionInbound, Flow: "client → http://10.42.1.100/ (direct)", Expect: Denied, Rule: "default",
			run: curl(client, auth4, "http://10.42.1.100/", httpWant{body: "store-front"}), log: tcp(auth4, lab.StoreV4, 80)},
		{Section: sectionInbound, Flow: "client → http://[2001:db8:42:1::100]/ (direct)", Expect: Denied, Rule: "default",
			run: curl(client, auth6, "http://[2001:db8:42:1::100]/", httpWant{body: "store-front"}), log: tcp(auth6, lab.StoreV6, 80)},
		{Section: sectionInbound, Flow: "client → http://[2001:db8:cafe::32]/ (DNAT is IPv4 only)", Expect: Denied, Rule: "default", Reason: inputDrop,
			run: curl(client, auth6, "http://[2001:db8:cafe::32]/", httpWant{body: "store-front"}), log: tcp(auth6, pub6, 80)},

		// The control plane's authorized IP ranges as a DNAT rule with sources.
		{Section: sectionAPI, Flow: "client 198.51.100.7 → https://203.0.113.32/ (api)", Expect: Allowed, Rule: "apiserver/authorized",
			run: curl(client, auth4, "https://203.0.113.32/", httpWant{body: "api", peer: auth4}), log: tcp(auth4, pub4, 443)},
		{Section: sectionAPI, Flow: "client 198.51.100.8 → https://203.0.113.32/ (api; dropped, no TLS)", Expect: Denied, Rule: "default", Reason: inputDrop,
			run: curl(client, unauth4, "https://203.0.113.32/", httpWant{body: "api"}), log: tcp(unauth4, pub4, 443)},
		{Section: sectionAPI, Flow: "client 2001:db8:c11e::7 → https://[2001:db8:cafe::32]/ (api; DNAT is IPv4 only)", Expect: Denied, Rule: "default", Reason: inputDrop,
			run: curl(client, auth6, "https://[2001:db8:cafe::32]/", httpWant{body: "api"}), log: tcp(auth6, pub6, 443)},
	}, append(threatChecks(), wafChecks()...)...) // threatintel.go, waf.go
}

// Outcome is a flow's fate.
type Outcome uint8

const (
	_ Outcome = iota
	Allowed
	Denied
)

func (o Outcome) String() string {
	switch o {
	case Allowed:
		return "allow"
	case Denied:
		return "deny"
	}
	return "?"
}

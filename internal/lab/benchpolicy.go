package lab

import (
	"fmt"
	"strings"
)

// BenchPolicy is bench/dataplane's policy of n network rules (the
// kernel's new-flow benchmark in internal/nft uses it too): n-1 that do not
// match the benchmark flows (TCP from 10.42.1.10 to the server, server4
// and server6, ports 5201 and 5202) — each differs in exactly one of destination, port, source or
// protocol, so that the classifier must look at every field — spread over
// Allow and Deny collections, and last the one rule that allows them.
func BenchPolicy(n int, server4, server6 string) []byte {
	server := fmt.Sprintf("%s, '%s'", server4, server6)
	var b strings.Builder
	b.WriteString("name: bench\nruleCollectionGroups:\n  - name: bench\n    priority: 200\n    ruleCollections:\n")
	const perCollection = 100
	for i := 0; i < n-1; i++ {
		if i%perCollection == 0 {
			action := "Allow"
			if (i/perCollection)%4 == 3 {
				action = "Deny"
			}
			fmt.Fprintf(&b, "      - name: c%03d\n        kind: Network\n        priority: %d\n        action: %s\n        rules:\n",
				i/perCollection, 100+i/perCollection, action)
		}
		proto, src, dst, ports := "TCP", "'*'", server, "'5201-5202'"
		switch i % 4 {
		case 0: // another destination
			dst = fmt.Sprintf("100.64.%d.%d, '2001:db8:100:%x::1'", i/256%256, i%256, i)
		case 1: // another port
			ports = fmt.Sprintf("'%d'", 10000+i)
		case 2: // another source
			src = fmt.Sprintf("10.99.%d.0/24, '2001:db8:99:%x::/64'", i/256%256, i)
		case 3: // another protocol
			proto = "UDP"
		}
		fmt.Fprintf(&b, "          - name: r%05d\n            protocols: [%s]\n            sourceAddresses: [%s]\n            destinationAddresses: [%s]\n            destinationPorts: [%s]\n",
			i, proto, src, dst, ports)
	}
	// Last: the collection with the lowest priority holds the one rule
	// that allows the benchmark flows.
	b.WriteString("      - name: last\n        kind: Network\n        priority: 65000\n        action: Allow\n        rules:\n" +
		"          - name: bench-allow\n            protocols: [TCP]\n" +
		"            sourceAddresses: [10.42.1.0/24, '2001:db8:42:1::/64']\n" +
		"            destinationAddresses: [" + server + "]\n" +
		"            destinationPorts: ['5201-5202']\n")
	return []byte(b.String())
}

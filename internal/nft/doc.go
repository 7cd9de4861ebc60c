// Package nft is clusterwall's kernel data plane: it compiles the policy's
// matcher into an nftables ruleset (Compile) and programs it through
// netlink with github.com/google/nftables (NetlinkRunner); nothing runs the
// nft command. A Recorder stands in for the kernel in unit tests.
//
// # The kernel is a compiled form of the matcher
//
// Compile reads only the matcher (internal/match): its normalised rules
// (Matcher.Rules, in its evaluation order: the log tags name rules by
// their index there), the TCP ports it sends to the L7 proxy
// (Matcher.SteeredPorts) and the firewall's own services (Matcher.Gateway,
// which must be Config.Gateway). The order of the chains below is the
// order match.Decide documents, so that what the kernel does with a new
// flow is what Decide answers for it; TestKernelDifferential checks that
// on the real kernel with thousands of random flows.
//
// # Ownership and atomicity
//
// clusterwall owns one table, `inet clusterwall` (both families, and the
// NAT chains too: inet NAT works on the kernels we run on), and Flush
// deletes that table only. The table is kernel state: when the daemon
// stops or crashes the rules stay and keep denying (fail closed) until
// Flush removes them.
//
// An apply switches the kernel from one ruleset to the next in a single
// netlink transaction (prepared by an earlier one), which the kernel
// commits all or nothing: packets see the old ruleset or the new one, a
// batch the kernel rejects leaves the old one in force, and flows allowed
// by both never see a drop (TestKernelReload10kKeepsFlows checks that no
// new connection loses its first SYN while a 10,000-rule policy is
// re-applied in a loop). Two kernel behaviours shape how:
//
//   - the elements of interval sets (rbtree, and pipapo too) become
//     visible to lookups only when the set's own commit step runs, at the
//     end of the transaction, after the new rules already are. Measured:
//     with rules and sets in one transaction, about one new connection in
//     three re-applies of a 10,000-rule policy lost its first SYN to the
//     default deny. So the regular chains and interval sets of the new
//     ruleset are created first, in a transaction of their own, under the
//     names of a free slot ("g1_" or "g2_" before the compiled name) that
//     nothing refers to yet.
//   - the kernel removes a deleted base chain's hook only while it works
//     through the commit, after the switch, and until then packets run the
//     chain's last rules against sets already gone (read from the kernel's
//     commit code, not separately measured). So the table and its base
//     chains are never deleted: the switch transaction flushes every rule,
//     adds the new ones, and deletes the old slot's chains and sets, the
//     limit object and the FQDN sets (hash sets, whose elements are
//     visible at the switch).
//
// The filter base chains have policy accept and end with an explicit drop
// rule: a base chain runs, empty, from the moment a batch creates it.
//
// google/nftables builds every message (Conn on a capturing dial, and
// expr.Marshal for the rules' expressions); the batch is sent on a
// netlink socket of our own asking for one acknowledgement instead of one
// per message, which is most of the time Conn.Flush takes for a large
// batch (batch.go, encode.go).
//
// # Chains
//
//	prerouting  (nat, dstnat: the first packet of every new flow)
//	            threat intelligence, mode Deny (see ThreatIntel)
//	            iifname <inside> tcp dport <steered ports> redirect to :<proxy>
//	                                                  (application rules' ports)
//	            threat intelligence, mode Alert
//	            DNAT rules in the matcher's order:
//	            iifname <outside> <family> daddr <public IP> <proto> dport <ports>
//	            [saddr <sources>] [daddr @dnat_fqdn_<i>_<v>] goto dnat_<i>;
//	            dnat_<i>: counter, log, dnat to <translated>:<port>, or, for a
//	            translatedFqdn, to the address the map holds for the public IP.
//	            Protocol Any means TCP and UDP.
//	input       (filter)  the firewall itself: established/related, loopback
//	            (the admin API), the gateway's services (match.Service: ICMP
//	            first, as neighbour discovery has no conntrack entry; DNS,
//	            the L7 proxy, services to the inside and to the internet),
//	            flows a DNAT rule translated to a local address; the rest is
//	            logged (limited) and dropped.
//	forward     (filter)
//	            ct state established,related accept   (the only rule most
//	                                                   packets meet)
//	            ct state invalid drop
//	            ct status dnat jump dnat_accept       (flows our DNAT rules
//	                                                   translated: accepted, as
//	                                                   Azure's implicit rule does)
//	            <family> <protocol> jump <classifier> (network rules, below)
//	            log "cw:D:default" (limited), drop    (default deny)
//	postrouting (nat, srcnat)  oifname <outside>: DNAT-ed flows keep their
//	            client address (accept); everything else is masqueraded, or
//	            SNAT-ed to the public IP of its family (SNATFixed).
//
// There is no output chain: the firewall's own traffic is not filtered.
// A new service of the firewall (an input rule) is added to
// match.GatewayConfig.Gateway, so that the matcher knows it too.
//
// # Network rules
//
// Network rules (Matcher.Rules(KindNetwork), in the matcher's order) are
// split by family and protocol (TCP, UDP, ICMP/ICMPv6) into entries, one
// per rule and family and protocol (a rule whose fields hold a few
// intervals becomes a few consecutive entries). For each family and
// protocol a classifier — a decision tree of interval verdict maps over
// source address, destination address and destination port, ending in
// short leaves — finds the first matching rule without testing the rules
// in turn; classify.go describes it. The matched rule's decision is
// `counter log prefix "cw:A:<i>" group 100 accept` for Allow and, for
// Deny, `... reject with tcp reset` for TCP (the client fails at once and
// sees a policy decision rather than a timeout) or `... drop` otherwise.
// Each rule's counter and log are tagged by a comment (userdata) naming the
// rule, "cw:A:<i> group/collection/rule", so that counters map back to the
// policy (State.Counters sums the copies of a rule).
//
// Only new flows reach the classifier (established packets are accepted by
// the first rule), so the number of rules costs nothing per packet of an
// established flow, and little per new flow: for the 10,000-rule policy of
// the tests the longest path through the classifier is 76 rules (with a
// handful of map lookups), instead of the 27,000 a linear chain would
// test.
//
// Rules with destinationFqdns match their destination in named sets,
// fqdn_<i>_v4 and fqdn_<i>_v6 (FQDNSetName; i is the network rule index),
// with per-element timeouts, that the DNS proxy fills through
// Runner.AddFQDNAddrs; Ruleset.FQDNSets maps a name to its sets. DNAT
// rules with translatedFqdn translate through maps, dnat_fqdn_<i>_v4 and
// _v6 (DNATMapName), from their public IPs to the lowest address the name
// has (match.TranslateFQDN), that the same calls fill (Ruleset.DNATMaps).
// The runner remembers the addresses until they expire, so a re-apply
// keeps them. Application rules are not compiled here: they need the L7
// proxy, to which the kernel redirects their ports.
//
// # Decision log
//
// Every new flow's decision is sent to NFLOG group Config.LogGroup (100)
// with a prefix the daemon turns into a JSON decision line: "cw:A:<i>",
// "cw:D:<i>" (network rule i), "cw:N:<i>" (DNAT rule i), "cw:D:default",
// "cw:D:input" (see LogTag and ParseLogTag), each followed by
// ":g<generation>" when Config.LogGeneration is set (the daemon sets a new
// one per apply, so a packet logged by one ruleset is never mapped to a
// rule of the next). The flows an attacker can
// generate at will — default deny, input drops and DNAT — are logged
// through a shared limit object (cw_log, Config.LogRate/LogBurst); flows
// that a rule matched are logged without a kernel limit (a kernel limit
// would cost a second rule per rule), so the log reader must rate-limit
// what it writes.
package nft

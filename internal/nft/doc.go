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
// re-applied in a loop).
//
// Only the difference is sent. Every chain but the base chains, and every
// set, is named after its content (nameByContent: a readable name and 16
// hex digits of a hash of its rules or elements, in which the chains and
// sets it refers to appear under their own content names), and named
// counters and the limit object are named after what they count or
// limit; so a kernel object with a name the new ruleset uses already
// holds what the new ruleset wants there. The runner remembers what the
// table holds (checked before each apply against the kernel's table
// handle and count of chains, sets and objects; listed again after a
// failure or an outside change) and sends:
//
//   - stage 1: the objects, regular chains (with all their rules) and sets
//     (with their elements) the table does not have yet. Nothing refers to
//     them yet, so committing them changes nothing for packets. (A large
//     apply's rule counters go ahead of it, while the ruleset compiles:
//     prestage.go; a big stage 1 is two transactions: applysplit.go.) This is a
//     transaction of its own because the elements of interval sets (rbtree,
//     and pipapo too) become visible to lookups only when the set's own
//     commit step runs, at the end of the transaction, after the new rules
//     already are. Measured: with rules and sets in one transaction, about
//     one new connection in three re-applies of a 10,000-rule policy lost
//     its first SYN to the default deny.
//   - stage 2, the switch: the base chains whose rules change are flushed
//     and given their new rules, and every chain, set and object the new
//     ruleset does not have is removed. The table and its base chains are
//     never deleted: the kernel removes a deleted base chain's hook only
//     while it works through the commit, after the switch, and until then
//     packets run the chain's last rules against sets already gone (read
//     from the kernel's commit code, not separately measured).
//
// Re-applying the running ruleset sends nothing; a policy that changes one
// rule sends the chains and maps on the path from the classifier's root to
// that rule's leaves (TestNamesByContent; TestKernelIncrementalEqualsFull
// checks that the table an incremental apply leaves is the one a fresh
// apply makes). A chain is never changed once created (only base chains
// are rewritten), which is what makes its name a promise about its content;
// an object changed behind clusterwall's back under its own name is not
// noticed (flush the table to start afresh).
//
// The filter base chains have policy accept and end with an explicit drop
// rule: a base chain runs, empty, from the moment a batch creates it.
//
// google/nftables builds every message (Conn on a capturing dial, and
// expr.Marshal for the rules' expressions); the batch is sent on a
// netlink socket of our own asking for one acknowledgement instead of one
// per message, which is most of the time Conn.Flush takes for a large
// batch (batch.go, encode.go). That socket is kept between transactions:
// closing an nf_tables socket makes the kernel wait for the release of
// everything the namespace's last transactions deleted (rawnl.go).
//
// # Chains
//
//	prerouting  (nat, dstnat: the first packet of every new flow; none
//	            when it would be empty: a nat chain, even empty, registers
//	            the kernel's NAT hooks, which give every new flow a null
//	            binding)
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
// in turn; classify.go describes it. A map whose elements are single values
// (or short ranges that expand into no more elements) is a plain verdict
// map of those values instead (SetVMapHash), which the kernel makes a hash
// table: one hashed lookup where an interval map is a binary search. The matched rule's decision is
// `counter name "cw:A:<i>" log prefix "cw:A:<i>" group 100 accept` for
// Allow and, for Deny, `... reject with tcp reset` for TCP (the client
// fails at once and sees a policy decision rather than a timeout) or
// `... drop` otherwise. With Config.LimitRuleLogs (the daemon's
// log.ratePerSecond > 0) the log is behind the shared limit, and since a
// limit that is over ends its rule, the decision is a chain of its own,
// rule_<i>_<hash>, shared by all the rule's leaves, which `goto` it:
// `counter name "cw:A:<i>" limit name "cw_log_…" log prefix "cw:A:<i>"
// group 100`, then `accept` (or the reject, or drop) in the next rule; the
// counter comes before the limit and counts every flow. A leaf of one rule
// whose matches the kernel compares with one != (whole bytes: prefixes on
// byte boundaries, single addresses and ports) holds the decision itself
// instead, in one chain where the goto took two: `ip saddr . th dport !=
// 10.1.2.0/24 . 443 return`, then the decision's two rules
// (compiler.fusedLeaf). When every child of a dispatch that is a hash map
// is such a rule, each comparing the same fields with exact values or
// prefixes of the same lengths, the dispatch folds those fields into its
// key instead, `ip daddr . ip saddr & 255.255.255.0 . th dport vmap
// @map`, whose elements go to the rules' decision chains (classifier.foldKey;
// the flat policies are made of them): one lookup per new flow, and per
// rule a decision chain of two rules where a leaf took three and twice the
// expressions. A flow has one value of the dispatched field, so at most one
// element can match it. The
// counter is a named counter object, one per
// policy rule (its log tag), shared by every classifier leaf that holds a
// copy of the rule, so that Counters reads a rule's count in one object
// dump, and a chain kept by an apply keeps counting. Each rule is also
// tagged by a comment (userdata) naming the rule, "cw:A:<i>
// group/collection/rule", so that counters map back to the policy.
//
// Only new flows reach the classifier (established packets are accepted by
// the first rule), so the number of rules costs nothing per packet of an
// established flow, and little per new flow: for the 10,000-rule policy of
// the tests the longest path through the classifier is 76 rules (with a
// handful of map lookups), instead of the 27,000 a linear chain would
// test.
//
// Rules with destinationFqdns match their destination in named sets,
// fqdn_<i>_v4 and fqdn_<i>_v6 (FQDNSetName; i is the network rule index;
// like every set, the kernel's name ends in a content hash),
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
// ":g<generation>" when Config.LogGeneration or Config.LogGenerations is
// set (the daemon gives a rule the generation of the apply that installed
// it as it is, so a packet logged by one ruleset is never mapped to
// another rule of the next, while a rule no apply changed keeps its
// prefix, and with it its chains). The flows an attacker can
// generate at will — default deny, input drops and DNAT — are logged
// through a shared limit object (cw_log_<rate>_<burst>,
// Config.LogRate/LogBurst), and so are the flows a rule matched with
// Config.LimitRuleLogs (see Network rules); without it every flow a rule
// matched is logged, and the log reader must rate-limit what it writes.
// Threat intelligence logs through the limit too, from a decision chain
// of its own (threat_intel_decision: the drop must not be in the limited
// rule).
package nft

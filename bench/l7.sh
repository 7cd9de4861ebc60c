#!/usr/bin/env bash
# L7 proxy benchmark (docs/benchmarks.md, "L7 proxy vs HAProxy and Squid"):
# new TLS connections per second (full handshake, small response) and the
# throughput of one large download, from the lab's node to an HTTPS server
# in the lab internet, through clusterwall's transparent SNI proxy, HAProxy
# (TCP mode, req.ssl_sni allow-list) and Squid (ssl_bump peek/splice by
# SNI), each the target of the same kernel redirect in the firewall
# namespace — interleaved round by round in one run, in the lab cwb7
# (refuses to start if it exists; removed at the end).
#
# Usage (as root, from anywhere): bench/l7.sh [flags of bench/l7]
#   e.g. bench/l7.sh -rounds 5 -conn-time 3s -clients 8 -bulk-mb 1024
#   A/B of two builds: go build -o bench-l7 ./bench/l7, then
#   ./bench-l7 -exe OLD -exe-b NEW -only clusterwall,clusterwall-b,haproxy ...
#
# Resolving the connection rate (docs/benchmarks.md, "Branch l7rate"):
#   -aa             A/A: clusterwall against itself (clusterwall-b from the
#                   same binary, or -exe-b) and HAProxy against a second
#                   HAProxy (set-up haproxy-b): the method's own noise
#   -pin-proxy CPUS pin every thread of the measured proxy (each set-up
#                   alike) before each measurement, e.g. 1
#   -pin-bench CPUS pin the clients and the server, e.g. 0
#   -warmup D       connection loops run, uncounted, before each rate
#                   measurement (a restarted daemon's first connections)
#   -prio           the benchmark's and the proxy's autogroups at nice -19
#                   (bench/l7prio.sh built in), on a shared machine
#   -order balanced the set-ups of each round in a Williams design (each in
#                   every position and right after every other one equally
#                   often) instead of the default rotation
#   The report adds, per pair, the median of the per-round ratios with its
#   95 % confidence interval, quartiles, range and rounds above 1, and the
#   per-round ratios; e.g.
#   bench/l7.sh -aa -rounds 20 -conn-time 2s -warmup 300ms -bulk-mb 16 -prio
. "$(dirname "$0")/lib.sh"

bench_require_root
bench_install haproxy squid-openssl
bench_run l7 "$@"

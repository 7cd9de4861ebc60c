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
. "$(dirname "$0")/lib.sh"

bench_require_root
bench_install haproxy squid-openssl
bench_run l7 "$@"

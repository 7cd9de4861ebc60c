#!/usr/bin/env bash
# DNS proxy benchmark (docs/benchmarks.md, "DNS proxy vs dnsmasq"): cached
# answers per second from clusterwall's DNS proxy (query log off, on, and on
# at the daemon's 1,000 lines/s) and from dnsmasq (query log off and on), all
# on the firewall's private IP with the same upstream, measured with dnsperf
# from the lab's node — interleaved round by round in one run, in the lab
# cwb8 (refuses to start if it exists; removed at the end).
#
# Usage (as root, from anywhere): bench/dns.sh [flags of bench/dns]
#   e.g. bench/dns.sh -rounds 5 -time 5
. "$(dirname "$0")/lib.sh"

bench_require_root
bench_install dnsmasq dnsperf
bench_run dns "$@"

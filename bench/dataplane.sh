#!/usr/bin/env bash
# Data plane benchmark (docs/benchmarks.md, "Data plane"): TCP throughput
# (iperf3) and new-connection rate from the lab's node to a server in the lab
# internet through the firewall, with the daemon enforcing a generated
# 10,000-rule policy, against the same lab with plain forwarding and with a
# minimal hand-written stateful ruleset — interleaved in one run, medians of
# the per-round ratios — and the daemon's apply time of the policy.
#
# Usage (as root, from anywhere): bench/dataplane.sh [flags of bench/dataplane]
#   e.g. bench/dataplane.sh -rounds 9 -rules 10000
. "$(dirname "$0")/lib.sh"

bench_require_root
bench_install iperf3
bench_run dataplane "$@"

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
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH=/usr/local/go/bin:$PATH

if [ "$(id -u)" != 0 ]; then
  echo "bench: needs root (network namespaces)" >&2
  exit 1
fi
if ! command -v iperf3 >/dev/null; then
  echo "bench: installing iperf3 (Debian)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/clusterwall" ./cmd/clusterwall
go build -o "$tmp/bench-dataplane" ./bench/dataplane
echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)$(git diff --quiet 2>/dev/null || echo +changes), kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$tmp/bench-dataplane" -exe "$tmp/clusterwall" "$@"

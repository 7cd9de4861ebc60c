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
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH=/usr/local/go/bin:$PATH

if [ "$(id -u)" != 0 ]; then
  echo "bench: needs root (network namespaces)" >&2
  exit 1
fi
missing=()
for pkg in dnsmasq dnsperf; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]} (Debian)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/clusterwall" ./cmd/clusterwall
go build -o "$tmp/bench-dns" ./bench/dns
echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)$(git diff --quiet 2>/dev/null || echo +changes), kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$tmp/bench-dns" -exe "$tmp/clusterwall" "$@"

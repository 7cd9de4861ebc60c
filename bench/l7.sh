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
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH=/usr/local/go/bin:$PATH

if [ "$(id -u)" != 0 ]; then
  echo "bench: needs root (network namespaces)" >&2
  exit 1
fi
missing=()
for pkg in haproxy squid-openssl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]} (Debian)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/clusterwall" ./cmd/clusterwall
go build -o "$tmp/bench-l7" ./bench/l7
echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)$(git diff --quiet 2>/dev/null || echo +changes), kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$tmp/bench-l7" -exe "$tmp/clusterwall" "$@"

#!/usr/bin/env bash
# The seed's scenario end to end (`make demo`): brings the lab up with the
# firewall daemon enforcing examples/aks-egress.yaml, checks real flows from
# the cluster and from the internet, prints the table and removes the lab
# again (also on failure and Ctrl-C). Exits 1 when any observed outcome
# differs from the expected one. docs/lab.md ("The demo") explains the rows.
#
# Usage: scripts/demo.sh [BINARY] [clusterwall lab demo flags: --name, --keep, --reuse, --only ...]
set -euo pipefail

bin=${1:-bin/clusterwall}
shift || true
root=$(cd "$(dirname "$0")/.." && pwd)
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac

if [ "$(id -u)" != 0 ]; then
  echo "demo: the lab needs root (network namespaces): sudo make demo" >&2
  exit 1
fi
if [ ! -x "$bin" ]; then
  echo "demo: $bin is missing; run make build" >&2
  exit 1
fi
cd "$root"
exec "$bin" lab demo --policy examples/aks-egress.yaml "$@"

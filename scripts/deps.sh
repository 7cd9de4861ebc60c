#!/usr/bin/env bash
# Installs what clusterwall's build, tests and lab need on a fresh Debian
# machine (as root). Idempotent: does nothing when everything is present.
# With --test it also installs what only the tests need (headless Chromium
# for the dashboard's browser test, dnsperf for the soak).
set -euo pipefail
tests=false
[ "${1:-}" = --test ] && tests=true

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip || need+=(iproute2)
have curl || need+=(curl)
have dig || need+=(dnsutils)
have conntrack || need+=(conntrack)
# High availability (docs/ha.md): the HA lab, its tests and the demo's HA section.
have keepalived || [ -x /usr/sbin/keepalived ] || need+=(keepalived)
have conntrackd || [ -x /usr/sbin/conntrackd ] || need+=(conntrackd)
have ping || need+=(iputils-ping)
have git || need+=(git)
have make || need+=(make)
have gcc || need+=(gcc) # the race detector needs cgo
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if $tests; then
  have chromium || need+=(chromium)
  have dnsperf || need+=(dnsperf) # the soak's DNS flood (test/soak)
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # keepalived and conntrackd are run by the daemon (in the lab's
  # namespaces), never as the machine's own services: keep their packages
  # from starting them on this host (policy-rc.d), and disable them.
  prc=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    prc=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$prc" && chmod +x "$prc"
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || { [ -n "$prc" ] && rm -f "$prc"; exit 1; }
  [ -n "$prc" ] && rm -f "$prc"
  if have systemctl; then
    for u in keepalived conntrackd; do
      case " ${need[*]} " in *" $u "*) systemctl disable "$u" >/dev/null 2>&1 || true ;; esac
    done
  fi
fi

if ! have go; then
  if [ -x /usr/local/go/bin/go ]; then
    export PATH=/usr/local/go/bin:$PATH
  else
    echo "deps: Go is not installed (expected /usr/local/go)" >&2
    exit 1
  fi
fi
go mod download

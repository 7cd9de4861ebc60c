#!/usr/bin/env bash
# k8s-test-bins.sh builds a real kube-apiserver and etcd from the Go module
# proxy for the controller's envtest tests, caches them outside the repository
# and prints the directory to use as KUBEBUILDER_ASSETS.
#
#   export KUBEBUILDER_ASSETS="$(scripts/k8s-test-bins.sh)"
#
# Idempotent: when both binaries are already in the cache it only prints the
# directory. Build output goes to stderr; stdout is only the directory.
#
# Environment:
#   K8S_VERSION    k8s.io/kubernetes version (default v1.34.2; staging modules v0.<minor>.<patch>)
#   ETCD_VERSION   go.etcd.io/etcd/server/v3 version (default v3.5.21)
#   K8S_BINS_CACHE cache root (default /var/cache/clusterwall/k8s-bins, or
#                  ~/.cache/clusterwall/k8s-bins when /var/cache is not writable)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.5.21}"
CACHE_ROOT="${K8S_BINS_CACHE:-/var/cache/clusterwall/k8s-bins}"
# Without write access to /var/cache (not root), use the user's cache.
if [[ -z "${K8S_BINS_CACHE:-}" ]] && ! mkdir -p "$CACHE_ROOT" 2>/dev/null; then
	CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/clusterwall/k8s-bins"
fi
DIR="$CACHE_ROOT/$K8S_VERSION-etcd$ETCD_VERSION"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"

export PATH="/usr/local/go/bin:$PATH"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0

log() { echo "k8s-test-bins: $*" >&2; }

if [[ -x "$DIR/kube-apiserver" && -x "$DIR/etcd" ]]; then
	echo "$DIR"
	exit 0
fi
mkdir -p "$DIR"
# One builder at a time (CI and developers may call this concurrently).
exec 9>"$CACHE_ROOT/.lock"
flock 9
if [[ -x "$DIR/kube-apiserver" && -x "$DIR/etcd" ]]; then
	echo "$DIR"
	exit 0
fi

WORK="$(mktemp -d /tmp/cw-k8s-bins.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

if [[ ! -x "$DIR/etcd" ]]; then
	log "building etcd $ETCD_VERSION"
	mkdir -p "$WORK/etcd"
	cat >"$WORK/etcd/main.go" <<'GO'
// Command etcd is etcd's server built from the module proxy for envtest.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
	(
		cd "$WORK/etcd"
		go mod init cwbins/etcd >/dev/null 2>&1
		go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
		go mod tidy >&2
		nice -n 10 go build -trimpath -o "$DIR/etcd.tmp" . >&2
	)
	mv "$DIR/etcd.tmp" "$DIR/etcd"
fi

if [[ ! -x "$DIR/kube-apiserver" ]]; then
	log "building kube-apiserver $K8S_VERSION (staging modules $STAGING_VERSION); takes minutes"
	mkdir -p "$WORK/apiserver"
	cd "$WORK/apiserver"
	go mod init cwbins/apiserver >/dev/null 2>&1
	# Every k8s.io/<staging> module is replaced by ./staging/... in k8s.io/kubernetes'
	# go.mod; outside that tree each must be pinned to its published v0.x version.
	gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
	[[ -f "$gomod" ]] || { log "cannot find go.mod of k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
	staging="$(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$gomod")"
	[[ -n "$staging" ]] || { log "no staging replaces found in $gomod"; exit 1; }
	{
		echo "require k8s.io/kubernetes $K8S_VERSION"
		for m in $staging; do echo "replace $m => $m $STAGING_VERSION"; done
	} >>go.mod
	cat >tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
	go mod tidy -e >&2 || true
	go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" >&2
	nice -n 10 go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION" -o "$DIR/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2
	mv "$DIR/kube-apiserver.tmp" "$DIR/kube-apiserver"
fi

log "binaries in $DIR"
echo "$DIR"

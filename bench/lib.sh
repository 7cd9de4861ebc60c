# Common preamble of bench/*.sh, sourced by each (not run on its own):
# strict mode, the repository root as the working directory, Go on PATH,
# and helpers for the checks and steps every benchmark script repeats.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH=/usr/local/go/bin:$PATH

# bench_require_root: network namespaces need root.
bench_require_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "bench: needs root (network namespaces)" >&2
    exit 1
  fi
}

# bench_install PKG...: installs the Debian packages that are missing (a
# package counts as present if dpkg knows it or a command of its name exists).
bench_install() {
  local missing=() pkg
  for pkg in "$@"; do
    command -v "$pkg" >/dev/null || dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]} (Debian)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# bench_tmpdir: sets tmp to a new directory removed on exit (scripts with
# a cleanup of their own remove it there instead).
bench_tmpdir() {
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
}

# bench_header: one comment line naming the date, commit, kernel, CPUs and
# load, for docs/benchmarks.md.
bench_header() {
  echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)$(git diff --quiet 2>/dev/null || echo +changes), kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
}

# bench_run NAME [FLAGS...]: builds clusterwall and the driver bench/NAME
# into a temporary directory and runs the driver with FLAGS.
bench_run() {
  local name=$1
  shift
  bench_tmpdir
  go build -o "$tmp/clusterwall" ./cmd/clusterwall
  go build -o "$tmp/bench-$name" "./bench/$name"
  bench_header
  "$tmp/bench-$name" -exe "$tmp/clusterwall" "$@"
}

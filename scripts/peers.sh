#!/usr/bin/env bash
# Build the Go-based peers the tests talk to (real Thanos, Prometheus 3.x) from the
# Go module proxy into a cache directory outside the repository. A binary already in
# the cache is reused; delete the cache directory to rebuild from scratch.
#
#   scripts/peers.sh            build what is missing, in parallel
#   scripts/peers.sh --print    print the cache directory
set -euo pipefail

THANOS_VERSION="${THANOS_VERSION:-v0.42.4}"
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.309.1}"   # = Prometheus 3.9.1 (the one Thanos v0.42 builds against); newer tags need modules the proxy does not serve
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-3.9.1}"                   # what --version reports
PEERS_DIR="${PYTHANOS_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pythanos-peers}"
BIN="$PEERS_DIR/bin"

if [[ "${1:-}" == "--print" ]]; then echo "$PEERS_DIR"; exit 0; fi
command -v go >/dev/null || { echo "peers.sh: go is not on PATH" >&2; exit 1; }
mkdir -p "$BIN" "$PEERS_DIR/logs"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

log() { printf 'level=info ts=%s caller=peers.sh msg=%q\n' "$(date -u +%FT%TZ)" "$*"; }

# Thanos' and Prometheus' go.mod files carry replace/exclude directives, which
# `go install pkg@version` refuses; a wrapper module that requires the module and
# repeats them builds the same binary.
#   build_wrapped NAME MODULE VERSION PACKAGE OUTPUT REPORTED_VERSION
build_wrapped() {
  local name=$1 module=$2 version=$3 pkg=$4 out=$5 reported=$6
  local wrap="$PEERS_DIR/src/$name-$version"
  [[ -x "$out" ]] && { log "$name $version cached"; return 0; }
  rm -rf "$wrap"; mkdir -p "$wrap"
  local gomod; gomod=$(go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$gomod" ]] || { echo "cannot download $module@$version" >&2; return 1; }
  {
    echo "module pythanos.local/${name}wrap"
    echo
    grep -E '^go ' "$gomod"
    echo
    echo "require $module $version"
    echo
    # Directives, single-line and block form.
    sed -n '/^replace (/,/^)/p; /^replace [^(]/p; /^exclude (/,/^)/p; /^exclude [^(]/p' "$gomod"
  } > "$wrap/go.mod"
  printf 'package %swrap\n' "$name" > "$wrap/doc.go"
  ( cd "$wrap"
    # Resolve the whole build list (the module's requirements plus the directives) into go.sum.
    GOFLAGS=-mod=mod go get "$pkg@$version"
    go build -trimpath -o "$out.partial" \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=$reported -X github.com/prometheus/common/version.Branch=HEAD" \
      "$pkg" )
  mv "$out.partial" "$out"
  log "built $name $version"
}

build_thanos() {
  build_wrapped thanos github.com/thanos-io/thanos "$THANOS_VERSION" \
    github.com/thanos-io/thanos/cmd/thanos "$BIN/thanos-$THANOS_VERSION" "${THANOS_VERSION#v}"
}

build_prometheus() {
  build_wrapped prometheus github.com/prometheus/prometheus "$PROMETHEUS_MODULE_VERSION" \
    github.com/prometheus/prometheus/cmd/prometheus "$BIN/prometheus-$PROMETHEUS_VERSION" "$PROMETHEUS_VERSION"
}

start=$(date +%s)
pids=()
build_thanos > "$PEERS_DIR/logs/thanos.log" 2>&1 & pids+=($!)
build_prometheus > "$PEERS_DIR/logs/prometheus.log" 2>&1 & pids+=($!)
rc=0
for i in "${!pids[@]}"; do wait "${pids[$i]}" || rc=1; done
for f in "$PEERS_DIR"/logs/thanos.log "$PEERS_DIR"/logs/prometheus.log; do
  if [[ $rc -ne 0 ]]; then echo "--- $f"; tail -n 40 "$f"; else tail -n 1 "$f"; fi
done
ln -sf "thanos-$THANOS_VERSION" "$BIN/thanos"
ln -sf "prometheus-$PROMETHEUS_VERSION" "$BIN/prometheus"
log "peers ready in $BIN after $(( $(date +%s) - start ))s (rc=$rc)"
exit $rc

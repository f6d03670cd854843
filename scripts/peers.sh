#!/usr/bin/env bash
# Build the Go-based peers the tests talk to (real Thanos, Prometheus 3.x) from the
# Go module proxy into a cache directory outside the repository. A binary already in
# the cache is reused; delete the cache directory to rebuild from scratch.
#
#   scripts/peers.sh            build what is missing, in parallel
#   scripts/peers.sh --print    print the cache directory
set -euo pipefail

THANOS_VERSION="${THANOS_VERSION:-v0.42.4}"
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"   # Prometheus 3.x module tag
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-3.16.0}"                   # what --version reports
PEERS_DIR="${PYTHANOS_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pythanos-peers}"
BIN="$PEERS_DIR/bin"

if [[ "${1:-}" == "--print" ]]; then echo "$PEERS_DIR"; exit 0; fi
command -v go >/dev/null || { echo "peers.sh: go is not on PATH" >&2; exit 1; }
mkdir -p "$BIN" "$PEERS_DIR/logs"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

log() { printf 'level=info ts=%s caller=peers.sh msg=%q\n' "$(date -u +%FT%TZ)" "$*"; }

# Thanos' go.mod carries replace directives, which `go install pkg@version` refuses;
# a wrapper module that requires Thanos and repeats them builds the same binary.
build_thanos() {
  local out="$BIN/thanos-$THANOS_VERSION" wrap="$PEERS_DIR/src/thanos-$THANOS_VERSION"
  [[ -x "$out" ]] && { log "thanos $THANOS_VERSION cached"; return 0; }
  rm -rf "$wrap"; mkdir -p "$wrap"
  local gomod; gomod=$(go mod download -json "github.com/thanos-io/thanos@$THANOS_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module pythanos.local/thanoswrap"
    echo
    grep -E '^go ' "$gomod"
    echo
    echo "require github.com/thanos-io/thanos $THANOS_VERSION"
    echo
    sed -n '/^replace (/,/^)/p; /^replace [^(]/p' "$gomod"
  } > "$wrap/go.mod"
  printf 'package thanoswrap\n' > "$wrap/doc.go"
  ( cd "$wrap"
    go mod download github.com/thanos-io/thanos
    # Resolve the whole build list (the requirements of thanos plus the replaces) into go.sum.
    GOFLAGS=-mod=mod go get "github.com/thanos-io/thanos/cmd/thanos@$THANOS_VERSION"
    go build -trimpath -o "$out.partial" \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=${THANOS_VERSION#v} -X github.com/prometheus/common/version.Branch=HEAD" \
      github.com/thanos-io/thanos/cmd/thanos )
  mv "$out.partial" "$out"
  log "built thanos $THANOS_VERSION"
}

build_prometheus() {
  local out="$BIN/prometheus-$PROMETHEUS_VERSION"
  [[ -x "$out" ]] && { log "prometheus $PROMETHEUS_VERSION cached"; return 0; }
  local gobin="$PEERS_DIR/gobin-prometheus"; rm -rf "$gobin"; mkdir -p "$gobin"
  GOBIN="$gobin" go install -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION -X github.com/prometheus/common/version.Branch=HEAD" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION"
  mv "$gobin/prometheus" "$out"; rm -rf "$gobin"
  log "built prometheus $PROMETHEUS_VERSION"
}

start=$(date +%s)
pids=()
build_thanos > "$PEERS_DIR/logs/thanos.log" 2>&1 & pids+=($!)
build_prometheus > "$PEERS_DIR/logs/prometheus.log" 2>&1 & pids+=($!)
rc=0
for i in "${!pids[@]}"; do wait "${pids[$i]}" || rc=1; done
for f in "$PEERS_DIR"/logs/{thanos,prometheus}.log; do
  if [[ $rc -ne 0 ]]; then echo "--- $f"; tail -n 40 "$f"; else tail -n 1 "$f"; fi
done
ln -sf "thanos-$THANOS_VERSION" "$BIN/thanos"
ln -sf "prometheus-$PROMETHEUS_VERSION" "$BIN/prometheus"
log "peers ready in $BIN after $(( $(date +%s) - start ))s (rc=$rc)"
exit $rc

#!/usr/bin/env bash
# Build the Go-based peers the tests talk to (real Thanos, Prometheus 3.x, kube-apiserver,
# kube-controller-manager, kubectl, etcd, helm, and the remote-write receiver compliance suite
# of prometheus/compliance as a test binary) from the Go module proxy into a cache
# directory outside the repository. A binary already in the cache is reused; delete the
# cache directory to rebuild from scratch.
#
#   scripts/peers.sh            build what is missing, in parallel
#   scripts/peers.sh --cluster  also the node and cluster-add-on peers of the local e2e cluster
#                               (tests/e2e/localcluster.py): kube-scheduler, kubelet, kube-proxy
#                               (same Kubernetes version, same wrapper module) and CoreDNS
#   scripts/peers.sh --compliance  also Prometheus' alert-generator compliance tester (make compliance)
#   scripts/peers.sh --print    print the cache directory
set -euo pipefail

THANOS_VERSION="${THANOS_VERSION:-v0.42.4}"
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.309.1}"   # = Prometheus 3.9.1 (the one Thanos v0.42 builds against); newer tags need modules the proxy does not serve
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-3.9.1}"                   # what --version reports
KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.36.3}"                 # k8s.io/kubernetes: kube-apiserver, kube-controller-manager, kubectl
HELM_VERSION="${HELM_VERSION:-v4.3.1}"                               # helm.sh/helm/v4
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"                        # github.com/coredns/coredns (--cluster only)
# prometheus/compliance has no tags; the proxy serves remotewrite/receiver as a pseudo-version (its
# go.mod names the module github.com/prometheus/complicance/remotewrite2, upstream's typo, which only
# matters to importers: we download it by the path it lives at and compile its tests).
RW_COMPLIANCE_VERSION="${RW_COMPLIANCE_VERSION:-v0.0.0-20260806071727-67b8327a2e93}"   # commit 67b8327, 2026-08-06
PEERS_DIR="${PYTHANOS_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pythanos-peers}"
BIN="$PEERS_DIR/bin"

if [[ "${1:-}" == "--print" ]]; then echo "$PEERS_DIR"; exit 0; fi
CLUSTER=0 COMPLIANCE=0
if [[ "${1:-}" == "--cluster" ]]; then CLUSTER=1; shift; fi
if [[ "${1:-}" == "--compliance" ]]; then COMPLIANCE=1; shift; fi
[[ $# -eq 0 ]] || { echo "usage: scripts/peers.sh [--cluster|--compliance|--print]" >&2; exit 2; }
command -v go >/dev/null || { echo "peers.sh: go is not on PATH" >&2; exit 1; }
mkdir -p "$BIN" "$PEERS_DIR/logs"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

log() { printf 'level=info ts=%s caller=peers.sh msg=%q\n' "$(date -u +%FT%TZ)" "$*"; }

# Thanos' and Prometheus' go.mod files carry replace/exclude directives, which
# `go install pkg@version` refuses; a wrapper module that requires the module and
# repeats them builds the same binary.
#   build_wrapped NAME MODULE VERSION PACKAGE OUTPUT REPORTED_VERSION
build_wrapped() {
  local name=$1 module=$2 version=$3 pkg=$4 out=$5 reported=$6 tags=${7:-}
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
  # With SRC set (a Go file of ours, package main), that program is built in the wrapper module;
  # PACKAGE is then only what it imports, resolved for the build list.
  local target=$pkg
  if [[ -n "${SRC:-}" ]]; then cp "$SRC" "$wrap/main.go"; target=.; else printf 'package %swrap\n' "$name" > "$wrap/doc.go"; fi
  ( cd "$wrap"
    # Resolve the whole build list (the module's requirements plus the directives) into go.sum.
    GOFLAGS=-mod=mod go get "$pkg@$version"
    go build -trimpath ${tags:+-tags "$tags"} -o "$out.partial" \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=$reported -X github.com/prometheus/common/version.Branch=HEAD" \
      "$target" )
  mv "$out.partial" "$out"
  log "built $name $version"
}

# Thanos' release build (.promu.yml) uses the tags netgo,slicelabels: its gRPC label codec
# depends on the slice layout of labels, and without the tag a querier panics on the first
# Info answer of any endpoint.
build_thanos() {
  build_wrapped thanos github.com/thanos-io/thanos "$THANOS_VERSION" \
    github.com/thanos-io/thanos/cmd/thanos "$BIN/thanos-$THANOS_VERSION-slicelabels" "${THANOS_VERSION#v}" \
    netgo,slicelabels
}

build_prometheus() {
  build_wrapped prometheus github.com/prometheus/prometheus "$PROMETHEUS_MODULE_VERSION" \
    github.com/prometheus/prometheus/cmd/prometheus "$BIN/prometheus-$PROMETHEUS_VERSION" "$PROMETHEUS_VERSION"
  build_promtool
}

# promtool of the same module and version (rule-file checks, tests/test_rule_files.py): built in
# the prometheus job, after it, so the compiled packages they share come from the build cache.
build_promtool() {
  build_wrapped promtool github.com/prometheus/prometheus "$PROMETHEUS_MODULE_VERSION" \
    github.com/prometheus/prometheus/cmd/promtool "$BIN/promtool-$PROMETHEUS_VERSION" "$PROMETHEUS_VERSION"
  build_promtemplate_render
}

# Prometheus' own template package behind a line protocol (scripts/peers/promtemplate-render, ours):
# tests/test_promtemplate.py renders thousands of random alert templates with it and with
# pythanos.promtemplate. The binary's name carries a hash of the source, so an edit rebuilds it.
PROMTEMPLATE_RENDER_SRC="$(cd "$(dirname "$0")" && pwd)/peers/promtemplate-render/main.go"
promtemplate_render_file() { echo "promtemplate-render-$PROMETHEUS_VERSION-$(sha256sum "$PROMTEMPLATE_RENDER_SRC" | cut -c1-12)"; }
build_promtemplate_render() {
  SRC="$PROMTEMPLATE_RENDER_SRC" build_wrapped promtemplate-render github.com/prometheus/prometheus \
    "$PROMETHEUS_MODULE_VERSION" github.com/prometheus/prometheus/template "$BIN/$(promtemplate_render_file)" \
    "$PROMETHEUS_VERSION"
}

# k8s.io/kubernetes requires every staging module (k8s.io/api, k8s.io/client-go, ...) at
# v0.0.0 and points it at ./staging/src with a replace directive, which a consumer cannot
# use. The wrapper replaces each `k8s.io/<m> v0.0.0` requirement (the list read from the
# module's go.mod, so it follows the version) with the published k8s.io/<m> v0.X.Y.
# kube-apiserver, kube-controller-manager and kubectl come from the one wrapper module, built
# one after another so the later ones reuse the compiled packages (the log has each time).
# With --cluster, kube-scheduler, kubelet and kube-proxy are built in the same job after them
# (one job, not a parallel one: they share most compiled packages with the others).
# etcd comes from the same build list: go.etcd.io/etcd/server/v3 at the version this
# Kubernetes release requires (its root package is etcd's main). Debian's etcd-server
# (3.4.23) is older than the 3.4.29/3.5.11 that kube-apiserver >= 1.31 assumes.
build_kubernetes() {
  local version=$KUBERNETES_VERSION name=kubernetes
  local staging_version="v0${version#v1}"
  local minor; minor=$(echo "$version" | cut -d. -f2)
  local cmds=(kube-apiserver kube-controller-manager kubectl etcd) missing_cmds=() c
  [[ $CLUSTER == 1 ]] && cmds+=("${CLUSTER_KUBE_CMDS[@]}")
  local stamp="$PEERS_DIR/etcd-version.$version"   # the etcd version k8s.io/kubernetes@$version requires
  if [[ -f "$stamp" ]]; then
    cp "$stamp" "$PEERS_DIR/etcd-version"
    for c in "${cmds[@]}"; do [[ -x "$BIN/$(peer_file "$c")" ]] || missing_cmds+=("$c"); done
    [[ ${#missing_cmds[@]} -eq 0 ]] && { log "kubernetes $version and etcd $(cat "$stamp") cached"; return 0; }
  fi
  local gomod; gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$gomod" ]] || { echo "cannot download k8s.io/kubernetes@$version" >&2; return 1; }
  local etcd_version; etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$gomod")
  [[ -n "$etcd_version" ]] || { echo "no go.etcd.io/etcd/server/v3 requirement in $gomod" >&2; return 1; }
  echo "$etcd_version" > "$stamp"; cp "$stamp" "$PEERS_DIR/etcd-version"
  missing_cmds=()
  for c in "${cmds[@]}"; do [[ -x "$BIN/$(peer_file "$c")" ]] || missing_cmds+=("$c"); done
  [[ ${#missing_cmds[@]} -eq 0 ]] && { log "kubernetes $version and etcd $etcd_version cached"; return 0; }
  local wrap="$PEERS_DIR/src/$name-$version" t0
  rm -rf "$wrap"; mkdir -p "$wrap"
  t0=$(date +%s)
  local staging; staging=$(sed -nE 's#^[[:space:]]*(require[[:space:]]+)?(k8s\.io/[A-Za-z0-9._/-]+)[[:space:]]+v0\.0\.0([[:space:]]|$).*#\2#p' "$gomod" | sort -u)
  [[ -n "$staging" ]] || { echo "no k8s.io/* v0.0.0 requirements in $gomod" >&2; return 1; }
  {
    echo "module pythanos.local/${name}wrap"
    echo
    grep -E '^go ' "$gomod"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    for m in $staging; do echo "	$m => $m $staging_version"; done
    echo ")"
  } > "$wrap/go.mod"
  printf 'package %swrap\n' "$name" > "$wrap/doc.go"
  log "kubernetes $version: $(echo "$staging" | wc -l) staging modules replaced with $staging_version"
  local ld="-s -w"
  for pkgpath in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkgpath.gitVersion=$version -X $pkgpath.gitMajor=1 -X $pkgpath.gitMinor=$minor"
    ld="$ld -X $pkgpath.gitTreeState=clean -X $pkgpath.buildDate=1970-01-01T00:00:00Z"
  done
  ( cd "$wrap"
    GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@$etcd_version" \
      $(for c in "${cmds[@]}"; do [[ $c == etcd ]] || echo "k8s.io/kubernetes/cmd/$c@$version"; done)
    log "kubernetes $version: modules resolved in $(( $(date +%s) - t0 ))s"
    for c in "${missing_cmds[@]}"; do
      local t1 out pkg; t1=$(date +%s); out="$BIN/$(peer_file "$c")"
      pkg="k8s.io/kubernetes/cmd/$c"; [[ $c == etcd ]] && pkg=go.etcd.io/etcd/server/v3
      go build -trimpath -o "$out.partial" -ldflags "$ld" "$pkg"
      mv "$out.partial" "$out"
      log "built $(basename "$out") in $(( $(date +%s) - t1 ))s"
    done )
  log "built kubernetes $version in $(( $(date +%s) - t0 ))s"
}

# Prometheus' remote-write receiver compliance suite (tests/test_remote_write_compliance.py): the
# module zip from the proxy (checked against the checksum database like any module), its tests
# compiled into one binary, so a test run needs no Go build. Run it with
# PROMETHEUS_RW2_COMPLIANCE_CONFIG_FILE=<config with remote_write:> and -test.v=test2json.
build_rwcompliance() {
  local module=github.com/prometheus/compliance/remotewrite/receiver version=$RW_COMPLIANCE_VERSION
  local out="$BIN/rw-compliance-receiver-$version.test" t0
  [[ -x "$out" ]] && { log "rw-compliance-receiver $version cached"; return 0; }
  t0=$(date +%s)
  local dir; dir=$(cd "$PEERS_DIR" && go mod download -json "$module@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -d "$dir" ]] || { echo "cannot download $module@$version" >&2; return 1; }
  local src="$PEERS_DIR/src/rw-compliance-receiver-$version"
  rm -rf "$src"; cp -r "$dir" "$src"; chmod -R u+w "$src"   # the module cache is read-only
  ( cd "$src" && go test -c -trimpath -o "$out.partial" . )
  mv "$out.partial" "$out"
  log "built rw-compliance-receiver $version in $(( $(date +%s) - t0 ))s"
}

# Prometheus' alert-generator compliance tester (tests/compliance, `make compliance` only), same commit
# as the remote-write suite. The proxy does not serve the alert_generator module, so its source comes
# from a local mirror of prometheus/compliance (PYTHANOS_COMPLIANCE_REPO, a git dir) or a shallow
# clone; its dependencies come from the proxy as for every build. Without source it fails.
build_alertgen() {
  local commit=${RW_COMPLIANCE_VERSION##*-} out="$BIN/alert-generator-compliance-tester-${RW_COMPLIANCE_VERSION##*-}" t0
  [[ -x "$out" ]] && { log "alert-generator-compliance-tester $commit cached"; return 0; }
  t0=$(date +%s)
  local src="$PEERS_DIR/src/alert-generator-compliance-$commit" repo="${PYTHANOS_COMPLIANCE_REPO:-}"
  rm -rf "$src"; mkdir -p "$src"
  if [[ -d "$repo" ]] && git -C "$repo" archive "$commit" alert_generator | tar -x -C "$src"; then :
  elif git clone -q --filter=blob:none https://github.com/prometheus/compliance "$src/clone" 2>/dev/null &&
       git -C "$src/clone" archive "$commit" alert_generator | tar -x -C "$src"; then rm -rf "$src/clone"
  else echo "alert-generator-compliance-tester: no source for commit $commit (set PYTHANOS_COMPLIANCE_REPO)" >&2; return 1; fi
  ( cd "$src/alert_generator" && go build -trimpath -o "$out.partial" ./cmd/alert_generator_compliance_tester )
  mv "$out.partial" "$out"
  log "built alert-generator-compliance-tester $commit in $(( $(date +%s) - t0 ))s"
}

# File name of a Kubernetes-build peer in $BIN (versioned).
peer_file() {
  if [[ $1 == etcd ]]; then echo "etcd-$(cat "$PEERS_DIR/etcd-version")"; else echo "$1-$KUBERNETES_VERSION"; fi
}

CLUSTER_KUBE_CMDS=(kube-scheduler kubelet kube-proxy)

# CoreDNS' go.mod has no replace/exclude directives either; its main package is the module root.
build_coredns() {
  local out="$BIN/coredns-$COREDNS_VERSION" t0
  [[ -x "$out" ]] && { log "coredns $COREDNS_VERSION cached"; return 0; }
  t0=$(date +%s)
  local gobin="$PEERS_DIR/src/coredns-$COREDNS_VERSION-bin"
  rm -rf "$gobin"; mkdir -p "$gobin"
  GOBIN="$gobin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  mv "$gobin/coredns" "$out"
  log "built coredns $COREDNS_VERSION in $(( $(date +%s) - t0 ))s"
}

# helm's go.mod has no replace/exclude directives, so plain `go install pkg@version` works.
build_helm() {
  local out="$BIN/helm-$HELM_VERSION" major="${HELM_VERSION%%.*}" t0
  [[ -x "$out" ]] && { log "helm $HELM_VERSION cached"; return 0; }
  t0=$(date +%s)
  local gobin="$PEERS_DIR/src/helm-$HELM_VERSION-bin"
  rm -rf "$gobin"; mkdir -p "$gobin"
  GOBIN="$gobin" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION -X helm.sh/helm/$major/internal/version.gitTreeState=clean" \
    "helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
  mv "$gobin/helm" "$out"
  log "built helm $HELM_VERSION in $(( $(date +%s) - t0 ))s"
}

start=$(date +%s)
builds=(thanos prometheus kubernetes helm rwcompliance)
[[ $CLUSTER == 1 ]] && builds+=(coredns)
[[ $COMPLIANCE == 1 ]] && builds+=(alertgen)
pids=()
for b in "${builds[@]}"; do "build_$b" > "$PEERS_DIR/logs/$b.log" 2>&1 & pids+=($!); done
rc=0
for i in "${!pids[@]}"; do wait "${pids[$i]}" || rc=1; done
for b in "${builds[@]}"; do
  f="$PEERS_DIR/logs/$b.log"
  if [[ $rc -ne 0 ]]; then echo "--- $f"; tail -n 40 "$f"; else grep -h 'msg=' "$f" | tail -n 4; fi
done
ln -sf "thanos-$THANOS_VERSION-slicelabels" "$BIN/thanos"
ln -sf "prometheus-$PROMETHEUS_VERSION" "$BIN/prometheus"
[[ -x "$BIN/promtool-$PROMETHEUS_VERSION" ]] && ln -sf "promtool-$PROMETHEUS_VERSION" "$BIN/promtool"
[[ -x "$BIN/$(promtemplate_render_file)" ]] && ln -sf "$(promtemplate_render_file)" "$BIN/promtemplate-render"
for c in kube-apiserver kube-controller-manager kubectl etcd "${CLUSTER_KUBE_CMDS[@]}"; do
  [[ -f "$PEERS_DIR/etcd-version" && -x "$BIN/$(peer_file "$c")" ]] && ln -sf "$(peer_file "$c")" "$BIN/$c"
done
[[ -x "$BIN/helm-$HELM_VERSION" ]] && ln -sf "helm-$HELM_VERSION" "$BIN/helm"
[[ -x "$BIN/rw-compliance-receiver-$RW_COMPLIANCE_VERSION.test" ]] && \
  ln -sf "rw-compliance-receiver-$RW_COMPLIANCE_VERSION.test" "$BIN/rw-compliance-receiver.test"
[[ -x "$BIN/alert-generator-compliance-tester-${RW_COMPLIANCE_VERSION##*-}" ]] && \
  ln -sf "alert-generator-compliance-tester-${RW_COMPLIANCE_VERSION##*-}" "$BIN/alert-generator-compliance-tester"
[[ -x "$BIN/coredns-$COREDNS_VERSION" ]] && ln -sf "coredns-$COREDNS_VERSION" "$BIN/coredns"
log "peers ready in $BIN after $(( $(date +%s) - start ))s (rc=$rc)"
exit $rc

#!/usr/bin/env bash
# Install the peers Debian packages: Prometheus + promtool (prometheus), Alertmanager
# (prometheus-alertmanager), Chromium (chromium: the web UI's browser tests, headless) and
# dnsmasq (dnsmasq-base: a DNS server for the querier's dns+/dnssrv+ discovery tests),
# memcached and redis-server (the cache tests), wrk (the dashboard load in `make bench`).
# Only when missing; needs root or sudo.
set -euo pipefail
need=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v chromium >/dev/null || need+=(chromium)
command -v dnsmasq >/dev/null || [[ -x /usr/sbin/dnsmasq ]] || need+=(dnsmasq-base)
command -v memcached >/dev/null || need+=(memcached)
command -v redis-server >/dev/null || need+=(redis-server)
command -v wrk >/dev/null || need+=(wrk)
[[ ${#need[@]} -eq 0 ]] && exit 0
sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
echo "system-peers: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# policy-rc.d 101: the packages must not start their own services; tests start them.
$sudo sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
$sudo apt-get install -y -q --no-install-recommends "${need[@]}"
$sudo rm -f /usr/sbin/policy-rc.d

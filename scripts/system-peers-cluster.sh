#!/usr/bin/env bash
# Install the Debian packages the local e2e cluster (tests/e2e/localcluster.py) needs: containerd and
# runc (the container runtime), containernetworking-plugins (the CNI bridge and host-local plugins),
# iptables and conntrack (kube-proxy), debootstrap (the Debian base of the images, tests/e2e/images.py).
# Only when missing; needs root or sudo. The packages' own services are not started: the harness starts
# containerd itself, with its own config, state and socket.
set -euo pipefail
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || [[ -x /usr/sbin/iptables ]] || need+=(iptables)
command -v conntrack >/dev/null || [[ -x /usr/sbin/conntrack ]] || need+=(conntrack)
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || need+=(debootstrap)
[[ ${#need[@]} -eq 0 ]] && exit 0
sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
echo "system-peers-cluster: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
# policy-rc.d 101: the packages must not start their own services (containerd); the harness starts it.
$sudo sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
$sudo apt-get install -y -q --no-install-recommends "${need[@]}"
$sudo rm -f /usr/sbin/policy-rc.d

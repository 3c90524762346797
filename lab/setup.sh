#!/usr/bin/env bash
# Installs the Debian packages the lab needs, only those missing. Idempotent and quiet:
# CI and humans run it once per machine (`sudo bash lab/setup.sh`); startLab never runs it,
# it only checks the binaries and names this script when one is missing.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "lab/setup.sh: must run as root (it installs Debian packages); try: sudo bash lab/setup.sh" >&2
  exit 1
fi

# package -> a file it installs; a package counts as present when that file exists, which
# also accepts binaries installed by other means (e.g. a newer docker client in /usr/local).
declare -A probe=(
  [docker.io]=/usr/sbin/dockerd
  [busybox-static]=/bin/busybox
  [openssh-server]=/usr/sbin/sshd
  [openssh-client]=/usr/bin/ssh-keygen
  [iptables]=/usr/sbin/iptables-restore
  [iproute2]=/usr/sbin/ip
  [util-linux]=/usr/bin/nsenter
  [socat]=/usr/bin/socat
  [curl]=/usr/bin/curl
  [conntrack]=/usr/sbin/conntrack
  [sudo]=/usr/bin/sudo
  [jq]=/usr/bin/jq
  [ipset]=/usr/sbin/ipset
  [procps]=/usr/bin/ps
  [nftables]=/usr/sbin/nft
  [libseccomp-dev]=/usr/include/seccomp.h # runc with seccomp, built by lab/docker29.sh
  [pkg-config]=/usr/bin/pkg-config
  [shellcheck]=/usr/bin/shellcheck # not for the lab: `npm run lint` (scripts/test.sh) checks the shell scripts
)

missing=()
for pkg in "${!probe[@]}"; do
  [[ -e ${probe[$pkg]} ]] || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Try without refreshing the package lists first: they are usually fresh enough, and an
# update is slow and needs the network.
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "lab/setup.sh: installed ${missing[*]}"

#!/usr/bin/env bash
# Builds the lab's container image as a tar of a busybox-static rootfs, for `docker import`
# (no registry is reachable). Prints the tar's path. The tar is cached by busybox's checksum,
# so concurrent labs share one build; the build happens under a lock and lands by rename.
#
# The rootfs links lib -> usr/lib and lib64 -> usr/lib64: containers that mount the machine's
# /usr read-only (`-v /usr:/usr:ro`) can then run its dynamically linked socat, which the
# UDP server and the probes need (Debian's busybox nc has no UDP mode).
set -euo pipefail

cache=${DPA_LAB_CACHE:-/var/cache/dpa-lab}
bb=$(readlink -f /bin/busybox)
sum=$(sha256sum "$bb" | cut -c1-16)
tar_path="$cache/busybox-rootfs-$sum-v1.tar"
if [[ -s $tar_path ]]; then
  echo "$tar_path"
  exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.image.lock"
flock 9
if [[ -s $tar_path ]]; then
  echo "$tar_path"
  exit 0
fi
root=$(mktemp -d "$cache/rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,www,usr,tmp,proc,sys,dev,root}
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
done
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
echo "dpa-lab web" >"$root/www/index.html"
tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$tar_path.tmp" .
mv "$tar_path.tmp" "$tar_path"
echo "$tar_path"

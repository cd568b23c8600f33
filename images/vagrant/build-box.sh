#!/usr/bin/env bash
# Build the Vagrant box of the lxc provider from the lab's Debian 12 base image.
#
# usage: images/vagrant/build-box.sh [OUT_BOX]   (default /var/cache/groundwork-lab/vagrant/debian12-lxc.box)
#
# The box is the lab base image (images/lab/build-base.sh: systemd, sshd that makes its host keys
# at first boot, root and `ops` take the lab key, apt through the lab proxy), packed the way
# vagrant-lxc 1.4 unpacks it. Nothing is downloaded: the base image comes from Debian's mirror
# through apt's configured path, like the lab's. The box is rebuilt only when its recipe (this
# script and the base image's recipe hash) changed; the hash is kept in OUT_BOX.sha256 and inside
# the box as recipe.sha256, so an installed box can be told stale. LAB_REBUILD=1 forces both.
set -euo pipefail

LAB_CACHE=${LAB_CACHE:-/var/cache/groundwork-lab}
OUT=${1:-$LAB_CACHE/vagrant/debian12-lxc.box}
BASE_TAR=$LAB_CACHE/base-bookworm.tar
SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/../.." && pwd)

log() { printf '[build-box] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

[ "$(id -u)" = 0 ] || die "must run as root (the rootfs keeps its owners)"
"$REPO/images/lab/build-base.sh" "$BASE_TAR"

HASH=$({ cat "$SELF"; cat "$BASE_TAR.sha256"; } | sha256sum | cut -d' ' -f1)
if [ "${LAB_REBUILD:-0}" != 1 ] && [ -s "$OUT" ] && [ "$(cat "$OUT.sha256" 2>/dev/null)" = "$HASH" ]; then
	log "box up to date: $OUT"
	exit 0
fi

t0=$(date +%s.%N)
mkdir -p "$(dirname "$OUT")"
BUILD=$(mktemp -d "$(dirname "$OUT")/.build-box.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
log "unpacking $BASE_TAR"
mkdir "$BUILD/rootfs"
tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$BUILD/rootfs" -xpf "$BASE_TAR"

# LXC sets up eth0 (address, gateway) before init, from the Vagrantfile; ifupdown only brings up
# lo. The host name comes from the container's uts.name: Vagrant's own hostname support restarts
# ifup@eth0, which fails on an interface LXC configured.
printf 'built by images/vagrant/build-box.sh on %s\nrecipe %s\n' "$(date -u +%FT%TZ)" "$HASH" \
	>"$BUILD/rootfs/etc/groundwork-vagrant-box"

log "packing rootfs.tar.gz"
# vagrant-lxc's template strips two path components: the members must start with ./rootfs/.
tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$BUILD" -czf "$BUILD/rootfs.tar.gz" ./rootfs
rm -rf "$BUILD/rootfs"
printf '{"provider":"lxc","version":"1.0.0"}\n' >"$BUILD/metadata.json"
# Debian 12's LXC has no debian.common.conf; common.conf is enough for a systemd container.
# lxc-stop sends signal.halt: SIGRTMIN+3 is systemd's "power off" (the default, SIGPWR, makes
# systemd do nothing, and lxc-stop waits out its timeout before it kills).
cat >"$BUILD/lxc-config" <<'CONF'
lxc.include = /usr/share/lxc/config/common.conf
lxc.arch = amd64
lxc.apparmor.profile = unconfined
lxc.signal.halt = SIGRTMIN+3
CONF
echo "$HASH" >"$BUILD/recipe.sha256"
tar -C "$BUILD" -cf "$OUT.tmp" metadata.json lxc-config rootfs.tar.gz recipe.sha256
mv -f "$OUT.tmp" "$OUT"
echo "$HASH" >"$OUT.sha256"
log "done: $(du -h "$OUT" | cut -f1) in $(elapsed "$t0") s"

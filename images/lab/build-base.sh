#!/usr/bin/env bash
# Build the groundwork lab's Debian 12 base image: a debootstrapped bookworm rootfs as a tarball.
#
# usage: images/lab/build-base.sh [OUT_TARBALL]     (default /var/cache/groundwork-lab/base-bookworm.tar)
#
# The tarball is reused when present and its recipe hash (sha256 of this script, the machine's
# Debian sources and apt.conf.d files copied into the image, and the lab public key), stored in
# OUT_TARBALL.sha256, still matches; otherwise it is rebuilt.  LAB_REBUILD=1 forces a rebuild.
# The lab SSH key is generated once at $LAB_CACHE/id_ed25519 (default /var/cache/groundwork-lab).
#
# The image: minbase + systemd, sshd, ifupdown/dhclient, sudo (no python3: what a minimal Debian
# target has, so nothing of groundwork may need it); root and the
# passwordless-sudo user `ops` accept the lab key; no ssh host keys and an empty machine-id (every
# host gets its own identity: a drop-in for ssh.service runs ssh-keygen -A before sshd -t);
# apt-daily timers masked; apt goes through the lab proxy http://10.77.0.1:3142; dpkg unsafe-io.
set -euo pipefail

LAB_CACHE=${LAB_CACHE:-/var/cache/groundwork-lab}
OUT=${1:-$LAB_CACHE/base-bookworm.tar}
KEY=$LAB_CACHE/id_ed25519
SUITE=bookworm
PROXY_URL=http://10.77.0.1:3142
SOURCES=/etc/apt/sources.list.d/debian.sources
INCLUDE=systemd-sysv,systemd,dbus,openssh-server,iproute2,ifupdown,isc-dhcp-client,ca-certificates,sudo,procps,iputils-ping,netbase

SELF=$(readlink -f "${BASH_SOURCE[0]}")
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
log() { printf '[build-base] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
command -v debootstrap >/dev/null || die "debootstrap missing (run: tests/lab/lab deps)"
[ -r "$SOURCES" ] || die "$SOURCES not found: cannot tell which Debian mirror this machine uses"

# --- the machine's own mirrors, from its deb822 sources -----------------------------------------
# prints "URI SUITE..." per stanza
sources_stanzas() {
	awk 'BEGIN{u="";s=""}
	     /^[ \t]*$/ { if (u!="") print u, s; u=""; s=""; next }
	     /^URIs:/   { u=$2 }
	     /^Suites:/ { $1=""; s=$0 }
	     END { if (u!="") print u, s }' "$SOURCES"
}
MIRROR=$(sources_stanzas | awk -v s="$SUITE" '{for(i=2;i<=NF;i++) if ($i==s) {print $1; exit}}')
[ -n "$MIRROR" ] || die "no stanza with suite $SUITE in $SOURCES"

# apt.conf.d files to copy: the machine's local (not package-owned) settings, e.g. its mirror
# access options.  Package-owned files belong to packages the image does not have (packagekit,
# appstream) or that ship their own copy; the postgresql file is generated for this machine's
# database clusters; docker-* are container-image tweaks (no .deb cache...) a server does not have.
apt_conf_files() {
	local f
	for f in /etc/apt/apt.conf.d/*; do
		[ -f "$f" ] || continue
		case "${f##*/}" in *postgresql* | docker-*) continue ;; esac
		dpkg -S "$f" >/dev/null 2>&1 && continue
		printf '%s\n' "$f"
	done
}

mkdir -p "$LAB_CACHE"
if [ ! -s "$KEY" ]; then
	log "generating lab SSH key $KEY"
	rm -f "$KEY" "$KEY.pub"
	ssh-keygen -q -t ed25519 -N '' -C groundwork-lab -f "$KEY"
fi
chmod 600 "$KEY"

recipe_hash() {
	{
		cat "$SELF"
		echo "mirror=$MIRROR"
		cat "$SOURCES"
		apt_conf_files | while read -r f; do echo "== $f"; cat "$f"; done
		cat "$KEY.pub"
	} | sha256sum | cut -d' ' -f1
}
HASH=$(recipe_hash)

if [ "${LAB_REBUILD:-0}" != 1 ] && [ -s "$OUT" ] && [ "$(cat "$OUT.sha256" 2>/dev/null)" = "$HASH" ]; then
	log "base image up to date: $OUT"
	exit 0
fi
[ -s "$OUT" ] && log "recipe changed (or rebuild forced): rebuilding $OUT"

BUILD=$(mktemp -d "$(dirname "$OUT")/.build-base.XXXXXX")
ROOT=$BUILD/root
cleanup() {
	local m
	# debootstrap mounts /proc, /sys... inside; never rm -rf through a mount
	for m in $(findmnt -rn -o TARGET | grep -F "$BUILD/" | sort -r); do umount -l "$m" || true; done
	if findmnt -rn -o TARGET | grep -qF "$BUILD/"; then
		log "mounts remain under $BUILD, not removing it"
	else
		rm -rf "$BUILD"
	fi
}
trap cleanup EXIT

log "debootstrap $SUITE from $MIRROR"
t0=$(date +%s.%N)
# About a minute: say what it is doing every 10 s rather than stay silent.
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1 &
db_pid=$!
while kill -0 "$db_pid" 2>/dev/null; do
	for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$db_pid" 2>/dev/null || break; sleep 1; done
	kill -0 "$db_pid" 2>/dev/null || break
	log "debootstrap: $(grep '^I: ' "$BUILD/debootstrap.log" | tail -n 1 | cut -c4-) ($(elapsed "$t0" "$(date +%s.%N)") s)"
done
wait "$db_pid" || {
	tail -n 30 "$BUILD/debootstrap.log" >&2
	die "debootstrap failed"
}
t1=$(date +%s.%N)
log "debootstrap took $(elapsed "$t0" "$t1") s"

# --- apt: the machine's sources and settings, through the lab proxy -----------------------------
rm -f "$ROOT/etc/apt/sources.list"
install -m 644 "$SOURCES" "$ROOT/etc/apt/sources.list.d/debian.sources"
apt_conf_files | while read -r f; do install -m 644 "$f" "$ROOT/etc/apt/apt.conf.d/"; done
cat >"$ROOT/etc/apt/apt.conf.d/90groundwork-lab-proxy" <<EOF
// groundwork lab: apt-cacher-ng on the lab bridge
Acquire::http::Proxy "$PROXY_URL";
EOF
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/groundwork-lab-unsafe-io" <<'EOF'
# groundwork lab: throwaway hosts, no fsync per file
force-unsafe-io
EOF

# --- identity: every host makes its own --------------------------------------------------------
rm -f "$ROOT"/etc/ssh/ssh_host_*
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$ROOT/var/lib/dbus/machine-id"
rm -f "$ROOT/etc/hostname"
: >"$ROOT/etc/resolv.conf"
chmod 644 "$ROOT/etc/resolv.conf" # static hosts have no reachable resolver; DHCP hosts get one
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"

mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
# the unit's own ExecStartPre (sshd -t) would fail on first boot without keys: reset the list
cat >"$ROOT/etc/systemd/system/ssh.service.d/groundwork-lab-hostkeys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF
for t in apt-daily.timer apt-daily-upgrade.timer; do
	ln -sfn /dev/null "$ROOT/etc/systemd/system/$t"
done

# --- network: ifupdown reads interfaces.d (the lab writes eth0 per host) -------------------------
mkdir -p "$ROOT/etc/network/interfaces.d"
cat >"$ROOT/etc/network/interfaces" <<'EOF'
# groundwork lab base image
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
EOF

# --- access: root and ops (passwordless sudo) take the lab key -----------------------------------
install -d -m 700 "$ROOT/root/.ssh"
install -m 600 "$KEY.pub" "$ROOT/root/.ssh/authorized_keys"
chroot "$ROOT" useradd --create-home --shell /bin/bash --groups sudo ops
chroot "$ROOT" usermod -p '*' ops # no password, but not "locked" for sshd
install -d -m 700 "$ROOT/home/ops/.ssh"
install -m 600 "$KEY.pub" "$ROOT/home/ops/.ssh/authorized_keys"
chroot "$ROOT" chown -R ops:ops /home/ops/.ssh
printf 'ops ALL=(ALL) NOPASSWD:ALL\n' >"$ROOT/etc/sudoers.d/90-groundwork-lab-ops"
chmod 440 "$ROOT/etc/sudoers.d/90-groundwork-lab-ops"
chroot "$ROOT" visudo -c >/dev/null || die "sudoers check failed"

# A minimal Debian target has no python3: the lab must not either, or it would hide a need.
if [ -n "$(find "$ROOT/usr/bin" -maxdepth 1 -name 'python3*' -print -quit)" ]; then
	die "python3 is in the image; something in INCLUDE pulls it in"
fi

# --- slim down --------------------------------------------------------------------------------
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb
rm -f "$ROOT"/var/log/*.log "$ROOT/var/log/apt/"*.log
mkdir -p "$ROOT/var/lib/apt/lists/partial"
printf 'built by images/lab/build-base.sh on %s\nrecipe %s\n' "$(date -u +%FT%TZ)" "$HASH" >"$ROOT/etc/groundwork-lab-image"

log "writing $OUT"
tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$ROOT" -cf "$OUT.tmp" .
mv -f "$OUT.tmp" "$OUT"
echo "$HASH" >"$OUT.sha256"
t2=$(date +%s.%N)
log "done: $(du -h "$OUT" | cut -f1) in $(elapsed "$t0" "$t2") s total"

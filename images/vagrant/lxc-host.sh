#!/usr/bin/env bash
# Make this machine ready for `vagrant up --provider=lxc` (the Vagrantfile runs it before the
# first machine comes up; safe to run again): the lab bridge labbr0 and its apt proxy
# (tests/lab/lab), LXC's own bridge and its dnsmasq off (they would hand out addresses beside
# the site's Kea), and the box built from the lab image and installed when it is missing or
# older than its recipe.
set -euo pipefail

LAB_CACHE=${LAB_CACHE:-/var/cache/groundwork-lab}
BOX=$LAB_CACHE/vagrant/debian12-lxc.box
BOX_NAME=groundwork/debian12
SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/../.." && pwd)

log() { printf '[lxc-host] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (vagrant-lxc runs lxc-* as root)"
for c in vagrant lxc-create; do
	command -v "$c" >/dev/null ||
		die "$c missing: apt-get install --no-install-recommends vagrant vagrant-lxc lxc"
done

if ! grep -qs '^USE_LXC_BRIDGE="false"' /etc/default/lxc-net; then
	log "LXC's own bridge (lxcbr0 with dnsmasq) off: /etc/default/lxc-net"
	if [ -f /etc/default/lxc-net ]; then
		sed -i 's/^USE_LXC_BRIDGE=.*/USE_LXC_BRIDGE="false"/' /etc/default/lxc-net
	fi
	grep -qs '^USE_LXC_BRIDGE=' /etc/default/lxc-net || echo 'USE_LXC_BRIDGE="false"' >>/etc/default/lxc-net
fi
if [ -d /run/systemd/system ] && systemctl is-active --quiet lxc-net 2>/dev/null; then
	systemctl restart lxc-net # reads the file again: takes lxcbr0 and its dnsmasq down
fi

"$REPO/tests/lab/lab" deps
"$REPO/tests/lab/lab" up # no host: the base image, the bridge and the apt proxy
"$REPO/images/vagrant/build-box.sh" "$BOX"

installed=${VAGRANT_HOME:-$HOME/.vagrant.d}/boxes/${BOX_NAME//\//-VAGRANTSLASH-}/0/lxc/recipe.sha256
if [ "$(cat "$installed" 2>/dev/null)" != "$(cat "$BOX.sha256")" ]; then
	log "installing the box $BOX_NAME"
	vagrant box add --force --name "$BOX_NAME" --provider lxc "$BOX" >&2
else
	log "box $BOX_NAME installed and up to date"
fi

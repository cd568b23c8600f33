#!/bin/sh
# The Vagrant lab's DHCP client (run by the Vagrantfile's provisioner, as root): the card with
# MAC takes a lease through ifupdown, from the site's DHCP server (told by the lease's server
# identifier: the lab network may carry other DHCP servers, whose leases are given back), and
# the client's name must then resolve to the leased address through the DNS the lease names.
#
# usage: dhcp-client.sh MAC SERVER_ADDRESS FQDN
set -eu
mac=$1 server=$2 fqdn=$3

iface=$(ip -o link | awk -v mac="$mac" 'tolower($0) ~ "link/ether " mac { sub(":$", "", $2); sub("@.*", "", $2); print $2; exit }')
[ -n "$iface" ] || { echo "no network card with MAC $mac" >&2; exit 1; }
leases=/var/lib/dhcp/dhclient.$iface.leases
printf 'allow-hotplug %s\niface %s inet dhcp\n' "$iface" "$iface" >"/etc/network/interfaces.d/$iface"

# "ADDRESS SERVER" of the newest lease in the file
last_lease() {
	awk '/^lease/ { a = ""; s = "" }
	     /fixed-address/ { a = $2 }
	     /dhcp-server-identifier/ { s = $3 }
	     /^}/ { last = a " " s }
	     END { gsub(";", "", last); print last }' "$leases" 2>/dev/null
}

address=
for try in 1 2 3 4 5; do
	ifdown "$iface" >/dev/null 2>&1 || true
	ifup "$iface" >/dev/null 2>&1 || true
	set -- $(last_lease)
	if [ "${2:-}" = "$server" ]; then
		address=$1
		break
	fi
	echo "try $try: lease ${1:-none} from ${2:-no server}, not from $server: asking again"
	sleep 1
done
[ -n "$address" ] || { echo "no lease from $server on $iface" >&2; exit 1; }

# Kea's DDNS is asynchronous: give it a few seconds.
i=0
while :; do
	got=$(getent ahostsv4 "$fqdn" | awk 'NR == 1 { print $1 }')
	[ "$got" = "$address" ] && break
	i=$((i + 1))
	if [ "$i" -ge 20 ]; then
		echo "$fqdn resolves to '${got:-nothing}', not to its lease $address (DNS: $(grep '^nameserver' /etc/resolv.conf | tr '\n' ' '))" >&2
		exit 1
	fi
	sleep 0.5
done
echo "$iface took the lease $address from $server; $fqdn resolves to it"

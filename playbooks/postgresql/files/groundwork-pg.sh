#!/bin/sh
# groundwork-pg: checks and links for the PostgreSQL clusters of this host. Installed by groundwork.
#
#   groundwork-pg check-conf FILE   the server accepts FILE on top of each cluster's configuration
#                                   (postgres -C parses every file and value, as at start-up)
#   groundwork-pg check-hba FILE    FILE is a well-formed pg_hba.conf (PostgreSQL has no offline
#                                   parser for it: types, fields, addresses and methods are checked
#                                   here; after the restart pg_hba_file_rules must show no error)
#   groundwork-pg link              every cluster (pg_lsclusters) reads groundwork's files:
#                                   conf.d/50-groundwork.conf and pg_hba.conf become links to
#                                   /etc/groundwork/postgresql/ (the original pg_hba.conf is kept
#                                   in /var/backups/groundwork/)
#   groundwork-pg linked            exit 0 when they all do
set -eu
conf=/etc/groundwork/postgresql/groundwork.conf
hba=/etc/groundwork/postgresql/pg_hba.conf
cd /

clusters() {
	# version and name of every cluster; none is an error (the package makes 15/main).
	out=$(pg_lsclusters -h | awk '{ print $1, $2 }')
	[ -n "$out" ] || { echo "no PostgreSQL cluster on this host (pg_lsclusters)" >&2; exit 1; }
	printf '%s\n' "$out"
}

case "${1:-}" in
check-conf)
	file=$2
	clusters | while read -r v c; do
		dir=$(mktemp -d)
		chmod 755 "$dir"
		printf "include '/etc/postgresql/%s/%s/postgresql.conf'\ninclude '%s'\n" "$v" "$c" "$file" >"$dir/postgresql.conf"
		chmod 644 "$dir/postgresql.conf"
		rc=0
		out=$(runuser -u postgres -- "/usr/lib/postgresql/$v/bin/postgres" -C listen_addresses \
			-c "config_file=$dir/postgresql.conf" 2>&1) || rc=$?
		rm -rf "$dir"
		if [ $rc -ne 0 ]; then
			printf '%s\n' "$out" | grep -v 'could not change directory' >&2
			exit 1
		fi
	done
	;;
check-hba)
	awk '
		function bad(msg) { printf "%s line %d: %s: %s\n", FILENAME, NR, msg, $0 > "/dev/stderr"; err = 1 }
		/^[ \t]*(#|$)/ { next }
		{
			sub(/[ \t]+#.*/, "")
			t = $1
			methods = "^(trust|reject|scram-sha-256|md5|password|gss|sspi|ident|peer|pam|ldap|radius|cert)$"
			if (t == "local") {
				if (NF < 4) { bad("local needs database, user, method"); next }
				m = $4
			} else if (t ~ /^host(ssl|nossl|gssenc|nogssenc)?$/) {
				if (NF < 5) { bad(t " needs database, user, address, method"); next }
				a = $4
				if (a ~ /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/) {
					if (NF < 6) { bad("an address without a mask"); next }
					m = $6
				} else {
					if (a ~ /\// && a !~ /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\/[0-9]+$/ && a !~ /^[0-9a-fA-F:]+\/[0-9]+$/) bad("bad address " a)
					m = $5
				}
			} else { bad("unknown connection type " t); next }
			if (m !~ methods) bad("unknown method " m)
		}
		END { exit err }
	' "$2"
	;;
link | linked)
	fail=0
	for vc in $(clusters | tr ' ' '/'); do
		etc=/etc/postgresql/$vc
		if [ "$1" = linked ]; then
			[ "$(readlink "$etc/conf.d/50-groundwork.conf")" = "$conf" ] || fail=1
			[ "$(readlink "$etc/pg_hba.conf")" = "$hba" ] || fail=1
			continue
		fi
		mkdir -p "$etc/conf.d"
		ln -sfn "$conf" "$etc/conf.d/50-groundwork.conf"
		if [ "$(readlink "$etc/pg_hba.conf")" != "$hba" ]; then
			if [ -f "$etc/pg_hba.conf" ] && [ ! -L "$etc/pg_hba.conf" ]; then
				mkdir -p /var/backups/groundwork
				cp -a "$etc/pg_hba.conf" "/var/backups/groundwork/$(echo "$vc" | tr / _)-pg_hba.conf.orig"
			fi
			ln -sfn "$hba" "$etc/pg_hba.conf"
		fi
	done
	exit $fail
	;;
*)
	echo "usage: $0 check-conf FILE | check-hba FILE | link | linked" >&2
	exit 2
	;;
esac

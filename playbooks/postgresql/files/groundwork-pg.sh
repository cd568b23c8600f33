#!/bin/sh
# groundwork-pg: checks and links for the PostgreSQL clusters of this host. Installed by groundwork.
#
#   groundwork-pg check-conf FILE   the server accepts FILE on top of each cluster's configuration
#                                   (postgres -C parses every file and value, as at start-up)
#   groundwork-pg check-hba FILE    FILE is a well-formed pg_hba.conf (PostgreSQL has no offline
#                                   parser for it: types, fields, addresses and methods are checked
#                                   here; after the restart pg_hba_file_rules must show no error)
#   groundwork-pg link              every cluster (/etc/postgresql/VERSION/NAME) reads groundwork's files:
#                                   conf.d/50-groundwork.conf and pg_hba.conf become links to
#                                   /etc/groundwork/postgresql/ (the original pg_hba.conf is kept
#                                   in /var/backups/groundwork/)
#   groundwork-pg linked            exit 0 when they all do
#   groundwork-pg ready             during a start: 0 the server answers, 1 not yet, 2 it cannot
#                                   (a cluster's unit failed, or pg_hba.conf has errors)
#   groundwork-pg started           exit 0 when every cluster's unit has finished starting
#   groundwork-pg running           exit 0 when every cluster's unit is active or starting
#   groundwork-pg start             start the cluster units that are stopped or failed
#   groundwork-pg psql ARG...       the newest installed psql, without Debian's Perl wrapper
set -eu
conf=/etc/groundwork/postgresql/groundwork.conf
hba=/etc/groundwork/postgresql/pg_hba.conf
cd /

clusters() {
	# version and name of every cluster, as pg_lsclusters finds them (a postgresql.conf under
	# /etc/postgresql/VERSION/NAME/), read with a glob: pg_lsclusters is Perl, 30 ms a call.
	# None is an error (the package makes 15/main).
	found=0
	for f in /etc/postgresql/*/*/postgresql.conf; do
		[ -f "$f" ] || continue
		vc=${f#/etc/postgresql/}
		vc=${vc%/postgresql.conf}
		printf '%s %s\n' "${vc%%/*}" "${vc#*/}"
		found=1
	done
	[ $found = 1 ] || { echo "no PostgreSQL cluster on this host (/etc/postgresql/*/*/postgresql.conf)" >&2; exit 1; }
}

# VERSION-NAME of each cluster that starts with the system (start.conf `auto`), as its unit
# postgresql@VERSION-NAME names it.
started_clusters() {
	clusters | while read -r v c; do
		sc=/etc/postgresql/$v/$c/start.conf
		if [ ! -e "$sc" ] || grep -qE '^[[:space:]]*auto([[:space:]]|$)' "$sc"; then printf '%s-%s\n' "$v" "$c"; fi
	done
}

case "${1:-}" in
check-conf)
	file=$2
	list=$(clusters)
	printf '%s\n' "$list" | while read -r v c; do
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
	# groundwork's ledger (src/engine/ledger.rs): a path as it was before groundwork first
	# changed it, beside its backups, for `groundwork reset`.
	ledger() {
		b=/var/backups/groundwork/$(printf '%s' "$1" | sed 's/%/%25/g; s,/,%2F,g')
		[ -e "$b.orig" ] || [ -e "$b.created" ] || {
			mkdir -p /var/backups/groundwork
			if [ -e "$1" ] || [ -L "$1" ]; then cp -a "$1" "$b.orig"; else : >"$b.created"; fi
		}
	}
	list=$(clusters)
	fail=0
	for vc in $(printf '%s\n' "$list" | tr ' ' '/'); do
		etc=/etc/postgresql/$vc
		if [ "$1" = linked ]; then
			[ "$(readlink "$etc/conf.d/50-groundwork.conf")" = "$conf" ] || fail=1
			[ "$(readlink "$etc/pg_hba.conf")" = "$hba" ] || fail=1
			continue
		fi
		mkdir -p "$etc/conf.d"
		ledger "$etc/conf.d/50-groundwork.conf"
		ln -sfn "$conf" "$etc/conf.d/50-groundwork.conf"
		if [ "$(readlink "$etc/pg_hba.conf")" != "$hba" ]; then
			ledger "$etc/pg_hba.conf"
			ln -sfn "$hba" "$etc/pg_hba.conf"
		fi
	done
	exit $fail
	;;
ready)
	# During a start (the service step's `ready`): exit 0 once the server answers and its
	# pg_hba.conf has no error, 1 while not yet, 2 when waiting cannot help: a started
	# cluster's unit failed, or pg_hba_file_rules shows errors (both said on stderr).
	for vc in $(started_clusters); do
		if [ "$(systemctl show --property=ActiveState --value -- "postgresql@$vc")" = failed ]; then
			systemctl status --no-pager -n 15 -- "postgresql@$vc" >&2 || true
			exit 2
		fi
	done
	n=$(runuser -u postgres -- "$0" psql -XtAc 'select count(*) from pg_hba_file_rules where error is not null' 2>/dev/null) || exit 1
	[ "$n" = 0 ] && exit 0
	runuser -u postgres -- "$0" psql -XtAc 'select file_name, line_number, error from pg_hba_file_rules where error is not null' >&2
	exit 2
	;;
started)
	# exit 0 when the unit of every cluster that starts with the system is active (its start
	# job, pg_ctlcluster's checks included, has finished).
	for vc in $(started_clusters); do
		systemctl is-active --quiet "postgresql@$vc" || exit 1
	done
	;;
running)
	# exit 0 when the unit of every cluster that starts with the system is active or on its way
	# (postgresql.service is active even when a cluster's unit failed: this looks at each).
	for vc in $(started_clusters); do
		case $(systemctl show --property=ActiveState --value -- "postgresql@$vc") in
		active | activating | reloading) ;;
		*) exit 1 ;;
		esac
	done
	;;
start)
	# Start the cluster units `running` finds stopped or failed; a failure shows its status.
	for vc in $(started_clusters); do
		case $(systemctl show --property=ActiveState --value -- "postgresql@$vc") in
		active | activating | reloading) continue ;;
		esac
		systemctl reset-failed -- "postgresql@$vc" 2>/dev/null || true
		if ! systemctl start -- "postgresql@$vc"; then
			systemctl status --no-pager -n 15 -- "postgresql@$vc" >&2 || true
			exit 1
		fi
	done
	;;
psql)
	# The newest installed client itself: Debian's /usr/bin/psql is a Perl wrapper (30 ms a call,
	# and the checks call it on every run).
	shift
	best=
	for p in /usr/lib/postgresql/*/bin/psql; do
		[ -x "$p" ] || continue
		v=${p#/usr/lib/postgresql/}
		v=${v%%/*}
		if [ -z "$best" ] || [ "${v%%.*}" -gt "${best%%.*}" ]; then best=$v; fi
	done
	[ -n "$best" ] || { echo "no psql in /usr/lib/postgresql/*/bin" >&2; exit 1; }
	exec "/usr/lib/postgresql/$best/bin/psql" "$@"
	;;
*)
	echo "usage: $0 check-conf FILE | check-hba FILE | link | linked | ready | started | running | start | psql ARG..." >&2
	exit 2
	;;
esac

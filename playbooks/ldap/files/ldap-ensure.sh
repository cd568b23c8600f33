#!/bin/sh
# groundwork-ldap-ensure: make LDAP entries look like LDIF files, over ldapi:/// as root
# (SASL EXTERNAL), changing only what differs (compare before modify). Installed by groundwork.
#
#   groundwork-ldap-ensure [--check] FILE...
#       Each record of FILE is `dn: ...` followed by attribute lines. An absent entry is added
#       whole. For an entry that exists, every attribute the record lists is compared with the
#       entry's values (in order, ignoring the {n} ordering prefixes of cn=config) and replaced
#       when they differ. Attributes the record does not list are left alone.
#       A record with the comment `# ensure: values` only adds the listed values that are
#       missing and never removes any (e.g. olcModuleLoad: modules cannot be unloaded).
#       A record with the comment `# password: PASSWORD-FILE` gets userPassword (a salted hash
#       of the file) when it is added; later the password is checked by binding, not here.
#   groundwork-ldap-ensure --password DN ATTRIBUTE PASSWORD-FILE
#       Sets ATTRIBUTE of DN to a salted SHA hash ({SSHA}) of the file's content. The password
#       only passes through files and pipes, never through a command line.
#
# --check changes nothing and exits 1 when something differs (0 when all matches).
set -eu

ldap() { "$@" -Q -Y EXTERNAL -H ldapi:///; }

if [ "${1:-}" = --password ]; then
	[ $# -eq 4 ] || { echo "usage: $0 --password DN ATTRIBUTE PASSWORD-FILE" >&2; exit 2; }
	hash=$(slappasswd -h '{SSHA}' -T "$4")
	# printf is a shell builtin here: the hash goes through a pipe, not an argument list.
	printf 'dn: %s\nchangetype: modify\nreplace: %s\n%s: %s\n' "$2" "$3" "$3" "$hash" |
		ldapmodify -Q -Y EXTERNAL -H ldapi:/// >/dev/null
	exit 0
fi

check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
[ $# -ge 1 ] || { echo "usage: $0 [--check] FILE..." >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One file per record: rec.001, rec.002, ... (comments other than `# ensure:` dropped).
awk -v dir="$tmp" '
	/^#/ && !/^# (ensure|password):/ { next }
	NF == 0 { if (open) { close(f); open = 0 } next }
	{ if (!open) { n++; f = sprintf("%s/rec.%03d", dir, n); open = 1 } print > f }
' "$@"

# `attr<TAB>value` lines: attribute names lowercased, base64 values decoded, {n} prefixes dropped.
# One awk for the whole entry (a process per line made a check take a third of a second).
normalise() {
	awk '
		{
			i = index($0, ":")
			if (i == 0) next
			a = tolower(substr($0, 1, i - 1))
			rest = substr($0, i + 1)
			if (a == "dn" || a == "changetype" || a ~ /^#/ || a == "") next
			if (substr(rest, 1, 1) == ":") {
				# base64 (only its alphabet: safe inside single quotes)
				b = substr(rest, 2)
				sub(/^ /, "", b)
				cmd = "printf %s \047" b "\047 | base64 -d"
				v = ""
				n = 0
				while ((cmd | getline line) > 0) v = v (n++ ? "\n" : "") line
				close(cmd)
			} else {
				v = rest
				sub(/^ /, "", v)
			}
			sub(/^[{]-?[0-9]+[}]/, "", v)
			printf "%s\t%s\n", a, v
		}'
}

differs=0
for rec in "$tmp"/rec.*; do
	[ -e "$rec" ] || continue
	dn=$(sed -n 's/^dn: //p' "$rec" | head -n 1)
	[ -n "$dn" ] || { echo "$rec: a record without dn" >&2; exit 2; }
	mode=entry
	if grep -q '^# ensure: values' "$rec"; then mode=values; fi
	set +e
	current=$(ldapsearch -Q -Y EXTERNAL -H ldapi:/// -LLL -o ldif-wrap=no -s base -b "$dn" '*' 2>"$tmp/err")
	rc=$?
	set -e
	if [ $rc -eq 32 ]; then
		if [ $mode = values ]; then echo "$dn does not exist" >&2; exit 2; fi
		differs=1
		echo "add $dn"
		if [ $check -eq 0 ]; then
			pwfile=$(sed -n 's/^# password: //p' "$rec" | head -n 1)
			{
				grep -v '^#' "$rec"
				if [ -n "$pwfile" ]; then printf 'userPassword: %s\n' "$(slappasswd -h '{SSHA}' -T "$pwfile")"; fi
			} | ldap ldapadd >/dev/null || { echo "adding $dn failed" >&2; exit 1; }
		fi
		continue
	elif [ $rc -ne 0 ]; then
		cat "$tmp/err" >&2
		exit 2
	fi
	printf '%s\n' "$current" | normalise >"$tmp/have"
	normalise <"$rec" >"$tmp/want"
	: >"$tmp/mod"
	# Per attribute of the record, in its order: `entry` records replace an attribute whose
	# values (in order) differ, with the record's own lines; `values` records add what is missing.
	awk -v mode="$mode" -v dn="$dn" -v modf="$tmp/mod" '
		FILENAME == ARGV[1] {
			i = index($0, "\t"); a = substr($0, 1, i - 1)
			if (!(a in wn)) order[++n] = a
			want[a, ++wn[a]] = substr($0, i + 1)
			next
		}
		FILENAME == ARGV[2] {
			i = index($0, "\t"); a = substr($0, 1, i - 1); v = substr($0, i + 1)
			have[a, ++hn[a]] = v
			hv[a, v] = 1
			next
		}
		{
			i = index($0, ":")
			if (i) { a = tolower(substr($0, 1, i - 1)); raw[a] = raw[a] $0 "\n" }
		}
		END {
			for (k = 1; k <= n; k++) {
				a = order[k]
				if (mode == "entry") {
					same = (wn[a] == hn[a])
					for (j = 1; same && j <= wn[a]; j++) if (want[a, j] != have[a, j]) same = 0
					if (!same) {
						printf "replace: %s\n%s-\n", a, raw[a] > modf
						printf "replace %s of %s\n", a, dn
					}
				} else {
					for (j = 1; j <= wn[a]; j++) if (!((a, want[a, j]) in hv)) {
						printf "add: %s\n%s: %s\n-\n", a, a, want[a, j] > modf
						printf "add %s: %s to %s\n", a, want[a, j], dn
					}
				}
			}
		}' "$tmp/want" "$tmp/have" "$rec"
	if [ -s "$tmp/mod" ]; then
		differs=1
		if [ $check -eq 0 ]; then
			{ printf 'dn: %s\nchangetype: modify\n' "$dn"; cat "$tmp/mod"; } | ldap ldapmodify >/dev/null ||
				{ echo "modifying $dn failed" >&2; exit 1; }
		fi
	fi
done

if [ $check -eq 1 ]; then exit $differs; fi
exit 0

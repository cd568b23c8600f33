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
normalise() {
	while IFS= read -r line; do
		a=${line%%:*}
		rest=${line#*:}
		case $a in dn|changetype|\#*|'') continue ;; esac
		case $rest in
			:*) v=$(printf '%s' "${rest#: }" | sed 's/^://' | base64 -d) ;;
			*) v=${rest# } ;;
		esac
		a=$(printf '%s' "$a" | tr 'A-Z' 'a-z')
		v=$(printf '%s' "$v" | sed 's/^{-\{0,1\}[0-9]\{1,\}}//')
		printf '%s\t%s\n' "$a" "$v"
	done
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
	for a in $(cut -f1 "$tmp/want" | awk '!seen[$0]++'); do
		grep "^$a	" "$tmp/want" | cut -f2- >"$tmp/want.a" || true
		grep "^$a	" "$tmp/have" | cut -f2- >"$tmp/have.a" || true
		if [ $mode = entry ]; then
			if ! cmp -s "$tmp/want.a" "$tmp/have.a"; then
				printf 'replace: %s\n' "$a" >>"$tmp/mod"
				grep -i "^$a:" "$rec" >>"$tmp/mod"
				printf -- '-\n' >>"$tmp/mod"
				echo "replace $a of $dn"
			fi
		else
			while IFS= read -r v; do
				if ! grep -qxF -- "$v" "$tmp/have.a"; then
					printf 'add: %s\n%s: %s\n-\n' "$a" "$a" "$v" >>"$tmp/mod"
					echo "add $a: $v to $dn"
				fi
			done <"$tmp/want.a"
		fi
	done
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

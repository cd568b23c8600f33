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

# One file per record: rec.001, rec.002, ... (comments other than `# ensure:` dropped), and
# an index line per record: number, mode (entry or values) and dn.
: >"$tmp/index"
awk -v dir="$tmp" '
	function done() {
		if (open) { close(f); printf "%03d\t%s\t%s\n", n, mode, dn > (dir "/index"); open = 0 }
	}
	/^#/ && !/^# (ensure|password):/ { next }
	NF == 0 { done(); next }
	{
		if (!open) { n++; f = sprintf("%s/rec.%03d", dir, n); open = 1; mode = "entry"; dn = "" }
		if ($0 == "# ensure: values") mode = "values"
		if (dn == "" && substr($0, 1, 4) == "dn: ") dn = substr($0, 5)
		print > f
	}
	END { done(); close(dir "/index") }
' "$@"

# Compares a record with its entry, attribute by attribute, in the record's order. Lines of
# both become attribute (lowercased) and value (base64 decoded, {n} prefix of cn=config
# dropped). `entry` records replace an attribute whose values (in order) differ, with the
# record's own lines; `values` records add the values that are missing. Writes the LDIF
# modification to modf and one line per difference to stdout. One awk per record: a
# process per line, or per step, made a check take a third of a second.
compare='
	function parse(line) {
		i = index(line, ":")
		if (i == 0) return 0
		a = tolower(substr(line, 1, i - 1))
		rest = substr(line, i + 1)
		if (a == "dn" || a == "changetype" || a ~ /^#/ || a == "") return 0
		if (substr(rest, 1, 1) == ":") {
			# base64 (only its alphabet: safe inside single quotes)
			b = substr(rest, 2)
			sub(/^ /, "", b)
			cmd = "printf %s \047" b "\047 | base64 -d"
			v = ""
			k = 0
			while ((cmd | getline l) > 0) v = v (k++ ? "\n" : "") l
			close(cmd)
		} else {
			v = rest
			sub(/^ /, "", v)
		}
		sub(/^[{]-?[0-9]+[}]/, "", v)
		return 1
	}
	FILENAME == ARGV[1] {
		if (!parse($0)) next
		if (!(a in wn)) order[++n] = a
		want[a, ++wn[a]] = v
		raw[a] = raw[a] $0 "\n"
		next
	}
	{
		if (!parse($0)) next
		have[a, ++hn[a]] = v
		hv[a, v] = 1
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
	}'

differs=0
while IFS="$(printf '\t')" read -r num mode dn; do
	rec=$tmp/rec.$num
	[ -n "$dn" ] || { echo "$rec: a record without dn" >&2; exit 2; }
	set +e
	ldapsearch -Q -Y EXTERNAL -H ldapi:/// -LLL -o ldif-wrap=no -s base -b "$dn" '*' >"$tmp/have" 2>"$tmp/err"
	rc=$?
	set -e
	if [ $rc -eq 32 ]; then
		if [ "$mode" = values ]; then echo "$dn does not exist" >&2; exit 2; fi
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
	: >"$tmp/mod"
	awk -v mode="$mode" -v dn="$dn" -v modf="$tmp/mod" "$compare" "$rec" "$tmp/have"
	if [ -s "$tmp/mod" ]; then
		differs=1
		if [ $check -eq 0 ]; then
			{ printf 'dn: %s\nchangetype: modify\n' "$dn"; cat "$tmp/mod"; } | ldap ldapmodify >/dev/null ||
				{ echo "modifying $dn failed" >&2; exit 1; }
		fi
	fi
done <"$tmp/index"

if [ $check -eq 1 ]; then exit $differs; fi
exit 0

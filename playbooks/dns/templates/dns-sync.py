#!/usr/bin/python3
# Managed by groundwork: brings the static records of a dynamic zone in line with the zone data
# that groundwork rendered (and named-checkzone accepted), with TSIG-signed RFC 2136 updates.
#
#   dns-sync [--check] ZONE STATIC-FILE
#
# The live zone is read by AXFR from the local server. Only names that groundwork manages are
# touched: the names of STATIC-FILE, plus the names it held at the last sync (kept in
# /var/lib/groundwork/dns/ZONE.applied), so a host removed from the answer file loses its
# records. Everything else (the leases that kea-dhcp-ddns registered) is left alone.
# SOA: everything but the serial is compared; BIND bumps the serial on every update.
# --check: exit 0 when nothing would change, 1 otherwise (the differences on stdout).
import os
import subprocess
import sys

KEY = "/etc/bind/groundwork/ddns.key"
STATE = "/var/lib/groundwork/dns"
SKIP = {"RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DNSKEY", "CDS", "CDNSKEY", "TYPE65534"}


def run(cmd, stdin=None):
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write("%s failed (exit %d): %s%s" % (" ".join(cmd), p.returncode, p.stdout, p.stderr))
        sys.exit(2)
    return p.stdout


def records(text):
    """Zone text (one RR a line, full names) -> set of (name, ttl, type, rdata)."""
    out = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        f = line.split(None, 4)
        if len(f) < 5 or f[2] != "IN":
            continue
        name, ttl, _, rtype, rdata = f
        rtype = rtype.upper()
        if rtype in SKIP:
            continue
        rdata = " ".join(rdata.split())
        if rtype != "TXT":
            rdata = rdata.lower()
        out.add((name.lower(), int(ttl), rtype, rdata))
    return out


def soa_of(rrs):
    for r in rrs:
        if r[2] == "SOA":
            return r
    return None


def soa_key(r):
    f = r[3].split()
    return (r[1], f[0], f[1], f[3:])


def main():
    args = sys.argv[1:]
    check = bool(args) and args[0] == "--check"
    if check:
        args = args[1:]
    if len(args) != 2:
        sys.stderr.write("usage: dns-sync [--check] ZONE STATIC-FILE\n")
        return 2
    zone, static = args
    zone = zone.rstrip(".").lower()
    desired_all = records(run(["named-checkzone", "-q", "-D", "-o", "-", zone, static]))
    live_all = records(run(["dig", "-k", KEY, "@127.0.0.1", zone, "AXFR", "+noall", "+answer", "+tries=2", "+time=3"]))
    if not live_all:
        sys.stderr.write("the local server did not transfer %s (is named running with the zone?)\n" % zone)
        return 2
    applied_path = os.path.join(STATE, zone + ".applied")
    try:
        with open(applied_path) as f:
            applied = records(f.read())
    except FileNotFoundError:
        applied = set()

    want_soa, live_soa = soa_of(desired_all), soa_of(live_all)
    desired = {r for r in desired_all if r[2] != "SOA"}
    managed = {r[0] for r in desired} | {r[0] for r in applied if r[2] != "SOA"}
    live = {r for r in live_all if r[2] != "SOA" and r[0] in managed}
    add = sorted(desired - live)
    delete = sorted(live - desired)
    soa_differs = want_soa is not None and live_soa is not None and soa_key(want_soa) != soa_key(live_soa)
    applied_differs = applied != desired_all

    if check:
        for r in add:
            print("missing: %s %d %s %s" % r)
        for r in delete:
            print("extra:   %s %d %s %s" % r)
        if soa_differs:
            print("SOA differs: live %s, wanted %s" % (live_soa[3], want_soa[3]))
        if applied_differs and not (add or delete or soa_differs):
            print("in sync; the record of managed names is not written yet")
        return 1 if (add or delete or soa_differs or applied_differs) else 0

    # Deletes first (a CNAME can only be added once the A at its name is gone), but NS records
    # of the apex last: BIND ignores deleting the last NS of a zone.
    apex_ns = [r for r in delete if r[2] == "NS" and r[0] == zone + "."]
    lines = ["server 127.0.0.1", "zone " + zone + "."]
    lines += ["update delete %s %d IN %s %s" % r for r in delete if r not in apex_ns]
    lines += ["update add %s %d IN %s %s" % r for r in add]
    lines += ["update delete %s %d IN %s %s" % r for r in apex_ns]
    if soa_differs:
        f = want_soa[3].split()
        serial = (int(live_soa[3].split()[2]) + 1) % (1 << 32)
        f[2] = str(serial)
        lines.append("update add %s %d IN SOA %s" % (want_soa[0], want_soa[1], " ".join(f)))
    if len(lines) > 2:
        lines.append("send")
        run(["nsupdate", "-k", KEY], "\n".join(lines) + "\n")
    os.makedirs(STATE, mode=0o755, exist_ok=True)
    tmp = applied_path + ".new"
    with open(tmp, "w") as f:
        f.write("; names groundwork manages in %s (written after each sync)\n" % zone)
        for r in sorted(desired_all):
            f.write("%s %d IN %s %s\n" % r)
    os.replace(tmp, applied_path)
    print("%s: %d record(s) added, %d deleted%s" % (zone, len(add), len(delete), ", SOA updated" if soa_differs else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Per host and phase, where a first converge's time went, from `apply --json` events.

Reads the events of one or more runs (files given as arguments) and prints, per host, the
median over the runs of: connect, the package transaction, the time after it until the host
finished (its roles go side by side, so this is the wall time, facts round trips included),
then within that each role's own steps and the service starts and restarts (busy times: they
overlap, and add up to more than the wall time when roles ran side by side).
"""
import json
import statistics
import sys

SERVICE_STEPS = {"named", "kea-dhcp4", "kea-dhcp-ddns", "slapd", "postgresql", "mariadb", "sshd", "chrony"}


def one(path):
    hosts = {}
    for line in open(path):
        if not line.startswith("{"):
            continue
        e = json.loads(line)
        h = e.get("host")
        if not h or h == "-":
            continue
        d = hosts.setdefault(h, {})
        ev = e.get("event")
        if ev == "connected":
            d["connect"] = e.get("ms", 0)
        elif ev == "step-finished":
            role, step, ms = e.get("role"), e.get("step"), e.get("ms", 0)
            if role == "packages":
                key = "packages"
            elif step in SERVICE_STEPS:
                key = "starts/restarts"
            elif role == "proxmox":
                key = "provision"
            else:
                key = f"role {role}"
            d[key] = d.get(key, 0) + ms
        elif ev == "host-finished":
            d["total"] = e["summary"].get("ms", 0)
    for d in hosts.values():
        d["after the packages (wall)"] = max(0, d.get("total", 0) - d.get("connect", 0) - d.get("packages", 0))
    return hosts


runs = [one(p) for p in sys.argv[1:]]
names = sorted({h for r in runs for h in r})
for h in names:
    keys = []
    for r in runs:
        for k in r.get(h, {}):
            if k not in keys:
                keys.append(k)
    order = ["connect", "packages", "after the packages (wall)"]
    keys.sort(key=lambda k: (k == "total", order.index(k) if k in order else len(order), k))
    parts = []
    for k in keys:
        vals = [r.get(h, {}).get(k, 0) for r in runs]
        parts.append(f"{k} {statistics.median(vals) / 1000:.1f}")
    print(f"  {h}: " + ", ".join(parts) + " s (median)")

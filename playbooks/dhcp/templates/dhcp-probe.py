#!/usr/bin/python3
# Managed by groundwork: is there a DHCP server on this segment? Broadcasts a DHCPDISCOVER (from
# a random, locally administered MAC, so no real client's lease is touched) on the interface
# that holds ADDRESS and lists every server that offers an address within the listening time.
#
#   dhcp-probe [--foreign] [--quiet] [--wait SECONDS] ADDRESS
#
# Output: one line per answering server, "server <id> from <source> offers <address>".
# --foreign: servers that are this host itself do not count (its own Kea on a re-run).
# Exit: 0 when no (counted) server answered, 1 when one did, 2 when the probe could not run.
import random
import select
import socket
import struct
import subprocess
import sys
import time


def interface_of(address):
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "to", address + "/32"],
                         capture_output=True, text=True).stdout.split()
    if len(out) < 2:
        raise SystemExit(die("no interface holds %s" % address))
    return out[1].split("@")[0]


def own_addresses():
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3}


def die(msg):
    sys.stderr.write("dhcp-probe: %s\n" % msg)
    return 2


def discover(xid, mac):
    pkt = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                      b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4, mac + b"\0" * 10, b"", b"")
    opts = b"\x63\x82\x53\x63"            # magic cookie
    opts += b"\x35\x01\x01"                # DHCPDISCOVER
    opts += b"\x37\x03\x01\x03\x06"        # ask for netmask, router, DNS
    opts += b"\xff"
    return pkt + opts


def parse(data, xid):
    if len(data) < 240 or data[0] != 2 or struct.unpack("!I", data[4:8])[0] != xid:
        return None
    if data[236:240] != b"\x63\x82\x53\x63":
        return None
    offered = socket.inet_ntoa(data[16:20])
    server, kind, i = None, None, 240
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        length = data[i + 1]
        value = data[i + 2:i + 2 + length]
        if code == 53 and length == 1:
            kind = value[0]
        elif code == 54 and length == 4:
            server = socket.inet_ntoa(value)
        i += 2 + length
    if kind != 2:                           # DHCPOFFER only
        return None
    return server, offered


def main():
    args = sys.argv[1:]
    foreign = "--foreign" in args
    quiet = "--quiet" in args
    wait = 2.5
    if "--wait" in args:
        wait = float(args[args.index("--wait") + 1])
    rest = [a for i, a in enumerate(args) if not a.startswith("--") and (i == 0 or args[i - 1] != "--wait")]
    if len(rest) != 1:
        return die("usage: dhcp-probe [--foreign] [--quiet] [--wait SECONDS] ADDRESS")
    iface = interface_of(rest[0])
    mine = own_addresses() if foreign else set()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    try:
        s.setsockopt(socket.SOL_SOCKET, 25, iface.encode() + b"\0")    # SO_BINDTODEVICE
        s.bind(("0.0.0.0", 68))
    except OSError as e:
        return die("cannot listen on %s port 68: %s" % (iface, e))
    xid = random.getrandbits(32)
    mac = bytes([0x02, 0x67, 0x77] + [random.getrandbits(8) for _ in range(3)])
    packet = discover(xid, mac)
    found = {}
    end = time.monotonic() + wait
    next_send = 0.0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_send:
            s.sendto(packet, ("255.255.255.255", 67))
            next_send = now + 1.0
        r, _, _ = select.select([s], [], [], min(end, next_send) - now)
        if not r:
            continue
        data, (src, _) = s.recvfrom(4096)
        got = parse(data, xid)
        if got is None:
            continue
        server, offered = got
        server = server or src
        if foreign and (server in mine or src in mine):
            continue
        found[server] = (src, offered)
    for server, (src, offered) in sorted(found.items()):
        if not quiet:
            print("server %s from %s offers %s" % (server, src, offered))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

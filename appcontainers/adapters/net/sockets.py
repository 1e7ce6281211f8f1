"""Which host ports are taken: the host's own sockets (/proc/net) and other data roots'
published ports (their nftables set `published`)."""
from __future__ import annotations

import ipaddress
import json
import shutil

from ..host import process

LISTEN, UDP_UNCONNECTED = "0A", "07"
Taken = tuple[str, str | None, int]  # (protocol, host address or None for every one, port)


def parse_proc_net(text: str, proto: str) -> set[Taken]:
    """The sockets of one /proc/net/{tcp,tcp6,udp,udp6} that hold a port: TCP listeners,
    bound UDP sockets (pure)."""
    taken: set[Taken] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or (proto == "tcp" and fields[3] != LISTEN) or \
                (proto == "udp" and fields[3] != UDP_UNCONNECTED):
            continue
        addr_hex, port_hex = fields[1].rsplit(":", 1)
        taken.add((proto, _address(addr_hex), int(port_hex, 16)))
    return taken


def _address(addr_hex: str) -> str | None:
    """/proc/net's address (little-endian words); None for the wildcard."""
    raw = bytes.fromhex(addr_hex)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return None if ip.is_unspecified else str(ip)


def host_sockets() -> set[Taken]:
    taken: set[Taken] = set()
    for proto in ("tcp", "udp"):
        for suffix in ("", "6"):
            try:
                with open(f"/proc/net/{proto}{suffix}") as f:
                    taken |= parse_proc_net(f.read(), proto)
            except FileNotFoundError:
                pass
    return taken


def parse_published(listing: str) -> set[Taken]:
    """(protocol, None, port) of an `nft -j list set ... published` listing (pure)."""
    taken: set[Taken] = set()
    for item in json.loads(listing).get("nftables", []):
        for elem in item.get("set", {}).get("elem", []):
            proto, port = elem["concat"]
            taken.add((str(proto), None, int(port)))
    return taken


def other_roots_published(own_table: str) -> set[Taken]:
    """The ports every other data root on this host publishes (tables appcontainers_*)."""
    if shutil.which("nft") is None:
        return set()
    out = process.run(["nft", "list", "tables", "inet"], timeout=30).stdout.decode()
    taken: set[Taken] = set()
    for line in out.splitlines():
        name = line.split()[-1] if line.startswith("table inet ") else ""
        if name.startswith("appcontainers_") and name != own_table:
            proc = process.run(["nft", "-j", "list", "set", "inet", name, "published"], timeout=30, check=False)
            if proc.returncode == 0:
                taken |= parse_published(proc.stdout.decode())
    return taken

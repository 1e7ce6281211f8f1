"""The service's own Linux bridge, its nftables rules, and the MACs already present on this host."""
from __future__ import annotations

import hashlib
import json
import os

from ...domain.firewall import RootRules
from ..host import process
from . import nftables, sockets


def bridge_mac(name: str) -> str:
    """The bridge's own fixed MAC (locally administered, from its name). Without one, Linux gives
    a bridge the lowest MAC of its ports, so it changed whenever a container left: the others'
    ARP entries for the gateway then pointed nowhere until they expired (DNS, pings, NAT lost)."""
    digest = hashlib.sha256(name.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, 0xac, *digest[:4]))


def bridge_plan(name: str, gateway: str, prefixlen: int, present: dict | None) -> list[list[str]]:
    """The ip(8) commands that bring the bridge to the wanted state (pure; [] when it is there).

    present: the bridge's `ip -j addr show` record, or None if it does not exist.
    """
    plan = []
    if present is None or present.get("address") != bridge_mac(name):
        if present is None:
            plan.append(["ip", "link", "add", name, "type", "bridge"])
        plan.append(["ip", "link", "set", name, "address", bridge_mac(name)])
    if present is None:
        addrs = []
    else:
        addrs = [(a.get("local"), a.get("prefixlen")) for a in present.get("addr_info", [])
                 if a.get("family") == "inet"]
    if (gateway, prefixlen) not in addrs:
        plan.append(["ip", "addr", "add", f"{gateway}/{prefixlen}", "dev", name])
    if present is None or "UP" not in present.get("flags", []):
        plan.append(["ip", "link", "set", name, "up"])
    return plan


def switch_on(keys: tuple[tuple[str, str], ...], root: str = "/proc/sys") -> None:
    """Set each /proc/sys key to its value unless it already has it; never switched back off
    (the admin or another data root may rely on it). A key whose interface is not there yet
    (the bridge, after a reboot) waits for the next start."""
    for key, value in keys:
        path = os.path.join(root, key)
        try:
            with open(path) as f:
                if f.read().strip() == value:
                    continue
            with open(path, "w") as f:
                f.write(value)
        except FileNotFoundError:
            continue


class HostNetwork:
    def _show(self, name: str) -> dict | None:
        proc = process.run(["ip", "-j", "addr", "show", "dev", name], timeout=10, check=False)
        if proc.returncode != 0:
            return None
        data = json.loads(proc.stdout or b"[]")
        return data[0] if data else None

    def ensure_bridge(self, name: str, gateway: str, prefixlen: int) -> None:
        """Create the bridge with the gateway address if missing; idempotent."""
        present = self._show(name)
        if present is not None and present.get("linkinfo", {}).get("info_kind", "bridge") not in ("bridge",):
            from ...domain.exceptions import InvalidValue
            raise InvalidValue(f"interface {name} exists and is not a bridge")
        for argv in bridge_plan(name, gateway, prefixlen, present):
            proc = process.run(argv, timeout=10, check=False)
            if proc.returncode != 0:
                # A concurrent process may have done the same step first: fine if now in place.
                if argv in bridge_plan(name, gateway, prefixlen, self._show(name)):
                    process.run(argv, timeout=10)

    def delete_link(self, name: str) -> None:
        process.run(["ip", "link", "del", name], timeout=10, check=False)

    def host_macs(self) -> set[str]:
        macs: set[str] = set()
        try:
            names = os.listdir("/sys/class/net")
        except FileNotFoundError:
            return macs
        for n in names:
            try:
                with open(f"/sys/class/net/{n}/address") as f:
                    macs.add(f.read().strip().lower())
            except OSError:
                pass
        return macs

    def apply_rules(self, rules: RootRules) -> None:
        """Make the data root's nftables tables say exactly rules (none when it has no guard)."""
        nftables.apply(rules)
        switch_on(rules.sysctls())  # after the rules: forwarding never opens unguarded

    def ports_taken(self, own_table: str) -> set[tuple[str, str | None, int]]:
        """(protocol, address or None, port) held by the host's sockets or published by
        another data root; own_table's own publications are the caller's to know."""
        return sockets.host_sockets() | sockets.other_roots_published(own_table)

    def veths_on(self, bridge: str) -> list[str]:
        try:
            return sorted(os.listdir(f"/sys/class/net/{bridge}/brif"))
        except FileNotFoundError:
            return []

"""nftables for one data root: the rules rendered as one `nft -f` script (pure), applied at once.

Two tables, both named for the data root (domain.firewall.table_name):
- `bridge`: every frame entering the bridge from a container's veth must carry that container's
  MAC as Ethernet source, and be IPv4 from its own address or ARP with its own MAC and address
  as sender; anything else (spoofed, IPv6, other ethertypes) is dropped, and counted.
- `inet`: at isolation "default", new traffic from the root's containers to the host's own
  addresses (any of them, on any interface) is dropped; replies to what the host started pass,
  and so does ping (the kernel's echo reply is no service, and "the gateway answers" is how a
  user checks a container's network).
  At "open" the chain is there but empty. DNS to the root's resolver (the gateway, port 53)
  passes at every level (dns_exception).
The script replaces both tables in one transaction: idempotent, never half applied.
"""
from __future__ import annotations

import shutil

from ...domain.firewall import RootRules
from ..host import process

FAMILIES = ("bridge", "inet")


def port_chain(veth: str) -> str:
    return f"port_{veth}"


def bridge_table(rules: RootRules) -> list[str]:
    ports = ", ".join(f'"{g.veth}" : jump {port_chain(g.veth)}' for g in rules.guards)
    lines = [f"table bridge {rules.table} {{",
             "  map ports {", "    type ifname : verdict", f"    elements = {{ {ports} }}", "  }",
             "  chain prerouting {",
             "    type filter hook prerouting priority filter; policy accept;",
             "    iifname vmap @ports", "  }"]
    for g in rules.guards:
        lines += [f"  chain {port_chain(g.veth)} {{",
                  f"    ether saddr != {g.mac} counter drop",
                  f"    ether type ip ip saddr {g.ip} accept",
                  f"    ether type arp arp htype 1 arp ptype ip arp saddr ether {g.mac} arp saddr ip {g.ip} accept",
                  "    counter drop", "  }"]
    return lines + ["}"]


def dns_exception(rules: RootRules) -> list[str]:
    """DNS (udp and tcp 53) from the root's containers to its resolver, before any drop."""
    if rules.resolver is None:
        return []
    return [f'    iifname "{rules.bridge}" ip saddr @containers ip daddr {rules.resolver} '
            f'meta l4proto {{ tcp, udp }} th dport 53 accept']


def dns_guard(rules: RootRules) -> list[str]:
    """At every level: the resolver answers only the bridge and the host itself, never another
    interface (a network routing the gateway's address to this host must not get an open
    resolver that forwards to the host's own)."""
    if rules.resolver is None:
        return []
    return [f'    iifname != {{ "{rules.bridge}", "lo" }} ip daddr {rules.resolver} '
            f'meta l4proto {{ tcp, udp }} th dport 53 counter drop']


def inet_table(rules: RootRules) -> list[str]:
    addrs = ", ".join(g.ip for g in rules.guards)
    lines = [f"table inet {rules.table} {{",
             "  set containers {", "    type ipv4_addr", f"    elements = {{ {addrs} }}", "  }",
             "  chain input {", "    type filter hook input priority filter; policy accept;"]
    lines += dns_guard(rules)
    if rules.isolation == "default":
        lines += dns_exception(rules)
        lines += [f'    iifname "{rules.bridge}" ip saddr @containers ct state established,related accept',
                  f'    iifname "{rules.bridge}" ip saddr @containers icmp type echo-request accept',
                  f'    iifname "{rules.bridge}" ip saddr @containers counter drop']
    return lines + ["  }", "}"]


def script(rules: RootRules) -> str:
    """The whole `nft -f` input: both tables dropped (if there) and made again, or just dropped."""
    lines = []
    for family in FAMILIES:
        # `add` first so the `delete` cannot fail on a missing table (nft 1.0.6 has no `destroy`).
        lines += [f"add table {family} {rules.table}", f"delete table {family} {rules.table}"]
    if rules.guards:
        lines += bridge_table(rules) + inet_table(rules)
    return "\n".join(lines) + "\n"


def apply(rules: RootRules) -> None:
    """Make the root's tables say exactly what rules say, in one nft transaction."""
    if not rules.guards and shutil.which("nft") is None:
        return  # nothing to create, and without nft nothing was ever created
    process.run(["nft", "-f", "-"], input=script(rules).encode(), timeout=30)


def tables() -> list[tuple[str, str]]:
    """(family, name) of every nftables table on the host."""
    if shutil.which("nft") is None:
        return []
    out = process.run(["nft", "list", "tables"], timeout=30).stdout.decode()
    return [tuple(line.split()[1:3]) for line in out.splitlines() if line.startswith("table ")]

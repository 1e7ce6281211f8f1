"""nftables for one data root: the rules rendered as one `nft -f` script (pure), applied at once.

Two tables, both named for the data root (domain.firewall.table_name):
- `bridge`: every frame entering the bridge from a container's veth must carry that container's
  MAC as Ethernet source, and be IPv4 from its own address or ARP with its own MAC and address
  as sender; anything else (spoofed, IPv6, other ethertypes) is dropped, and counted.
- `inet`: at isolation "default", new traffic from the root's containers to the host's own
  addresses (any of them, on any interface) is dropped; replies to what the host started pass,
  and so does ping (the kernel's echo reply is no service, and "the gateway answers" is how a
  user checks a container's network).
  At "open" the chain is there but empty; "strict" has default's. DNS to the root's resolver
  (the gateway, port 53) passes at every level (dns_exception).
- Networking (docs/networking.md): the bridge table's `forward` chain at "strict" (no frame from
  one of the root's veths to another, but those DNATed to a published port, marked by the inet
  table's `publish_mark`); in the inet table, egress
  NAT (`postrouting`: masquerade of the subnet leaving by any other interface), published ports
  (`publish_in` from outside and from containers, `publish_out` from the host itself, the set
  `published` naming them), a `forward` filter (nothing new reaches a container from another
  interface unless through a published port; without NAT nothing new leaves), and `localnet`
  (no packet from a container to 127.0.0.0/8, which route_localnet would otherwise route).
The script replaces both tables in one transaction: idempotent, never half applied.
"""
from __future__ import annotations

import shutil

from ...domain.firewall import PortForward, RootRules
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
    return lines + strict_chain(rules) + ["}"]


def _quoted(names: list[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def strict_chain(rules: RootRules) -> list[str]:
    """At "strict": frames between two of the root's veths are dropped (and counted). A
    container still reaches the host (bridge input: the gateway, DNS) and other containers'
    published ports through the host's address (routed, so not this hook). No exception for
    established flows: none can start at strict, and this kernel has no bridge conntrack
    (CONFIG_NF_CONNTRACK_BRIDGE unset: `ct state` in a bridge table is refused)."""
    if not rules.strict:
        return []
    veths = _quoted([g.veth for g in rules.guards])
    return ["  set veths {", "    type ifname", f"    elements = {{ {veths} }}", "  }",
            "  chain forward {", "    type filter hook forward priority filter; policy accept;",
            f"    meta mark & {PUBLISHED_MARK:#010x} == {PUBLISHED_MARK:#010x} accept",
            "    iifname @veths oifname @veths counter drop", "  }"]


# A container reaching another's published port through the host: with br_netfilter, a DNAT to
# an address on the same bridge is bridged, not routed, so it meets the strict drop above. The
# inet table marks such packets (this bit only) so they pass; a mark never crosses a veth.
PUBLISHED_MARK = 0x00a00000


def mark_chain(rules: RootRules) -> list[str]:
    if not (rules.strict and rules.forwards):
        return []
    return ["  chain publish_mark {", "    type filter hook prerouting priority filter; policy accept;",
            f"    ct status dnat ip daddr @containers meta mark set meta mark | {PUBLISHED_MARK:#010x}", "  }"]


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
    if rules.isolation != "open":  # "default", and "strict" which also keeps containers apart
        lines += dns_exception(rules)
        lines += [f'    iifname "{rules.bridge}" ip saddr @containers ct state established,related accept',
                  f'    iifname "{rules.bridge}" ip saddr @containers icmp type echo-request accept',
                  f'    iifname "{rules.bridge}" ip saddr @containers counter drop']
    return lines + ["  }"] + networking_chains(rules) + ["}"]


def networking_chains(rules: RootRules) -> list[str]:
    """The inet table's NAT, published ports and forward filter (issue 14)."""
    return localnet_chain(rules) + forward_chain(rules) + published_set(rules) + dnat_chains(rules) + mark_chain(rules) + snat_chain(rules)


def localnet_chain(rules: RootRules) -> list[str]:
    """route_localnet on the bridge lets the host send 127.0.0.1 packets out by it; this keeps
    containers from using that to reach the host's loopback services."""
    # By source, not iifname: with br_netfilter the prerouting hook sees the veth, not the bridge.
    return ["  chain localnet {", "    type filter hook prerouting priority raw; policy accept;",
            '    iifname != "lo" ip saddr @containers ip daddr 127.0.0.0/8 counter drop', "  }"]


def forward_chain(rules: RootRules) -> list[str]:
    """Routed traffic: replies and published ports pass; nothing new from another interface
    reaches a container directly; without NAT, nothing new from a container leaves."""
    br = rules.bridge
    lines = ["  chain forward {", "    type filter hook forward priority filter; policy accept;",
             "    ct state established,related accept", "    ct status dnat accept",
             f'    iifname != "{br}" oifname "{br}" ip daddr @containers counter drop']
    if rules.strict:  # a container routing to another through the gateway (in and out by the bridge)
        lines.append(f'    iifname "{br}" oifname "{br}" ip saddr @containers ip daddr @containers counter drop')
    if not rules.nat:
        lines.append(f'    iifname "{br}" ip saddr @containers oifname != "{br}" counter drop')
    return lines + ["  }"]


def published_set(rules: RootRules) -> list[str]:
    """The root's published (protocol, port) pairs: other roots read them to refuse a clash."""
    if not rules.forwards:
        return []
    elements = ", ".join(dict.fromkeys(f"{f.proto} . {f.host_port}" for f in rules.forwards))
    return ["  set published {", "    type inet_proto . inet_service", f"    elements = {{ {elements} }}", "  }"]


def dnat(f: PortForward, hook: str) -> str | None:
    """One published port's DNAT rule in the prerouting or output chain (None: not there;
    a 127.0.0.1 port is for the host itself only)."""
    if hook == "prerouting" and f.host_ip is not None and f.loopback:
        return None
    # Only ever the host's own addresses: a publish naming another address (1.1.1.1, another
    # container, the upstream resolver) must never capture traffic bound elsewhere.
    match = "fib daddr type local" + ("" if f.host_ip is None else f" ip daddr {f.host_ip}")
    return f"    {match} {f.proto} dport {f.host_port} dnat ip to {f.ip}:{f.port}"


def dnat_chains(rules: RootRules) -> list[str]:
    if not rules.forwards:
        return []
    lines = []
    for chain, hook, priority in (("publish_in", "prerouting", "dstnat"), ("publish_out", "output", "-100")):
        lines += [f"  chain {chain} {{", f"    type nat hook {hook} priority {priority}; policy accept;"]
        lines += [rule for rule in (dnat(f, hook) for f in rules.forwards) if rule]
        lines.append("  }")
    return lines


def snat_chain(rules: RootRules) -> list[str]:
    """Masquerade: the subnet leaving by another interface (egress NAT); a container reaching
    another's published port through the host (hairpin: the answer must come back through the
    host); the host's own 127.0.0.1 connections to a published port."""
    br, lines = rules.bridge, []
    if rules.nat and rules.subnet:
        lines.append(f'    oifname != "{br}" ip saddr {rules.subnet} masquerade')
    if rules.forwards and rules.subnet:
        lines.append(f'    oifname "{br}" ip saddr {rules.subnet} ct status dnat masquerade')
    if any(f.loopback for f in rules.forwards):
        lines.append(f'    oifname "{br}" ip saddr 127.0.0.0/8 ct status dnat masquerade')
    if not lines:
        return []
    return ["  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;", *lines, "  }"]


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

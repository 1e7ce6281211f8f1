"""What a data root's nftables rules must say, as data (pure; adapters/net renders and applies it)."""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Iterable

import attrs

from .exceptions import InvalidValue
from .publish import PROTOCOLS

ISOLATION_LEVELS = ("default", "open", "strict")
_IFNAME = re.compile(r"[A-Za-z0-9_-]{1,15}")
_VETH = re.compile(r"[A-Za-z0-9_]{1,15}")  # it also names a chain, unquoted
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_TABLE = re.compile(r"[a-z0-9_]{1,64}")


Validator = Callable[[Any, Any, Any], None]


def _check(pattern: re.Pattern[str], what: str) -> Validator:
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise InvalidValue(f"invalid {what} {value!r}")
    return check


def _check_ip(_inst: Any, _attr: Any, value: Any) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidValue(f"invalid IPv4 address {value!r}") from None


def _lower(value: str) -> str:
    return value.lower()


def _sorted_guards(guards: Iterable[PortGuard]) -> tuple[PortGuard, ...]:
    return tuple(sorted(guards, key=lambda p: p.veth))


@attrs.frozen
class PortGuard:
    """One container's host-side veth and the only identity it may use on the bridge."""

    veth: str = attrs.field(validator=_check(_VETH, "veth name"))
    mac: str = attrs.field(converter=_lower, validator=_check(_MAC, "MAC"))
    ip: str = attrs.field(validator=_check_ip)


def _check_net(_inst: Any, _attr: Any, value: Any) -> None:
    try:
        ipaddress.IPv4Network(value)
    except ValueError:
        raise InvalidValue(f"invalid IPv4 network {value!r}") from None


# ---- Egress and published ports ---------------------------------------------------------

def _proto(_inst: Any, _attr: Any, value: Any) -> None:
    if value not in PROTOCOLS:
        raise InvalidValue(f"invalid protocol {value!r}: tcp or udp")


def _port(_inst: Any, _attr: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidValue(f"invalid port {value!r}: 1 to 65535")


@attrs.frozen
class PortForward:
    """DNAT of host_ip:host_port (host_ip None: any of the host's addresses) to ip:port."""

    host_port: int = attrs.field(validator=_port)
    proto: str = attrs.field(validator=_proto)
    ip: str = attrs.field(validator=_check_ip)
    port: int = attrs.field(validator=_port)
    host_ip: str | None = attrs.field(default=None, validator=attrs.validators.optional(_check_ip))

    @property
    def loopback(self) -> bool:
        """Reached on 127.0.0.0/8 from the host itself (needs route_localnet on the bridge)."""
        return self.host_ip is None or ipaddress.IPv4Address(self.host_ip).is_loopback


def _sorted_forwards(forwards: Iterable[PortForward]) -> tuple[PortForward, ...]:
    return tuple(sorted(forwards, key=lambda f: (f.proto, f.host_port, f.host_ip or "")))


def sysctls_for(rules: "RootRules") -> tuple[tuple[str, str], ...]:
    """What the kernel must allow for rules: forwarding for NAT and published ports (from
    outside, and between containers through the host); route_localnet on the bridge alone
    for 127.0.0.1 published ports (the host's own 127.0.0.1 packets may then leave by it).
    The adapter only switches these on, never off (another root, or the admin, may need them)."""
    if not rules.guards:
        return ()
    keys = []
    if rules.nat or rules.forwards:
        keys.append(("net/ipv4/ip_forward", "1"))
    if any(f.loopback for f in rules.forwards):
        keys.append((f"net/ipv4/conf/{rules.bridge}/route_localnet", "1"))
    return tuple(keys)


def _isolation(_inst: Any, _attr: Any, value: Any) -> None:
    if value not in ISOLATION_LEVELS:
        raise InvalidValue(f"invalid isolation {value!r}: {' or '.join(ISOLATION_LEVELS)}")


@attrs.frozen
class RootRules:
    """Every rule of one data root: its tables' name, its bridge, its policy, its containers.

    No guards means no tables: the root has no container."""

    table: str = attrs.field(validator=_check(_TABLE, "table name"))
    bridge: str = attrs.field(validator=_check(_IFNAME, "bridge name"))
    isolation: str = attrs.field(validator=_isolation)
    guards: tuple[PortGuard, ...] = attrs.field(default=(), converter=_sorted_guards)
    # Networking (issue 14): egress NAT of subnet, published ports. See "Egress and published ports".
    subnet: str | None = attrs.field(default=None, validator=attrs.validators.optional(_check_net))
    nat: bool = False
    forwards: tuple[PortForward, ...] = attrs.field(default=(), converter=_sorted_forwards)

    @property
    def strict(self) -> bool:
        """No traffic between the root's containers except through published ports."""
        return self.isolation == "strict"

    def sysctls(self) -> tuple[tuple[str, str], ...]:
        """(/proc/sys key, value) the rules need, only ever switched on (see sysctls_for)."""
        return sysctls_for(self)
    # DNS exception: the root's resolver listens here (the bridge's gateway); the containers may
    # send it DNS (udp and tcp 53) at every isolation level. None: no resolver, no exception.
    resolver: str | None = attrs.field(default=None, validator=attrs.validators.optional(_check_ip))


def table_name(root_id: str) -> str:
    """The nftables table (one per family) of the data root whose identity is root_id."""
    return f"appcontainers_{root_id}"

"""What a data root's nftables rules must say, as data (pure; adapters/net renders and applies it)."""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Iterable

import attrs

from .exceptions import InvalidValue

ISOLATION_LEVELS = ("default", "open")
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
    # DNS exception: the root's resolver listens here (the bridge's gateway); the containers may
    # send it DNS (udp and tcp 53) at every isolation level. None: no resolver, no exception.
    resolver: str | None = attrs.field(default=None, validator=attrs.validators.optional(_check_ip))


def table_name(root_id: str) -> str:
    """The nftables table (one per family) of the data root whose identity is root_id."""
    return f"appcontainers_{root_id}"

"""Static IPv4 addresses from a pool, and random MACs unique on this host."""
from __future__ import annotations

import bisect
import ipaddress
import re
from typing import TYPE_CHECKING, Any, Iterable

import attrs

from .exceptions import InvalidValue, PoolExhausted

if TYPE_CHECKING:  # ports imports state, which imports this module
    from .ports import Rng

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def parse_network(text: str) -> ipaddress.IPv4Network:
    """An IPv4 network with room for a gateway and at least one container."""
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except (ValueError, TypeError) as e:
        raise InvalidValue(f"invalid subnet {text!r}: {e}") from None
    if net.prefixlen > 30:
        raise InvalidValue(f"subnet {text} is too small: it needs a /30 or larger")
    return net


def normalize_mac(text: str) -> str:
    mac = str(text).strip().lower().replace("-", ":")
    if not _MAC_RE.match(mac):
        raise InvalidValue(f"invalid MAC address {text!r}: expected six hex octets like 02:ab:cd:ef:01:23")
    return mac


def _network_text(text: str) -> str:
    return str(parse_network(text))


@attrs.define
class AddressPool:
    """Hands out the addresses of one network to names.

    Never the network, gateway (first host) or broadcast address; the lowest
    free address first. Allocation and release cost O(log n) plus a memmove,
    so a /16 fills in well under a second.
    """

    network: str = attrs.field(converter=_network_text)
    _by_name: dict[str, int] = attrs.field(factory=dict, alias="_by_name")
    _held: list[int] = attrs.field(factory=list, init=False)
    _owner: dict[int, str] = attrs.field(factory=dict, init=False)
    first: int = attrs.field(default=0, init=False, eq=False, repr=False)
    last: int = attrs.field(default=0, init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        net = self._net
        self.first = int(net.network_address) + 2
        self.last = int(net.broadcast_address) - 1
        for name, ip in self._by_name.items():
            if not (self.first <= ip <= self.last):
                raise InvalidValue(f"address {ipaddress.IPv4Address(ip)} of {name!r} is not a host address of {net}")
            if ip in self._owner:
                raise InvalidValue(f"address {ipaddress.IPv4Address(ip)} is held by both {self._owner[ip]!r} and {name!r}")
            self._owner[ip] = name
        self._held = sorted(self._owner)

    @property
    def _net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.network)

    @property
    def gateway(self) -> str:
        return str(self._net.network_address + 1)

    @property
    def broadcast(self) -> str:
        return str(self._net.broadcast_address)

    @property
    def prefixlen(self) -> int:
        return self._net.prefixlen

    @property
    def capacity(self) -> int:
        return self.last - self.first + 1

    def _lowest_free(self) -> int:
        held, first = self._held, self.first
        # held is sorted and unique: held[k] == first + k for every k before the first gap.
        lo, hi = 0, len(held)
        while lo < hi:
            mid = (lo + hi) // 2
            if held[mid] == first + mid:
                lo = mid + 1
            else:
                hi = mid
        return first + lo

    def allocate(self, name: str) -> str:
        """The address held by name, allocating the lowest free one if it has none."""
        if name in self._by_name:
            return str(ipaddress.IPv4Address(self._by_name[name]))
        ip = self._lowest_free()
        if ip > self.last:
            raise PoolExhausted(self.network)
        bisect.insort(self._held, ip)
        self._by_name[name] = ip
        self._owner[ip] = name
        return _dotted(ip)

    def copy(self) -> "AddressPool":
        """An independent copy, without validating again what this one already holds."""
        new = object.__new__(type(self))
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            object.__setattr__(new, field.name, type(value)(value) if isinstance(value, (dict, list)) else value)
        return new

    def release(self, name: str) -> str | None:
        """Free name's address; returns it, or None if name held none."""
        ip = self._by_name.pop(name, None)
        if ip is None:
            return None
        del self._owner[ip]
        del self._held[bisect.bisect_left(self._held, ip)]
        return str(ipaddress.IPv4Address(ip))

    def address_of(self, name: str) -> str | None:
        ip = self._by_name.get(name)
        return None if ip is None else str(ipaddress.IPv4Address(ip))

    def holder_of(self, address: str) -> str | None:
        try:
            ip = int(ipaddress.IPv4Address(address))
        except ValueError:
            raise InvalidValue(f"invalid IPv4 address {address!r}") from None
        return self._owner.get(ip)

    def allocations(self) -> dict[str, str]:
        return {n: _dotted(ip) for n, ip in self._by_name.items()}

    def __len__(self) -> int:
        return len(self._by_name)

    def to_dict(self) -> dict[str, Any]:
        return {"network": self.network, "allocations": dict(sorted(self.allocations().items()))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AddressPool":
        try:
            raw = data["allocations"]
            by_name = {str(n): int(ipaddress.IPv4Address(ip)) for n, ip in raw.items()}
            return cls(data["network"], _by_name=by_name)
        except (KeyError, AttributeError, TypeError, ValueError) as e:
            raise InvalidValue(f"malformed address pool record: {e!r}") from None


@attrs.frozen
class MacGenerator:
    """Random unicast MACs: locally administered, or under a fixed prefix.

    `rng` is any object with getrandbits(n) (random.Random, SystemRandom), so
    tests seed it and production uses the system's entropy.
    """

    rng: Rng
    prefix: str | None = attrs.field(default=None)

    @prefix.validator
    def _check_prefix(self, _attr: object, value: object) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            raise InvalidValue(f"invalid MAC prefix {value!r}: expected 1 to 5 hex octets like 00:16:3e")
        parts = value.lower().split(":")
        if not (1 <= len(parts) <= 5) or not all(re.fullmatch(r"[0-9a-f]{2}", p) for p in parts):
            raise InvalidValue(f"invalid MAC prefix {value!r}: expected 1 to 5 hex octets like 00:16:3e")
        if int(parts[0], 16) & 1:
            raise InvalidValue(f"MAC prefix {value!r} is multicast: its first octet must be even")

    def _candidate(self) -> str:
        if self.prefix:
            head = [int(p, 16) for p in self.prefix.lower().split(":")]
        else:
            first = self.rng.getrandbits(8)
            head = [(first & 0xFC) | 0x02]  # unicast (bit 0 clear), locally administered (bit 1 set)
        tail = [self.rng.getrandbits(8) for _ in range(6 - len(head))]
        return ":".join(f"{o:02x}" for o in head + tail)

    def generate(self, used: Iterable[str] = frozenset(), attempts: int = 4096) -> str:
        """A MAC not in `used` (normalized lowercase strings)."""
        used = {str(m).strip().lower().replace("-", ":") for m in used}
        bad = [m for m in used if not _MAC_RE.match(m)]
        if bad:
            normalize_mac(bad[0])  # raises, naming it
        free_bits = 8 * (6 - len(self.prefix.split(":"))) if self.prefix else 46
        # Only MACs this generator could produce count towards exhaustion.
        head = self.prefix.lower() + ":" if self.prefix else None
        mine = sum(1 for m in used if m.startswith(head)) if head else len(used)
        if mine >= 2 ** free_bits:
            raise PoolExhausted(f"MAC prefix {self.prefix}")
        for _ in range(attempts):
            mac = self._candidate()
            if mac not in used and mac not in ("00:00:00:00:00:00",):
                return mac
        raise PoolExhausted(f"MAC prefix {self.prefix or 'locally administered'}")


def _dotted(ip: int) -> str:
    return f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}"


def is_unicast_local(mac: str) -> bool:
    first = int(normalize_mac(mac)[:2], 16)
    return not first & 1 and bool(first & 2)

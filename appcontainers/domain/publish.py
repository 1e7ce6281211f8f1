"""Published ports: a host port forwarded to a container's port (`docker run -p`), as data."""
from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable

import attrs

from .exceptions import InvalidValue

PROTOCOLS = ("tcp", "udp")
_SPEC = re.compile(r"(?:(?P<ip>[0-9.]+):)?(?P<host>[0-9]+):(?P<port>[0-9]+)(?:/(?P<proto>[a-z]+))?")


def _port(value: str, spec: object) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise InvalidValue(f"invalid published port {spec!r}: ports are 1 to 65535")
    return port


@attrs.frozen
class Published:
    """host_ip:host_port on the host reaches the container's port (host_ip None: every address)."""

    host_port: int
    port: int
    proto: str = "tcp"
    host_ip: str | None = None

    @classmethod
    def parse(cls, spec: object) -> "Published":
        """From "8080:80", "127.0.0.1:5353:53/udp" (Docker's -p syntax, IPv4 only)."""
        m = _SPEC.fullmatch(spec) if isinstance(spec, str) else None
        if m is None:
            raise InvalidValue(f"invalid published port {spec!r}: [HOST_IP:]HOST_PORT:PORT[/tcp|/udp], "
                               f"e.g. 8080:80 or 127.0.0.1:5353:53/udp")
        proto = m["proto"] or "tcp"
        if proto not in PROTOCOLS:
            raise InvalidValue(f"invalid published port {spec!r}: the protocol is tcp or udp")
        host_ip = m["ip"]
        if host_ip is not None:
            try:
                host_ip = str(ipaddress.IPv4Address(host_ip))
            except ValueError:
                raise InvalidValue(f"invalid published port {spec!r}: {host_ip!r} is no IPv4 address") from None
            host_ip = None if host_ip == "0.0.0.0" else host_ip
        return cls(host_port=_port(m["host"], spec), port=_port(m["port"], spec), proto=proto, host_ip=host_ip)

    @property
    def spec(self) -> str:
        """The canonical text, as stored and shown: [HOST_IP:]HOST_PORT:PORT/PROTO."""
        ip = f"{self.host_ip}:" if self.host_ip else ""
        return f"{ip}{self.host_port}:{self.port}/{self.proto}"

    @property
    def loopback(self) -> bool:
        """Reached from 127.0.0.0/8 (host_ip None includes it)."""
        return self.host_ip is None or ipaddress.IPv4Address(self.host_ip).is_loopback

    def overlaps(self, proto: str, host_ip: str | None, port: int) -> bool:
        """Whether a socket or publication (host_ip None or 0.0.0.0: every address) takes this one's port."""
        if proto != self.proto or port != self.host_port:
            return False
        wild = (None, "0.0.0.0", "::")
        return self.host_ip in wild or host_ip in wild or host_ip == self.host_ip


def parse_all(specs: Any) -> tuple[str, ...]:
    """Canonical specs of a list of them; one host port (per protocol and address) once only."""
    if isinstance(specs, (str, bytes)):
        raise InvalidValue("published ports must be a list of strings, not one string")
    ports = [Published.parse(s) for s in _iterable(specs)]
    for i, p in enumerate(ports):
        for q in ports[:i]:
            if p.overlaps(q.proto, q.host_ip, q.host_port):
                raise InvalidValue(f"host port {p.spec} is published twice ({q.spec})")
    return tuple(p.spec for p in ports)


def _iterable(specs: Any) -> Iterable[Any]:
    try:
        return list(specs)
    except TypeError:
        raise InvalidValue(f"published ports must be a list of strings, not {specs!r}") from None

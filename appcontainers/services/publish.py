"""Published ports at provision and load: parsed, and refused before anything is reserved
if the host port is taken (pure checks; the service gives them what the host and state hold)."""
from __future__ import annotations

from typing import Any, Iterable

from ..domain.exceptions import PortTaken
from ..domain.publish import Published, parse_all
from ..domain.reservation import Reservation

Taken = tuple[str, str | None, int]


def wanted(specs: Any) -> tuple[Published, ...]:
    """The published ports asked for, checked and in canonical form (InvalidValue if malformed).

    Port 53 on every address is refused: it would also match each data root's gateway, where
    the roots' resolvers listen (and while one is down, nothing would hold the port)."""
    ports = tuple(Published.parse(s) for s in parse_all(specs if specs is not None else ()))
    for p in ports:
        if p.host_port == 53 and p.host_ip is None:
            raise PortTaken(p.spec, "port 53 on every address would take the data roots' DNS resolvers "
                                    "on their gateways: name the address, e.g. 127.0.0.1:53:53/udp")
    return ports


def refuse_taken(ports: Iterable[Published], taken: Iterable[Taken]) -> None:
    """PortTaken for the first port a host socket or another data root holds."""
    taken = list(taken)
    for p in ports:
        for proto, ip, port in taken:
            if p.overlaps(proto, ip, port):
                where = f"{ip or '*'}:{port}/{proto}"
                raise PortTaken(p.spec, f"{where} is in use on this host (a listening socket, or "
                                        f"published by another data root)")


def refuse_published(ports: Iterable[Published], reservations: Iterable[Reservation]) -> None:
    """PortTaken for the first port another container of this data root publishes."""
    for r in reservations:
        for theirs in r.published:
            for p in ports:
                if p.overlaps(theirs.proto, theirs.host_ip, theirs.host_port):
                    raise PortTaken(p.spec, f"container {r.name} publishes {theirs.spec}")


EPHEMERAL = (32768, 60999)  # Linux's default ip_local_port_range, where Docker's -P picks too


def publish_all(exposed: Iterable[tuple[int, str]], taken: Iterable[Taken], reservations: Iterable[Reservation],
                pick: Any, already: Iterable[Published] = ()) -> tuple[Published, ...]:
    """Each exposed (port, proto) published on a free host port of the ephemeral range (Docker's
    -P): free of host sockets, of other data roots, of this root's containers and of `already`.
    pick(lo, hi) draws a candidate in [lo, hi]; PortTaken when no free port is found."""
    held = [(p.proto, p.host_ip, p.host_port) for r in reservations for p in r.published]
    held += [(p.proto, p.host_ip, p.host_port) for p in already]
    held += list(taken)
    chosen: list[Published] = []
    for port, proto in exposed:
        for _ in range(1000):
            candidate = Published(host_port=pick(*EPHEMERAL), port=port, proto=proto)
            if not any(candidate.overlaps(*h) for h in held):
                break
        else:
            raise PortTaken(f"{port}/{proto}", "no free host port was found to publish it on")
        chosen.append(candidate)
        held.append((proto, None, candidate.host_port))
    return tuple(chosen)

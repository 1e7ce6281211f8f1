"""appcontainers.fleet: many appcontainers hosts as one, on a Ray cluster (docs/fleet.md).

    import appcontainers.fleet as fleet
    fleet.join("HEAD:6379", name="h1", root="/var/lib/appcontainers", bridge="acbr0",
               registry="10.1.0.5:5000/team")      # on each host, once; or image_dir= (shared)
    f = fleet.connect("HEAD:6379")
    for r in f.map(None, ["echo one", "echo two"]):
        print(r.host, r.exit_code, r.stdout)

Ray is imported only when connect() or join() is called (pip install appcontainers[fleet]).
"""
from __future__ import annotations

from typing import Any

from .errors import FleetError, HostLost, NoRoom, RangeExhausted, SubnetTaken, UnknownHost
from .jobs import JobResult

__all__ = ["join", "leave", "connect", "JobResult", "FleetError", "HostLost", "NoRoom", "RangeExhausted",
           "SubnetTaken", "UnknownHost"]


def join(address: str | None, name: str, root: str, bridge: str, subnet: str | None = None,
         **options: Any) -> dict[str, Any]:
    """Make the Ray node started with resource appcontainers-host-NAME a host (see join.join)."""
    from .membership import join as _join

    return _join(address, name, root, bridge, subnet, **options)


def leave(address: str | None, name: str, release_subnet: bool = False) -> None:
    from .membership import leave as _leave

    _leave(address, name, release_subnet)


def connect(address: str | None = None, **options: Any) -> Any:
    """The fleet on the Ray cluster at address: a client.Fleet. registry= (HOST:PORT[/prefix],
    tls_verify=) or image_dir= also switches how the fleet's images travel (Fleet.use_images)."""
    from .client import Fleet

    return Fleet(address, **options)

"""The fleet's own errors: each one clear line, under the library's base."""
from __future__ import annotations

from ..domain.exceptions import AppContainersError


class FleetError(AppContainersError):
    """A fleet operation failed (the cluster, a host or a claim)."""


class HostLost(FleetError):
    """The host holding a container left the cluster or died: calls to it cannot be made."""

    def __init__(self, host: str, what: str = "") -> None:
        self.host = host
        detail = f" ({what})" if what else ""
        super().__init__(f"host {host} is lost: it left the cluster or died{detail}; its containers "
                         f"come back when it rejoins (appcontainers fleet join --name {host})")


class UnknownHost(FleetError):
    """No host of that name ever joined the fleet."""

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(f"no host named {host!r} in the fleet (appcontainers fleet hosts)")


class NoRoom(FleetError):
    """No live host has room for what was asked."""


class SubnetTaken(FleetError):
    """A subnet given to join overlaps one another host holds."""

    def __init__(self, subnet: str, holder: str) -> None:
        self.subnet, self.holder = subnet, holder
        super().__init__(f"subnet {subnet} overlaps one host {holder} holds: give another or none")


class RangeExhausted(FleetError):
    """Every /24 of the fleet's range is claimed."""

    def __init__(self, fleet_range: str) -> None:
        self.fleet_range = fleet_range
        super().__init__(f"every /24 of the fleet range {fleet_range} is claimed: widen it "
                         f"(fleet_range=, before the first host joins) or let a host go")

"""The Monitor port: a container's use from its cgroup and its writable layer (cgroups.py),
its agent's events from the agents' event sockets (bus/zmq_bus.py, imported only to watch)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from . import cgroups


class HostMonitor:
    def usage(self, cgroup: str) -> dict[str, Any]:
        return cgroups.usage(cgroup)

    def disk_used(self, path: str) -> int | None:
        return cgroups.disk_used(path)

    def watch(self, agents: Callable[[], dict[str, tuple[str, str | None]]], rescan: float,
              tick: Callable[[], list[dict[str, Any]]] | None = None) -> Iterator[dict[str, Any]]:
        from ..bus.zmq_bus import watch_events

        return watch_events(agents, rescan=rescan, tick=tick)

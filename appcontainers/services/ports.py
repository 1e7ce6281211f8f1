"""The bundle of ports a Service is built from (wired in entrypoints.api)."""
from __future__ import annotations

from typing import Any, Callable

import attrs

from ..config import Settings


@attrs.define
class Ports:
    settings: Settings
    repo: Any            # ResourceRepository
    driver: Any          # ContainerDriver
    mounters: dict       # name -> RootfsMounter ("kernel", "fuse")
    codec: Any           # ImageCodec
    net: Any             # HostNetwork: ensure_bridge, host_macs
    fs: Any              # HostFs
    skeletons: Any       # Skeletons
    base_builder: Any    # BusyboxBaseBuilder
    agents: Callable     # (run_dir, server_key=) -> AgentClient; .new_keys() -> (public, secret)
    clock: Callable[[], float]
    rng: Any             # has getrandbits
    debian_builder: Any = None
    procs: Any = attrs.Factory(lambda: NoProcesses())  # token(), alive(token), boot_id()


class NoProcesses:
    """Stands in when nobody can tell whether a process lives: everything counts as alive,
    so reconcile never undoes another process's work."""

    def token(self) -> str:
        return "unknown"

    def alive(self, token) -> bool:
        return True

    def boot_id(self):
        return None

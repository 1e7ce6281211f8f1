"""The bundle of ports a Service is built from (wired in entrypoints.api, faked in tests/fakes.py).

Every field is typed with its Protocol from domain/ports.py, so mypy checks each service call.
"""
from __future__ import annotations

import attrs

from ..config import Settings
from ..domain.exceptions import InvalidValue
from ..domain.ports import (Agents, BaseBuilder, Clock, ContainerDriver, DebianBuilder,
                            FuseMounterPort, HostFs, HostNetwork, ImageCodec, ImageViewer, KernelMounterPort,
                            Monitor, Processes, Registries, Resolver, ResourceRepository, Rng, RootfsMounter,
                            RuntimeBuilder, Signing, OciSource,
                            SizedDirs, Skeletons, ViewMounter)


@attrs.frozen
class Mounters:
    """The rootfs mounters by kind. A service reaches an extra power through its typed field
    (kernel.bind_ro, fuse.mount_view, fuse.mount(idmap=)); by_name() gives only the common port,
    for the mounter a reservation recorded."""

    kernel: KernelMounterPort
    fuse: FuseMounterPort | None = None
    raw: RootfsMounter | None = None

    def values(self) -> list[RootfsMounter]:
        """Every configured mounter: kernel, fuse, raw."""
        return [m for m in (self.kernel, self.fuse, self.raw) if m is not None]

    def viewers(self) -> list[ViewMounter]:
        """The mounters that make a save's read-only merged view: kernel, fuse."""
        return [m for m in (self.kernel, self.fuse) if m is not None]

    def viewer(self, name: str) -> ViewMounter:
        """The view mounter of a container's own mounter (kernel or fuse)."""
        mounter = {"kernel": self.kernel, "fuse": self.fuse}.get(name)
        if mounter is None:
            raise InvalidValue(f"a {name} container's tree cannot be viewed for a save")
        return mounter

    def by_name(self, name: str) -> RootfsMounter:
        for m in self.values():
            if m.name == name:
                return m
        raise InvalidValue(f"no {name} mounter is configured on this host")

    def fuse_available(self) -> FuseMounterPort | None:
        """The FUSE mounter if it is configured and works here."""
        return self.fuse if self.fuse is not None and self.fuse.available() else None


@attrs.define
class Ports:
    settings: Settings
    repo: ResourceRepository
    driver: ContainerDriver
    mounters: Mounters
    codec: ImageCodec
    net: HostNetwork
    fs: HostFs
    skeletons: Skeletons
    base_builder: BaseBuilder
    agents: Agents
    clock: Clock
    rng: Rng
    viewer: ImageViewer
    monitor: Monitor  # stats and events
    debian_builder: DebianBuilder | None = None
    procs: Processes = attrs.Factory(lambda: NoProcesses())
    disks: SizedDirs | None = None  # None: containers' writes are not bounded
    dns: Resolver | None = None  # None: no resolver for the containers (names, forwarding)
    registries: Registries | None = None  # None: no push or pull
    signing: Signing | None = None  # None: no signing, and only the "any" trust policy can pass
    # The agent's runtime for images without an init; None: such images run without an agent.
    runtime: RuntimeBuilder | None = None
    oci: OciSource | None = None  # None: no OCI import here


class NoProcesses:
    """Stands in when nobody can tell whether a process lives: everything counts as alive,
    so reconcile never undoes another process's work."""

    def token(self) -> str:
        return "unknown"

    def alive(self, token: str | None) -> bool:
        return True

    def boot_id(self) -> str | None:
        return None

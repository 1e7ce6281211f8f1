"""The ports the services need, as small Protocols. No adapter is imported here."""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable, Iterable, Iterator, Protocol

from .state import State

LineCallback = Callable[[str, str], None]  # (stream name "stdout"/"stderr", line)


class ResourceRepository(Protocol):
    def transaction(self) -> AbstractContextManager[State]:
        """Exclusive, atomic: the yielded State is saved on a clean exit, dropped on an error."""

    def read(self) -> State:
        """A consistent snapshot, without holding the lock afterwards."""


class ContainerDriver(Protocol):
    def create(self, name: str, config: str) -> None: ...
    def start(self, name: str, timeout: float) -> None: ...
    def stop(self, name: str, timeout: float) -> None: ...
    def destroy(self, name: str) -> None: ...
    def state(self, name: str) -> str:
        """'RUNNING', 'STOPPED', 'FROZEN', ... or 'MISSING'."""
    def list(self) -> list[str]: ...
    def freeze(self, name: str) -> None: ...
    def unfreeze(self, name: str) -> None: ...
    def attach(self, name: str, argv: list[str], env: dict, cwd: str | None,
               timeout: float | None, on_output: LineCallback | None,
               stdin: bytes | None) -> tuple[int, bytes, bytes]: ...


class RootfsMounter(Protocol):
    name: str
    def mount(self, layers: list[str], upper: str, work: str, target: str) -> None:
        """layers: image files top first; upper/work dirs; target the merged dir."""
    def unmount(self, target: str) -> None: ...
    def is_mounted(self, target: str) -> bool: ...
    def mounted(self) -> list[str]: ...


class ImageCodec(Protocol):
    def pack(self, source: str, manifest: dict, dest: str, level: int | None = None,
             progress: Callable[[int], None] | None = None,
             excludes: Iterable[str] = ()) -> str:
        """Squash source (a rootfs dir) with the manifest into dest; returns the sha256 id."""
    def verify(self, path: str) -> tuple[str, dict]:
        """(id, manifest dict) of a valid image; raises ImageCorrupt otherwise."""


class EventBus(Protocol):
    def publish(self, topic: str, event: dict) -> None: ...
    def subscribe(self, topics: Iterable[str] = ()) -> Iterator[dict]: ...


class Clock(Protocol):
    def __call__(self) -> float: ...

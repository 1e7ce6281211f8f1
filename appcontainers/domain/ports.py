"""The ports the services need, as small Protocols. No adapter is imported here.

They document what services/ports.Ports holds; the real adapters and the fakes in
tests/fakes.py implement them without inheriting from them.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable, Iterable, Iterator, Protocol

from .state import State

LineCallback = Callable[[str, str], None]  # (stream name "stdout"/"stderr", line without newline)


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
    def attach(self, name: str, argv: list[str], env: dict | None, cwd: str | None,
               timeout: float | None, on_output: LineCallback | None,
               stdin: bytes | None) -> tuple[int, bytes, bytes]: ...


class RootfsMounter(Protocol):
    name: str  # "kernel", "fuse" or "raw"
    def available(self) -> bool: ...
    def mount(self, layers: list[str], lower_mounts: list[str], upper: str, work: str, target: str) -> None:
        """layers: image files, top first, each mounted read-only at its lower mount point;
        the writable upper (and work) dir over them, merged at target. Rolls back on failure."""
    def unmount(self, target: str, lower_mounts: list[str]) -> None: ...
    def is_mounted(self, target: str) -> bool: ...
    def mounted(self, prefix: str) -> list[str]:
        """This mounter's kind of mount points under prefix."""


class ImageCodec(Protocol):
    def pack(self, source: str, manifest: dict, dest: str, level: int | None = None,
             progress: Callable[[int], None] | None = None, excludes: Iterable[str] = ()) -> str:
        """Squash source with the manifest into dest (temp file, then rename); returns the id."""
    def verify(self, path: str) -> tuple[str, dict]:
        """(id, manifest dict) of a valid image; raises ImageCorrupt otherwise."""
    def image_id(self, path: str) -> str:
        """The id the file's trailer claims (cheap; verify() checks it)."""


class AgentClient(Protocol):
    """The host side of one container's agent (adapters/bus/zmq_bus.py)."""
    def wait_ready(self, timeout: float) -> bool: ...
    def run(self, argv=None, shell=None, env=None, cwd=None, stdin=None, timeout=None,
            on_output: LineCallback | None = None) -> tuple[int, bytes, bytes, dict]: ...
    def logs(self, since: int = 0, follow: bool = False) -> Iterator[tuple[int, dict]]: ...


class Processes(Protocol):
    """Who does an operation, and whether they still live (adapters/host/hostproc.py)."""
    def token(self) -> str: ...
    def alive(self, token: str | None) -> bool: ...
    def boot_id(self) -> str | None: ...


class ImageViewer(Protocol):
    """An image with its parent layers merged read-only at a directory, no container
    (adapters/aimg/image_viewer.py)."""
    def mount(self, files: list[str], directory: str) -> None:
        """files: the image file and its ancestors, top first; returns once the view is up."""
    def unmount(self, directory: str) -> None: ...

"""FleetContainer: a container on some host of the fleet, with Container's methods."""
from __future__ import annotations

import io
import os
import tarfile
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..services.result import RunResult

if TYPE_CHECKING:
    from .client import Fleet


class FleetContainer:
    """Like entrypoints.api.Container, over the wire: each call goes to the host's actor; a
    host that is gone makes it raise HostLost."""

    def __init__(self, fleet: "Fleet", host: str, name: str) -> None:
        self.fleet, self.host, self.name = fleet, host, name

    def __repr__(self) -> str:
        return f"<FleetContainer {self.host}/{self.name}>"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.fleet.call(self.host, "call", self.name, method, args, kwargs)

    def info(self) -> dict[str, Any]:
        return dict(self._call("info"), host=self.host)

    @property
    def ip(self) -> str:
        return str(self.info()["ip"])

    @property
    def mac(self) -> str:
        return str(self.info()["mac"])

    @property
    def state(self) -> str:
        return str(self.info()["state"])

    @property
    def image(self) -> str:
        return str(self.info()["image"])

    def start(self) -> None:
        self._call("start")

    def stop(self) -> None:
        self._call("stop")

    def destroy(self) -> None:
        self._call("destroy")

    def run(self, command: Any, timeout: float | None = None, on_output: Callable[[str, str], None] | None = None,
            env: dict[str, str] | None = None, cwd: str | None = None, stdin: bytes | None = None,
            user: str | None = None) -> RunResult:
        """Run command in the container; on_output(stream, line) gets its lines as they come."""
        kwargs = {"timeout": timeout, "env": env, "cwd": cwd, "stdin": stdin, "user": user}
        if on_output is None:
            d = self.fleet.call(self.host, "run", self.name, command, kwargs)
            return RunResult(exit_code=d["exit_code"], stdout=d["stdout"], stderr=d["stderr"])
        for kind, value in self.fleet.stream(self.host, "run_stream", self.name, command, kwargs):
            if kind == "exit":
                return RunResult(exit_code=value["exit_code"], stdout=value["stdout"], stderr=value["stderr"])
            on_output(kind, value)
        raise AssertionError("the host's stream ended without the command's exit")  # not reached

    def create_file(self, path: str, content: str | bytes, mode: int = 0o644) -> str:
        return str(self._call("create_file", path, content, mode))

    def read_file(self, path: str, max_bytes: int = 64 << 20) -> bytes:
        return bytes(self._call("read_file", path, max_bytes))

    def copy_in(self, src: str, dest: str, mode: int | None = None) -> str:
        """Copy the local file or directory src to dest in the container (a directory goes as
        a tar stream, checked member by member by the host like load_archive)."""
        if not os.path.isdir(src):
            with open(src, "rb") as f:
                data = f.read()
            return self.create_file(dest, data, os.stat(src).st_mode & 0o7777 if mode is None else mode)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(src, arcname=os.path.basename(os.path.normpath(src)))
        self.fleet.call(self.host, "load_archive_bytes", self.name, buf.getvalue(), dest)
        return os.path.join(dest, os.path.basename(os.path.normpath(src)))

    def copy_out(self, path: str, dest: str) -> str:
        """Copy the container's file path to the local path dest (into it if a directory)."""
        target = os.path.join(dest, os.path.basename(path)) if os.path.isdir(dest) else dest
        with open(target, "wb") as f:
            f.write(self.read_file(path))
        return target

    put = copy_in
    cp = copy_in
    pull = copy_out
    push = copy_in

    def logs(self, since: int = 0, follow: bool = False, poll: float = 0.5) -> Iterator[tuple[int, dict[str, Any]]]:
        """(offset, record) pairs of the agent's log; follow keeps asking for more."""
        while True:
            got = list(self._call("logs", since))
            for offset, record in got:
                since = max(since, offset)  # just past the record
                yield offset, record
            if not follow:
                return
            time.sleep(0 if got else poll)

    def save(self, name: str | None = None, flatten: bool = True) -> dict[str, Any]:
        """Save the container as an image every host can use: {"id", "name"}."""
        return dict(self.fleet.call(self.host, "save", self.name, name, flatten))

    save_image = save

"""ResourceRepository over resources.json: one locked, atomic transaction per change."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile

from ..domain.exceptions import AppContainersError, InvalidValue, StateCorrupt
from ..domain.network import parse_network
from ..domain.state import State


class JsonStore:
    """State in `path`; an flock on `path + '.lock'` serializes every process.

    Writes go to a temp file in the same directory, fsync'd, renamed over the
    old file, then the directory is fsync'd: a crash leaves the old or the new
    state, never a torn one. A file that does not parse is never overwritten.
    """

    def __init__(self, path: str, network: str):
        self.path = path
        self.network = network
        self.lock_path = path + ".lock"

    @contextlib.contextmanager
    def _locked(self, mode: int):
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _load(self) -> State:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return State.empty(self.network)
        except OSError as e:
            raise StateCorrupt(self.path, e.strerror or str(e)) from None
        try:
            state = State.from_dict(json.loads(raw))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise StateCorrupt(self.path, f"not valid JSON: {e}") from None
        except AppContainersError as e:
            raise StateCorrupt(self.path, str(e)) from None
        # Compare normalized forms: "10.0.0.0/255.255.255.0" is the same subnet as "10.0.0.0/24".
        if state.pool.network != str(parse_network(self.network)):
            if state.reservations:
                raise InvalidValue(
                    f"{self.path} holds addresses of {state.pool.network} but the configured subnet is "
                    f"{self.network}: destroy the containers first or configure {state.pool.network}")
            state.pool = type(state.pool)(self.network)
        return state

    def _save(self, state: State) -> None:
        data = json.dumps(state.to_dict(), indent=1, sort_keys=True).encode() + b"\n"
        directory = os.path.dirname(self.path) or "."
        fd, tmp = tempfile.mkstemp(prefix=".resources.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @contextlib.contextmanager
    def transaction(self):
        """Yields the State under an exclusive lock; saves it if the block ends cleanly."""
        with self._locked(fcntl.LOCK_EX):
            state = self._load()
            before = state.to_dict()
            yield state
            if state.to_dict() != before or not os.path.exists(self.path):
                self._save(state)

    def read(self) -> State:
        with self._locked(fcntl.LOCK_SH):
            return self._load()

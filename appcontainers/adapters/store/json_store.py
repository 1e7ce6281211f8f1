"""ResourceRepository over resources.json: one locked, atomic transaction per change."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile

from ...domain.exceptions import AppContainersError, InvalidValue, StateCorrupt
from ...domain.network import parse_network
from ...domain.state import SCHEMA_VERSION, State
from ..host.filelock import flocked

log = logging.getLogger("appcontainers.state")


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
        self._cache: tuple[State, bytes] | None = None  # (parsed state, the bytes it came from)
        self._memo: dict[int, tuple[object, str]] = {}  # id(record) -> (record, its JSON)

    def _load(self) -> tuple[State, bytes]:
        """The state and the bytes it came from. Bytes this process already parsed are not
        parsed again (validating 1000 reservations costs ~10 ms; comparing bytes, microseconds)."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return State.empty(self.network), b""
        except OSError as e:
            raise StateCorrupt(self.path, e.strerror or str(e)) from None
        if self._cache is not None and self._cache[1] == raw:
            return self._cache[0].copy(), raw
        state = self._parse(raw)
        self._cache = (state.copy(), raw)
        return state, raw

    def _parse(self, raw: bytes) -> State:
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

    def _encode(self, state: State) -> bytes:
        """The file: one record per line (readable, diffable). Records are immutable, so the
        line of one this process encoded before is reused: a change costs its own record,
        not the whole state (indent= would also push json onto its slow pure-Python path)."""
        memo, self._memo = self._memo, {}

        def record(obj) -> str:
            hit = memo.get(id(obj))
            line = hit[1] if hit is not None and hit[0] is obj else json.dumps(obj.to_dict(), sort_keys=True)
            self._memo[id(obj)] = (obj, line)
            return line

        sections = {
            "images": {k: record(v) for k, v in state.images.items()},
            "operations": {k: record(v) for k, v in state.operations.items()},
            "pool": None,
            "reservations": {k: record(v) for k, v in state.reservations.items()},
            "schema_version": None,
        }
        plain = {"pool": json.dumps(state.pool.to_dict(), sort_keys=True), "schema_version": str(SCHEMA_VERSION)}
        lines = ["{"]
        for n, key in enumerate(sorted(sections)):
            sep = "," if n < len(sections) - 1 else ""
            body = sections[key]
            if body is None:
                lines.append(f" {json.dumps(key)}: {plain[key]}{sep}")
            elif body:
                inner = ",\n".join(f"  {json.dumps(k)}: {v}" for k, v in sorted(body.items()))
                lines.append(f" {json.dumps(key)}: {{\n{inner}\n }}{sep}")
            else:
                lines.append(f" {json.dumps(key)}: {{}}{sep}")
        lines.append("}")
        return ("\n".join(lines) + "\n").encode()

    def _save(self, state: State, data: bytes) -> None:
        directory = os.path.dirname(self.path) or "."
        fd, tmp = tempfile.mkstemp(prefix=".resources.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            self._cache = (state.copy(), data)
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
        """Yields the State under an exclusive lock; saves it if the block ends cleanly.

        A saved change is logged at info (logger "appcontainers.state"), briefly."""
        with flocked(self.lock_path):
            state, raw = self._load()
            before = state.copy() if log.isEnabledFor(logging.INFO) else None
            yield state
            data = self._encode(state)
            if data != raw:
                self._save(state, data)
                if before is not None:
                    log.info("%s: %s", self.path, describe_change(before, state))

    def read(self) -> State:
        with flocked(self.lock_path, shared=True):
            return self._load()[0]


def describe_change(before: State, after: State) -> str:
    """What a transaction changed, briefly: "reservations +web ~db; addresses +web"
    (+ added, - removed, ~ changed; image ids cut to 12 characters)."""
    sections: dict[str, tuple[dict, dict, int | None]] = {
        "reservations": (before.reservations, after.reservations, None),
        "images": (before.images, after.images, 12),
        "operations": (before.operations, after.operations, None),
        "addresses": (before.pool.allocations(), after.pool.allocations(), None),
    }
    parts = [f"{name} {marks}" for name, (old, new, width) in sections.items() if (marks := _marks(old, new, width))]
    return "; ".join(parts) or "rewritten, no record changed"


def _marks(old: dict, new: dict, width: int | None) -> str:
    changed = (k for k in old.keys() & new.keys() if old[k] is not new[k] and old[k] != new[k])
    marks = [f"+{k[:width]}" for k in sorted(new.keys() - old.keys())]
    marks += [f"-{k[:width]}" for k in sorted(old.keys() - new.keys())]
    marks += [f"~{k[:width]}" for k in sorted(changed)]
    return " ".join(marks)

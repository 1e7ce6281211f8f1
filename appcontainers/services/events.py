"""Host-side container events: what changed in the containers' states between two looks.

The agents publish what happens inside (commands started and exited); a container's own start
and stop are seen by the host, so `events` polls the states and reports the differences."""
from __future__ import annotations

import os
from typing import Callable, Iterable

from ..domain.exceptions import AppContainersError
from ..domain.ports import JsonDict
from .containers import ContainerService

_RUNNING = ("RUNNING", "FROZEN", "FREEZING", "THAWED")


def state_changes(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str]]:
    """(container, event type) for each difference between two {name: state} maps (pure)."""
    changes = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if old is None:
            changes.append((name, "container_created"))
        if new is None:
            changes.append((name, "container_destroyed"))
        elif (new in _RUNNING) != (old in _RUNNING):
            changes.append((name, "container_started" if new in _RUNNING else "container_stopped"))
    return changes


# Agent log record types -> the event the agent publishes for the same thing.
_LOGGED_AS = {"started": "command_started", "exit": "command_exited", "agent_started": "agent_started",
              "agent_stopping": "agent_stopping", "startup_failed": "startup_failed"}


def logged_events(records: Iterable[tuple[int, JsonDict]], since_ts: float) -> list[dict[str, object]]:
    """The events an agent published, as its log recorded them at or after since_ts (pure)."""
    found: list[dict[str, object]] = []
    for _offset, rec in records:
        ts, kind = rec.get("ts"), _LOGGED_AS.get(str(rec.get("type")))
        if kind and isinstance(ts, (int, float)) and ts >= since_ts:
            found.append({**{k: v for k, v in rec.items() if k != "type"}, "type": kind})
    return found


class StateWatch:
    """Called repeatedly, returns the events since the previous call (none at the first: it
    takes the states as they are then).

    A container's agent publishes before anyone can subscribe to it: for a container seen
    started, the watch also gives what its agent's log holds from the previous look on, once
    the agent's event socket is there (the subscription follows at once, in the same scan), so
    its first commands are not lost."""

    def __init__(self, containers: ContainerService, clock: Callable[[], float]):
        self.containers, self.clock = containers, clock
        self.states: dict[str, str] | None = None
        self.last = clock()
        self.pending: dict[str, float] = {}  # started containers -> replay their log from this time

    def _replay(self, name: str) -> list[dict[str, object]]:
        socket = os.path.join(self.containers.layout.agent_dir(name), "events.sock")
        if not self.containers.p.fs.exists(socket):
            return []
        since = self.pending.pop(name)
        try:
            records = list(self.containers.logs(name, since=0))
        except AppContainersError:
            return []
        return [{**e, "container": name} for e in logged_events(records, since)]

    def _now(self) -> dict[str, str]:
        states = self.containers.states()
        return {r.name: states.get(r.name, "STOPPED") for r in self.containers.list()}

    def __call__(self) -> list[dict[str, object]]:
        now, ts = self._now(), self.clock()
        before, self.states, previous, self.last = self.states, now, self.last, ts
        if before is None:
            return []
        events: list[dict[str, object]] = []
        for name, kind in state_changes(before, now):
            events.append({"type": kind, "container": name, "state": now.get(name, "DESTROYED"), "ts": ts})
            if kind == "container_started":
                self.pending[name] = previous
            elif kind in ("container_stopped", "container_destroyed"):
                self.pending.pop(name, None)
        for name in list(self.pending):
            events += self._replay(name)
        return events

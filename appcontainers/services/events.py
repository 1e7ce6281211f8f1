"""Host-side container events: what changed in the containers' states between two looks.

The agents publish what happens inside (commands started and exited); a container's own start
and stop are seen by the host, so `events` polls the states and reports the differences."""
from __future__ import annotations

from typing import Callable

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


class StateWatch:
    """Called repeatedly, returns the events since the previous call (none at the first: it
    takes the states as they are then)."""

    def __init__(self, containers: ContainerService, clock: Callable[[], float]):
        self.containers, self.clock = containers, clock
        self.states: dict[str, str] | None = None

    def _now(self) -> dict[str, str]:
        states = self.containers.states()
        return {r.name: states.get(r.name, "STOPPED") for r in self.containers.list()}

    def __call__(self) -> list[dict[str, object]]:
        now = self._now()
        before, self.states = self.states, now
        if before is None:
            return []
        ts = self.clock()
        return [{"type": kind, "container": name, "state": now.get(name, "DESTROYED"), "ts": ts}
                for name, kind in state_changes(before, now)]

"""Where a container or a job goes: pure functions over the fleet's capacity view.

Not CPU counts alone: an idle container costs almost no CPU, so a host's room is its
container slots (its subnet's addresses, or the max it was given) and its memory (what is
free, less the limits of the containers it holds), and load spreads by what each host
already holds or runs.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import attrs

from ..domain.sizes import parse_size
from .errors import NoRoom


@attrs.frozen
class HostView:
    """What the fleet knows of one host: its capacity and what it holds now."""

    name: str
    alive: bool
    containers: int = 0
    max_containers: int = 250
    memory_total: int = 0
    memory_available: int = 0
    memory_reserved: int = 0  # the sum of its containers' memory limits
    cpus: int = 1
    load: float = 0.0
    subnet: str = ""
    node_id: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HostView":
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @property
    def memory_free(self) -> int:
        return max(0, min(self.memory_available, self.memory_total - self.memory_reserved))

    def slots(self, inflight: int = 0) -> int:
        return self.max_containers - self.containers - inflight


def fits(host: HostView, inflight: int = 0, memory: str | int | None = None) -> bool:
    """Whether host can take one more container (with inflight others on their way)."""
    if not host.alive or host.slots(inflight) < 1:
        return False
    return memory is None or host.memory_free >= parse_size(memory, "memory")


def score(host: HostView, inflight: int = 0) -> tuple[float, float, int, str]:
    """Lower is better: the share of its slots in use, its load per CPU, then most free memory."""
    used = (host.containers + inflight) / max(1, host.max_containers)
    return (round(used, 4), round(host.load / max(1, host.cpus), 2), -host.memory_free, host.name)


def choose(hosts: Iterable[HostView], inflight: Mapping[str, int] | None = None,
           memory: str | int | None = None, exclude: Iterable[str] = ()) -> HostView:
    """The live host with room and the lowest score; NoRoom if none."""
    inflight = inflight or {}
    skip = set(exclude)
    ok = [h for h in hosts if h.name not in skip and fits(h, inflight.get(h.name, 0), memory)]
    if not ok:
        need = f" with {memory} of memory" if memory is not None else ""
        raise NoRoom(f"no live host has room for a container{need}"
                     f"{' (excluding ' + ', '.join(sorted(skip)) + ')' if skip else ''}")
    return min(ok, key=lambda h: score(h, inflight.get(h.name, 0)))


def spread(hosts: Iterable[HostView], inflight: Mapping[str, int], limit: int) -> HostView | None:
    """For a batch of jobs: the live host with the fewest jobs in flight (ties: the lowest
    score), under limit jobs each; None when every host is at its limit."""
    ok = [h for h in hosts if fits(h, inflight.get(h.name, 0)) and inflight.get(h.name, 0) < limit]
    if not ok:
        return None
    return min(ok, key=lambda h: (inflight.get(h.name, 0), score(h)))

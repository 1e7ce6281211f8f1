"""One-shot jobs across the fleet: placed, run, retried on another host if theirs died."""
from __future__ import annotations

import collections
import time
from typing import Any, Callable, Iterable, Iterator

import attrs

from . import placement
from ..domain.exceptions import AppContainersError
from .errors import HostLost, NoRoom
from .placement import HostView


@attrs.frozen
class JobResult:
    """How one job ended: its exit code and output, or error (why it never ran to the end)."""

    index: int
    command: Any
    host: str | None
    exit_code: int | None
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    attempts: int = 1
    error: str | None = None
    seconds: float = 0.0  # on the host: container made, command run, container gone
    container: str | None = None
    latency: float = 0.0  # seen by the caller: from sending its last attempt to its result

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode(errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def from_dict(cls, index: int, command: Any, attempts: int, d: dict[str, Any]) -> "JobResult":
        return cls(index=index, command=command, host=d.get("host"), exit_code=d["exit_code"],
                   stdout_bytes=d.get("stdout", b""), stderr_bytes=d.get("stderr", b""), attempts=attempts,
                   seconds=d.get("seconds", 0.0), container=d.get("container"))


@attrs.frozen
class Job:
    index: int
    command: Any
    attempts: int = 0
    host: str | None = None  # where it is placed first (None: where there is room)


Submit = Callable[[str, Job], Any]        # (host, job) -> a pending reference
Wait = Callable[[list[Any]], list[Any]]   # pending references -> those done (at least one)
Collect = Callable[[str, Any], dict[str, Any]]  # (host, done reference) -> result; HostLost if it died


class Batch:
    """Runs jobs with at most `limit` in flight, spread over the live hosts (fewest in flight
    first); a job whose host died goes again elsewhere, up to retries more times."""

    def __init__(self, views: Iterable[HostView], submit: Submit, wait: Wait, collect: Collect,
                 limit: int, retries: int) -> None:
        self.views = {v.name: v for v in views}
        self.submit, self.wait, self.collect = submit, wait, collect
        self.limit, self.retries = max(1, limit), retries
        self.inflight: dict[Any, tuple[str, Job]] = {}
        self.sent: dict[int, float] = {}  # job index -> when its last attempt was sent
        self.count: collections.Counter[str] = collections.Counter()
        self.pending: collections.deque[Job] = collections.deque()

    def run(self, jobs: Iterable[Job]) -> Iterator[JobResult]:
        self.pending.extend(jobs)
        while self.pending or self.inflight:
            self._fill()
            if not self.inflight:
                yield from self._give_up("no live host is left to run it")
                return
            for ref in self.wait(list(self.inflight)):
                result = self._finish(ref)
                if result is not None:
                    yield result

    def _place(self, job: Job) -> str | None:
        if job.host is not None and job.attempts == 0:
            if job.host not in self.views:
                raise NoRoom(f"no host named {job.host} in the fleet")
            return job.host
        chosen = placement.spread(self.views.values(), self.count, self.limit)
        return None if chosen is None else chosen.name

    def _fill(self) -> None:
        while self.pending and len(self.inflight) < self.limit:
            host = self._place(self.pending[0])
            if host is None:
                return
            job = self.pending.popleft()
            job = attrs.evolve(job, attempts=job.attempts + 1)
            self.sent[job.index] = time.monotonic()
            self.inflight[self.submit(host, job)] = (host, job)
            self.count[host] += 1

    def _finish(self, ref: Any) -> JobResult | None:
        host, job = self.inflight.pop(ref)
        self.count[host] -= 1
        try:
            done = JobResult.from_dict(job.index, job.command, job.attempts, self.collect(host, ref))
            return attrs.evolve(done, latency=time.monotonic() - self.sent[job.index])
        except AppContainersError as e:  # the job could not run there (a bad image, a full disk)
            if not isinstance(e, HostLost):
                return JobResult(index=job.index, command=job.command, host=host, exit_code=None,
                                 attempts=job.attempts, error=str(e))
            self.views[host] = attrs.evolve(self.views[host], alive=False)
            if job.attempts > self.retries:
                return JobResult(index=job.index, command=job.command, host=host, exit_code=None,
                                 attempts=job.attempts, error=str(e))
            self.pending.appendleft(job)  # again, on another host
            return None

    def _give_up(self, why: str) -> Iterator[JobResult]:
        while self.pending:
            job = self.pending.popleft()
            yield JobResult(index=job.index, command=job.command, host=None, exit_code=None,
                            attempts=job.attempts, error=why)

"""Fleet.events' follower of one host: an error of any kind is reported and the host followed
again, not a silently dead thread (a scripted host; no Ray)."""
from __future__ import annotations

import queue
import threading
import time

from appcontainers.fleet.client import Fleet
from appcontainers.fleet.errors import HostLost


class ScriptedHost:
    """Fleet.call of events_since answered from a script: each step a list of (seq, event) or an
    exception to raise; when the script is done, empty answers (after a short pause)."""

    def __init__(self, steps):
        self.steps = list(steps)
        self.asked: list[tuple[int, float]] = []

    def call(self, host, method, seq, wait, timeout=None):
        assert (host, method) == ("h1", "events_since")
        self.asked.append((seq, wait))
        if not self.steps:
            time.sleep(0.01)
            return []
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


def follow(host: ScriptedHost, n: int) -> list[dict]:
    fleet = Fleet.__new__(Fleet)  # no Ray: only its call is used
    fleet.call = host.call  # type: ignore[method-assign]
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    t = threading.Thread(target=fleet._follow, args=("h1", out, stop, 0.01), daemon=True)
    t.start()
    try:
        return [out.get(timeout=5) for _ in range(n)]
    finally:
        stop.set()
        t.join(5)


def ev(n: int) -> dict:
    return {"host": "h1", "type": "created", "container": f"c{n}"}


def test_an_error_is_reported_and_the_host_followed_again():
    """Any error (not only HostLost) ends up as one event per outage, then the events go on
    from where they were; a lost host's new actor (counting from 1 again) has all its events sent."""
    host = ScriptedHost([
        [],                                   # starts the host's watch
        [(1, ev(1))],
        RuntimeError("boom"), RuntimeError("boom"),
        [(1, ev(1)), (2, ev(2))],             # back: only what came after 1
        HostLost("h1"),
        [(1, ev(3))],                         # a new actor: its 1 is new
        [(2, ev(4))],
    ])
    got = follow(host, 8)
    assert [g.get("container", g["type"]) for g in got] == [
        "c1", "host_error", "host_resumed", "c2", "host_lost", "host_resumed", "c3", "c4"]
    assert got[1] == {"host": "h1", "type": "host_error", "error": "boom"}
    assert "host h1 is lost" in got[4]["error"]
    assert host.asked[:8] == [(-1, 0.01), (0, 0.01), (1, 0.01), (-1, 0.0), (-1, 0.0), (2, 0.01), (-1, 0.0), (1, 0.01)]


def test_an_error_before_the_first_answer_starts_the_watch_when_back():
    """A host failing from the start is reported, and once it answers its events from then on come."""
    host = ScriptedHost([ValueError("not yet"), [(5, ev(5))], [(6, ev(6))]])
    got = follow(host, 3)
    assert [g.get("container", g["type"]) for g in got] == ["host_error", "host_resumed", "c6"]

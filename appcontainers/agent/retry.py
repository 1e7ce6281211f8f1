"""The one wait/retry loop, shared by the agent and the host (stdlib only).

    for left in attempts(0.05, deadline=time.monotonic() + 10):
        if try_it():
            break
    else:
        give_up()

Modelled on hynek/stamina's retry_context: the caller owns the attempt, this owns the timing.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator


def attempts(interval: float, deadline: float | None = None, stop: Callable[[], bool] = lambda: False,
             *, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> Iterator[float]:
    """Yields once per attempt the seconds left until `deadline` (a `clock()` time; inf without
    one); the caller leaves the loop when an attempt succeeds.

    The first attempt comes at once, so there is always one. After each the loop ends when the
    deadline has passed or stop() is true; otherwise it sleeps `interval`, never past the
    deadline, so the last attempt comes at (or just after) the deadline itself.
    """
    def left() -> float:
        return math.inf if deadline is None else deadline - clock()

    while True:
        yield max(left(), 0.0)
        remaining = left()
        if remaining <= 0 or stop():
            return
        sleep(min(interval, remaining))

"""OSError at the service boundary: a use case that fails on the host (a full disk, a file
gone meanwhile) raises one clear HostError line, never a raw traceback. Only the public use
cases are wrapped: inside them an OSError keeps its type, so undo and roll-back code sees it."""
from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Callable, ParamSpec, TypeVar

from ..domain.exceptions import HostError

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


def host_errors(action: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a use case: an OSError out of it becomes HostError(action, error)."""
    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except OSError as e:
                raise HostError(action, e) from e
        return call
    return wrap


def host_errors_in(action: str, items: Iterator[T]) -> Iterator[T]:
    """The same for an iterator (an OSError raised while it is consumed)."""
    try:
        yield from items
    except OSError as e:
        raise HostError(action, e) from e

"""The one cross-process lock: an flock on a lock file, held for a with-block."""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from ...domain.exceptions import ContainerStateError


@contextlib.contextmanager
def flocked(path: str, *, shared: bool = False, wait: bool = True) -> Iterator[None]:
    """Hold an flock on path (created 0600, with its directory) until the block ends.

    shared: a read lock others may hold too. wait=False: raise ContainerStateError at
    once when another process holds it. Closing the file drops the lock, so a process
    that dies frees it.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise ContainerStateError(f"{os.path.basename(path)} is held by another process") from None
        yield
    finally:
        os.close(fd)

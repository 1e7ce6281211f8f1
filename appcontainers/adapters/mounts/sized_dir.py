"""A directory of a fixed size: a sparse ext4 image loop-mounted there (the SizedDirs port).

A container's upper and work dirs live on it, so what the container writes can never take
more than the size, whatever the host has free. The image is sparse: the host pays only for
what is written (and a few MiB of ext4 metadata)."""
from __future__ import annotations

import os

from ..host import process
from .mountinfo import mounts

# Lazy init: formatting 10 GiB writes a few MiB and takes a fraction of a second. No reserved
# blocks: the whole size is the container's.
MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"]


class SizedDirs:
    def mount(self, image: str, size: int, target: str) -> None:
        if not os.path.exists(image):
            os.makedirs(os.path.dirname(image), mode=0o700, exist_ok=True)
            fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
            try:
                process.run([*MKFS, image], timeout=300)
            except BaseException:
                os.unlink(image)  # never leave an unformatted image to be mounted later
                raise
        os.makedirs(target, exist_ok=True)
        process.run(["mount", "-t", "ext4", "-o", "loop", image, target], timeout=60)

    def unmount(self, target: str) -> None:
        if self.is_mounted(target):
            process.run(["umount", target], timeout=60)

    def is_mounted(self, target: str) -> bool:
        target = os.path.abspath(target)
        return any(point == target and kind == "ext4" for point, kind in mounts())

    def free_bytes(self, path: str) -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

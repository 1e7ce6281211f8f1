"""ImageViewer: an image and its parent layers, merged read-only at a directory, no container.

Runs the FUSE image reader (image_reader.py) as its own process: libfuse daemonizes it once the
mount is up, so it outlives the caller; unmounting ends it.
"""
from __future__ import annotations

import os
import sys

from ..host import process

READER = "appcontainers.adapters.aimg.image_reader"


def mount_argv(files: list[str], directory: str) -> list[str]:
    """The command that serves files (top first) merged at directory (pure)."""
    return [sys.executable, "-m", READER, *files, directory]


class ImageViewer:
    def mount(self, files: list[str], directory: str) -> None:
        """Serve the image files (top first) read-only at directory; returns once it is up."""
        os.makedirs(directory, exist_ok=True)
        process.run(mount_argv(files, directory), timeout=60)

    def unmount(self, directory: str) -> None:
        process.run(["fusermount3", "-u", directory], timeout=60)

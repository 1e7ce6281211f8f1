"""SizedDirs: a directory on a filesystem of its own, of a fixed size."""
from __future__ import annotations

import os

SIZE = 64 << 20


class SizedDirsContract:
    """Fixtures: `disks`, `where` (a fresh directory; whatever is left mounted there is unmounted
    after), `files` (what holds the image: .exists(path))."""

    def test_mount_makes_the_image_once_and_unmount_is_idempotent(self, disks, where, files):
        """mount() makes the image and mounts it; again after unmount() it mounts the same image;
        unmount() of what is not mounted does nothing."""
        image, target = os.path.join(where, "disks", "c"), os.path.join(where, "overlay")
        disks.unmount(target)  # nothing there: no error
        disks.mount(image, SIZE, target)
        assert disks.is_mounted(target) and files.exists(image)
        disks.unmount(target)
        assert not disks.is_mounted(target) and files.exists(image)
        disks.mount(image, SIZE, target)
        assert disks.is_mounted(target)
        disks.unmount(target)
        disks.unmount(target)
        assert not disks.is_mounted(target)

    def test_free_bytes(self, disks, where):
        """free_bytes() of a directory is a non-negative count of bytes."""
        assert disks.free_bytes(where) >= 0

"""ImageViewer: an image with its parents merged read-only at a directory."""
from __future__ import annotations

import pytest

from appcontainers.domain.exceptions import AppContainersError


class ImageViewerContract:
    """Fixtures: `viewer`, `world` with images() -> (top, base) image files, the base holding
    etc/hostname "base\\n" and etc/base "base\\n", the top (its child) etc/hostname "top\\n";
    directory() -> a fresh path; read(directory, rel) -> the bytes shown there, None if none."""

    def test_mount_shows_the_merged_files_and_unmount_ends_it(self, viewer, world):
        """Once mount() returns, the top layer's files and the base's show; after unmount(), none."""
        files, directory = world.images(), world.directory()
        viewer.mount(files, directory)
        try:
            assert world.read(directory, "etc/hostname") == b"top\n"
            assert world.read(directory, "etc/base") == b"base\n"
        finally:
            viewer.unmount(directory)
        assert world.read(directory, "etc/hostname") is None

    def test_unmount_of_nothing_is_an_error(self, viewer, world):
        """unmount() where nothing is mounted says so (an AppContainersError)."""
        with pytest.raises(AppContainersError):
            viewer.unmount(world.directory())

"""HostFs: the host file operations the services use."""
from __future__ import annotations

import json
import time

import pytest

from appcontainers.domain.exceptions import ContainerStateError, InvalidValue


class HostFsContract:
    """Fixtures: `fs`, `world` with base (a fresh directory, searchable by others), read(path)
    -> bytes, and archive(path) (writes a tar archive of one file, etc/app.conf)."""

    def test_make_dirs_and_queries(self, fs, world):
        """make_dirs makes every path with its parents; exists, is_dir, is_file, list_dir tell."""
        a, b = f"{world.base}/x/a", f"{world.base}/y/b"
        fs.make_dirs(a, b)
        assert fs.is_dir(a) and fs.is_dir(f"{world.base}/x") and fs.exists(b) and not fs.is_file(a)
        assert fs.list_dir(world.base) == ["x", "y"]
        assert fs.list_dir(f"{world.base}/missing") == [] and not fs.exists(f"{world.base}/missing")

    def test_write_text_and_json(self, fs, world):
        """write_text makes the directory and replaces the content; write_json writes JSON."""
        path = f"{world.base}/d/e/f.txt"
        fs.write_text(path, "one")
        fs.write_text(path, "two")
        assert world.read(path) == b"two" and fs.is_file(path) and fs.is_dir(f"{world.base}/d/e")
        fs.write_json(f"{world.base}/j.json", {"a": [1, 2]})
        assert json.loads(world.read(f"{world.base}/j.json")) == {"a": [1, 2]}
        assert fs.list_dir(f"{world.base}/d/e") == ["f.txt"]

    def test_remove(self, fs, world):
        """remove_file and remove_tree remove; neither minds a missing path."""
        fs.write_text(f"{world.base}/t/a/f", "x")
        fs.write_text(f"{world.base}/g", "x")
        fs.remove_file(f"{world.base}/g")
        fs.remove_file(f"{world.base}/g")
        fs.remove_tree(f"{world.base}/t")
        fs.remove_tree(f"{world.base}/t")
        assert fs.list_dir(world.base) == []

    def test_move_try_move_put_back(self, fs, world):
        """move renames (making the directory); try_move moves a plain file and put_back returns
        it; try_move of a missing file is None."""
        src = f"{world.base}/in/f"
        fs.write_text(src, "data")
        fs.move(src, f"{world.base}/store/f")
        assert not fs.exists(src) and world.read(f"{world.base}/store/f") == b"data"
        owner = fs.try_move(f"{world.base}/store/f", f"{world.base}/store/g")
        assert owner is not None and len(owner) == 3
        assert not fs.exists(f"{world.base}/store/f") and world.read(f"{world.base}/store/g") == b"data"
        fs.put_back(f"{world.base}/store/g", f"{world.base}/store/f", owner)
        assert world.read(f"{world.base}/store/f") == b"data" and not fs.exists(f"{world.base}/store/g")
        assert fs.try_move(f"{world.base}/none", f"{world.base}/store/h") is None

    def test_mtime(self, fs, world):
        """A file's mtime is not in the future; a missing one's is infinite (never old)."""
        fs.write_text(f"{world.base}/f", "x")
        assert fs.mtime(f"{world.base}/f") <= time.time() + 1
        assert fs.mtime(f"{world.base}/none") == float("inf")

    def test_closed_ancestor(self, fs, world):
        """The first directory on the way that others cannot search, or None."""
        fs.make_dirs(f"{world.base}/open/closed/deep")
        assert fs.closed_ancestor(f"{world.base}/open/closed/deep") is None
        fs.chmod(f"{world.base}/open/closed", 0o700)
        assert fs.closed_ancestor(f"{world.base}/open/closed/deep") == f"{world.base}/open/closed"

    def test_lock(self, fs, world):
        """A held lock refuses a second holder that will not wait; released, it can be taken."""
        path = f"{world.base}/locks/a.lock"
        with fs.lock(path):
            with pytest.raises(ContainerStateError):
                with fs.lock(path, wait=False):
                    pass
            with fs.lock(f"{world.base}/locks/b.lock", wait=False):
                pass
        with fs.lock(path, wait=False):
            pass

    def test_write_in_root(self, fs, world):
        """write_in_root writes at the path inside root (its directories made)."""
        root = f"{world.base}/rootfs"
        fs.make_dirs(root)
        fs.write_in_root(root, "/etc/app/conf", b"k=v\n", 0o640)
        assert world.read(f"{root}/etc/app/conf") == b"k=v\n"

    def test_extract_in_root(self, fs, world):
        """extract_in_root returns the member count; a missing archive is InvalidValue."""
        root = f"{world.base}/rootfs"
        fs.make_dirs(f"{root}/root")
        world.archive(f"{world.base}/a.tar")
        assert fs.extract_in_root(root, "/root", f"{world.base}/a.tar") == 1
        with pytest.raises(InvalidValue):
            fs.extract_in_root(root, "/root", f"{world.base}/missing.tar")

    def test_copy_tree_into_and_out_of_root(self, fs, world):
        """copy_into_root copies a host tree in (kind_in_root then sees it), copy_out_of_root
        copies it back out; each returns the entry count; a missing path out is InvalidValue."""
        root, b = f"{world.base}/rootfs", world.base
        fs.make_dirs(root, f"{b}/tmp")
        fs.write_text(f"{b}/src/a/f", "1")
        fs.write_text(f"{b}/src/g", "2")
        assert fs.kind_in_root(root, "/srv/app") is None
        assert fs.copy_into_root(root, f"{b}/src", "/srv/app", f"{b}/tmp") == 4
        assert [fs.kind_in_root(root, p) for p in ("/srv/app", "/srv/app/a", "/srv/app/g")] == ["dir", "dir", "file"]
        assert world.read(f"{root}/srv/app/a/f") == b"1"
        assert fs.copy_out_of_root(root, "/srv/app", f"{b}/out") == 4
        assert world.read(f"{b}/out/a/f") == b"1" and world.read(f"{b}/out/g") == b"2"
        with pytest.raises(InvalidValue):
            fs.copy_out_of_root(root, "/srv/none", f"{b}/none")

    def test_read_in_root(self, fs, world):
        """read_in_root gives a file's bytes; a missing file or one above max_bytes is InvalidValue."""
        root = f"{world.base}/rootfs"
        fs.make_dirs(root)
        fs.write_in_root(root, "/etc/conf", b"k=v\n", 0o644)
        assert fs.read_in_root(root, "/etc/conf", 100) == b"k=v\n"
        for path, limit in (("/etc/none", 100), ("/etc/conf", 3)):
            with pytest.raises(InvalidValue):
                fs.read_in_root(root, path, limit)

"""cp of a tree into a container root and back keeps contents, modes and symlinks (real HostFs
on temp directories; setuid/setgid are dropped on the way in)."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest

from appcontainers.adapters.host.hostfs import HostFs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="files in a container root belong to root")


def listing(top: str) -> dict[str, tuple]:
    """Every entry under top: (kind, mode bits, sha256 of a file / target of a link)."""
    out: dict[str, tuple] = {}
    for dirpath, dirs, files in os.walk(top):
        for name in [*dirs, *files, "."] if dirpath == top else [*dirs, *files]:
            path = os.path.normpath(os.path.join(dirpath, name))
            st = os.lstat(path)
            rel = os.path.relpath(path, top)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", None, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)), None)
            else:
                with open(path, "rb") as f:
                    out[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), hashlib.sha256(f.read()).hexdigest())
    return out


@pytest.fixture
def tree(tmp_path):
    """A host tree of assorted modes, a setuid file, symlinks (one dangling) and a read-only directory."""
    src = tmp_path / "src"
    (src / "private" / "deep").mkdir(parents=True)
    (src / "ro").mkdir()
    files = {"run.sh": 0o755, "secret": 0o600, "shared": 0o640, "frozen": 0o444, "private/deep/key": 0o400,
             "ro/inside": 0o644, "suid": 0o4755, "private/sgid": 0o2750}
    for i, (name, mode) in enumerate(sorted(files.items())):
        (src / name).write_bytes(os.urandom(1000 + i) + b"\n" * i)
        os.chmod(src / name, mode)
    os.symlink("private/deep/key", src / "link")
    os.symlink("../nowhere", src / "private" / "dangling")
    for name, mode in (("private", 0o700), ("private/deep", 0o750), ("ro", 0o555), (".", 0o751)):
        os.chmod(src / name, mode)
    return src


def stripped(entries: dict[str, tuple]) -> dict[str, tuple]:
    """The listing with setuid/setgid bits dropped, as cp into a container leaves it."""
    return {k: (kind, oct(int(mode, 8) & ~0o6000) if mode else mode, extra)
            for k, (kind, mode, extra) in entries.items()}


class TestTreeModes:
    def test_copy_in_keeps_modes_and_links(self, tree, tmp_path):
        """A tree copied into a root has the same files, modes and symlinks (setuid/setgid dropped)."""
        root, tmp = tmp_path / "root", tmp_path / "tmp"
        root.mkdir()
        tmp.mkdir()
        count = HostFs().copy_into_root(str(root), str(tree), "/srv/app", str(tmp))
        want = stripped(listing(str(tree)))
        assert listing(str(root / "srv" / "app")) == want and count == len(want)
        assert want["suid"][1] == "0o755" and want["ro"][1] == "0o555"

    def test_round_trip_in_and_out(self, tree, tmp_path):
        """Copied in and back out, the tree compares equal by hash and mode to the source."""
        root, tmp = tmp_path / "root", tmp_path / "tmp"
        root.mkdir()
        tmp.mkdir()
        fs = HostFs()
        fs.copy_into_root(str(root), str(tree), "/srv/app", str(tmp))
        fs.copy_out_of_root(str(root), "/srv/app", str(tmp_path / "back"))
        assert listing(str(tmp_path / "back")) == stripped(listing(str(tree)))

    def test_load_archive_still_normalizes(self, tmp_path):
        """An archive from outside keeps the 'data' filter's modes (no group/other write, owner rw)."""
        import tarfile

        from appcontainers.adapters.host import tar_extract

        data = tmp_path / "f"
        data.write_bytes(b"x")
        os.chmod(data, 0o466)
        with tarfile.open(tmp_path / "a.tar", "w") as tf:
            tf.add(data, arcname="f")
        root = tmp_path / "root"
        root.mkdir()
        tar_extract.extract_archive(str(root), "/d", str(tmp_path / "a.tar"))
        assert stat.S_IMODE(os.stat(root / "d" / "f").st_mode) == 0o644

"""Plain host file operations the services need (a port, so the fakes can stand in)."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile

from . import rootfs_files
from .filelock import flocked


def _seal(path: str, inode: int) -> None:
    """Make the file just moved to path root's own and prove nobody can still change it, or
    raise OSError. Order matters: once it is root's and 0600 (and links to it protected), no
    new writer or link can appear, so what is checked after holds for good: one link, and no
    descriptor open for writing anywhere (a shared writable mapping counts). The last check is
    a read lease, which the kernel refuses (EAGAIN) while any writer exists."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, 0, 0)
        os.fchmod(fd, 0o600)
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or now.st_nlink != 1 or now.st_ino != inode:
            raise OSError(errno.EBUSY, "changed while it was moved")
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)  # EAGAIN: someone holds it open to write
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    finally:
        os.close(fd)


class HostFs:
    def make_dirs(self, *paths: str, mode: int = 0o755) -> None:
        for p in paths:
            os.makedirs(p, mode=mode, exist_ok=True)

    def remove_tree(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)

    def remove_file(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def closed_ancestor(self, path: str) -> str | None:
        """The first directory on the way to path that others may not search, or None."""
        current = "/"
        for part in [p for p in os.path.realpath(path).split("/") if p]:
            current = os.path.join(current, part)
            if not os.stat(current).st_mode & 0o001:
                return current
        return None

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode, follow_symlinks=False) if os.chmod in os.supports_follow_symlinks else os.chmod(path, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid, follow_symlinks=False)

    def list_dir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def mtime(self, path: str) -> float:
        try:
            return os.lstat(path).st_mtime
        except FileNotFoundError:
            return float("inf")  # gone meanwhile: never "old"

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        """Atomically replace path's content. Safe in a directory a container can write to:
        the temp file is created exclusively (a planted symlink is never followed), its mode
        set on the descriptor, and the rename replaces whatever entry is at path."""
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                os.fchmod(f.fileno(), mode)
            os.replace(tmp, path)
        except BaseException:
            self.remove_file(tmp)
            raise

    def write_json(self, path: str, data) -> None:
        self.write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def move(self, src: str, dest: str) -> None:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(src, dest)

    def try_move(self, src: str, dest: str) -> tuple[int, int, int] | None:
        """Rename src to dest if both are on one filesystem and src is a plain file nobody else
        can still reach or write (see _seal); dest then belongs to root, 0600. Returns src's
        (uid, gid, mode), for put_back; None when it could not be moved (copy instead)."""
        try:
            st = os.lstat(src)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return None  # a symlink, or a file still reachable through another hard link
        try:
            os.rename(src, dest)
        except OSError as e:
            if e.errno == errno.EXDEV:
                return None
            raise
        owner = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        try:
            _seal(dest, st.st_ino)
        except OSError:
            self.put_back(dest, src, owner)  # sealing made it root's 0600 first: the caller's again
            return None
        return owner

    def put_back(self, staged: str, path: str, owner: tuple[int, int, int]) -> None:
        """Undo try_move: the file goes back to path with its owner and mode."""
        uid, gid, mode = owner
        os.chown(staged, uid, gid, follow_symlinks=False)
        os.chmod(staged, mode)
        os.rename(staged, path)

    @staticmethod
    def lock(path: str, wait: bool = True):
        """An exclusive cross-process lock held for a with-block (see filelock.flocked)."""
        return flocked(path, wait=wait)

    # Inside a container's root: never leaves it.
    def write_in_root(self, root: str, path: str, data: bytes, mode: int, shift: int = 0) -> None:
        from ..mounts.idmapped import creating_as  # an idmapped tree takes creations by mapped ids only

        with creating_as(shift):
            rootfs_files.write_file(root, path, data, mode, shift=shift)

    def extract_in_root(self, root: str, dest: str, archive: str, shift: int = 0, *,
                        max_bytes: int | None = None, max_members: int | None = None) -> int:
        """max_bytes, max_members: tar_extract's defaults when not given."""
        from . import tar_extract
        from ..mounts.idmapped import creating_as  # an idmapped tree takes creations by mapped ids only

        with creating_as(shift):
            return tar_extract.extract_archive(
                root, dest, archive, shift,
                max_bytes=tar_extract.DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
                max_members=tar_extract.DEFAULT_MAX_MEMBERS if max_members is None else max_members)

    def kind_in_root(self, root: str, path: str) -> str | None:
        from . import tree_copy

        return tree_copy.kind_in_root(root, path)

    def read_in_root(self, root: str, path: str, max_bytes: int) -> bytes:
        from . import tree_copy

        return tree_copy.read_file(root, path, max_bytes)

    def copy_out_of_root(self, root: str, path: str, dest: str) -> int:
        from . import tree_copy

        return tree_copy.copy_out(root, path, dest)

    def copy_into_root(self, root: str, src: str, dest: str, tmp_dir: str, shift: int = 0,
                       mode: int | None = None) -> int:
        """The host file or directory src to dest inside root: a file through write_in_root (mode
        kept), a directory through a temporary tar and extract_in_root's checks."""
        import stat as _stat
        from . import tree_copy

        st = os.stat(src)
        if not _stat.S_ISDIR(st.st_mode):
            with open(src, "rb") as f:
                self.write_in_root(root, dest, f.read(), st.st_mode & 0o777 if mode is None else mode,
                                   shift=shift)
            return 1
        from . import tar_extract
        from ..mounts.idmapped import creating_as

        archive = tree_copy.pack_dir(src, tmp_dir)
        try:
            with creating_as(shift):  # as extract_in_root, keeping the tree's modes
                return tar_extract.extract_archive(root, dest, archive, shift, keep_modes=True)
        finally:
            os.unlink(archive)


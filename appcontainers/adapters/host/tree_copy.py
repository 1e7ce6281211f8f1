"""Copying files and trees out of a container's root, and host trees into it, never leaving it.

Out: the path's parent is resolved with openat2(RESOLVE_IN_ROOT), and from there every entry
is opened by one name relative to its directory's descriptor with O_NOFOLLOW: a symlink in the
container is copied as a symlink (its target text, unresolved), never followed, so a link to
/etc/shadow planted inside gives a link on the host, not the host's file. FIFOs, sockets and
devices are skipped. Host copies belong to the caller; permission bits are kept (no setuid).

In: a host file goes through rootfs_files.write_file; a host directory is packed into a
temporary tar and unpacked by tar_extract, the same checked extractor as load_archive, keeping
the tree's modes (files and directories, the top one too) but for setuid/setgid, stripped when
packed (as a copied file's are); symlinks stay symlinks.
"""
from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import tempfile

from ...domain.exceptions import InvalidValue, UnsafePath
from .rootfs_files import openat2_in_root

_CHUNK = 1 << 20
_MODE_BITS = 0o1777  # no setuid/setgid on the host


def kind_in_root(root: str, path: str) -> str | None:
    """"dir", "file", "link" or "other" for the container path (not following a final link); None if missing."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parent = openat2_in_root(root_fd, posixpath.dirname(path), os.O_PATH | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    finally:
        os.close(root_fd)
    try:
        st = os.stat(posixpath.basename(path), dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(parent)
    return _kind(st.st_mode)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "link" if stat.S_ISLNK(mode) else "other"


def read_file(root: str, path: str, max_bytes: int) -> bytes:
    """The content of the regular file path inside root (a final symlink is refused, not
    followed); InvalidValue if it is missing, not a regular file or larger than max_bytes."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = openat2_in_root(root_fd, path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise InvalidValue(f"{path} in the container: {e.strerror}") from None
    finally:
        os.close(root_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidValue(f"{path} in the container is not a regular file")
        if st.st_size > max_bytes:
            raise InvalidValue(f"{path} in the container has {st.st_size} bytes, more than {max_bytes}: "
                               f"copy it out instead")
        chunks = []
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def copy_out(root: str, path: str, dest: str) -> int:
    """Copy the container path (file, symlink or directory tree) to the host path dest (which
    must not exist or, for a file, is replaced); returns how many entries were copied."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parent = openat2_in_root(root_fd, posixpath.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise InvalidValue(f"{path}: no such file or directory in the container") from None
    except NotADirectoryError:
        raise UnsafePath(f"{posixpath.dirname(path)} is not a directory in the container") from None
    finally:
        os.close(root_fd)
    host_parent = os.open(os.path.dirname(os.path.abspath(dest)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _entry(parent, posixpath.basename(path), host_parent, os.path.basename(os.path.abspath(dest)))
    except FileNotFoundError:
        raise InvalidValue(f"{path}: no such file or directory in the container") from None
    finally:
        os.close(parent)
        os.close(host_parent)


def _entry(src_dir: int, name: str, dst_dir: int, dst_name: str) -> int:
    st = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
    kind = _kind(st.st_mode)
    if kind == "link":
        os.symlink(os.readlink(name, dir_fd=src_dir), dst_name, dir_fd=dst_dir)
        return 1
    if kind == "file":
        _file(src_dir, name, dst_dir, dst_name)
        return 1
    if kind == "dir":
        return _tree(src_dir, name, dst_dir, dst_name, st.st_mode)
    return 0  # FIFOs, sockets, devices: nothing a copy can carry


def _file(src_dir: int, name: str, dst_dir: int, dst_name: str) -> None:
    # O_NONBLOCK: a FIFO swapped in after the stat must not hang us; O_NOFOLLOW: nor a symlink.
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            return
        dst = os.open(dst_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=dst_dir)
        try:
            while chunk := os.read(src, _CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
            os.fchmod(dst, st.st_mode & _MODE_BITS)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _tree(src_dir: int, name: str, dst_dir: int, dst_name: str, mode: int) -> int:
    src = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        os.mkdir(dst_name, 0o700, dir_fd=dst_dir)
        dst = os.open(dst_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst_dir)
        try:
            count = 1 + sum(_entry(src, child, dst, child) for child in sorted(os.listdir(src)))
            os.fchmod(dst, mode & _MODE_BITS)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return count


def _no_ids(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.mode &= ~0o6000  # no setuid/setgid into a container (a copied file's are dropped too)
    return member


def pack_dir(src: str, tmp_dir: str) -> str:
    """A temporary tar (in tmp_dir) of the host directory src: "." (its mode), then its contents
    (modes kept but setuid/setgid, symlinks as symlinks); the caller removes it."""
    fd, path = tempfile.mkstemp(prefix="copy-in-", suffix=".tar", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w") as tf:
            tf.add(src, arcname=".", recursive=False, filter=_no_ids)
            for child in sorted(os.listdir(src)):
                tf.add(os.path.join(src, child), arcname=child, filter=_no_ids)
    except BaseException:
        os.unlink(path)
        raise
    return path

"""Writing into a container's filesystem without ever leaving it.

Every path is resolved with openat2(RESOLVE_IN_ROOT): symlinks and '..' inside
the container resolve against the container's root, never the host's, so a
link to / in the container points at the container's /.
"""
from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import struct

from ...domain.exceptions import InvalidValue, UnsafePath

_SYS_OPENAT2 = 437  # the same number on x86_64 and aarch64
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_libc = ctypes.CDLL(None, use_errno=True)


def openat2_in_root(root_fd: int, path: str, flags: int, mode: int = 0) -> int:
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, mode, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, root_fd, path.lstrip("/").encode() or b".", how, len(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def _mkdirs(root_fd: int, path: str, shift: int = 0, made: list[str] | None = None) -> int:
    """Open (creating as needed, owned by container root: host id shift) the directory path
    inside root; returns an O_PATH fd. made, if given, collects the directories it created."""
    fd = os.dup(root_fd)
    resolved = ""
    try:
        for part in [p for p in path.split("/") if p]:
            resolved += "/" + part
            nfd = _open_or_make(root_fd, fd, resolved, part, shift, made)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_or_make(root_fd: int, parent_fd: int, resolved: str, part: str, shift: int,
                  made: list[str] | None) -> int:
    try:
        return openat2_in_root(root_fd, resolved, os.O_PATH | os.O_DIRECTORY)
    except NotADirectoryError:
        raise UnsafePath(f"{resolved} exists in the container and is not a directory") from None
    except FileNotFoundError:
        pass
    try:
        os.mkdir(part, 0o755, dir_fd=parent_fd)
        if made is not None:
            made.append(resolved)
        if shift:
            os.chown(part, shift, shift, dir_fd=parent_fd, follow_symlinks=False)
    except FileExistsError:
        pass
    try:
        return openat2_in_root(root_fd, resolved, os.O_PATH | os.O_DIRECTORY)
    except OSError as e:
        raise UnsafePath(f"cannot create directory {resolved} in the container: {e.strerror}") from None


def write_file(root: str, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0,
               shift: int = 0) -> None:
    """Create or replace the file path (a container path) under root."""
    if not 0 <= mode <= 0o7777:
        raise InvalidValue(f"invalid file mode {mode!r}")
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parent = _mkdirs(root_fd, posixpath.dirname(path), shift)
        os.close(parent)
        try:
            # O_NONBLOCK: a FIFO planted there by root inside must not hang us (and every other call
            # waiting on this container's lock); a regular file ignores it.
            fd = openat2_in_root(root_fd, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK,
                                 mode)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise UnsafePath(f"{path} in the container is not a regular file ({e.strerror})") from None
            raise
        try:
            st = os.fstat(fd)
            import stat as _stat
            if not _stat.S_ISREG(st.st_mode):
                raise UnsafePath(f"{path} in the container is not a regular file")
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchown(fd, uid + shift, gid + shift)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)

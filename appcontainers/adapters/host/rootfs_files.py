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
import tarfile

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


def _mkdirs(root_fd: int, path: str, shift: int = 0) -> int:
    """Open (creating as needed, owned by container root: host id shift) the directory path
    inside root; returns an O_PATH fd."""
    fd = os.dup(root_fd)
    resolved = ""
    for part in [p for p in path.split("/") if p]:
        resolved += "/" + part
        try:
            nfd = openat2_in_root(root_fd, resolved, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                if shift:
                    os.chown(part, shift, shift, dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                pass
            try:
                nfd = openat2_in_root(root_fd, resolved, os.O_PATH | os.O_DIRECTORY)
            except OSError as e:
                os.close(fd)
                raise UnsafePath(f"cannot create directory {resolved} in the container: {e.strerror}") from None
        except NotADirectoryError:
            os.close(fd)
            raise UnsafePath(f"{resolved} exists in the container and is not a directory") from None
        os.close(fd)
        fd = nfd
    return fd


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
            fd = openat2_in_root(root_fd, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
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


def check_archive(archive: str, dest: str) -> list[tarfile.TarInfo]:
    """Every member passes the 'data' filter against dest, or nothing is written."""
    if not os.path.isfile(archive):
        raise InvalidValue(f"archive {archive!r} is not a file")
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InvalidValue(f"{archive} is not a readable tar archive: {e}") from None
    total = 0
    for m in members:
        if m.name.startswith("/") or (m.islnk() and m.linkname.startswith("/")):
            raise UnsafePath(f"archive {archive} refused: member {m.name!r} has an absolute path")
        if m.mode & 0o6000 and m.isreg():
            raise UnsafePath(f"archive {archive} refused: member {m.name!r} is setuid or setgid")
        total += m.size if m.isreg() else 0
        try:
            tarfile.data_filter(m, dest)
        except tarfile.FilterError as e:
            raise UnsafePath(f"archive {archive} refused: member {m.name!r}: {e}") from None
    if os.path.isdir(dest):
        st = os.statvfs(dest)
        free = st.f_bavail * st.f_frsize
        if total > free:
            raise InvalidValue(f"archive {archive} refused: it unpacks to {total} bytes but only {free} "
                               f"are free under the container")
    return members


def extract_archive(root: str, dest: str, archive: str, shift: int = 0) -> int:
    """Extract archive into the container directory dest; returns the member count.

    shift: the host id of the container's root (an unprivileged container's merged tree shows
    ids shifted), added to every member's owner."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dfd = _mkdirs(root_fd, dest, shift)
        try:
            host_dest = os.readlink(f"/proc/self/fd/{dfd}")
        finally:
            os.close(dfd)
    finally:
        os.close(root_fd)
    real_root = os.path.realpath(root)
    if not (host_dest + "/").startswith(real_root.rstrip("/") + "/"):
        raise UnsafePath(f"{dest} resolves outside the container")
    members = check_archive(archive, host_dest)
    def shifted(member, path):
        member = tarfile.data_filter(member, path)
        if not shift or member.uid is None:  # the data filter drops owners: the creator's (fsuid) then
            return member
        return member.replace(uid=member.uid + shift, gid=member.gid + shift, deep=False)

    with tarfile.open(archive) as tf:
        tf.extractall(host_dest, members=members, filter=shifted)
    return len(members)

"""Extracting an untrusted tar archive into a container, never by host path.

Pass 1 reads every header (tarfile parses them; it never writes anything) and refuses the whole
archive before a byte is written: absolute names, '..', links out, hard links to anything that is
not an earlier member, devices and FIFOs, setuid/setgid files, more members or more declared bytes
than the limits, more bytes than the container's filesystem has free.

Pass 2 writes member by member relative to a descriptor of the destination directory: every path
is resolved by openat2(RESOLVE_IN_ROOT) with the destination as the root, component by component,
so a symlink (from the archive, or planted by the container) can at worst point elsewhere inside
the destination, never to the host, whatever os.path.realpath would have said (CVE-2025-4517).
A failure in pass 2 removes what pass 2 created, the destination directory too if it made it.
"""
from __future__ import annotations

import os
import posixpath
import secrets
import stat
import tarfile
from typing import IO, Any, cast

import attrs

from ...domain.exceptions import AppContainersError, InvalidValue, UnsafePath
from .rootfs_files import _mkdirs, openat2_in_root
from .tar_stream import open_tar

DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_MAX_MEMBERS = 100_000
_MAX_NAME = 4000  # bytes of a member path: openat2 takes at most PATH_MAX (4096)
_CHUNK = 1 << 20


class _Refused(Exception):
    """A member-level refusal; turned into UnsafePath naming the archive and the member."""


MemberRefused = _Refused  # the public name, for other readers of untrusted tars (OCI layers)


@attrs.frozen
class MemberRules:
    """What a member may be beyond plain files, directories and links inside. The defaults are an
    archive extracted into a container; an image layer (adapters/oci) may keep devices and setuid
    files when the caller allows it, and its symlinks resolve inside the container's root anyway."""

    devices: bool = False  # character/block devices and FIFOs
    setuid: bool = False  # setuid/setgid regular files
    any_symlink: bool = False  # symlinks to absolute paths or above the root


def _clean(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _check_link(m: tarfile.TarInfo, name: str, files: set[str], rules: MemberRules) -> None:
    if not m.linkname:
        raise _Refused("is a link to nothing")
    if m.issym() and rules.any_symlink:
        return
    if m.linkname.startswith("/"):
        raise _Refused("links to an absolute path")
    if m.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
        if target == ".." or target.startswith("../"):
            raise _Refused(f"links outside the destination ({m.linkname!r})")
    elif _clean(m.linkname) not in files:
        raise _Refused(f"is a hard link to {m.linkname!r}, which is not a file earlier in the archive")


def check_member(m: tarfile.TarInfo, files: set[str], rules: MemberRules = MemberRules()) -> str:
    """The member's clean relative name ('' for the destination itself), or _Refused.

    files: clean names of the regular files seen so far (hard links may point only at those)."""
    if m.name.startswith("/"):
        raise _Refused("has an absolute path")
    name = _clean(m.name)
    if ".." in name.split("/"):
        raise _Refused("has '..' in its path")
    if "\0" in m.name or "\0" in m.linkname or len(name.encode(errors="surrogateescape")) > _MAX_NAME:
        raise _Refused("has a path that is too long or holds a NUL byte")
    if not name and not m.isdir():
        raise _Refused("names the destination itself")
    if m.isreg():
        if m.mode & 0o6000 and not rules.setuid:
            raise _Refused("is setuid or setgid")
    elif m.issym() or m.islnk():
        _check_link(m, name, files, rules)
    elif not (m.isdir() or (rules.devices and (m.ischr() or m.isblk() or m.isfifo()))):
        raise _Refused("is a device, FIFO or other special file")
    if m.isreg() or m.islnk():
        files.add(name)
    return name


def read_plan(tf: tarfile.TarFile, label: str, max_bytes: int, max_members: int) -> tuple[list, int]:
    """([(member, clean name)], declared bytes) of every member, all checked; nothing written."""
    plan: list[tuple[tarfile.TarInfo, str]] = []
    files: set[str] = set()
    total = 0
    while True:
        try:
            m = tf.next()
        except Exception as e:  # tarfile, gzip, bz2, lzma, zlib errors: the bytes are not a tar
            raise InvalidValue(f"archive {label} is not a readable tar archive: {e}") from None
        if m is None:
            return plan, total
        if len(plan) >= max_members:
            raise UnsafePath(f"archive {label} refused: it has more than {max_members} members")
        try:
            name = check_member(m, files)
        except _Refused as e:
            raise UnsafePath(f"archive {label} refused: member {m.name!r} {e}") from None
        total += m.size if m.isreg() else 0
        if total > max_bytes:
            raise UnsafePath(f"archive {label} refused: member {m.name!r} takes it past "
                             f"{max_bytes} unpacked bytes")
        plan.append((m, name))


def _file_mode(m: tarfile.TarInfo) -> int:
    """The 'data' filter's mode: no high bits, no group/other write, owner rw, exec kept only if
    the owner has it."""
    mode = m.mode & 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


_KEPT_BITS = 0o1777  # a copied tree's own modes: everything but setuid/setgid (refused in pass 1)


class _Writer:
    """Pass 2: writes into the directory dest_fd as if it were '/', keeping a journal of what it
    made and what it set aside, so that undo() puts everything back as it was. keep_modes: the
    members' own modes (a tree we packed: `cp`), else the 'data' filter's (load_archive)."""

    def __init__(self, tf: tarfile.TarFile, dest_fd: int, shift: int, keep_modes: bool = False):
        self.tf, self.dest_fd, self.shift, self.keep_modes = tf, dest_fd, shift, keep_modes
        self.dir_modes: list[tuple[str, int]] = []  # set at commit, deepest first (a 0555 one last)
        # ("made", path, is a directory) or ("aside", path, the name it was renamed to)
        self.journal: list[tuple[str, str, Any]] = []  # (made|aside, path, is-dir|aside name)

    def member(self, m: tarfile.TarInfo, name: str) -> None:
        if m.isdir():
            os.close(self._dirs(name))
            if self.keep_modes:
                self.dir_modes.append((name, m.mode & _KEPT_BITS))
            return
        parent = self._dirs(posixpath.dirname(name))
        base = posixpath.basename(name)
        try:
            self._set_aside(parent, name)
            self.journal.append(("made", name, False))
            if m.isreg():
                self._file(m, parent, base)
            elif m.issym():
                os.symlink(m.linkname, base, dir_fd=parent)
                os.chown(base, self.shift, self.shift, dir_fd=parent, follow_symlinks=False)
            else:
                self._hardlink(_clean(m.linkname), parent, base)
        finally:
            os.close(parent)

    def _dirs(self, path: str) -> int:
        made: list[str] = []
        try:
            return _mkdirs(self.dest_fd, path, self.shift, made)
        except UnsafePath:
            raise _Refused(f"needs the directory {path!r} under the destination, which is not one "
                           f"or cannot be made") from None
        finally:
            self.journal += [("made", p.lstrip("/"), True) for p in made]

    def _set_aside(self, parent: int, name: str) -> None:
        """A non-directory already at name is renamed to a hidden name beside it (replaced,
        never written through; restored by undo, removed by commit)."""
        base = posixpath.basename(name)
        try:
            st = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise _Refused("would replace a directory")
        aside = f".appcontainers-replaced.{secrets.token_hex(8)}"
        os.rename(base, aside, src_dir_fd=parent, dst_dir_fd=parent)
        self.journal.append(("aside", name, aside))

    def _file(self, m: tarfile.TarInfo, parent: int, base: str) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=parent)
        try:
            src = cast(IO[bytes], self.tf.extractfile(m))  # m is a regular file: never None
            left = m.size
            while left:
                chunk = src.read(min(left, _CHUNK))
                if not chunk:
                    raise _Refused("is cut short")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                left -= len(chunk)
            os.fchown(fd, self.shift, self.shift)
            os.fchmod(fd, m.mode & _KEPT_BITS if self.keep_modes else _file_mode(m))
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def _hardlink(self, target: str, parent: int, base: str) -> None:
        src = openat2_in_root(self.dest_fd, posixpath.dirname(target), os.O_PATH | os.O_DIRECTORY)
        try:
            if not stat.S_ISREG(os.stat(posixpath.basename(target), dir_fd=src, follow_symlinks=False).st_mode):
                raise _Refused(f"is a hard link to {target!r}, which is no longer a regular file")
            os.link(posixpath.basename(target), base, src_dir_fd=src, dst_dir_fd=parent,
                    follow_symlinks=False)
        finally:
            os.close(src)

    def undo(self) -> None:
        """Newest first: remove what was made (a directory only if empty again), put back what
        was set aside."""
        for action, path, detail in reversed(self.journal):
            if action == "made":
                _remove_in(self.dest_fd, path, bool(detail))
            else:
                _in_parent(self.dest_fd, path, lambda fd, base: os.rename(detail, base, src_dir_fd=fd,
                                                                          dst_dir_fd=fd))
        self.journal = []

    def commit(self) -> None:
        """Everything was written: the directories get their modes, what was set aside goes."""
        for name, mode in sorted(self.dir_modes, key=lambda d: d[0].count("/") + bool(d[0]), reverse=True):
            fd = openat2_in_root(self.dest_fd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        for action, path, detail in self.journal:
            if action == "aside":
                _in_parent(self.dest_fd, path, lambda fd, base: os.unlink(detail, dir_fd=fd))
        self.journal = []


def _in_parent(root_fd: int, path: str, act) -> None:
    """act(fd of path's parent, path's last component), the parent resolved in root; errors ignored
    (undo does what it still can)."""
    try:
        parent = openat2_in_root(root_fd, posixpath.dirname(path), os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return
    try:
        act(parent, posixpath.basename(path))
    except OSError:
        pass
    finally:
        os.close(parent)


def _remove_in(root_fd: int, path: str, is_dir: bool) -> None:
    """Remove path (resolved in root); a directory only if it is empty (else something else
    lives there now)."""
    if is_dir:
        _in_parent(root_fd, path, lambda fd, base: os.rmdir(base, dir_fd=fd))
    else:
        _in_parent(root_fd, path, lambda fd, base: os.unlink(base, dir_fd=fd))


def _check_limit(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue(f"invalid {what} {value!r}: give a non-negative integer")
    return value


def _check_free(root_fd: int, total: int, label: str) -> None:
    st = os.fstatvfs(root_fd)
    free = st.f_bavail * st.f_frsize
    if total > free:
        raise InvalidValue(f"archive {label} refused: it unpacks to {total} bytes but only {free} "
                           f"are free under the container")


def extract_archive(root: str, dest: str, archive: str, shift: int = 0, *,
                    max_bytes: int = DEFAULT_MAX_BYTES, max_members: int = DEFAULT_MAX_MEMBERS,
                    keep_modes: bool = False) -> int:
    """Extract archive into the container directory dest (under the container root root);
    returns the member count. Owners are not taken from the archive: everything belongs to the
    container's root, whose host id is shift (an unprivileged container's tree shows ids shifted).
    keep_modes: files and directories (dest too, from a "." member) get the members' modes
    (setuid/setgid files are refused all the same); else files get the 'data' filter's, new
    directories 0755."""
    max_bytes, max_members = _check_limit(max_bytes, "max_bytes"), _check_limit(max_members, "max_members")
    label = os.path.basename(archive) or archive
    with open_tar(archive, label) as tf:
        plan, total = read_plan(tf, label, max_bytes, max_members)
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _check_free(root_fd, total, label)
            _write_all(tf, plan, root_fd, dest, shift, label, keep_modes)
        finally:
            os.close(root_fd)
    return len(plan)


def _write_all(tf, plan, root_fd: int, dest: str, shift: int, label: str, keep_modes: bool = False) -> None:
    made: list[str] = []
    try:
        dest_fd = _mkdirs(root_fd, dest, shift, made)
    except (OSError, UnsafePath) as e:
        for path in reversed(made):
            _remove_in(root_fd, path.lstrip("/"), True)
        raise UnsafePath(f"archive {label} refused: cannot use {dest} in the container: "
                         f"{getattr(e, 'strerror', None) or e}") from None
    writer = _Writer(tf, dest_fd, shift, keep_modes)
    try:
        for m, name in plan:
            try:
                writer.member(m, name)
            except (_Refused, AppContainersError) as e:
                raise UnsafePath(f"archive {label} refused: member {m.name!r}: {e}") from None
            except OSError as e:  # ENOSPC, EDQUOT, ENAMETOOLONG, ELOOP...: nothing is kept
                raise AppContainersError(f"archive {label} not loaded: member {m.name!r}: "
                                         f"{e.strerror or e}") from None
            except Exception as e:  # the compressed stream is damaged past the headers
                raise InvalidValue(f"archive {label} not loaded: member {m.name!r} is unreadable: "
                                   f"{e}") from None
        writer.commit()
    except BaseException:
        writer.undo()
        for path in reversed(made):
            _remove_in(root_fd, path.lstrip("/"), True)
        raise
    finally:
        os.close(dest_fd)

"""Idmapped bind mounts (Linux 5.12+ mount API: open_tree, mount_setattr MOUNT_ATTR_IDMAP,
move_mount), through ctypes: util-linux 2.38's mount has no X-mount.idmap yet.

An idmapped mount of a tree whose files are owned by 0 shows them owned by the map's host
base (100000), and a file created through it by host uid 100000 lands on disk as 0. Measured
on Linux 6.18: squashfs and ext4 mounts accept it, an overlayfs mount does not (EINVAL), and an
overlay over idmapped layers works; so an unprivileged container can use the kernel path.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import time

from ...domain.exceptions import IdmapFailed

# The new mount syscalls have one number on every architecture (the unified table, >= 424).
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_AT_FDCWD, _AT_EMPTY_PATH = -100, 0x1000
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV, _MOUNT_ATTR_IDMAP = 0x2, 0x4, 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str, path: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise IdmapFailed(f"idmapped mount of {path}: {what} failed: {os.strerror(err)}")
    return rc


def userns_fd(base: int, count: int) -> int:
    """An fd of a new user namespace mapping 0..count-1 to host base.. (its holder process ends)."""
    from ..host.process import which

    holder = subprocess.Popen([which("unshare"), "--user", "--", "cat"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        own = os.readlink("/proc/self/ns/user")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{holder.pid}/ns/user") == own:
            if time.monotonic() > deadline or holder.poll() is not None:
                raise IdmapFailed("could not make a user namespace for an idmapped mount (unshare --user)")
            time.sleep(0.002)
        for kind in ("uid_map", "gid_map"):
            with open(f"/proc/{holder.pid}/{kind}", "w") as f:
                f.write(f"0 {base} {count}\n")
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        try:
            holder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()


def bind_idmapped(src: str, target: str, ns_fd: int, layer: bool = False, nodev: bool = False) -> None:
    """Bind src at target (an existing directory), its ids mapped through the user namespace ns_fd.

    layer=True: also nosuid,nodev, as our squashfs layers (the overlay above decides those).
    nodev=True: device nodes there cannot be opened (a raw container's tree, unpacked from an
    untrusted image: the container has its own /dev)."""
    libc = _libc()
    fd = _check(libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(src),
                             _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC), "open_tree", src)
    try:
        flags = _MOUNT_ATTR_IDMAP | (_MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV if layer else 0) \
            | (_MOUNT_ATTR_NODEV if nodev else 0)
        attr = _MountAttr(flags, 0, 0, ns_fd)
        _check(libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                            ctypes.sizeof(attr)), "mount_setattr(MOUNT_ATTR_IDMAP)", src)
        _check(libc.syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, os.fsencode(target),
                            _MOVE_MOUNT_F_EMPTY_PATH), "move_mount", src)
    finally:
        os.close(fd)


_PR_GET_SECUREBITS, _PR_SET_SECUREBITS, _SECBIT_NO_SETUID_FIXUP = 27, 28, 1 << 2


@contextlib.contextmanager
def creating_as(host_id: int):
    """In this thread, files are created with fsuid and fsgid host_id, capabilities kept.

    Through an idmapped mount (0 -> host_id) a file created by host root (id 0, unmapped) fails
    with EOVERFLOW; created as host_id it lands on disk as 0, the container's root. The overlay
    over idmapped layers is mounted so too: overlayfs does its own work (work dir, copy-up) with
    the mounter's credentials."""
    if not host_id:
        yield
        return
    libc = _libc()
    bits = libc.prctl(_PR_GET_SECUREBITS, 0, 0, 0, 0)
    # Without NO_SETUID_FIXUP, leaving fsuid 0 drops the file capabilities (chown, dac_override).
    _check(libc.prctl(_PR_SET_SECUREBITS, bits | _SECBIT_NO_SETUID_FIXUP, 0, 0, 0), "prctl", "")
    libc.setfsgid(host_id)
    libc.setfsuid(host_id)
    try:
        yield
    finally:
        libc.setfsuid(0)
        libc.setfsgid(0)
        libc.prctl(_PR_SET_SECUREBITS, bits, 0, 0, 0)


def mount_overlay(options: str, target: str, host_id: int) -> None:
    """mount -t overlay with the mounter's fsuid/fsgid host_id (see creating_as)."""
    libc = _libc()
    with creating_as(host_id):
        rc = libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, os.fsencode(options))
        err = ctypes.get_errno()
    if rc != 0:
        raise IdmapFailed(f"overlay mount at {target} over idmapped layers failed: {os.strerror(err)} "
                          f"({options})")

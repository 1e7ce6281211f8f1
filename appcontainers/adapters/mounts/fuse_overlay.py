"""RootfsMounter with FUSE: squashfuse layers under fuse-overlayfs, for hosts without loop/overlay mounts.

The daemons (squashfuse_ll, fuse-overlayfs) daemonize once their mount is up and outlive the caller;
unmounting a FUSE mount ends its daemon.
"""
from __future__ import annotations

import os
import time

from ...agent.retry import attempts
from ...domain.exceptions import AppContainersError, CommandFailed, InvalidValue, ToolMissing
from ..host import process
from .mountinfo import fstype, is_mountpoint, mounts_under

# Lower layers: read-only, no set-uid or devices through the lower mounts themselves (the overlay
# decides that), readable by other users as a kernel squashfs mount is, with the kernel checking modes.
SQUASHFUSE_OPTIONS = "ro,nosuid,nodev,allow_other,default_permissions"
# fuse-overlayfs run by root adds allow_other,suid,default_permissions but also nodev: an LXC rootfs
# needs set-uid binaries and device nodes as the kernel overlay gives them, so say all of it.
OVERLAY_FLAGS = "allow_other,default_permissions,suid,dev"
UNMOUNT_WAIT = 15.0  # a lower stays busy until the overlay daemon above it has exited


def squashfuse_argv(tool: str, image: str, point: str) -> list[str]:
    """The command that mounts one image read-only at point (pure)."""
    return [tool, "-o", SQUASHFUSE_OPTIONS, image, point]


def overlay_argv(lowers: list[str], upper: str | None, work: str | None, target: str,
                 idmap: tuple[int, int] | None = None) -> list[str]:
    """The fuse-overlayfs command line (pure); refuses paths its option syntax cannot carry.

    No upper: a read-only merged view. idmap (host base, count): the files (kept on disk with
    the container's own ids) are shown shifted, for an unprivileged container."""
    for p in (*lowers, *(d for d in (upper, work) if d)):
        if any(c in p for c in ",:\\\n"):
            raise InvalidValue(f"cannot use {p!r} with fuse-overlayfs: the path holds ',', ':' or '\\'")
    opts = f"lowerdir={':'.join(lowers)}"
    if upper is not None:
        opts += f",upperdir={upper},workdir={work}"
    if idmap is not None:
        base, count = idmap
        opts += f",uidmapping=0:{base}:{count},gidmapping=0:{base}:{count}"
    return ["fuse-overlayfs", "-o", f"{opts},{OVERLAY_FLAGS}", target]


def _has(tool: str) -> bool:
    try:
        process.which(tool)
        return True
    except ToolMissing:
        return False


def _squashfuse() -> str:
    return "squashfuse_ll" if _has("squashfuse_ll") else "squashfuse"


def fuse_available() -> bool:
    """The tools exist and /dev/fuse opens: FuseMounter can work here."""
    if not ((_has("squashfuse_ll") or _has("squashfuse")) and _has("fuse-overlayfs")):
        return False
    if not (_has("fusermount3") or _has("umount")):
        return False
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return True


def _unmount(point: str, deadline: float) -> None:
    """Unmount one mount point, retrying while it is busy (a daemon above it still exiting)."""
    for _ in attempts(0.05, deadline):
        kind = fstype(point)
        if kind is None:
            return
        if kind.startswith("fuse") and _has("fusermount3"):
            argv = ["fusermount3", "-u", point]
        else:
            argv = ["umount", point]
        try:
            process.run(argv, timeout=60)
            return
        except CommandFailed as e:
            if fstype(point) is None:
                return
            failure = e
    raise failure


class FuseMounter:
    name = "fuse"

    def mount(self, layers: list[str], lower_mounts: list[str], upper: str, work: str, target: str,
              idmap: tuple[int, int] | None = None) -> None:
        """Mount each image file read-only at its lower mount point, then the overlay at target.

        layers and lower_mounts pair up, top first. Rolls back what it mounted on failure.
        """
        if len(layers) != len(lower_mounts) or not layers:
            raise InvalidValue(f"{len(layers)} layers for {len(lower_mounts)} mount points")
        tool = _squashfuse()
        done: list[str] = []
        try:
            for image, point in zip(layers, lower_mounts):
                os.makedirs(point, exist_ok=True)
                if not is_mountpoint(point):
                    process.run(squashfuse_argv(tool, os.path.abspath(image), point), timeout=60)
                    done.append(point)
            for d in (upper, work, target):
                os.makedirs(d, exist_ok=True)
            lowers = [os.path.join(os.path.abspath(p), "rootfs") for p in lower_mounts]
            argv = overlay_argv(lowers, os.path.abspath(upper), os.path.abspath(work), target, idmap)
            process.run(argv, timeout=60)
        except BaseException:
            deadline = time.monotonic() + UNMOUNT_WAIT
            for point in reversed(done):
                try:
                    _unmount(point, deadline)
                except AppContainersError:
                    pass  # report the original failure, not the clean-up's
            raise

    def unmount(self, target: str, lower_mounts: list[str]) -> None:
        """Unmount the overlay, then each lower (waiting for the overlay daemon to let go of them)."""
        deadline = time.monotonic() + UNMOUNT_WAIT
        _unmount(target, deadline)
        for point in lower_mounts:
            _unmount(point, deadline)

    def available(self) -> bool:
        return fuse_available()

    def mount_view(self, dirs: list[str], target: str) -> None:
        """A read-only merged view of dirs (top first) at target, ids as stored."""
        os.makedirs(target, exist_ok=True)
        argv = overlay_argv([os.path.abspath(d) for d in dirs], None, None, target)
        argv[2] = argv[2].replace(",suid,dev", ",nosuid,nodev")  # only read, by mksquashfs
        process.run(argv, timeout=60)

    def unmount_view(self, target: str) -> None:
        _unmount(target, time.monotonic() + UNMOUNT_WAIT)

    def is_mounted(self, target: str) -> bool:
        return is_mountpoint(target)

    def mounted(self, prefix: str) -> list[str]:
        """The FUSE mount points under prefix (kernel mounts there belong to the kernel mounter)."""
        return [p for p, kind in mounts_under(prefix) if kind.startswith("fuse")]

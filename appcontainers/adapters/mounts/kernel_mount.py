"""RootfsMounter with the kernel: loop-mounted squashfs layers under an overlayfs."""
from __future__ import annotations

import os

from ..host import process
from .mountinfo import is_mountpoint, mounts_under


def overlay_options(lowers: list[str], upper: str, work: str) -> str:
    """The overlayfs mount options (pure)."""
    return f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"


class KernelMounter:
    name = "kernel"

    def mount(self, layers: list[str], lower_mounts: list[str], upper: str, work: str, target: str,
              idmap=None) -> None:
        """Mount each image file read-only at its lower mount point, then the overlay at target.

        layers and lower_mounts pair up, top first. Rolls back what it mounted on failure.
        """
        done: list[str] = []
        try:
            for image, point in zip(layers, lower_mounts):
                os.makedirs(point, exist_ok=True)
                if not is_mountpoint(point):
                    process.run(["mount", "-t", "squashfs", "-o", "ro,loop,nodev,nosuid", image, point], timeout=60)
                done.append(point)
            for d in (upper, work, target):
                os.makedirs(d, exist_ok=True)
            lowers = [os.path.join(p, "rootfs") for p in lower_mounts]
            if idmap is not None:
                from .idmapped import mount_overlay

                lowers, upper, work = _idmapped_layers(lowers, upper, work, idmap, done)
                mount_overlay(overlay_options(lowers, upper, work), target, idmap[0])
            else:
                process.run(["mount", "-t", "overlay", "overlay", "-o", overlay_options(lowers, upper, work),
                             target], timeout=60)
        except BaseException:
            for point in reversed(done):
                process.run(["umount", point], timeout=60, check=False)
            raise

    def unmount(self, target: str, lower_mounts: list[str]) -> None:
        if is_mountpoint(target):
            process.run(["umount", target], timeout=60)
        for point in lower_mounts:
            if is_mountpoint(point):
                process.run(["umount", point], timeout=60)

    def bind_ro(self, src: str, target: str) -> None:
        """A read-only bind of src at target, if not there yet."""
        if is_mountpoint(target):
            return
        os.makedirs(target, exist_ok=True)
        process.run(["mount", "--bind", "-o", "ro", src, target], timeout=60)

    def mount_view(self, dirs: list[str], target: str) -> None:
        """A read-only merged view of dirs (top first) at target, ids as stored (an upper's
        whiteouts and opaque dirs count in a lower layer too)."""
        os.makedirs(target, exist_ok=True)
        process.run(["mount", "-t", "overlay", "overlay", "-o",
                     f"ro,nosuid,nodev,lowerdir={':'.join(dirs)}", target], timeout=60)

    def unmount_view(self, target: str) -> None:
        if is_mountpoint(target):
            process.run(["umount", target], timeout=60)

    def available(self) -> bool:
        return kernel_available()

    def is_mounted(self, target: str) -> bool:
        return is_mountpoint(target)

    def bind_points(self, prefix: str) -> list[str]:
        """Bind mounts under prefix: neither our squashfs/overlay kinds nor FUSE."""
        return [p for p, kind in mounts_under(prefix)
                if kind not in ("squashfs", "overlay") and not kind.startswith("fuse")
                and not os.path.basename(p).startswith(IDMAPPED)]

    def mounted(self, prefix: str) -> list[str]:
        """Our kind of mounts (squashfs, overlay, the idmapped layers) under prefix; FUSE ones
        are the FuseMounter's."""
        return [p for p, kind in mounts_under(prefix)
                if kind in ("squashfs", "overlay") or os.path.basename(p).startswith(IDMAPPED)]


IDMAPPED = "idmapped-"  # the name of an idmapped layer's mount point


def _idmapped_layers(lowers, upper, work, idmap, done):
    """Idmapped binds of each lower and of the upper's directory, next to the lower mounts;
    returns the overlay's (lowers, upper, work) through them. Appends each mount to done."""
    from .idmapped import userns_fd

    ns = userns_fd(*idmap)
    try:
        mapped = []
        for i, lower in enumerate(lowers):
            point = os.path.join(os.path.dirname(os.path.dirname(lower)), f"{IDMAPPED}{i}")
            mapped.append(_bind(lower, point, ns, done))
        # upper and work must be on one mount: bind their common directory.
        rw = os.path.dirname(upper)
        point = _bind(rw, os.path.join(os.path.dirname(os.path.dirname(lowers[0])), f"{IDMAPPED}rw"), ns, done)
        return mapped, os.path.join(point, os.path.basename(upper)), os.path.join(point, os.path.basename(work))
    finally:
        os.close(ns)


def _bind(src: str, point: str, ns: int, done: list[str]) -> str:
    from .idmapped import bind_idmapped

    os.makedirs(point, exist_ok=True)
    if not is_mountpoint(point):
        bind_idmapped(src, point, ns, layer=True)
    done.append(point)
    return point


def kernel_available() -> bool:
    """Loop devices and overlayfs and squashfs in this kernel."""
    try:
        with open("/proc/filesystems") as f:
            fs = f.read().split()
    except OSError:
        return False
    return "overlay" in fs and "squashfs" in fs and os.path.exists("/dev/loop-control")

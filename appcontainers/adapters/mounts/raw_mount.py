"""The seed's raw overlays: a container whose root is a plain directory in overlays/raw/<name>,
neither mounted from squashfs nor overlaid. The image is unpacked once, at provision (the
slow path, for software that must not run on overlayfs); the directory is bind-mounted at
the usual rootfs path so everything else sees one layout."""
from __future__ import annotations

import os
import shutil

from ...domain.exceptions import InvalidValue
from ..host import process
from .mountinfo import fstype, is_mountpoint, mounts_under


class RawMounter:
    name = "raw"

    def available(self) -> bool:
        return True

    def mount(self, layers: list[str], lower_mounts: list[str], upper: str, work: str, target: str,
              idmap=None) -> None:
        """Unpack the image into upper (once), then bind it at target. work is unused.

        idmap (host base, count): the files stay on disk with the image's own ids and the bind
        is idmapped, so root inside (host uid base) owns them."""
        if len(layers) != 1:
            raise InvalidValue("a raw container needs a flattened image (one layer); this one has "
                               f"{len(layers)}: load it normally, save it flattened, then load that raw")
        if not os.path.isdir(upper):
            parent, base = os.path.split(upper.rstrip("/"))
            stage = os.path.join(parent, f".{base}.unpacking")
            os.makedirs(parent, exist_ok=True)
            shutil.rmtree(stage, ignore_errors=True)
            try:
                process.run(["unsquashfs", "-no-progress", "-quiet", "-d", stage, layers[0], "rootfs"],
                            timeout=3600)
                os.replace(os.path.join(stage, "rootfs"), upper)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        os.makedirs(target, exist_ok=True)
        if idmap is None:
            process.run(["mount", "--bind", upper, target], timeout=60)
            return
        from .idmapped import bind_idmapped, userns_fd

        ns = userns_fd(*idmap)
        try:
            bind_idmapped(upper, target, ns, nodev=True)
        finally:
            os.close(ns)

    def unmount(self, target: str, lower_mounts: list[str]) -> None:
        if is_mountpoint(target) and self._ours(target):
            process.run(["umount", target], timeout=60)

    def is_mounted(self, target: str) -> bool:
        return is_mountpoint(target)

    @staticmethod
    def _ours(point: str) -> bool:
        kind = fstype(point) or ""
        return kind not in ("squashfs", "overlay") and not kind.startswith("fuse")

    def mounted(self, prefix: str) -> list[str]:
        return [p for p, kind in mounts_under(prefix)
                if kind not in ("squashfs", "overlay") and not kind.startswith("fuse")]

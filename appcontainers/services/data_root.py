"""The data root's directories and their permissions, made before anything else uses them."""
from __future__ import annotations

from .ports import Ports


def prepare_data_root(ports: Ports) -> None:
    """Make the data root's top directories, through the host-files port (idempotent).

    The root and LXC's lxcpath are 0711 so unprivileged containers' ids can pass through them.
    Uppers hold what containers wrote (setuid-root files among them) and views expose saved
    trees: root only (0700, enforced even if they existed). Only fuse-overlayfs and mksquashfs,
    as root, go there."""
    fs, layout = ports.fs, ports.settings.layout
    fs.make_dirs(layout.root, layout.lxcpath, mode=0o711)
    for d in (layout.overlays, layout.views):
        fs.make_dirs(d, mode=0o700)
        fs.chmod(d, 0o700)

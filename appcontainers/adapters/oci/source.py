"""The OciSource port: an import source as an OCI layout (skopeo copies what is not one), and
each layer's blob as the tar members of an .aimg layer (layer_filter)."""
from __future__ import annotations

import os
import re
import stat
from typing import Callable, Iterator

from ...domain.exceptions import InvalidValue, SourceUnreadable
from ...domain.oci import ImportLimits, ImportSource, OciImage, OciLayer
from ..host.process import stream
from ..host.tar_extract import MemberRules
from .layer_filter import LayerLimits, layer_members
from .layout import Layout

COPY_TAG = "import"


def skopeo_copy_argv(source: ImportSource, dest_dir: str, tls_verify: bool = True) -> list[str]:
    """skopeo copy of source into a new OCI layout at dest_dir (blobs are copied as they are:
    compressed layers stay compressed)."""
    argv = ["skopeo", "copy", "--quiet"]
    if source.transport == "docker" and not tls_verify:
        argv.append("--src-tls-verify=false")
    return argv + [source.skopeo_ref(), f"oci:{dest_dir}:{COPY_TAG}"]


def _limits(limits: ImportLimits) -> LayerLimits:
    return LayerLimits(rules=MemberRules(devices=limits.devices, setuid=limits.setuid, any_symlink=True),
                       max_bytes=limits.max_bytes, max_members=limits.max_members)


class OciSources:
    """Reads import sources for services/oci_import.py."""

    def __init__(self, *, copy_timeout: float = 6 * 3600) -> None:
        self.copy_timeout = copy_timeout

    def fetch(self, source: ImportSource, work_dir: str, tls_verify: bool = True) -> OciImage:
        """The image at source: an oci: directory read in place, a plain tar as one layer, the
        rest copied by skopeo into work_dir (which must not exist yet) first."""
        if source.transport == "tar":
            return _plain_tar(source.ref)
        path, tag = source.ref, source.tag
        if not source.in_place:
            self._copy(source, work_dir, tls_verify)
            path, tag = work_dir, COPY_TAG
        layout = Layout(path)
        try:
            return layout.image(tag)
        finally:
            layout.close()

    def _copy(self, source: ImportSource, work_dir: str, tls_verify: bool) -> None:
        # stream(): skopeo dies with us (PR_SET_PDEATHSIG), so after a kill -9 nothing writes
        # into the work directory gc removes.
        code, out, err = stream(skopeo_copy_argv(source, work_dir, tls_verify), timeout=self.copy_timeout)
        if code != 0:
            raise SourceUnreadable(source.skopeo_ref(), skopeo_reason((out + err).decode(errors="replace")))

    def members(self, image: OciImage, layer: OciLayer, limits: ImportLimits,
                on_read: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """The tar members of layer as an .aimg layer (rootfs/..., whiteouts mapped), its digest
        and diff_id checked once read through."""
        if layer.file is not None:
            f = _open_regular(layer.file)
        else:
            layout = Layout(image.layout)
            try:
                f = layout.blob(layer.digest or "")
            finally:
                layout.close()
        with f:
            yield from layer_members(f, layer.label, digest=layer.digest, diff_id=layer.diff_id,
                                     limits=_limits(limits), on_read=on_read)


def skopeo_reason(output: str) -> str:
    """The message of skopeo's last `level=fatal msg="..."` line, or its last line."""
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else "skopeo failed"
    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', last)
    return m.group(1).replace('\\"', '"') if m else last


def _open_regular(path: str):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidValue(f"cannot read {path}: {e.strerror}") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise InvalidValue(f"{path} is not a file (give a tar, or oci:DIR for an OCI layout)")
    return f


def _plain_tar(path: str) -> OciImage:
    """A rootfs tar (`docker export`, plain/gzip/zstd) as an image of one layer, no config."""
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
    return OciImage(layers=(OciLayer(digest=None, diff_id=None, size=size, file=path),), config=None)

"""Reading an OCI image layout directory (index.json, blobs/sha256/...) as untrusted input.

Every file is opened relative to the layout's directory descriptor with openat2(RESOLVE_IN_ROOT)
(a symlinked blob cannot reach the host's files), must be a regular file, and JSON blobs are
bounded and checked against their digest before they are parsed.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
from typing import IO, Any

from ...domain.exceptions import ImageCorrupt, InvalidValue
from ...domain.oci import OciImage, OciLayer, check_digest, diff_ids, run_config
from ..host.rootfs_files import openat2_in_root

MAX_JSON = 4 << 20
INDEXES = ("application/vnd.oci.image.index.v1+json",
           "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFESTS = ("application/vnd.oci.image.manifest.v1+json",
             "application/vnd.docker.distribution.manifest.v2+json")
LAYERS = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
          "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip",
          "application/vnd.oci.image.layer.nondistributable.v1.tar",
          "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
          "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd")
REF_NAME = "org.opencontainers.image.ref.name"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


class Layout:
    """An OCI image layout directory, opened once."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise InvalidValue(f"{path} is not an OCI image layout directory: {e.strerror}") from None

    def close(self) -> None:
        os.close(self.fd)

    def open(self, rel: str) -> IO[bytes]:
        """The regular file rel inside the layout, for reading."""
        try:
            fd = openat2_in_root(self.fd, rel, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            raise ImageCorrupt(os.path.join(self.path, rel), f"cannot open: {e.strerror}") from None
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise ImageCorrupt(os.path.join(self.path, rel), "not a regular file")
        return f

    def blob(self, digest: str) -> IO[bytes]:
        return self.open(f"blobs/sha256/{check_digest(digest, 'blob digest')[7:]}")

    def _json(self, rel: str, digest: str | None = None) -> Any:
        with self.open(rel) as f:
            raw = f.read(MAX_JSON + 1)
        where = os.path.join(self.path, rel)
        if len(raw) > MAX_JSON:
            raise ImageCorrupt(where, f"larger than {MAX_JSON} bytes")
        if digest is not None and "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise ImageCorrupt(where, f"its digest is not {digest}: the blob is damaged or altered")
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ImageCorrupt(where, f"not valid JSON: {e}") from None

    def json_blob(self, digest: str) -> Any:
        return self._json(f"blobs/sha256/{check_digest(digest, 'blob digest')[7:]}", digest)

    def image(self, tag: str = "") -> OciImage:
        """The image tagged tag (or the only one) in the layout, its platform's if an index
        lists several."""
        manifest = self._manifest(_pick(self._json("index.json"), tag, self.path))
        config = self.json_blob(_descriptor(manifest.get("config"), "config")["digest"])
        ids = diff_ids(config)
        layers = manifest.get("layers")
        if not isinstance(layers, list) or not layers:
            raise InvalidValue(f"the image in {self.path} has no layers")
        if len(layers) != len(ids):
            raise ImageCorrupt(self.path, f"the manifest lists {len(layers)} layers, the config "
                                          f"{len(ids)} diff_ids")
        return OciImage(layers=tuple(_layer(d, diff) for d, diff in zip(layers, ids)),
                        config=run_config(config), layout=self.path)

    def _manifest(self, desc: dict) -> dict:
        """The image manifest desc points at, through an index for this platform if need be."""
        for _ in range(4):  # an index of indexes, boundedly
            data = self.json_blob(desc["digest"])
            if not isinstance(data, dict):
                raise ImageCorrupt(self.path, "a manifest is not a JSON object")
            media = data.get("mediaType") or desc.get("mediaType")
            if media in INDEXES or (media is None and "manifests" in data):
                desc = _platform(data, self.path)
                continue
            return data
        raise ImageCorrupt(self.path, "indexes nest too deeply")


def _descriptor(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidValue(f"OCI {what} descriptor is missing or not an object")
    check_digest(value.get("digest"), f"{what} digest")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidValue(f"OCI {what} descriptor has no valid size")
    return value


def _layer(desc: Any, diff_id: str) -> OciLayer:
    d = _descriptor(desc, "layer")
    media = d.get("mediaType", "")
    if media not in LAYERS:
        raise InvalidValue(f"layer {d['digest'][7:19]} has media type {media!r}, which import does not "
                           f"support (encrypted or foreign layers are not)")
    return OciLayer(digest=d["digest"], diff_id=diff_id, size=d["size"], media_type=media)


def _pick(index: Any, tag: str, path: str) -> dict:
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests:
        raise InvalidValue(f"{path} is not an OCI image layout with an image (index.json lists none)")
    if tag:
        found = [m for m in manifests if isinstance(m, dict)
                 and (m.get("annotations") or {}).get(REF_NAME) == tag]
        if not found:
            raise InvalidValue(f"{path} has no image tagged {tag!r}")
        return _descriptor(found[0], "manifest")
    if len(manifests) > 1:
        tags = sorted(str((m.get("annotations") or {}).get(REF_NAME)) for m in manifests if isinstance(m, dict))
        raise InvalidValue(f"{path} holds {len(manifests)} images ({', '.join(tags)}): name one as oci:DIR:TAG")
    return _descriptor(manifests[0], "manifest")


def _platform(index: dict, path: str) -> dict:
    arch = _ARCH.get(platform.machine(), platform.machine())
    manifests = [m for m in index.get("manifests") or () if isinstance(m, dict)]
    for m in manifests:
        p = m.get("platform") or {}
        if p.get("os", "linux") == "linux" and p.get("architecture") == arch:
            return _descriptor(m, "manifest")
    if len(manifests) == 1:
        return _descriptor(manifests[0], "manifest")
    raise InvalidValue(f"the image in {path} has no manifest for linux/{arch}")

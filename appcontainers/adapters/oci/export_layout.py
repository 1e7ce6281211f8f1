"""Writes an .aimg chain as an OCI image: an image layout directory (`oci`), a tar of one
(`oci-archive`) or a `docker save` archive (`docker-archive`), atomically (a temp file or
directory beside the destination, renamed at the end, removed on failure).

One OCI layer per .aimg layer, bottom first, each streamed from the squashfs by
export_tar.LayerTar: gzip blobs in the OCI forms, plain tars (as `docker save` writes them)
in the docker archive. The image config comes from the service, this adds rootfs.diff_ids.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import IO, Any, Callable, Iterator

from ...domain.exceptions import InvalidValue
from ..aimg.squashfs_reader import SquashfsReader, open_layers
from .export_blobs import DigestWriter, DirSink, TarSink
from .export_tar import LayerTar, data_bytes

FORMATS = ("oci", "oci-archive", "docker-archive")
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
TEMP_SUFFIX = ".export-tmp"  # a killed export leaves DIR/.NAME.XXXX.export-tmp: remove it

Sink = DirSink | TarSink


def _json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _sha(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_dest(dest: str, fmt: str) -> str:
    """dest as an absolute path, refused (nothing written) unless it can be made."""
    if fmt not in FORMATS:
        raise InvalidValue(f"unknown export format {fmt!r}: {', '.join(FORMATS)}")
    dest = os.path.abspath(dest)
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise InvalidValue(f"cannot export to {dest}: directory {parent} does not exist")
    if fmt == "oci" and os.path.lexists(dest) and not (os.path.isdir(dest) and not os.listdir(dest)):
        raise InvalidValue(f"cannot export to {dest}: it exists (an OCI layout is written to a new "
                           f"or empty directory)")
    if fmt != "oci" and os.path.isdir(dest):
        raise InvalidValue(f"cannot export to {dest}: it is a directory (an {fmt} is a file)")
    return dest


class _Progress:
    """Percent of the chain's file data written, to progress(int), each value once."""

    def __init__(self, total: int, progress: Callable[[int], None]):
        self.total, self.done, self.shown, self.progress = max(total, 1), 0, -1, progress

    def __call__(self, n: int) -> None:
        self.done += n
        pct = min(100, self.done * 100 // self.total)
        if pct != self.shown:
            self.shown = pct
            self.progress(pct)

    def end(self) -> None:
        if self.shown != 100:  # an image of no file data
            self.shown = 100
            self.progress(100)


class OciExporter:
    """Writes an image made of .aimg layers in one of FORMATS (the port services/oci_export uses)."""

    check = staticmethod(check_dest)

    def export(self, layers: list[str], config: dict[str, Any], dest: str, fmt: str, tag: str,
               repo_tag: str | None, level: int, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """layers: the .aimg files top first (each the next one's child). Returns the digests."""
        dest = check_dest(dest, fmt)
        readers = open_layers(layers)
        try:
            counted = _Progress(sum(data_bytes(sq, sq.rootfs) for sq in readers if sq.rootfs),
                                progress) if progress else None
            with _staged(dest, fmt) as sink:
                result = _Writer(sink, fmt, level, counted or (lambda n: None)).write(readers[::-1], config,
                                                                                    tag, repo_tag)
            if counted:
                counted.end()
            return result
        finally:
            for sq in readers:
                sq.close()


@contextlib.contextmanager
def _staged(dest: str, fmt: str) -> Iterator[Sink]:
    """A sink writing to a temp beside dest, renamed to dest if the block ends without error."""
    parent, base = os.path.split(dest)
    if fmt == "oci":
        tmp = tempfile.mkdtemp(prefix=f".{base}.", suffix=TEMP_SUFFIX, dir=parent)
        dir_sink = None
        try:
            dir_sink = DirSink(tmp)
            yield dir_sink
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest)  # onto an empty directory too
        except BaseException:
            if dir_sink is not None:
                dir_sink.abort()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=TEMP_SUFFIX, dir=parent)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            sink = TarSink(f, 0, ("blobs/", "blobs/sha256/") if fmt == "oci-archive" else ())
            yield sink
            sink.close()
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _Writer:
    def __init__(self, sink: Sink, fmt: str, level: int, counted: Callable[[int], None]):
        self.sink, self.fmt, self.counted = sink, fmt, counted
        self.level: int | None = None if fmt == "docker-archive" else level  # docker save: plain tars

    def _blob_name(self, digest: str, ext: str = "") -> str:
        hexdigest = digest.split(":", 1)[1]
        return f"{hexdigest}{ext}" if self.fmt == "docker-archive" else f"blobs/sha256/{hexdigest}"

    def layer(self, sq: SquashfsReader) -> dict[str, Any]:
        out: IO[bytes] = self.sink.begin()
        w = DigestWriter(out, self.level)
        try:
            LayerTar(sq, w, self.counted).write(sq.rootfs)  # type: ignore[arg-type]
            digest, diff_id, size = w.finish()
        finally:
            w.close()
        self.sink.commit(self._blob_name(digest, ".tar"))
        return {"mediaType": MEDIA_LAYER, "digest": digest, "size": size, "diff_id": diff_id}

    def blob(self, data: bytes, ext: str = "") -> str:
        digest = _sha(data)
        self.sink.add(self._blob_name(digest, ext), data)
        return digest

    def write(self, readers: list[SquashfsReader], config: dict[str, Any], tag: str,
              repo_tag: str | None) -> dict[str, Any]:
        layers = [self.layer(sq) for sq in readers]
        config = {**config, "rootfs": {"type": "layers", "diff_ids": [x["diff_id"] for x in layers]}}
        raw_config = _json(config)
        config_digest = self.blob(raw_config, ".json")
        result = {"format": self.fmt, "config": config_digest,
                  "layers": [{"digest": x["digest"], "diff_id": x["diff_id"], "size": x["size"]} for x in layers]}
        if self.fmt == "docker-archive":
            self.sink.add("manifest.json", _json([{
                "Config": self._blob_name(config_digest, ".json"), "RepoTags": [repo_tag] if repo_tag else [],
                "Layers": [self._blob_name(x["diff_id"], ".tar") for x in layers]}]))
            return result
        manifest = _json({"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                          "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(raw_config)},
                          "layers": [{"mediaType": MEDIA_LAYER, "digest": x["digest"], "size": x["size"]}
                                     for x in layers]})
        manifest_digest = self.blob(manifest)
        self.sink.add("index.json", _json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [
            {"mediaType": MEDIA_MANIFEST, "digest": manifest_digest, "size": len(manifest),
             "annotations": {REF_ANNOTATION: tag}}]}))
        self.sink.add("oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        return {**result, "manifest": manifest_digest}

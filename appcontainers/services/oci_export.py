"""Use case: export an image, or a container's current tree, as an OCI image (docs/oci.md, "Export").

The .aimg chain becomes the layers (one per .aimg, bottom first); the image config is computed
here, as data (image_config); the OciWriter port streams and writes them.
"""
from __future__ import annotations

import datetime
import os
import re
from typing import Protocol

from ..domain.exceptions import InvalidValue
from ..domain.image import Image, RunConfig, lineage
from ..domain.ports import JsonDict, Progress
from .containers import ContainerService
from .host_errors import host_errors
from .images import ImageService
from .plans import environment
from .ports import Ports

FORMATS = ("oci", "oci-archive", "docker-archive")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # a Docker tag (also a valid OCI ref name)
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")  # one Docker path component
# Go's names for the host's machine (OCI's architecture and variant).
_ARCHES = {"x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", ""), "arm64": ("arm64", ""),
           "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"), "i386": ("386", ""), "i686": ("386", ""),
           "ppc64le": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", "")}


class OciWriter(Protocol):
    def check(self, dest: str, fmt: str) -> str:
        """dest made absolute; InvalidValue (nothing written) if it cannot be written in fmt."""
    def export(self, layers: list[str], config: JsonDict, dest: str, fmt: str, tag: str,
               repo_tag: str | None, level: int, progress: Progress | None = None) -> JsonDict:
        """Write the .aimg files (top first) with the config in fmt at dest (atomically); the digests."""


def _time(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _oci_run_config(run: RunConfig) -> JsonDict:
    cfg: JsonDict = {"Env": [f"{k}={v}" for k, v in run.env.items()]}
    for key, value in (("Entrypoint", list(run.entrypoint)), ("Cmd", list(run.cmd)), ("WorkingDir", run.workdir),
                       ("User", run.user), ("ExposedPorts", {p: {} for p in run.exposed_ports}),
                       ("Labels", dict(run.labels))):
        if value:
            cfg[key] = value
    return cfg


def run_config(chain: list[Image]) -> RunConfig:
    """What the export's config says about running the image (chain top first): the nearest
    manifest config down the chain; else, for an image of our own, its environment as Env and
    its first startup command as Cmd (under /bin/sh -c, as startup commands run)."""
    for img in chain:
        if img.manifest.config is not None:
            return img.manifest.config
    commands = chain[0].startup_commands
    return RunConfig.from_dict({"env": environment(chain),
                                "cmd": ["/bin/sh", "-c", commands[0]] if commands else []})


def architecture(machine: str) -> tuple[str, str]:
    """(OCI architecture, variant) of a uname machine; the machine itself if unknown."""
    return _ARCHES.get(machine, (machine, ""))


def image_config(chain: list[Image], machine: str) -> JsonDict:
    """The OCI image config of chain (top first), without rootfs (the writer adds the diff_ids)."""
    arch, variant = architecture(machine)
    cfg: JsonDict = {"created": _time(chain[0].created), "architecture": arch, "os": "linux",
                     "config": _oci_run_config(run_config(chain)),
                     "history": [{"created": _time(img.created), "comment": f"aimg {img.id}",
                                  "created_by": f"appcontainers image {img.name}"} for img in reversed(chain)]}
    if variant:
        cfg["variant"] = variant
    return cfg


def check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise InvalidValue(f"invalid tag {tag!r}: letters, digits, '_', '.' and '-', at most 128, "
                           f"not starting with '.' or '-'")
    return tag


def repo_tag(name: str, tag: str) -> str | None:
    """The docker-archive's RepoTags entry: NAME:TAG with the name in lower case, or None if
    that is no Docker repository name (the image loads untagged)."""
    repo = name.lower()
    return f"{repo}:{tag}" if _REPO_RE.fullmatch(repo) else None


class OciExportService:
    def __init__(self, ports: Ports, containers: ContainerService, images: ImageService, writer: OciWriter,
                 machine: str) -> None:
        self.p, self.containers, self.images, self.writer, self.machine = ports, containers, images, writer, machine

    @host_errors("export")
    def export(self, ref: str, dest: str, fmt: str = "oci", tag: str = "latest",
               progress: Progress | None = None) -> JsonDict:
        """Export container ref (its current tree: saved layered, then exported) or else image
        ref (id, id prefix or name) to dest in fmt; returns {"format", "dest", "image", "config",
        "layers", "manifest" (OCI forms)}."""
        if fmt not in FORMATS:
            raise InvalidValue(f"unknown export format {fmt!r}: {', '.join(FORMATS)}")
        check_tag(tag)
        dest = self.writer.check(dest, fmt)
        state = self.p.repo.read()
        if ref in state.reservations:
            return self._export_container(ref, dest, fmt, tag, progress)
        image = self.images.resolve(ref, state.images)
        files = self.images.layer_files(image.id)  # each verified
        return self._write(files, lineage(state.images, image.id), dest, fmt, tag, progress)

    def _write(self, files: list[str], chain: list[Image], dest: str, fmt: str, tag: str,
               progress: Progress | None) -> JsonDict:
        result = self.writer.export(files, image_config(chain, self.machine), dest, fmt, tag,
                                    repo_tag(chain[0].name, tag), self.p.settings.oci_gzip_level, progress)
        return {**result, "dest": dest, "image": chain[0].id}

    def _export_container(self, name: str, dest: str, fmt: str, tag: str, progress: Progress | None) -> JsonDict:
        """The container's image chain with its upper on top (a raw container: its tree, flat)."""
        r = self.containers.get(name)
        parent, base = os.path.split(dest)
        tmp = os.path.join(parent, f".{base}.{self.p.rng.getrandbits(32):08x}.export-tmp.aimg")
        try:
            top = self.images.save(name, tmp, flatten=r.mounter == "raw", level=1,
                                   progress=_scaled(progress, 0, 20))
            images = self.p.repo.read().images
            chain = [top] + (lineage(images, top.parent) if top.parent else [])
            files = [tmp] + (self.images.layer_files(top.parent) if top.parent else [])
            return self._write(files, chain, dest, fmt, tag, _scaled(progress, 20, 100))
        finally:
            if self.p.fs.exists(tmp):
                self.p.fs.remove_file(tmp)


def _scaled(progress: Progress | None, start: int, end: int) -> Progress | None:
    if progress is None:
        return None

    def scaled(pct: int) -> None:
        progress(start + pct * (end - start) // 100)
    return scaled


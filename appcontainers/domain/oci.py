"""OCI import: the values an import works with, and the pure readings of a source and a config.

An import source is one of skopeo's transports (`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
`docker-archive:FILE`, `docker://REF`) or a plain rootfs tar by path (docs/oci.md).
"""
from __future__ import annotations

import os
import re
from typing import Any

import attrs

from .exceptions import InvalidValue
from .image import RunConfig

TRANSPORTS = ("oci", "oci-archive", "docker-archive", "docker")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.zst", ".tar.zstd", ".tar", ".gz", ".zst")
DEFAULT_MAX_BYTES = 64 << 30  # per layer, unpacked
DEFAULT_MAX_MEMBERS = 1_000_000  # per layer


@attrs.frozen
class ImportSource:
    """A parsed SOURCE: transport ("oci", ..., or "tar" for a plain rootfs tar), the path or
    registry reference, and the tag (oci/oci-archive only; "" = the only image there)."""

    transport: str
    ref: str
    tag: str = ""

    @property
    def in_place(self) -> bool:
        """An OCI layout directory or a plain tar is read where it is; the rest is copied first."""
        return self.transport in ("oci", "tar")

    def skopeo_ref(self) -> str:
        return f"{self.transport}:{self.ref}" + (f":{self.tag}" if self.tag else "")

    def default_name(self) -> str:
        """An image name from the source: the repository's last part, or the file's base name."""
        if self.transport == "docker":
            base = self.ref.lstrip("/").split("@")[0].rsplit("/", 1)[-1].split(":")[0]
        else:
            base = os.path.basename(self.ref.rstrip("/"))
            for suffix in _TAR_SUFFIXES:
                if base.endswith(suffix) and len(base) > len(suffix):
                    base = base[:-len(suffix)]
                    break
        base = _NAME_CHARS.sub("-", base).strip("-.")[:64]
        return base if base and base[0].isalnum() else "imported"


def parse_source(source: str) -> ImportSource:
    """SOURCE as `appcontainers import` takes it; InvalidValue for a malformed one."""
    if not isinstance(source, str) or not source or "\0" in source:
        raise InvalidValue(f"invalid import source {source!r}")
    transport, sep, rest = source.partition(":")
    if sep and transport in TRANSPORTS:
        if transport == "docker":
            if not rest.startswith("//") or len(rest) <= 2:
                raise InvalidValue(f"invalid import source {source!r}: use docker://HOST[:PORT]/NAME[:TAG]")
            return ImportSource("docker", rest)
        path, tag = _path_and_tag(rest) if transport != "docker-archive" else (rest, "")
        if not path:
            raise InvalidValue(f"invalid import source {source!r}: {transport}: needs a path")
        return ImportSource(transport, os.path.abspath(path), tag)
    return ImportSource("tar", os.path.abspath(source))


def _path_and_tag(rest: str) -> tuple[str, str]:
    path, sep, tag = rest.rpartition(":")
    if sep and tag and "/" not in tag:
        return path, tag
    return rest, ""


@attrs.frozen
class ImportLimits:
    """What a layer may hold beyond plain files, directories and links, and how much."""

    devices: bool = False  # device nodes and FIFOs
    setuid: bool = False  # setuid/setgid files
    max_bytes: int = DEFAULT_MAX_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS


@attrs.frozen
class OciLayer:
    """One layer: its blob's digest and the diff_id its config names (None for a plain tar,
    whose file is then `file`), its size in bytes as stored."""

    digest: str | None
    diff_id: str | None
    size: int
    media_type: str = ""
    file: str | None = None

    @property
    def label(self) -> str:
        return (self.digest or "")[7:19] or os.path.basename(self.file or "layer")


@attrs.frozen
class OciImage:
    """An image ready to import: its layers bottom first, its run config, where its blobs are."""

    layers: tuple[OciLayer, ...]
    config: RunConfig | None
    layout: str = ""  # the OCI layout directory ("" for a plain tar)

    @property
    def total_size(self) -> int:
        return sum(layer.size for layer in self.layers)


def check_digest(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
        raise InvalidValue(f"{what} {value!r} is not a sha256 digest (only sha256 is supported)")
    return value


def _env(items: Any) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items or ():
        if not isinstance(item, str) or "=" not in item:
            raise InvalidValue(f"image config: Env entry {item!r} is not NAME=VALUE")
        key, _, value = item.partition("=")
        env[key] = value
    return env


def _ports(ports: Any) -> list[str]:
    if not isinstance(ports, dict):
        return []
    return [p if "/" in p else f"{p}/tcp" for p in ports if isinstance(p, str)]


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidValue(f"image config: {what} is not a list of strings")
    return value


def run_config(config: Any) -> RunConfig:
    """The RunConfig of an OCI image config (its `config` object: Env, Entrypoint, Cmd,
    WorkingDir, User, ExposedPorts, Labels); InvalidValue for malformed values."""
    c = config.get("config") if isinstance(config, dict) else None
    c = c if isinstance(c, dict) else {}
    labels = c.get("Labels") if isinstance(c.get("Labels"), dict) else {}
    return RunConfig.from_dict({
        "env": _env(c.get("Env")), "entrypoint": _str_list(c.get("Entrypoint"), "Entrypoint"),
        "cmd": _str_list(c.get("Cmd"), "Cmd"), "workdir": str(c.get("WorkingDir") or ""),
        "user": str(c.get("User") or ""), "exposed_ports": _ports(c.get("ExposedPorts")), "labels": labels})


def diff_ids(config: Any) -> list[str]:
    """The config's rootfs.diff_ids, each checked."""
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list):
        raise InvalidValue("image config has no rootfs.diff_ids")
    return [check_digest(d, "diff_id") for d in ids]

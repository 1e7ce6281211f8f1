"""An image chain as an OCI artifact in a registry: the reference, our media types, the manifest.

Pure: builds and parses the bytes; adapters/registry moves them. docs/registry.md describes
the format for other tools.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import attrs

from .exceptions import InvalidValue, RegistryError

ARTIFACT_TYPE = "application/vnd.appcontainers.image.v1+json"
AIMG_MEDIA_TYPE = "application/vnd.appcontainers.aimg.v1"
SIGNATURE_MEDIA_TYPE = "application/vnd.appcontainers.signature.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
# What a pull asks the registry for: ours first, then the ordinary image kinds (the import fallback).
ACCEPT = (OCI_MANIFEST, "application/vnd.oci.image.index.v1+json",
          "application/vnd.docker.distribution.manifest.v2+json",
          "application/vnd.docker.distribution.manifest.list.v2+json")

ANN_ID = "org.appcontainers.image.id"
ANN_PARENT = "org.appcontainers.image.parent"
ANN_NAME = "org.appcontainers.image.name"
ANN_TITLE = "org.opencontainers.image.title"

MAX_MANIFEST_BYTES = 4 << 20
MAX_LAYERS = 256
MAX_SIGNATURES = 16

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_HOST_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$")
_REPO_RE = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@attrs.frozen
class Reference:
    """HOST[:PORT]/REPO[:TAG] or HOST[:PORT]/REPO@sha256:HEX (a docker:// prefix is allowed).

    The host is always written out: a bare `repo:tag` names no registry, and we never guess one."""

    host: str
    repo: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What the manifest URL takes: the digest if given, else the tag (default latest)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        if self.digest:
            return f"{self.host}/{self.repo}@{self.digest}"
        return f"{self.host}/{self.repo}:{self.tag or 'latest'}"

    @classmethod
    def parse(cls, text: str) -> "Reference":
        raw = text[len("docker://"):] if text.startswith("docker://") else text
        host, slash, rest = raw.partition("/")
        if not slash or not rest or not _HOST_RE.fullmatch(host):
            raise InvalidValue(f"invalid image reference {text!r}: expected HOST[:PORT]/REPO[:TAG] "
                               f"or HOST[:PORT]/REPO@sha256:DIGEST")
        digest = tag = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST_RE.fullmatch(digest):
                raise InvalidValue(f"invalid digest {digest!r} in {text!r}: expected sha256: and 64 hex digits")
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, tag = rest.rsplit(":", 1)
            if not _TAG_RE.fullmatch(tag):
                raise InvalidValue(f"invalid tag {tag!r} in {text!r}")
        if not _REPO_RE.fullmatch(rest) or len(rest) > 255:
            raise InvalidValue(f"invalid repository {rest!r} in {text!r}: lowercase letters, digits, "
                               f"'.', '_', '-' and '/'")
        return cls(host=host, repo=rest, tag=tag, digest=digest)


@attrs.frozen
class Blob:
    """A descriptor: what the manifest says of one blob."""

    digest: str
    size: int
    media_type: str
    annotations: dict[str, str] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    @classmethod
    def from_dict(cls, data: Any) -> "Blob":
        if not isinstance(data, dict):
            raise InvalidValue("a descriptor is not a JSON object")
        digest, size, media = data.get("digest"), data.get("size"), data.get("mediaType")
        annotations = data.get("annotations") or {}
        if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
            raise InvalidValue(f"descriptor digest {digest!r} is not sha256:HEX")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidValue(f"descriptor size {size!r} is not a byte count")
        if not isinstance(media, str) or not isinstance(annotations, dict) \
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
            raise InvalidValue("descriptor media type or annotations malformed")
        return cls(digest=digest, size=size, media_type=media, annotations=annotations)


@attrs.frozen
class Layer:
    """One .aimg of the chain: its blob, the image id it holds and that image's parent."""

    blob: Blob
    image_id: str
    parent: str | None


@attrs.frozen
class ChainArtifact:
    """A chain as the registry holds it: layers base first (OCI order), signature blobs."""

    layers: tuple[Layer, ...]
    signatures: tuple[Blob, ...] = ()
    name: str | None = None

    @property
    def top(self) -> str:
        return self.layers[-1].image_id

    @property
    def chain(self) -> tuple[str, ...]:
        """The image ids top first, as lineage() lists them (what a signature covers)."""
        return tuple(layer.image_id for layer in reversed(self.layers))


def layer_blob(digest: str, size: int, image_id: str, parent: str | None) -> Blob:
    annotations = {ANN_ID: image_id, ANN_TITLE: f"{image_id}.aimg"}
    if parent is not None:
        annotations[ANN_PARENT] = parent
    return Blob(digest=digest, size=size, media_type=AIMG_MEDIA_TYPE, annotations=annotations)


def build_manifest(layers: list[Blob], signatures: list[Blob], name: str) -> bytes:
    """The OCI image manifest (1.1 artifact form) of a chain; layers base first."""
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
        "config": Blob(digest_of(EMPTY_CONFIG), len(EMPTY_CONFIG), EMPTY_MEDIA_TYPE).to_dict(),
        "layers": [b.to_dict() for b in [*layers, *signatures]],
        "annotations": {ANN_NAME: name},
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def is_artifact(manifest: dict[str, Any]) -> bool:
    """Whether a parsed manifest is one of ours (else: an ordinary image, for import)."""
    config = manifest.get("config")
    return manifest.get("artifactType") == ARTIFACT_TYPE or (
        isinstance(config, dict) and config.get("mediaType") == ARTIFACT_TYPE)


def load_manifest(data: bytes, where: str) -> dict[str, Any]:
    if len(data) > MAX_MANIFEST_BYTES:
        raise RegistryError(where, f"manifest of {len(data)} bytes is larger than {MAX_MANIFEST_BYTES}")
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise RegistryError(where, f"manifest is not JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise RegistryError(where, "manifest is not a JSON object")
    return manifest


def parse_manifest(manifest: dict[str, Any], where: str) -> ChainArtifact:
    """Our artifact's layers and signatures, checked: ids well formed, each layer's parent the
    layer below it, the base's parent (if any) outside the artifact."""
    raw = manifest.get("layers")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_LAYERS + MAX_SIGNATURES:
        raise RegistryError(where, "the artifact's layer list is missing, empty or too long")
    try:
        blobs = [Blob.from_dict(d) for d in raw]
    except InvalidValue as e:
        raise RegistryError(where, str(e)) from None
    signatures = tuple(b for b in blobs if b.media_type == SIGNATURE_MEDIA_TYPE)
    layers = tuple(_layer(b, where) for b in blobs if b.media_type != SIGNATURE_MEDIA_TYPE)
    if not layers or len(layers) > MAX_LAYERS or len(signatures) > MAX_SIGNATURES:
        raise RegistryError(where, "the artifact has no .aimg layer, or too many layers or signatures")
    for below, above in zip(layers, layers[1:]):
        if above.parent != below.image_id:
            raise RegistryError(where, f"layer {above.image_id[:12]} has parent {str(above.parent)[:12]}, "
                                       f"not the layer below it ({below.image_id[:12]})")
    if layers[0].parent is not None:
        raise RegistryError(where, f"the base layer {layers[0].image_id[:12]} has a parent outside the artifact")
    annotations = manifest.get("annotations") or {}
    name = annotations.get(ANN_NAME) if isinstance(annotations, dict) else None
    return ChainArtifact(layers=layers, signatures=signatures, name=name if isinstance(name, str) else None)


def _layer(blob: Blob, where: str) -> Layer:
    if blob.media_type != AIMG_MEDIA_TYPE:
        raise RegistryError(where, f"unexpected layer media type {blob.media_type!r}")
    image_id, parent = blob.annotations.get(ANN_ID), blob.annotations.get(ANN_PARENT)
    if not isinstance(image_id, str) or not _ID_RE.fullmatch(image_id):
        raise RegistryError(where, f"layer {blob.digest} lacks a valid {ANN_ID} annotation")
    if parent is not None and not _ID_RE.fullmatch(parent):
        raise RegistryError(where, f"layer {blob.digest} has an invalid {ANN_PARENT} annotation")
    return Layer(blob=blob, image_id=image_id, parent=parent)

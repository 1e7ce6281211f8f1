"""How images travel between hosts: a small interface, a registry and a shared directory.

A host asks for an image by its id (the sha256 of its .aimg): the distribution brings the
image's chain (the image, then each parent the host does not have) into the host's store,
verified, where it stays: the next container from it is a local load.
- Registry: an OCI registry (docs/registry.md). Each image is the tag <id> of one repository,
  HOST:PORT/<prefix>/img, its manifest listing the whole chain (base first); a blob the
  registry has is not sent again, and a host pulls the chain with the service's pull_image
  (layers it has are not downloaded; each one checked by digest and checksum before it enters).
- SharedDirectory: DIR/<id>.aimg in a directory every host sees (NFS, a bind mount, one
  machine's disk); parents are loaded through a throw-away container (the service layer has
  no import-only call for a file).
The fleet's choice is a JSON spec in its key-value store ("images"); Configured reads it there.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable, Protocol

import attrs

from ..domain.artifact import (ACCEPT, EMPTY_CONFIG, OCI_MANIFEST, Blob, Reference, build_manifest, layer_blob,
                               load_manifest, parse_manifest)
from ..domain.exceptions import ImageCorrupt, InvalidValue, RegistryError, UnknownImage
from ..domain.ports import ImageCodec, Registries, RegistryClient

_ID = re.compile(r"^[0-9a-f]{64}$")


def is_image_id(ref: str) -> bool:
    return bool(_ID.match(ref))


class ImageDistribution(Protocol):
    def spec(self) -> dict[str, Any]:
        """What a host needs to build the same distribution (JSON: kept in the fleet's store)."""

    def publish(self, path: str) -> str:
        """Make the .aimg at path (its parents must be published already) available to every
        host; its id."""

    def has(self, image_id: str) -> bool: ...

    def bring(self, image_id: str, svc: Any) -> "Brought":
        """Bring image_id's chain into the store of svc (a Service), verified: the layers the
        store lacks travel, the others do not."""


@attrs.frozen
class Brought:
    """What bring() did: layers transferred; top_file: the image's verified file still to be
    loaded with its first container (None: it is in the store already)."""

    layers: int
    top_file: str | None = None


def _stored(svc: Any) -> Callable[[str], bool]:
    return lambda image_id: image_id in svc.ports.repo.read().images


class SharedDirectory:
    """Images as DIR/<id>.aimg in a directory every host sees."""

    kind = "shared-dir"

    def __init__(self, path: str, codec: ImageCodec) -> None:
        if not os.path.isabs(path):
            raise InvalidValue(f"image directory {path!r} must be an absolute path")
        self.path, self.codec = path, codec

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}

    def file(self, image_id: str) -> str:
        if not is_image_id(image_id):
            raise InvalidValue(f"invalid image id {image_id!r}: 64 hex digits")
        return os.path.join(self.path, image_id + ".aimg")

    def has(self, image_id: str) -> bool:
        return os.path.isfile(self.file(image_id))

    def publish(self, path: str) -> str:
        image_id, manifest = self.codec.verify(path)
        parent = manifest.get("parent")
        if parent and not self.has(parent):
            raise UnknownImage(f"{parent} (parent of {path}): publish the parent image first")
        if not self.has(image_id):
            os.makedirs(self.path, mode=0o755, exist_ok=True)
            tmp = os.path.join(self.path, f".{image_id}.{os.getpid()}.part")
            self.codec.copy_verified(path, tmp)
            os.replace(tmp, self.file(image_id))  # whole or not at all, for readers on other hosts
        return image_id

    def bring(self, image_id: str, svc: Any) -> Brought:
        files = self.fetch(image_id, os.path.join(svc.settings.layout.tmp, "fleet-incoming"), _stored(svc))
        for parent in reversed(files[1:]):  # oldest first: a load needs its parent stored
            # No import-only call for a file in the service layer: a throw-away container brings it in.
            svc.load_image(parent, ephemeral=True, move=True).destroy()
        return Brought(layers=len(files), top_file=files[0])

    def fetch(self, image_id: str, dest_dir: str, have: Callable[[str], bool]) -> list[str]:
        """Copy image_id and the parents have() says are missing into dest_dir, verified; the
        files, the image first and its oldest missing parent last."""
        files: list[str] = []
        current: str | None = image_id
        while current is not None and not (files and have(current)):
            if not self.has(current):
                raise UnknownImage(f"{current}: not in the fleet's images ({self.path})")
            os.makedirs(dest_dir, mode=0o700, exist_ok=True)
            dest = os.path.join(dest_dir, current + ".aimg")
            got, manifest = self.codec.copy_verified(self.file(current), dest)
            if got != current:
                os.unlink(dest)
                raise ImageCorrupt(self.file(current), f"its content is image {got}, not {current}")
            files.append(dest)
            current = manifest.get("parent")
        return files


def registry_address(address: str) -> tuple[str, str, str]:
    """(address, host, repository) of HOST:PORT[/prefix] (registry:// allowed); the repository
    is <prefix>/img, appcontainers/img without a prefix. A malformed one is refused."""
    address = address.removeprefix("registry://").rstrip("/")
    host, _, prefix = address.partition("/")
    repo = f"{prefix or Registry.DEFAULT_PREFIX}/img"
    try:
        Reference.parse(f"{host}/{repo}:x")
    except InvalidValue:
        raise InvalidValue(f"invalid registry address {address!r}: HOST:PORT[/prefix]") from None
    return address, host, repo


class Registry:
    """Images as tags of one repository of an OCI registry: HOST:PORT/<prefix>/img:<id>.

    One repository for all (not one per image): a registry links blobs per repository, so a
    parent shared by many images is stored and sent once. A tag is mutable, an id is not: a
    host pulls by tag and refuses what comes unless its top image is that id (and the pull has
    checked every layer against the id the manifest names), which binds as a digest would."""

    kind = "registry"
    DEFAULT_PREFIX = "appcontainers"

    def __init__(self, address: str, codec: ImageCodec, registries: Registries, tls_verify: bool = True) -> None:
        self.address, self.host, self.repo = registry_address(address)
        self.tls_verify = tls_verify
        self.codec, self._registries = codec, registries

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "address": self.address, "tls_verify": self.tls_verify}

    def ref(self, image_id: str) -> str:
        if not is_image_id(image_id):
            raise InvalidValue(f"invalid image id {image_id!r}: 64 hex digits")
        return f"{self.host}/{self.repo}:{image_id}"

    def _client(self) -> RegistryClient:
        return self._registries(self.host, self.tls_verify)

    def _manifest(self, client: RegistryClient, image_id: str) -> tuple[Blob, ...] | None:
        """The layer blobs (base first) of image_id's manifest; None if the registry has none."""
        where = self.ref(image_id)
        try:
            data, _media, _digest = client.get_manifest(self.repo, image_id, ACCEPT)
        except RegistryError as e:
            if e.reason.endswith("(404)"):
                return None
            raise
        artifact = parse_manifest(load_manifest(data, where), where)
        if artifact.top != image_id:
            raise ImageCorrupt(where, f"its manifest is of image {artifact.top[:12]}, not {image_id[:12]}")
        return tuple(layer.blob for layer in artifact.layers)

    def has(self, image_id: str) -> bool:
        return self._manifest(self._client(), image_id) is not None

    def publish(self, path: str) -> str:
        """Push the .aimg at path as the tag <id>: its blob (unless the registry has it), then a
        manifest of its parent's layers and its own. Its parent must be published already."""
        image_id, manifest = self.codec.verify(path)
        client = self._client()
        if self._manifest(client, image_id) is not None:
            return image_id
        parent = manifest.get("parent")
        below = self._manifest(client, parent) if parent else ()
        if below is None:
            raise UnknownImage(f"{parent} (parent of {path}): publish the parent image first")
        digest, size, _sent = client.push_file(self.repo, path)
        client.push_bytes(self.repo, EMPTY_CONFIG)
        data = build_manifest([*below, layer_blob(digest, size, image_id, parent)], [],
                              str(manifest.get("name") or image_id[:12]))
        client.put_manifest(self.repo, image_id, data, OCI_MANIFEST)
        return image_id

    def bring(self, image_id: str, svc: Any) -> Brought:
        """pull_image of its tag: the whole chain enters the store, each layer verified."""
        ref = self.ref(image_id)
        result = svc.registry.pull(ref, tls_verify=self.tls_verify)
        if result.image.id != image_id:
            raise ImageCorrupt(ref, f"the registry's tag holds image {result.image.id[:12]}, not {image_id[:12]}")
        return Brought(layers=result.downloaded)


class Configured:
    """The fleet's distribution as its key-value store names it now: read at each use (one
    small read), so the fleet may switch from a shared directory to a registry without
    restarting its hosts (images already on a host stay; nothing is copied over)."""

    def __init__(self, read_spec: Callable[[], dict[str, Any] | None],
                 make: Callable[[dict[str, Any]], ImageDistribution]) -> None:
        self._read, self._make = read_spec, make
        self._spec: dict[str, Any] | None = None
        self._current: ImageDistribution | None = None

    def current(self) -> ImageDistribution:
        spec = self._read()
        if spec is None:
            raise InvalidValue("the fleet has no image distribution: give a registry or an image directory")
        if self._current is None or spec != self._spec:
            self._current, self._spec = self._make(spec), spec
        return self._current

    def spec(self) -> dict[str, Any]:
        return self.current().spec()

    def publish(self, path: str) -> str:
        return self.current().publish(path)

    def has(self, image_id: str) -> bool:
        return self.current().has(image_id)

    def bring(self, image_id: str, svc: Any) -> Brought:
        return self.current().bring(image_id, svc)


def make_spec(image_dir: str | None = None, registry: str | None = None, tls_verify: bool = True) -> dict[str, Any] | None:
    """The spec of a registry (HOST:PORT[/prefix], registry:// allowed) or an image directory;
    None if neither is given."""
    if image_dir is not None and registry is not None:
        raise InvalidValue("images travel by a registry or a shared directory: give one of them")
    if registry is not None:
        return {"kind": Registry.kind, "address": registry_address(registry)[0], "tls_verify": tls_verify}
    if image_dir is not None:
        if not os.path.isabs(image_dir):
            raise InvalidValue(f"image directory {image_dir!r} must be an absolute path")
        return {"kind": SharedDirectory.kind, "path": image_dir}
    return None


def describe(spec: dict[str, Any]) -> str:
    if spec.get("kind") == Registry.kind:
        return f"registry {spec.get('address')}"
    if spec.get("kind") == SharedDirectory.kind:
        return f"shared directory {spec.get('path')}"
    return repr(spec)


def from_spec(spec: dict[str, Any], codec: ImageCodec, registries: Registries | None = None) -> ImageDistribution:
    """The distribution a spec names: "registry" or "shared-dir"."""
    if spec.get("kind") == Registry.kind:
        if registries is None:
            from ..adapters.registry.client import HttpRegistries

            registries = HttpRegistries()
        return Registry(str(spec["address"]), codec, registries, bool(spec.get("tls_verify", True)))
    if spec.get("kind") == SharedDirectory.kind:
        return SharedDirectory(str(spec["path"]), codec)
    raise InvalidValue(f"unknown image distribution {spec!r}")

"""How images travel between hosts: a small interface, and its shared-directory form.

A host asks for an image by its id (the sha256 of its .aimg): the distribution copies the
image's chain (the image, then each parent it does not have) to a local directory, and the
host loads it into its own store, where it stays: the next container from it is a local load.
SharedDirectory is a directory every host sees (NFS, a bind mount, one machine's disk in
tests); a registry (push/pull) is the same interface with another spec kind.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable, Protocol

from ..domain.exceptions import ImageCorrupt, InvalidValue, UnknownImage
from ..domain.ports import ImageCodec

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

    def fetch(self, image_id: str, dest_dir: str, have: Callable[[str], bool]) -> list[str]:
        """Copy image_id and the parents have() says are missing into dest_dir, verified; the
        files, the image first and its oldest missing parent last."""


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

    def fetch(self, image_id: str, dest_dir: str, have: Callable[[str], bool]) -> list[str]:
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


def from_spec(spec: dict[str, Any], codec: ImageCodec) -> ImageDistribution:
    """The distribution a spec names (the only kind for now: shared-dir)."""
    if spec.get("kind") == SharedDirectory.kind:
        return SharedDirectory(str(spec["path"]), codec)
    raise InvalidValue(f"unknown image distribution {spec!r}")

"""Base images: the default busybox base built on first use, looked up by name."""
from __future__ import annotations

import os

from ..domain.exceptions import UnknownImage
from ..domain.image import Image, Manifest
from .ports import Ports


class BaseService:
    def __init__(self, ports: Ports):
        self.p = ports
        self.layout = ports.settings.layout

    def find(self, name: str, images=None) -> Image | None:
        """The newest base image tagged name."""
        images = self.p.repo.read().images if images is None else images
        found = [i for i in images.values() if i.kind == "base" and i.name == name]
        return max(found, key=lambda i: i.created) if found else None

    def list(self) -> list[Image]:
        return sorted((i for i in self.p.repo.read().images.values() if i.kind == "base"),
                      key=lambda i: (i.name, i.created))

    def ensure_default(self) -> Image:
        """The default base, (re)built when missing or when what it is made from changed."""
        name = self.p.settings.default_base
        key = self.p.base_builder.key()
        current = self.find(name)
        if current and current.manifest.build_key == key and self.p.fs.exists(
                self.layout.image_file(current.id, "base")):
            return current
        with self.p.fs.lock(os.path.join(self.layout.bases, ".build.lock")):
            current = self.find(name)  # another process may have built it meanwhile
            if current and current.manifest.build_key == key and self.p.fs.exists(
                    self.layout.image_file(current.id, "base")):
                return current
            self.p.fs.make_dirs(self.layout.bases)
            tmp = os.path.join(self.layout.bases, f".{name}.building.aimg")
            try:
                image_id, manifest = self.p.base_builder.build(tmp, name, self.p.clock())
                image = Image(id=image_id, manifest=Manifest.from_dict(manifest), kind="base")
                self.p.fs.move(tmp, self.layout.image_file(image_id, "base"))
            finally:
                self.p.fs.remove_file(tmp)
            with self.p.repo.transaction() as state:
                state.images[image.id] = image
            return image

    def resolve(self, name: str | None) -> Image:
        """A base by name (None: the default, built if needed)."""
        if name is None or name == self.p.settings.default_base:
            return self.ensure_default()
        image = self.find(name)
        if image is None:
            raise UnknownImage(f"base {name}")
        return image
